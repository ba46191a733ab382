/* HTTP/2 to backends (pools[].protocol h2c | h2; DESIGN "HTTP/2 and gRPC",
 * backends): the streams of many exchanges multiplexed over few
 * connections per backend, a new connection only when the backend's
 * SETTINGS_MAX_CONCURRENT_STREAMS is reached, the backend's GOAWAY as a
 * drain (streams above its last-stream-id were never processed: their
 * exchanges send them again), flow control as backpressure both ways.
 *
 * An exchange speaks HTTP/1.1 whatever carries it: its upstream side is
 * bound to a stream through transport_h2_stream, whose send takes the
 * HTTP/1.1 request bytes the exchange writes (the head becomes HEADERS,
 * the body DATA, chunked trailers trailing HEADERS) and whose recv gives
 * the response back as HTTP/1.1 bytes (HEADERS as a head, DATA as its body,
 * chunked when trailers may follow). Events reach the exchange through the
 * upstream_cb it gave, as from an HTTP/1.1 upstream connection.
 *
 * A connection is a struct upstream of its server (the pool's lists, the
 * descriptor and drain counts, the keep rule, idle close), flagged mux:
 * pooled (idle) while it has no stream, taken again for the next one. */
#ifndef USHER_PROXY_UPSTREAM_H2_H
#define USHER_PROXY_UPSTREAM_H2_H

#include "worker-t.h"

struct h2_stream;

/* Request bytes (the HTTP/1.1 head and the body as the exchange framed it)
 * a stream keeps until the backend is known to have acted on it, so that
 * a refused stream can be sent again: the 65,535 bytes a backend's initial
 * window lets go before it answers (RFC 9113 6.9.2), plus a head. A stream
 * that sent more before the backend's first frame for it cannot be. */
#define H2_REPLAY_MAX (65535u + 16384u)

/* How long after a backend's GOAWAY (NO_ERROR) its refused connects are
 * taken for its graceful stop, maybe a restart, rather than a failure:
 * server.stop(grace) and a start again take a second or two; a backend
 * that is still unreachable after this is failing like any other. */
#define H2_STOP_GRACE_S 10.0

/* True if <s>'s backend said GOAWAY (NO_ERROR) to an HTTP/2 connection
 * less than H2_STOP_GRACE_S before <now> and no connection to it was made
 * since: a connect it refuses meanwhile is its stop, not a failure for
 * passive health (it still goes to another backend). */
bool upstream_h2_stopping(const struct server *s, ev_tstamp now);

/* Attaches a new stream for <owner> (an exchange, told of every event
 * through <cb>, as by an upstream connection) to a connection to <s>: the
 * first of its HTTP/2 connections with room for another stream (below the
 * backend's SETTINGS_MAX_CONCURRENT_STREAMS, no GOAWAY from it), else a new
 * one. <te_trailers>: the request carries "te: trailers". *<reused>: it
 * went on a pooled connection that had no stream. Returns the stream, or
 * NULL if no connection could be had (*<err>: the connect's errno; <cb> is
 * never called then). */
struct h2_stream *upstream_h2_attach(struct server *s, upstream_cb cb, void *owner,
                                     bool te_trailers, bool *reused, int *err);

/* The connection <st> goes over, as its pool knows it (for its server):
 * valid until the stream is detached. */
struct upstream *upstream_h2_conn(const struct h2_stream *st);

/* True once the connection of <st> carries frames (connected; for h2,
 * TLS done): the exchange may write. */
bool upstream_h2_ready(const struct h2_stream *st);

/* What the exchange of <st> waits for (EV_READ: response bytes; EV_WRITE:
 * room for request bytes): told at once (UPSTREAM_READABLE, _WRITABLE) if
 * it is there already, as a level-triggered watcher would. */
void upstream_h2_want(struct h2_stream *st, unsigned events);

/* The exchange lets go of <st>: a stream not complete both ways is reset
 * (CANCEL); its memory goes at the connection's next safe point. */
void upstream_h2_detach(struct h2_stream *st);

/* True if the backend never processed <st> (REFUSED_STREAM, above its
 * GOAWAY's last-stream-id, or never sent): UPSTREAM_REFUSED is, or is
 * about to be, reported. */
bool upstream_h2_refused(const struct h2_stream *st);

/* After UPSTREAM_REFUSED: moves the request bytes <st> took, as the
 * exchange gave them, into <out> (which they replace) to be sent again.
 * Returns how many (0: it took none, <out> is left alone), or -1 if more
 * went than were kept (H2_REPLAY_MAX). */
ssize_t upstream_h2_replay(struct h2_stream *st, struct hbuf *out);

/* The transport of an exchange's upstream side bound to a stream
 * (side.h2s): HTTP/1.1 bytes in, HTTP/1.1 bytes out. */
extern const struct transport transport_h2_stream;

#endif
