/* HAProxy's PROXY protocol, doc/proxy-protocol.txt (section numbers are
 * the specification's).
 *
 * Like the http1 parser, proxyproto_parse keeps no state between calls: it
 * reads the bytes it is given from the start, and every check depends only
 * on the bytes before the point where it fails. Feeding a header in pieces
 * gives exactly the result of feeding it whole, and a prefix of a bad
 * header waits or fails for the same reason. Only the v1 line and the
 * first PROXYPROTO_MAX_LEN bytes are ever read. */
#include "proxyproto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Section 2.2: the 12 bytes every v2 header starts with. */
static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
#define V2_SIG_LEN sizeof(v2_sig)

/* Section 2.2, the 13th byte: version in the high nibble (must be 2),
 * command in the low one. */
#define V2_VERSION 0x2
#define V2_CMD_LOCAL 0x0
#define V2_CMD_PROXY 0x1

/* Section 2.2, the 14th byte: address family (high nibble) and transport
 * protocol (low nibble); anything above these is invalid. */
#define V2_FAM_UNSPEC 0x0
#define V2_FAM_INET 0x1
#define V2_FAM_INET6 0x2
#define V2_FAM_UNIX 0x3
#define V2_PROTO_UNSPEC 0x0
#define V2_PROTO_STREAM 0x1
#define V2_PROTO_DGRAM 0x2

/* Section 2.2: the address block of each family, ports included. */
#define V2_ADDR_INET_LEN (2 * 4 + 2 * 2)
#define V2_ADDR_INET6_LEN (2 * 16 + 2 * 2)
#define V2_ADDR_UNIX_LEN (2 * 108)

/* Section 2.2: a TLV is a type byte and a 16-bit big-endian length. */
#define V2_TLV_HEAD_LEN 3

/* Section 2.1. */
static const char v1_sig[] = "PROXY ";
#define V1_SIG_LEN (sizeof(v1_sig) - 1)
#define V1_IPV4_MAX 15       /* "255.255.255.255" */
#define V1_PORT_DIGITS_MAX 5 /* "65535" */
#define V1_PORT_MAX 65535

/* The reasons of struct proxyproto_result, one static string each. */
static const char R_SIGNATURE[] = "bad_signature";
static const char R_VERSION[] = "bad_version";
static const char R_COMMAND[] = "bad_command";
static const char R_FAMILY[] = "bad_family";
static const char R_SYNTAX[] = "bad_syntax";
static const char R_ADDRESS[] = "bad_address";
static const char R_TOO_LONG[] = "too_long";
static const char R_TRUNCATED[] = "truncated";
static const char R_TLV[] = "bad_tlv";

static int fail(struct proxyproto_result *out, const char *reason)
{
    out->reason = reason;
    return PROXYPROTO_ERROR;
}

static void set_inet(struct sockaddr_storage *ss, const uint8_t addr[4], uint16_t port)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    memset(ss, 0, sizeof(*ss));
    sin->sin_family = AF_INET;
    memcpy(&sin->sin_addr, addr, 4);
    sin->sin_port = htons(port);
}

