/* The binary upgrade (SIGUSR2): hand the listening sockets and the
 * backends' health to the binary on disk, then drain (DESIGN "The
 * upgrade"). */
#ifndef USHER_PROXY_UPGRADE_H
#define USHER_PROXY_UPGRADE_H

#include "../control/process-t.h"

/* Old side, on SIGUSR2: starts the new process. Once it says ready,
 * p->upgrade.handed_over_cb
 * runs (release them, drain); if it fails, everything goes on as before and
 * "upgrade failed" is logged. A second SIGUSR2 meanwhile is ignored. */
void upgrade_start(struct process *p);

/* New side, before the config is applied and before sysd_inherit():
 * recognises a process started by an upgrade (USHER_UPGRADE_FD), keeps its
 * hand-over descriptors and sets LISTEN_PID to this process (the old one
 * cannot know it). Returns 0 (also when this is no upgrade). */
int upgrade_inherit(struct process *p);

/* New side, after the config is applied: takes over the health states the
 * old process handed over. */
void upgrade_restore(struct process *p);

/* New side, once ready: tells the old process to let go. */
void upgrade_ready(struct process *p);

/* Stops the upgrade's watchers (process exit). */
void upgrade_stop(struct process *p);

/* "none", "old", "new". */

#endif
