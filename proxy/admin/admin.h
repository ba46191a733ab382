/* The admin listener (admin.bind): /live, /ready, /status, /metrics. */
#ifndef USHER_PROXY_ADMIN_H
#define USHER_PROXY_ADMIN_H

#include "../control/process-t.h"

/* Binds admin.bind (or adopts <inherited>, a listening socket handed over
 * by systemd or an upgrade, when >= 0) and starts answering. Returns 0, or
 * -1 after logging. */
int admin_start(struct process *p, int inherited);

/* Upgrade hand-over: stops accepting admin connections and closes this
 * process's descriptor; the socket lives on in the new process. */
void admin_release_listener(struct process *p);

/* Closes the admin listener and its open connections. */
void admin_stop(struct process *p);

#endif