static void set_inet6(struct sockaddr_storage *ss, const uint8_t addr[16], uint16_t port)
{
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    sin6->sin6_family = AF_INET6;
    memcpy(&sin6->sin6_addr, addr, 16);
    sin6->sin6_port = htons(port);
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* ---- version 2 ------------------------------------------------------------ */

/* Bytes of the address block of family/protocol byte <fp> when usher knows
 * where it ends (so the TLVs after it can be checked), 0 when it does not
 * (UNSPEC family or protocol: the whole rest is opaque). */
static size_t v2_addr_len(uint8_t fp)
{
    unsigned fam = fp >> 4, proto = fp & 0x0f;
    if (proto == V2_PROTO_UNSPEC)
        return 0;
    switch (fam) {
    case V2_FAM_INET:
        return V2_ADDR_INET_LEN;
    case V2_FAM_INET6:
        return V2_ADDR_INET6_LEN;
    case V2_FAM_UNIX:
        return V2_ADDR_UNIX_LEN;
    default:
        return 0;
    }
}

static int parse_v2(const uint8_t *buf, size_t len, struct proxyproto_result *out)
{
    size_t n = len < V2_SIG_LEN ? len : V2_SIG_LEN;
    if (memcmp(buf, v2_sig, n) != 0)
        return fail(out, R_SIGNATURE);
    if (len <= V2_SIG_LEN)
        return PROXYPROTO_AGAIN;

    uint8_t ver_cmd = buf[12];
    if (ver_cmd >> 4 != V2_VERSION)
        return fail(out, R_VERSION);
    uint8_t cmd = ver_cmd & 0x0f;
    if (cmd != V2_CMD_LOCAL && cmd != V2_CMD_PROXY)
        return fail(out, R_COMMAND);
    if (len < 14)
        return PROXYPROTO_AGAIN;

    /* Section 2.2: for LOCAL "the family [...] is ignored" */
    uint8_t fp = buf[13];
    if (cmd == V2_CMD_PROXY && ((fp >> 4) > V2_FAM_UNIX || (fp & 0x0f) > V2_PROTO_DGRAM))
        return fail(out, R_FAMILY);
    if (len < PROXYPROTO_V2_HEADER_LEN)
        return PROXYPROTO_AGAIN;

    size_t body = be16(buf + 14);
    size_t total = PROXYPROTO_V2_HEADER_LEN + body;
    if (total > PROXYPROTO_MAX_LEN)
        return fail(out, R_TOO_LONG);
    size_t addr_len = cmd == V2_CMD_PROXY ? v2_addr_len(fp) : 0;
    if (body < addr_len)
        return fail(out, R_TRUNCATED);
    if (len < total)
        return PROXYPROTO_AGAIN;

    /* TLVs are skipped, but each must end inside the header (section 2.2:
     * "the receiver knows how many address bytes to skip"; a TLV running
     * past it is a broken sender). CRC32C is not verified: a receiver may
     * ignore it (section 2.2.3, "if [...] supported by the receiver"). */
    if (addr_len) {
        size_t p = PROXYPROTO_V2_HEADER_LEN + addr_len;
        while (p < total) {
            if (total - p < V2_TLV_HEAD_LEN)
                return fail(out, R_TLV);
            size_t vlen = be16(buf + p + 1);
            if (vlen > total - p - V2_TLV_HEAD_LEN)
                return fail(out, R_TLV);
            p += V2_TLV_HEAD_LEN + vlen;
        }
    }

    const uint8_t *a = buf + PROXYPROTO_V2_HEADER_LEN;
    out->len = total;
    out->version = PROXYPROTO_V2;
    out->command = cmd == V2_CMD_PROXY ? PROXYPROTO_CMD_PROXY : PROXYPROTO_CMD_LOCAL;
    out->family = AF_UNSPEC;
    if (cmd != V2_CMD_PROXY || (fp & 0x0f) != V2_PROTO_STREAM)
        return PROXYPROTO_OK;
    if (fp >> 4 == V2_FAM_INET) {
        out->family = AF_INET;
        set_inet(&out->src, a, be16(a + 8));
        set_inet(&out->dst, a + 4, be16(a + 10));
    } else if (fp >> 4 == V2_FAM_INET6) {
        out->family = AF_INET6;
        set_inet6(&out->src, a, be16(a + 32));
        set_inet6(&out->dst, a + 16, be16(a + 34));
    }
    return PROXYPROTO_OK;
}

/* ---- version 1 ------------------------------------------------------------ */

/* A v1 field: a view into the line. */
struct field {
    const char *p;
    size_t len;
};

static bool field_is(struct field f, const char *lit)
{
    return f.len == strlen(lit) && memcmp(f.p, lit, f.len) == 0;
}

/* Section 2.1: "exactly 4 integers in the range [0..255] [...] separated by
 * exactly one dot", no leading zeros. Parsed here rather than by
 * inet_pton, whose leniency differs between C libraries. */
static bool parse_ipv4(struct field f, uint8_t addr[4])
{
    size_t i = 0;
    if (f.len > V1_IPV4_MAX)
        return false;
    for (int octet = 0; octet < 4; octet++) {
        if (octet > 0) {
            if (i >= f.len || f.p[i] != '.')
                return false;
            i++;
        }
        size_t start = i;
        unsigned v = 0;
        while (i < f.len && f.p[i] >= '0' && f.p[i] <= '9' && i - start < 3)
            v = v * 10 + (unsigned)(f.p[i++] - '0');
        size_t digits = i - start;
        if (digits == 0 || v > 255 || (digits > 1 && f.p[start] == '0'))
            return false;
        addr[octet] = (uint8_t)v;
    }
    return i == f.len;
}

/* Section 2.1: hexadecimal groups with at most one "::", 128 bits. The
 * line is at most 107 bytes, so the field fits the buffer inet_pton needs
 * or is too long to be an address. */
static bool parse_ipv6(struct field f, uint8_t addr[16])
{
    char tmp[INET6_ADDRSTRLEN];
    if (f.len >= sizeof(tmp))
        return false;
    memcpy(tmp, f.p, f.len);
    tmp[f.len] = '\0';
    return inet_pton(AF_INET6, tmp, addr) == 1;
}

/* Section 2.1: a decimal in [0..65535] without leading zeros. */
static bool parse_port(struct field f, uint16_t *port)
{
    unsigned v = 0;
    if (f.len == 0 || f.len > V1_PORT_DIGITS_MAX || (f.len > 1 && f.p[0] == '0'))
        return false;
    for (size_t i = 0; i < f.len; i++) {
        if (f.p[i] < '0' || f.p[i] > '9')
            return false;
        v = v * 10 + (unsigned)(f.p[i] - '0');
    }
    if (v > V1_PORT_MAX)
        return false;
    *port = (uint16_t)v;
    return true;
}

/* Splits [p, end) at single spaces into at most <max> non-empty fields.
 * Returns how many, or -1 on an empty field (two spaces, a space at either
 * end) or more than <max>. */
static int split_fields(const char *p, const char *end, struct field *f, int max)
{
    int n = 0;
    while (p < end) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *stop = sp ? sp : end;
        if (stop == p || n == max)
            return -1;
        f[n].p = p;
        f[n].len = (size_t)(stop - p);
        n++;
        if (!sp)
            break;
        p = sp + 1;
        if (p == end)
            return -1; /* a space before the CRLF */
    }
    return n;
}

