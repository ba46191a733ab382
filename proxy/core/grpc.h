/* gRPC as usher sees it (DESIGN "HTTP/2 and gRPC"): a request is gRPC by
 * its content-type; an answer usher makes itself for one is trailers-only
 * (HTTP 200, content-type application/grpc, grpc-status, grpc-message), so
 * a client reads a status it can act on (UNAVAILABLE: try elsewhere)
 * instead of INTERNAL; and a call still open near a drain deadline ends
 * with grpc-status 14 at a message boundary, as a WebSocket gets its 1001
 * close frame. Pure functions and one small struct; no I/O. */
#ifndef USHER_PROXY_GRPC_H
#define USHER_PROXY_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../parser/http1-t.h"
#include "../base/buf.h"
#include "headers.h"

/* gRPC status codes usher sends (grpc/doc/statuscodes.md). */
enum grpc_code {
    GRPC_OK = 0,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
};

/* Longest grpc-message usher writes, percent-encoded, with its NUL. */
#define GRPC_MESSAGE_MAX 192

/* One gRPC call through usher (allocated for gRPC requests only): the
 * Length-Prefixed-Messages of its response body, followed so that usher
 * can end it between two messages, and its drain deadline. */
struct grpc_call {
    uint64_t framed;   /* response body bytes followed so far */
    uint64_t msg_end;  /* where the message being read ends (once its prefix is complete) */
    uint64_t last_end; /* where the last complete message ended (0: the start) */
    uint8_t prefix[5]; /* compressed flag, 4-byte big-endian length */
    unsigned prefix_got;
    double close_at; /* when it ends with grpc-status 14 (0: no drain deadline known) */
    bool closing;    /* ending now: at the next message boundary */
};

/* True if content-type value <v> is gRPC's: "application/grpc", alone or
 * followed by "+" (a codec) or ";" (parameters), any case. */
bool grpc_content_type(struct http1_slice v);

/* The gRPC status of an error usher answers with HTTP <status>: 14
 * UNAVAILABLE for 502 and 503 (no backend, connect failure, a backend
 * reset, shutting down) and 421, 4 DEADLINE_EXCEEDED for 504 and 408, 8
 * RESOURCE_EXHAUSTED for 431 and 414, 12 UNIMPLEMENTED for 404 (no route)
 * and 501, 13 INTERNAL for the rest (a malformed request: 400). */
enum grpc_code grpc_code_of(int status);

/* A trailers-only answer: the four fields and what they point at. */
struct grpc_error {
    char status[4];
    char message[GRPC_MESSAGE_MAX];
    struct h2_field f[4];
};

/* Fills <e> with the trailers-only answer to a gRPC request for an error
 * usher answers with HTTP <status> (grpc_code_of), <detail> (may be NULL)
 * as its grpc-message. Returns the field count. */
size_t grpc_error_fields(struct grpc_error *e, int status, const char *detail);

/* Appends "grpc-status: <code>\r\ngrpc-message: <detail>\r\n" (trailer
 * lines, as a chunked body's trailers are kept) to <out>. 0 or -1. */
int grpc_trailer_lines(struct hbuf *out, enum grpc_code code, const char *detail);

/* Follows <n> more response body bytes <p> of call <g>. */
void grpc_follow(struct grpc_call *g, const uint8_t *p, size_t n);

/* Where a closing call may end, <sent> body bytes having gone to the
 * client: the last message boundary at or after <sent> followed so far.
 * Returns true with *<cut> set, or false while the message <sent> is in
 * the middle of is not complete yet. */
bool grpc_cut(const struct grpc_call *g, uint64_t sent, uint64_t *cut);

#endif
