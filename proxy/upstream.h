/* Connections from usher to backends, and each backend's keep-alive pool. */
#ifndef USHER_PROXY_UPSTREAM_H
#define USHER_PROXY_UPSTREAM_H

#include "worker-t.h"

/* Starts a non-blocking connect to <b> for <c>. Returns the upstream in
 * UPSTREAM_CONNECTING (completion is reported to the client through
 * client_upstream_event), or NULL if the connect failed at once (*<err> is
 * the errno). */
struct upstream *upstream_connect(struct worker *w, struct backend *b, struct client *c, int *err);

/* Takes the most recently pooled idle connection to <b> for <c>, or NULL. */
struct upstream *upstream_take_idle(struct backend *b, struct client *c);

/* The request on <u> is done: pool it if <reusable> (and the backend is in
 * rotation and its pool has room), close it otherwise. */
void upstream_release(struct upstream *u, bool reusable);

/* Closes <u> and frees it. */
void upstream_close(struct upstream *u);

/* Closes every idle pooled connection of <b>. */
void upstream_close_idle(struct backend *b);

/* Sets the io watcher of <u> to <events> (EV_READ|EV_WRITE), touching
 * libev only when they change. */
void upstream_want(struct upstream *u, unsigned events);

/* Attaches / detaches the proxy's per-backend state (backend->proxy_data). */
int upstream_backend_attach(struct backend *b, struct pool *p);
void upstream_backend_detach(struct backend *b);

#endif
