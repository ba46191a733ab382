/* Client connections: what the worker sees of them. A connection is a
 * socket (TLS or not) with a mux on it — HTTP/1.1 (one exchange at a time,
 * and TCP mode) or HTTP/2 (one exchange per stream) — and the exchanges the
 * mux carries. */
#ifndef USHER_PROXY_CLIENT_H
#define USHER_PROXY_CLIENT_H

#include <sys/socket.h>
#include "worker-t.h"

/* Takes over the socket <fd> accepted on <l> (peer <sa>) and starts serving
 * it. Returns the client (maybe already closed), or NULL after closing the
 * socket on allocation failure. */
struct client *client_accept(struct worker *w, struct listener *l, int fd,
                             const struct sockaddr_storage *sa);

/* Closes <c> now, every exchange on it ended and its upstream closed. The
 * client moves to w->closed and the worker frees it (client_free) at its
 * next safe point. */
void client_close(struct client *c);

/* True if <c> is an idle keep-alive connection between two requests, with
 * at least one served, or an HTTP/2 connection with no stream open: what
 * close spreading spaces out. */
bool client_spread_candidate(const struct client *c);

/* Drain: an idle keep-alive connection is closed at <close_at> (now if it
 * is not in the future; never before its next request if <close_at> is
 * DBL_MAX, shutdown.idle_close: after_request), unless a request already
 * arrived on it (then it is served, with Connection: close); a request in
 * progress is answered with Connection: close. An HTTP/2 connection gets
 * the two-step GOAWAY at those same moments (busy: now) and closes after
 * its last stream. */
void client_shutdown_idle(struct client *c, ev_tstamp close_at);

/* True if <c> is an idle keep-alive connection between two requests, or an
 * HTTP/2 connection with no stream open (one a drain may close without
 * cutting anything). */
bool client_is_idle(const struct client *c);

/* A deadline for <c>'s tunnel (process drain, backend drain): a WebSocket
 * tunnel gets its close frames shutdown.tunnel_close_grace before it (at
 * once if less is left), every gRPC call of an HTTP/2 connection its
 * grpc-status 14. The earliest deadline given wins; other connections
 * ignore it. */
void client_tunnel_deadline(struct client *c, ev_tstamp deadline);

/* Frees a closed client (called by the worker's reaper). */
void client_free(struct client *c);

const char *client_state_str(enum client_state s);

#endif
