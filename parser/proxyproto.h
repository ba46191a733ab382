/* HAProxy's PROXY protocol (v1 text, v2 binary): the parser of the header a
 * balancer puts in front of a connection, and the writers of the header
 * usher puts in front of a backend connection (`send_proxy`). Pure
 * functions over bytes: no I/O, no allocation. */
#ifndef USHER_PARSER_PROXYPROTO_H
#define USHER_PARSER_PROXYPROTO_H

#include "proxyproto-t.h"

/* Parses the PROXY header at the start of <buf>[0..<len>), of a version in
 * <accept> (PROXYPROTO_V1, PROXYPROTO_V2 or both). Stateless and
 * restartable: call again with the same bytes grown by what was read since.
 * Reads no byte at or past <len>.
 * Returns PROXYPROTO_OK (out->len bytes are the header; the connection's own
 * data follows), PROXYPROTO_AGAIN (what is there is a valid start: a partial
 * signature, a v1 line without its CRLF yet, a v2 header short of its
 * length; at most PROXYPROTO_MAX_LEN bytes are ever waited for), or
 * PROXYPROTO_ERROR (out->reason says why; the connection must be closed).
 * An error is reported as soon as the bytes seen prove it, so a prefix of
 * an invalid header gives AGAIN or the same error. */
int proxyproto_parse(const uint8_t *buf, size_t len, unsigned accept,
                     struct proxyproto_result *out);

/* Writes the v1 line for a connection from <src> to <dst> into <out> (<cap>
 * bytes; not NUL-terminated). Two IPv4 addresses, or two v4-mapped IPv6
 * ones, give "PROXY TCP4 ..."; otherwise "PROXY TCP6 ..." with an IPv4
 * address mapped (::ffff:a.b.c.d). <src> or <dst> NULL: "PROXY UNKNOWN\r\n",
 * the form for health checks (DESIGN "PROXY protocol and TLS to backends").
 * Returns the length written, -ENOSPC if <cap> is too small (nothing
 * usable written; PROXYPROTO_WRITE_MAX is always enough), or -EAFNOSUPPORT
 * for a family other than AF_INET and AF_INET6. */
int proxyproto_write_v1(char *out, size_t cap, const struct sockaddr *src,
                        const struct sockaddr *dst);

/* Writes the v2 header (PROXY, TCP over IPv4 or IPv6, no TLV) for a
 * connection from <src> to <dst> into <out>; families as for
 * proxyproto_write_v1. <src> or <dst> NULL: the 16-byte LOCAL header, the
 * form for health checks. Same returns as proxyproto_write_v1. */
int proxyproto_write_v2(uint8_t *out, size_t cap, const struct sockaddr *src,
                        const struct sockaddr *dst);

#endif