/* The complete line <line>[0..<eol>) (CRLF at eol), "PROXY " already seen. */
static int parse_v1_line(const char *line, size_t eol, struct proxyproto_result *out)
{
    const char *p = line + V1_SIG_LEN, *end = line + eol;
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    struct field proto = {p, (size_t)((sp ? sp : end) - p)};

    out->len = eol + 2;
    out->version = PROXYPROTO_V1;
    /* Section 2.1: after UNKNOWN "the receiver must ignore anything
     * presented before the CRLF" */
    if (field_is(proto, "UNKNOWN")) {
        out->command = PROXYPROTO_CMD_LOCAL;
        out->family = AF_UNSPEC;
        return PROXYPROTO_OK;
    }
    int family;
    if (field_is(proto, "TCP4"))
        family = AF_INET;
    else if (field_is(proto, "TCP6"))
        family = AF_INET6;
    else if (proto.len == 0)
        return fail(out, R_SYNTAX);
    else
        return fail(out, R_FAMILY);
    if (!sp)
        return fail(out, R_SYNTAX);

    struct field f[4];
    if (split_fields(sp + 1, end, f, 4) != 4)
        return fail(out, R_SYNTAX);

    uint16_t sport, dport;
    if (!parse_port(f[2], &sport) || !parse_port(f[3], &dport))
        return fail(out, R_ADDRESS);
    if (family == AF_INET) {
        uint8_t s[4], d[4];
        if (!parse_ipv4(f[0], s) || !parse_ipv4(f[1], d))
            return fail(out, R_ADDRESS);
        set_inet(&out->src, s, sport);
        set_inet(&out->dst, d, dport);
    } else {
        uint8_t s[16], d[16];
        if (!parse_ipv6(f[0], s) || !parse_ipv6(f[1], d))
            return fail(out, R_ADDRESS);
        set_inet6(&out->src, s, sport);
        set_inet6(&out->dst, d, dport);
    }
    out->command = PROXYPROTO_CMD_PROXY;
    out->family = family;
    return PROXYPROTO_OK;
}

