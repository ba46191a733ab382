/* The exchange: one request and its response (types in exchange-t.h). It
 * picks a backend, connects (retrying where DESIGN allows), streams the
 * request up and the response down with backpressure, turns into a tunnel
 * after a 101, answers with errors of usher's own, and counts and logs
 * itself when it ends. Its connection is a mux below it, reached only
 * through x->ops. Only the step functions of exchange_step() change
 * x->state. */
#ifndef USHER_PROXY_EXCHANGE_H
#define USHER_PROXY_EXCHANGE_H

#include "worker-t.h"

/* Binds <x> (new or reused memory) to connection <c> with mux <ops>; its
 * request bytes come from <down>. Sets up its timer and resets it. */
void exchange_init(struct exchange *x, struct client *c, const struct exchange_ops *ops,
                   struct side *down);

/* Starts afresh: every per-request field is zeroed, its heads and log are
 * freed and its response buffer goes back. Its upstream and pipe must be
 * gone (exchange_abort, or the end of the exchange). */
void exchange_reset(struct exchange *x);

/* The request is taken (head rebuilt into x->req_head, request fields
 * set): choose a backend and connect, or answer 503/502/504. */
enum step exchange_start(struct exchange *x);

/* TCP mode: the whole connection is one exchange tunnelled to a backend. */
enum step exchange_start_tunnel(struct exchange *x);

/* One round of the exchange's state machine (the mux's driver loops). */
enum step exchange_step(struct exchange *x);

/* Answers the request with an error of usher's own (<status>, <detail>);
 * <close>: the connection cannot continue after it. */
enum step exchange_respond_error(struct exchange *x, int status, const char *detail, bool close);

/* The connection goes away under the exchange: it ends now (counted and
 * logged if a request was in progress), its upstream closes, its pipe goes
 * back. It may be reset or freed afterwards. Idempotent. */
void exchange_abort(struct exchange *x);

/* Sets the upstream's watcher for the exchange's state and returns the
 * events it wants on an HTTP/1.1 client socket (EV_READ: request bytes it
 * can take; EV_WRITE: response bytes waiting). */
unsigned exchange_watch(struct exchange *x);

/* A drain deadline for the exchange's tunnel (process drain, backend
 * drain): a WebSocket tunnel gets its close frames
 * shutdown.tunnel_close_grace before it (at once if less is left), and a
 * gRPC call its grpc-status 14 (after its last whole message, or as a
 * trailers-only answer before any); the earliest deadline given wins.
 * True if closing began now (the caller drives the exchange so the frames
 * go out). */
bool exchange_tunnel_deadline(struct exchange *x, ev_tstamp deadline);

/* The request went out whole (head and body). */
bool exchange_request_sent(const struct exchange *x);

/* Some byte of the final response reached the client, or its head was
 * committed: an error of usher's own can no longer replace it. */
bool exchange_response_on_wire(const struct exchange *x);

/* Counts <n> response bytes that went to the client (n < 0: it went away:
 * the exchange aborts and false is returned); sets *<progress>. */
bool exchange_response_sent(struct exchange *x, ssize_t n, enum step *progress);

/* A new X-Request-Id for the exchange <ctx> (128 random bits, hex):
 * struct forward_info's new_request_id. */
const char *exchange_new_request_id(void *ctx);

const char *exchange_state_str(enum exchange_state s);

#endif
