/* Client connections: the HTTP/1.1 exchange (and TCP-mode tunnels) driven
 * by one state machine per connection. */
#ifndef USHER_PROXY_CLIENT_H
#define USHER_PROXY_CLIENT_H

#include <sys/socket.h>
#include "worker-t.h"

/* Takes over the accepted socket <fd> from listener <l> (peer <sa>) and
 * starts serving it. On allocation failure the socket is closed. */
void client_accept(struct listener *l, int fd, const struct sockaddr_storage *sa);

/* The upstream bound to <c> reported <revents> (EV_READ/EV_WRITE). */
void client_upstream_event(struct client *c, unsigned revents);

/* Closes <c> and its upstream now; the struct is freed at a safe point. */
void client_close(struct client *c);

/* Process drain: closes <c> if it is idle between requests; otherwise the
 * request in progress is answered with Connection: close. */
void client_shutdown_idle(struct client *c);

/* Frees a closed client (called by the worker's reaper). */
void client_free(struct client *c);

const char *client_state_str(enum client_state s);

#endif
