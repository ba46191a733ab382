/* The HTTP/2 mux for client connections, on nghttp2: one exchange per
 * stream, flow control as backpressure, the two-step GOAWAY drain, and the
 * abuse limits (DESIGN "HTTP/2 and gRPC"). */
#ifndef USHER_PROXY_MUX_H2_H
#define USHER_PROXY_MUX_H2_H

#include "worker-t.h"

/* Serves <c> as HTTP/2 from now on: after ALPN h2, or once the h2c
 * preface was seen on a plain listener (it, and any bytes after it, wait
 * in c->down.buf). */
void mux_h2_start(struct client *c);

/* True if <c> is an HTTP/2 connection with no stream open: a drain may
 * send it the two-step GOAWAY at a close_spread slot. */
bool mux_h2_spread_candidate(const struct client *c);

/* The reason label of usher_http2_goaway_sent_total. */
const char *h2_goaway_reason_str(enum h2_goaway_reason r);

#endif
