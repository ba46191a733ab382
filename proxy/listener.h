/* Listening sockets: bind, accept in batches, pause at limits. */
#ifndef USHER_PROXY_LISTENER_H
#define USHER_PROXY_LISTENER_H

#include "worker-t.h"

/* Binds and listens for <cl> (not accepting yet). Returns the listener, or
 * NULL with *<err> set to a static reason and errno kept. */
struct listener *listener_open(struct worker *w, const struct conf_listener *cl, const char **err);

/* Points <l> at config <cl> (same name and bind) and rebuilds its split
 * over the worker's runtime pools. Returns 0 or -1. */
int listener_configure(struct listener *l, const struct conf_listener *cl);

/* Starts / stops the accept watcher. */
void listener_resume(struct listener *l);
void listener_pause(struct listener *l);

/* Closes the socket: no new connections. Open ones continue. */
void listener_close(struct listener *l);

/* Loads every TLS certificate and key of <conf> once, so a bad one is a
 * config error (usher -t, startup, reload) and not a failure later. Returns
 * 0, or -1 with "file:line:column: listeners[i].tls: reason" in <msg>. */
int listener_check_tls(const struct conf *conf, char *msg, size_t cap);

/* Frees <l>; its socket must be closed and its connections gone. */
void listener_free(struct listener *l);

#endif