static int parse_v1(const uint8_t *buf, size_t len, struct proxyproto_result *out)
{
    size_t n = len < V1_SIG_LEN ? len : V1_SIG_LEN;
    if (memcmp(buf, v1_sig, n) != 0)
        return fail(out, R_SIGNATURE);

    /* Section 2.1: wait for the CRLF before decoding the addresses, within
     * the first 107 bytes; "a single CR or LF" never ends the line. Only
     * printable ASCII may come before it. */
    size_t lim = len < PROXYPROTO_V1_MAX_LEN ? len : PROXYPROTO_V1_MAX_LEN;
    for (size_t i = n; i < lim; i++) {
        uint8_t c = buf[i];
        if (c == '\r') {
            if (i + 1 >= PROXYPROTO_V1_MAX_LEN)
                return fail(out, R_TOO_LONG);
            if (i + 1 >= len)
                return PROXYPROTO_AGAIN;
            if (buf[i + 1] != '\n')
                return fail(out, R_SYNTAX);
            return parse_v1_line((const char *)buf, i, out);
        }
        if (c < 0x20 || c > 0x7e)
            return fail(out, R_SYNTAX);
    }
    if (len >= PROXYPROTO_V1_MAX_LEN)
        return fail(out, R_TOO_LONG);
    return PROXYPROTO_AGAIN;
}

int proxyproto_parse(const uint8_t *buf, size_t len, unsigned accept, struct proxyproto_result *out)
{
    out->reason = NULL;
    if (len == 0)
        return PROXYPROTO_AGAIN;
    /* Section 2.2 ("Identifying the protocol version"): the first byte tells
     * the two apart, CR for v2, 'P' for v1. */
    int r;
    if (buf[0] == v2_sig[0]) {
        if (!(accept & PROXYPROTO_V2))
            return fail(out, R_VERSION);
        r = parse_v2(buf, len, out);
    } else if (buf[0] == (uint8_t)v1_sig[0]) {
        if (!(accept & PROXYPROTO_V1))
            return fail(out, R_VERSION);
        r = parse_v1(buf, len, out);
    } else {
        return fail(out, R_SIGNATURE);
    }
    /* no stale address for a caller that looks without checking family */
    if (r == PROXYPROTO_OK && out->family == AF_UNSPEC) {
        memset(&out->src, 0, sizeof(out->src));
        memset(&out->dst, 0, sizeof(out->dst));
    }
    return r;
}

/* ---- writers -------------------------------------------------------------- */

/* The two addresses of a header, in one family. */
struct pair {
    int family;
    uint8_t src[16], dst[16]; /* 4 bytes used for AF_INET */
    uint16_t sport, dport;    /* host order */
};

static bool is_v4_mapped(const uint8_t a[16])
{
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(a, prefix, sizeof(prefix)) == 0;
}

/* One side as 16 bytes of IPv6 (IPv4 mapped) and its port. */
static int to_v6(const struct sockaddr *sa, uint8_t a[16], uint16_t *port)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        memset(a, 0, 10);
        a[10] = a[11] = 0xff;
        memcpy(a + 12, &sin->sin_addr, 4);
        *port = ntohs(sin->sin_port);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        memcpy(a, &sin6->sin6_addr, 16);
        *port = ntohs(sin6->sin6_port);
        return 0;
    }
    return -EAFNOSUPPORT;
}

