/* Signals, the process drain and the in-process reload. */
#ifndef USHER_PROXY_LIFECYCLE_H
#define USHER_PROXY_LIFECYCLE_H

#include "worker-t.h"

/* Installs the SIGTERM/SIGINT/SIGHUP watchers and ignores SIGPIPE. */
void lifecycle_start(struct worker *w);

/* Removes the signal watchers and the drain timer. */
void lifecycle_stop(struct worker *w);

/* A client connection closed: ends the drain when it was the last one. */
void lifecycle_connection_closed(struct worker *w);

/* Re-reads the config file and applies it in place (reload.c). On any
 * error the running config stays untouched. Returns 0 or -1. */
int lifecycle_reload(struct worker *w);

#endif
