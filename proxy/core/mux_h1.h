/* The HTTP/1.1 mux: one exchange at a time on a client connection, read
 * heads, pipelined requests answered in order, keep-alive, WebSocket
 * tunnels after a 101, splice for response bodies; and TCP mode, where the
 * whole connection is one exchange tunnelled to a backend. */
#ifndef USHER_PROXY_MUX_H1_H
#define USHER_PROXY_MUX_H1_H

#include "worker-t.h"

/* Serves <c> (accepted, TLS done if any) as HTTP/1.1: the first request
 * may already be readable. */
void mux_h1_start(struct client *c);

/* Serves <c> in TCP mode: a tunnel to a backend of its listener. */
void mux_h1_start_tcp(struct client *c);

/* True if <c> is an HTTP/1.1 connection between two requests, with at
 * least one served (what close spreading spaces out). */
bool mux_h1_between_requests(const struct client *c);

#endif