/* Puts both sides in one family: IPv4 when both are IPv4 (plain or
 * v4-mapped, as a dual-stack listener sees IPv4 clients), IPv6 otherwise. */
static int make_pair(const struct sockaddr *src, const struct sockaddr *dst, struct pair *pr)
{
    if (to_v6(src, pr->src, &pr->sport) < 0 || to_v6(dst, pr->dst, &pr->dport) < 0)
        return -EAFNOSUPPORT;
    if (is_v4_mapped(pr->src) && is_v4_mapped(pr->dst)) {
        pr->family = AF_INET;
        memmove(pr->src, pr->src + 12, 4);
        memmove(pr->dst, pr->dst + 12, 4);
    } else {
        pr->family = AF_INET6;
    }
    return 0;
}

int proxyproto_write_v1(char *out, size_t cap, const struct sockaddr *src,
                        const struct sockaddr *dst)
{
    static const char unknown[] = "PROXY UNKNOWN\r\n";
    char line[PROXYPROTO_WRITE_MAX];
    int n;

    if (!src || !dst) {
        n = (int)(sizeof(unknown) - 1);
        memcpy(line, unknown, (size_t)n);
    } else {
        struct pair pr;
        char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
        if (make_pair(src, dst, &pr) < 0)
            return -EAFNOSUPPORT;
        if (!inet_ntop(pr.family, pr.src, s, sizeof(s)) ||
            !inet_ntop(pr.family, pr.dst, d, sizeof(d)))
            return -EAFNOSUPPORT;
        n = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n",
                     pr.family == AF_INET ? "TCP4" : "TCP6", s, d, pr.sport, pr.dport);
        if (n < 0 || (size_t)n >= sizeof(line))
            return -EAFNOSUPPORT; /* cannot happen: 104 bytes at most */
    }
    if ((size_t)n > cap)
        return -ENOSPC;
    memcpy(out, line, (size_t)n);
    return n;
}

int proxyproto_write_v2(uint8_t *out, size_t cap, const struct sockaddr *src,
                        const struct sockaddr *dst)
{
    uint8_t hdr[PROXYPROTO_WRITE_MAX];
    size_t alen = 0;

    memcpy(hdr, v2_sig, V2_SIG_LEN);
    if (!src || !dst) {
        /* Section 2.2: LOCAL "should not present any address", family UNSPEC */
        hdr[12] = V2_VERSION << 4 | V2_CMD_LOCAL;
        hdr[13] = V2_FAM_UNSPEC << 4 | V2_PROTO_UNSPEC;
    } else {
        struct pair pr;
        if (make_pair(src, dst, &pr) < 0)
            return -EAFNOSUPPORT;
        size_t a = pr.family == AF_INET ? 4 : 16;
        uint8_t *p = hdr + PROXYPROTO_V2_HEADER_LEN;
        hdr[12] = V2_VERSION << 4 | V2_CMD_PROXY;
        hdr[13] = (pr.family == AF_INET ? V2_FAM_INET : V2_FAM_INET6) << 4 | V2_PROTO_STREAM;
        memcpy(p, pr.src, a);
        memcpy(p + a, pr.dst, a);
        p[2 * a] = (uint8_t)(pr.sport >> 8);
        p[2 * a + 1] = (uint8_t)pr.sport;
        p[2 * a + 2] = (uint8_t)(pr.dport >> 8);
        p[2 * a + 3] = (uint8_t)pr.dport;
        alen = 2 * a + 4;
    }
    hdr[14] = (uint8_t)(alen >> 8);
    hdr[15] = (uint8_t)alen;
    size_t n = PROXYPROTO_V2_HEADER_LEN + alen;
    if (n > cap)
        return -ENOSPC;
    memcpy(out, hdr, n);
    return (int)n;
}
