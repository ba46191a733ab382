/* HAProxy's PROXY protocol, versions 1 (text) and 2 (binary): types only.
 * The specification is HAProxy's doc/proxy-protocol.txt ("The PROXY
 * protocol, Versions 1 & 2"); section numbers below are its. */
#ifndef USHER_PARSER_PROXYPROTO_T_H
#define USHER_PARSER_PROXYPROTO_T_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Return convention of proxyproto_parse, as http1's: OK when a complete
 * header was read, AGAIN when more bytes are needed, ERROR on anything the
 * specification does not allow (the result names why). */
enum {
    PROXYPROTO_OK = 0,
    PROXYPROTO_ERROR = -1,
    PROXYPROTO_AGAIN = -2,
};

/* Protocol versions; also the bits of the <accept> mask of
 * proxyproto_parse (a listener's `proxy_protocol: v1 | v2 | any`). */
enum proxyproto_version {
    PROXYPROTO_V1 = 1u << 0, /* the text line, section 2.1 */
    PROXYPROTO_V2 = 1u << 1, /* the binary header, section 2.2 */
};
#define PROXYPROTO_ANY (PROXYPROTO_V1 | PROXYPROTO_V2)

/* What the header says about the connection (section 2.2, the command). */
enum proxyproto_command {
    /* The connection is the sender's own (a balancer's health check):
     * keep the connection's addresses. A v2 LOCAL, and a v1 "UNKNOWN". */
    PROXYPROTO_CMD_LOCAL = 0,
    /* Relayed for a client: the header carries its addresses, unless the
     * family is one usher does not take (then result.family is AF_UNSPEC). */
    PROXYPROTO_CMD_PROXY = 1,
};

/* Section 2.1: the longest v1 line, CRLF included, is "PROXY UNKNOWN" with
 * two full IPv6 addresses and ports: 107 bytes. No CRLF within it: an error. */
#define PROXYPROTO_V1_MAX_LEN 107

/* The v2 fixed part: 12-byte signature, version/command, family/protocol,
 * 16-bit length (section 2.2). */
#define PROXYPROTO_V2_HEADER_LEN 16

/* The longest v2 header usher takes, TLVs included (the length field allows
 * 16 + 65535). The addresses fit in 536 bytes by design (section 2, one
 * minimal TCP segment); TLVs (ALPN, authority, SSL with its sub-TLVs, a
 * cloud balancer's endpoint id) add some hundreds at most. 4 KB is ample and
 * keeps the header inside the first read of a client connection (its input
 * buffer is 16 KB) with room for the request behind it. */
#define PROXYPROTO_MAX_LEN 4096

/* Room that is always enough for what proxyproto_write_v1 or
 * proxyproto_write_v2 write: the v1 TCP6 line is at most 104 bytes
 * (section 2.1), the v2 TCP6 header 16 + 36. */
#define PROXYPROTO_WRITE_MAX 108

/* A parsed header. On PROXYPROTO_ERROR only <reason> is meaningful. */
struct proxyproto_result {
    size_t len;                      /* header bytes: the stream's own data starts at buf + len */
    enum proxyproto_version version; /* PROXYPROTO_V1 or PROXYPROTO_V2 */
    enum proxyproto_command command; /* LOCAL (v2 LOCAL, v1 UNKNOWN) or PROXY */
    /* AF_INET or AF_INET6: <src> (the client) and <dst> (the address it
     * connected to) replace the connection's addresses. AF_UNSPEC: keep the
     * connection's own. It is AF_UNSPEC for LOCAL and v1 UNKNOWN, and for a
     * v2 PROXY whose family is UNSPEC or AF_UNIX or whose protocol is not
     * STREAM (UDP, UNSPEC): the specification lets a receiver fall back to
     * the real endpoints for what it does not support (section 2.2), and a
     * TCP connection has no use for a path or a datagram address. */
    int family;
    struct sockaddr_storage src; /* sockaddr_in or sockaddr_in6, port included */
    struct sockaddr_storage dst;
    /* On PROXYPROTO_ERROR, a static string fit for a metric label:
     *   bad_signature  neither "PROXY " nor the v2 signature
     *   bad_version    a v2 version other than 2, or a version <accept> leaves out
     *   bad_command    a v2 command other than LOCAL and PROXY
     *   bad_family     an unknown v2 family or protocol, a v1 protocol other
     *                  than TCP4, TCP6 and UNKNOWN
     *   bad_syntax     a v1 line off the grammar: not single spaces, a field
     *                  missing or extra, a byte that is not printable ASCII,
     *                  a CR without LF or an LF without CR
     *   bad_address    a v1 address or port that is not canonical for its
     *                  family (leading zeros, out of range, not parsable)
     *   too_long       no CRLF in the first 107 bytes (v1), or a v2 header
     *                  longer than PROXYPROTO_MAX_LEN
     *   truncated      a v2 length too short for the address block of its family
     *   bad_tlv        a v2 TLV that overruns the header */
    const char *reason;
};

#endif
