// links: usher_parser
/* Unit tests of parser/proxyproto.c: every valid form of both versions,
 * every rejection with its reason, each input fed one byte more at a time
 * and ending at a guard page (AGAIN until complete, then the same result),
 * the accept mask, and round trips through the writers. */
#include "parser/proxyproto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <unistd.h>

#include "test/unit/check.h"

/* ---- guard page: the input's last byte is the last readable byte -------- */

static long page_size;

/* Copies <len> bytes to the end of a fresh mapping followed by a PROT_NONE
 * page; *<map>/<maplen> to unmap it afterwards. */
static uint8_t *guarded_copy(const uint8_t *s, size_t len, uint8_t **map, size_t *maplen)
{
    size_t pages = (len + (size_t)page_size - 1) / (size_t)page_size + 1;
    uint8_t *m = mmap(NULL, (pages + 1) * (size_t)page_size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    if (mprotect(m + pages * (size_t)page_size, (size_t)page_size, PROT_NONE)) {
        perror("mprotect");
        exit(2);
    }
    uint8_t *dst = m + pages * (size_t)page_size - len;
    memcpy(dst, s, len);
    *map = m;
    *maplen = (pages + 1) * (size_t)page_size;
    return dst;
}

static bool same_result(int ra, const struct proxyproto_result *a, int rb,
                        const struct proxyproto_result *b)
{
    if (ra != rb)
        return false;
    if (ra == PROXYPROTO_ERROR)
        return a->reason == b->reason;
    if (ra == PROXYPROTO_AGAIN)
        return true;
    return a->len == b->len && a->version == b->version && a->command == b->command &&
           a->family == b->family && memcmp(&a->src, &b->src, sizeof(a->src)) == 0 &&
           memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0;
}

/* Parses <s>[0..<len>) whole, then every prefix both in place and ending at
 * a guard page: a prefix shorter than a complete header says AGAIN, a
 * prefix of a bad one AGAIN or the same error, a longer one exactly what
 * the whole input said. */
static int parse_all(const uint8_t *s, size_t len, unsigned accept, struct proxyproto_result *res)
{
    struct proxyproto_result pre;
    uint8_t *map;
    size_t maplen;

    int r = proxyproto_parse(s, len, accept, res);
    CHECK(r == PROXYPROTO_OK || r == PROXYPROTO_ERROR || r == PROXYPROTO_AGAIN);
    if (r == PROXYPROTO_OK)
        CHECK(res->len <= len && res->reason == NULL);
    if (r == PROXYPROTO_ERROR)
        CHECK(res->reason != NULL);

    for (size_t k = 0; k <= len; k++) {
        memset(&pre, 0xa5, sizeof(pre));
        uint8_t *g = guarded_copy(s, k, &map, &maplen);
        int rp = proxyproto_parse(g, k, accept, &pre);
        munmap(map, maplen);
        bool complete = r == PROXYPROTO_OK && k >= res->len;
        if (complete || (r == PROXYPROTO_ERROR && rp != PROXYPROTO_AGAIN)) {
            if (!same_result(rp, &pre, r, res))
                check_fail(__FILE__, __LINE__, NULL,
                           "prefix %zu: %d (%s) differs from the whole input's %d (%s)", k, rp,
                           rp == PROXYPROTO_ERROR ? pre.reason : "", r,
                           r == PROXYPROTO_ERROR ? res->reason : "");
        } else if (rp != PROXYPROTO_AGAIN) {
            check_fail(__FILE__, __LINE__, NULL, "prefix %zu: %d (%s), expected AGAIN", k, rp,
                       rp == PROXYPROTO_ERROR ? pre.reason : "");
        }
    }
    return r;
}

static void expect_error(int line, const char *name, const uint8_t *s, size_t len, unsigned accept,
                         const char *reason)
{
    struct proxyproto_result res;
    check_context = name;
    int r = parse_all(s, len, accept, &res);
    if (r != PROXYPROTO_ERROR)
        check_fail(__FILE__, line, NULL, "expected error %s, got %d", reason, r);
    else if (strcmp(res.reason, reason) != 0)
        check_fail(__FILE__, line, NULL, "expected %s, got %s", reason, res.reason);
    check_context = NULL;
}

static void expect_again(int line, const char *name, const uint8_t *s, size_t len, unsigned accept)
{
    struct proxyproto_result res;
    check_context = name;
    int r = parse_all(s, len, accept, &res);
    if (r != PROXYPROTO_AGAIN)
        check_fail(__FILE__, line, NULL, "expected AGAIN, got %d (%s)", r,
                   r == PROXYPROTO_ERROR ? res.reason : "");
    check_context = NULL;
}

/* Parses a valid header followed by <tail> bytes of the connection's own. */
static void expect_ok(int line, const char *name, const uint8_t *s, size_t len, unsigned accept,
                      size_t hdr_len, struct proxyproto_result *res)
{
    check_context = name;
    int r = parse_all(s, len, accept, res);
    if (r != PROXYPROTO_OK)
        check_fail(__FILE__, line, NULL, "expected OK, got %d (%s)", r,
                   r == PROXYPROTO_ERROR ? res->reason : "");
    else if (res->len != hdr_len)
        check_fail(__FILE__, line, NULL, "header length %zu, expected %zu", res->len, hdr_len);
}

#define V1_ERR(lit, reason)                                                                        \
    expect_error(__LINE__, lit, (const uint8_t *)(lit), sizeof(lit) - 1, PROXYPROTO_ANY, reason)
#define V1_AGAIN(lit)                                                                              \
    expect_again(__LINE__, lit, (const uint8_t *)(lit), sizeof(lit) - 1, PROXYPROTO_ANY)

/* Checks that <ss> is <family> <addr>:<port>. */
static void check_addr(int line, const struct sockaddr_storage *ss, int family, const char *addr,
                       unsigned port)
{
    char text[INET6_ADDRSTRLEN] = "";
    unsigned got_port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text));
        got_port = ntohs(sin->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text));
        got_port = ntohs(sin6->sin6_port);
    }
    if (ss->ss_family != family || strcmp(text, addr) != 0 || got_port != port)
        check_fail(__FILE__, line, NULL, "address %d %s port %u, expected %d %s port %u",
                   ss->ss_family, text, got_port, family, addr, port);
}

#define CHECK_ADDR(ss, fam, a, p) check_addr(__LINE__, ss, fam, a, p)

/* ---- version 1 ------------------------------------------------------------ */

static void v1_ok(int line, const char *hdr, const char *tail, unsigned accept,
                  struct proxyproto_result *res)
{
    char buf[512];
    size_t h = strlen(hdr), t = strlen(tail);
    memcpy(buf, hdr, h);
    memcpy(buf + h, tail, t);
    expect_ok(line, hdr, (const uint8_t *)buf, h + t, accept, h, res);
}

static void test_v1_valid(void)
{
    struct proxyproto_result res;

    /* the specification's example, with the request behind it */
    v1_ok(__LINE__, "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
          "GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n", PROXYPROTO_ANY, &res);
    CHECK_INT(res.version, PROXYPROTO_V1);
    CHECK_INT(res.command, PROXYPROTO_CMD_PROXY);
    CHECK_INT(res.family, AF_INET);
    CHECK_ADDR(&res.src, AF_INET, "192.168.0.1", 56324);
    CHECK_ADDR(&res.dst, AF_INET, "192.168.0.11", 443);

    /* the longest TCP4 line (56 bytes) and the smallest values */
    v1_ok(__LINE__, "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", "", PROXYPROTO_V1,
          &res);
    CHECK_UINT(res.len, 56);
    CHECK_ADDR(&res.src, AF_INET, "255.255.255.255", 65535);
    v1_ok(__LINE__, "PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n", "x", PROXYPROTO_V1, &res);
    CHECK_ADDR(&res.src, AF_INET, "0.0.0.0", 0);
    CHECK_ADDR(&res.dst, AF_INET, "0.0.0.0", 0);
    v1_ok(__LINE__, "PROXY TCP4 10.0.0.1 10.20.100.200 1 10\r\n", "", PROXYPROTO_V1, &res);
    CHECK_ADDR(&res.dst, AF_INET, "10.20.100.200", 10);

    v1_ok(__LINE__, "PROXY TCP6 2001:db8::1 ::1 5555 443\r\n", "GET", PROXYPROTO_ANY, &res);
    CHECK_INT(res.family, AF_INET6);
    CHECK_INT(res.command, PROXYPROTO_CMD_PROXY);
    CHECK_ADDR(&res.src, AF_INET6, "2001:db8::1", 5555);
    CHECK_ADDR(&res.dst, AF_INET6, "::1", 443);

    /* the longest TCP6 line: 104 bytes; upper-case hex is allowed */
    v1_ok(__LINE__,
          "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
          "FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF 65535 65535\r\n",
          "", PROXYPROTO_ANY, &res);
    CHECK_UINT(res.len, 104);
    CHECK_ADDR(&res.dst, AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
    v1_ok(__LINE__, "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1 2\r\n", "", PROXYPROTO_ANY,
          &res);
    CHECK_ADDR(&res.src, AF_INET6, "::ffff:192.0.2.1", 1);

    /* UNKNOWN: the connection's own addresses; anything before the CRLF is
     * ignored (section 2.1), up to the 107-byte worst case */
    v1_ok(__LINE__, "PROXY UNKNOWN\r\n", "GET / HTTP/1.1\r\n", PROXYPROTO_ANY, &res);
    CHECK_UINT(res.len, 15);
    CHECK_INT(res.command, PROXYPROTO_CMD_LOCAL);
    CHECK_INT(res.family, AF_UNSPEC);
    CHECK_INT(res.src.ss_family, AF_UNSPEC);
    v1_ok(__LINE__, "PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n", "", PROXYPROTO_ANY, &res);
    CHECK_INT(res.family, AF_UNSPEC);
    v1_ok(__LINE__, "PROXY UNKNOWN whatever the sender puts here\r\n", "", PROXYPROTO_ANY, &res);
    CHECK_INT(res.command, PROXYPROTO_CMD_LOCAL);
    v1_ok(__LINE__,
          "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
          "", PROXYPROTO_ANY, &res);
    CHECK_UINT(res.len, PROXYPROTO_V1_MAX_LEN);
}

static void test_v1_errors(void)
{
    /* not the PROXY protocol at all: rejected at the first byte */
    V1_ERR("GET / HTTP/1.1\r\n\r\n", "bad_signature");
    V1_ERR("\x16\x03\x01\x02\x00", "bad_signature"); /* a TLS ClientHello */
    V1_ERR("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "bad_signature");
    V1_ERR("PROXX", "bad_signature");
    V1_ERR("PROXY\r\n", "bad_signature");
    V1_ERR("PROXYTCP4", "bad_signature");

    V1_ERR("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "bad_family");
    V1_ERR("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "bad_family");
    V1_ERR("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "bad_family");
    V1_ERR("PROXY UNKNOWNX\r\n", "bad_family");
    V1_ERR("PROXY UNIX /a /b\r\n", "bad_family");

    V1_ERR("PROXY \r\n", "bad_syntax");
    V1_ERR("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "bad_syntax");
    V1_ERR("PROXY TCP4\r\n", "bad_syntax");
    V1_ERR("PROXY TCP4 \r\n", "bad_syntax");
    V1_ERR("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "bad_syntax");
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "bad_syntax");
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "bad_syntax");
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "bad_syntax");
    V1_ERR("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "bad_syntax");
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bad_syntax");  /* bare LF */
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "bad_syntax"); /* CR without LF */
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "bad_syntax");
    V1_ERR("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", "bad_syntax");
    V1_ERR("PROXY UNKNOWN \xff\r\n", "bad_syntax");

    V1_ERR("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.1000 5.6.7.8 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.4. 5.6.7.8 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.-4 5.6.7.8 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP6 1::2::3 ::1 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP6 ::1%eth0 ::1 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP6 12345::1 ::1 1 2\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 00 1\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 -1 1\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 +1 1\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 1a 1\r\n", "bad_address");
    V1_ERR("PROXY TCP4 1.2.3.4 5.6.7.8 100000 1\r\n", "bad_address");

    /* no CRLF in the first 107 bytes; a CR as byte 107 leaves no room for LF */
    char line[200];
    memset(line, 'A', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    expect_error(__LINE__, "no CRLF in 107", (const uint8_t *)line, 107, PROXYPROTO_ANY,
                 "too_long");
    expect_error(__LINE__, "no CRLF in 200", (const uint8_t *)line, sizeof(line), PROXYPROTO_ANY,
                 "too_long");
    line[106] = '\r';
    line[107] = '\n';
    expect_error(__LINE__, "CRLF at 107", (const uint8_t *)line, 108, PROXYPROTO_ANY, "too_long");
    line[105] = '\r';
    line[106] = '\n';
    struct proxyproto_result res;
    expect_ok(__LINE__, "CRLF at 106", (const uint8_t *)line, 108, PROXYPROTO_ANY, 107, &res);

    /* valid so far: wait */
    V1_AGAIN("P");
    V1_AGAIN("PROXY");
    V1_AGAIN("PROXY TCP4 1.2.3.4 5.6.7.8 1 2");
    V1_AGAIN("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r");
    V1_AGAIN("PROXY TCP4 999.2.3.4"); /* the addresses are read once the line is whole */
}

/* ---- version 2 ------------------------------------------------------------ */

static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* Builds a v2 header with <ver_cmd>, <fam>, the length field <len_field>
 * and <blen> bytes of <body>, into <out>; returns its size. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, size_t len_field, const uint8_t *body,
                 size_t blen)
{
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(len_field >> 8);
    out[15] = (uint8_t)len_field;
    if (blen)
        memcpy(out + 16, body, blen);
    return 16 + blen;
}

#define V2_ERR(name, buf, n, reason) expect_error(__LINE__, name, buf, n, PROXYPROTO_ANY, reason)

/* 192.0.2.1:5555 -> 10.0.0.2:80 */
static const uint8_t tcp4_addrs[12] = {192, 0, 2, 1, 10, 0, 0, 2, 0x15, 0xb3, 0x00, 0x50};

static void test_v2_valid(void)
{
    uint8_t b[8192], body[8192];
    struct proxyproto_result res;
    size_t n;

    /* TCP over IPv4, with the connection's data behind it */
    n = v2(b, 0x21, 0x11, 12, tcp4_addrs, 12);
    memcpy(b + n, "GET / HTTP/1.1\r\n", 16);
    expect_ok(__LINE__, "v2 tcp4", b, n + 16, PROXYPROTO_ANY, 28, &res);
    CHECK_INT(res.version, PROXYPROTO_V2);
    CHECK_INT(res.command, PROXYPROTO_CMD_PROXY);
    CHECK_INT(res.family, AF_INET);
    CHECK_ADDR(&res.src, AF_INET, "192.0.2.1", 5555);
    CHECK_ADDR(&res.dst, AF_INET, "10.0.0.2", 80);
    expect_ok(__LINE__, "v2 tcp4, v2 only", b, n, PROXYPROTO_V2, 28, &res);

    /* TCP over IPv6 */
    memset(body, 0, 36);
    body[0] = 0x20, body[1] = 0x01, body[2] = 0x0d, body[3] = 0xb8, body[15] = 1;
    body[31] = 1;
    body[32] = 0x15, body[33] = 0xb3, body[34] = 0x01, body[35] = 0xbb;
    n = v2(b, 0x21, 0x21, 36, body, 36);
    expect_ok(__LINE__, "v2 tcp6", b, n, PROXYPROTO_ANY, 52, &res);
    CHECK_INT(res.family, AF_INET6);
    CHECK_ADDR(&res.src, AF_INET6, "2001:db8::1", 5555);
    CHECK_ADDR(&res.dst, AF_INET6, "::1", 443);

    /* LOCAL: no address, or one that must be skipped; the family of a LOCAL
     * is ignored, even an invalid one (section 2.2) */
    n = v2(b, 0x20, 0x00, 0, NULL, 0);
    memcpy(b + n, "GET", 3);
    expect_ok(__LINE__, "v2 local", b, n + 3, PROXYPROTO_ANY, 16, &res);
    CHECK_INT(res.command, PROXYPROTO_CMD_LOCAL);
    CHECK_INT(res.family, AF_UNSPEC);
    CHECK_INT(res.src.ss_family, AF_UNSPEC);
    n = v2(b, 0x20, 0x11, 12, tcp4_addrs, 12);
    expect_ok(__LINE__, "v2 local with addresses", b, n, PROXYPROTO_ANY, 28, &res);
    CHECK_INT(res.command, PROXYPROTO_CMD_LOCAL);
    CHECK_INT(res.family, AF_UNSPEC);
    n = v2(b, 0x20, 0xff, 3, (const uint8_t *)"abc", 3);
    expect_ok(__LINE__, "v2 local, any family byte", b, n, PROXYPROTO_ANY, 19, &res);
    CHECK_INT(res.family, AF_UNSPEC);

    /* PROXY with families usher does not take: the connection's addresses */
    n = v2(b, 0x21, 0x00, 0, NULL, 0);
    expect_ok(__LINE__, "v2 proxy unspec", b, n, PROXYPROTO_ANY, 16, &res);
    CHECK_INT(res.command, PROXYPROTO_CMD_PROXY);
    CHECK_INT(res.family, AF_UNSPEC);
    n = v2(b, 0x21, 0x10, 5, (const uint8_t *)"\1\2\3\4\5", 5);
    expect_ok(__LINE__, "v2 inet, unspec protocol: opaque", b, n, PROXYPROTO_ANY, 21, &res);
    CHECK_INT(res.family, AF_UNSPEC);
    n = v2(b, 0x21, 0x12, 12, tcp4_addrs, 12);
    expect_ok(__LINE__, "v2 udp4", b, n, PROXYPROTO_ANY, 28, &res);
    CHECK_INT(res.family, AF_UNSPEC);
    memset(body, 0, 216);
    memcpy(body, "/tmp/a", 6);
    memcpy(body + 108, "/tmp/b", 6);
    n = v2(b, 0x21, 0x31, 216, body, 216);
    expect_ok(__LINE__, "v2 unix stream", b, n, PROXYPROTO_ANY, 232, &res);
    CHECK_INT(res.command, PROXYPROTO_CMD_PROXY);
    CHECK_INT(res.family, AF_UNSPEC);
    n = v2(b, 0x21, 0x32, 216, body, 216);
    expect_ok(__LINE__, "v2 unix dgram", b, n, PROXYPROTO_ANY, 232, &res);
    CHECK_INT(res.family, AF_UNSPEC);

    /* TLVs: ALPN "h2", authority, an SSL TLV with sub-TLVs, an empty NOOP */
    size_t bl = 0;
    memcpy(body, tcp4_addrs, 12), bl = 12;
    memcpy(body + bl, "\x01\x00\x02h2", 5), bl += 5;
    memcpy(body + bl,
           "\x02\x00\x0b"
           "example.com",
           14),
        bl += 14;
    memcpy(body + bl,
           "\x20\x00\x0a\x07\x00\x00\x00\x00"
           "\x21\x00\x02v3",
           13),
        bl += 13;
    memcpy(body + bl, "\x04\x00\x00", 3), bl += 3;
    n = v2(b, 0x21, 0x11, bl, body, bl);
    expect_ok(__LINE__, "v2 tlvs", b, n, PROXYPROTO_ANY, 16 + bl, &res);
    CHECK_INT(res.family, AF_INET);
    CHECK_ADDR(&res.src, AF_INET, "192.0.2.1", 5555);
    /* TLVs after an IPv6 and a UNIX block are checked too */
    memset(body, 0, 216);
    memcpy(body + 216, "\x05\x00\x01X", 4);
    n = v2(b, 0x21, 0x31, 220, body, 220);
    expect_ok(__LINE__, "v2 unix with a tlv", b, n, PROXYPROTO_ANY, 236, &res);

    /* the longest header usher takes: one big NOOP TLV */
    memcpy(body, tcp4_addrs, 12);
    size_t tlv = PROXYPROTO_MAX_LEN - 16 - 12 - 3;
    body[12] = 0x04, body[13] = (uint8_t)(tlv >> 8), body[14] = (uint8_t)tlv;
    memset(body + 15, 0, tlv);
    n = v2(b, 0x21, 0x11, 12 + 3 + tlv, body, 12 + 3 + tlv);
    CHECK_UINT(n, PROXYPROTO_MAX_LEN);
    expect_ok(__LINE__, "v2 at the length limit", b, n, PROXYPROTO_ANY, PROXYPROTO_MAX_LEN, &res);
}

static void test_v2_errors(void)
{
    uint8_t b[8192], body[8192];
    size_t n;

    /* a partial signature waits; a wrong byte of it fails */
    expect_again(__LINE__, "sig 1", sig, 1, PROXYPROTO_ANY);
    expect_again(__LINE__, "sig 7", sig, 7, PROXYPROTO_ANY);
    expect_again(__LINE__, "sig 12", sig, 12, PROXYPROTO_ANY);
    memcpy(b, sig, 12);
    b[7] = 'q';
    V2_ERR("sig byte 8", b, 12, "bad_signature");
    b[7] = 0x51;
    b[11] = 0;
    V2_ERR("sig byte 12", b, 12, "bad_signature");
    V2_ERR("CRLF then no sig", (const uint8_t *)"\r\n\r\nGET", 7, "bad_signature");

    n = v2(b, 0x11, 0x11, 12, tcp4_addrs, 12);
    V2_ERR("version 1", b, n, "bad_version");
    n = v2(b, 0x31, 0x11, 12, tcp4_addrs, 12);
    V2_ERR("version 3", b, n, "bad_version");
    n = v2(b, 0x01, 0x11, 12, tcp4_addrs, 12);
    V2_ERR("version 0", b, n, "bad_version");
    n = v2(b, 0x22, 0x11, 12, tcp4_addrs, 12);
    V2_ERR("command 2", b, n, "bad_command");
    n = v2(b, 0x2f, 0x11, 12, tcp4_addrs, 12);
    V2_ERR("command 15", b, n, "bad_command");
    n = v2(b, 0x21, 0x41, 12, tcp4_addrs, 12);
    V2_ERR("family 4", b, n, "bad_family");
    n = v2(b, 0x21, 0xf1, 12, tcp4_addrs, 12);
    V2_ERR("family 15", b, n, "bad_family");
    n = v2(b, 0x21, 0x13, 12, tcp4_addrs, 12);
    V2_ERR("protocol 3", b, n, "bad_family");

    /* the length decides, from the 16 fixed bytes alone */
    n = v2(b, 0x21, 0x11, 0xffff, tcp4_addrs, 12);
    V2_ERR("length 65535", b, n, "too_long");
    n = v2(b, 0x21, 0x11, PROXYPROTO_MAX_LEN - 15, tcp4_addrs, 12);
    V2_ERR("one past the limit", b, n, "too_long");
    n = v2(b, 0x21, 0x11, 4, tcp4_addrs, 4);
    V2_ERR("tcp4 length 4", b, n, "truncated");
    n = v2(b, 0x21, 0x11, 11, tcp4_addrs, 11);
    V2_ERR("tcp4 length 11", b, n, "truncated");
    n = v2(b, 0x21, 0x21, 12, tcp4_addrs, 12);
    V2_ERR("tcp6 length 12", b, n, "truncated");
    n = v2(b, 0x21, 0x12, 0, NULL, 0);
    V2_ERR("udp4 length 0", b, n, "truncated");
    memset(body, 0, 216);
    n = v2(b, 0x21, 0x31, 100, body, 100);
    V2_ERR("unix length 100", b, n, "truncated");

    /* TLVs that overrun the header, or a TLV head cut short */
    memcpy(body, tcp4_addrs, 12);
    memcpy(body + 12, "\x04\x01\x2cx", 4); /* says 300 bytes, 1 there */
    n = v2(b, 0x21, 0x11, 16, body, 16);
    V2_ERR("tlv overrun", b, n, "bad_tlv");
    memcpy(body + 12,
           "\x01\x00\x02h2\x02\x00\x04"
           "ab",
           10);
    n = v2(b, 0x21, 0x11, 22, body, 22);
    V2_ERR("second tlv overrun", b, n, "bad_tlv");
    memcpy(body + 12, "\x01\x00", 2);
    n = v2(b, 0x21, 0x11, 14, body, 14);
    V2_ERR("tlv head of 2 bytes", b, n, "bad_tlv");
    n = v2(b, 0x21, 0x11, 13, body, 13);
    V2_ERR("tlv head of 1 byte", b, n, "bad_tlv");

    /* complete so far: wait */
    n = v2(b, 0x21, 0x11, 12, tcp4_addrs, 12);
    expect_again(__LINE__, "v2 short of its length", b, n - 1, PROXYPROTO_ANY);
    n = v2(b, 0x21, 0x11, 1000, tcp4_addrs, 12);
    expect_again(__LINE__, "v2 with TLVs to come", b, n, PROXYPROTO_ANY);
}

/* ---- both --------------------------------------------------------------- */

static void test_accept_mask(void)
{
    uint8_t b[64];
    static const char v1[] = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
    size_t n = v2(b, 0x21, 0x11, 12, tcp4_addrs, 12);

    expect_error(__LINE__, "v2 on a v1 listener", b, n, PROXYPROTO_V1, "bad_version");
    expect_error(__LINE__, "v2 byte 1 on a v1 listener", b, 1, PROXYPROTO_V1, "bad_version");
    expect_error(__LINE__, "v1 on a v2 listener", (const uint8_t *)v1, sizeof(v1) - 1,
                 PROXYPROTO_V2, "bad_version");
    expect_error(__LINE__, "nothing accepted", (const uint8_t *)v1, sizeof(v1) - 1, 0,
                 "bad_version");
    expect_error(__LINE__, "junk on a v2 listener", (const uint8_t *)"GET", 3, PROXYPROTO_V2,
                 "bad_signature");

    struct proxyproto_result res;
    CHECK_INT(proxyproto_parse(b, 0, PROXYPROTO_ANY, &res), PROXYPROTO_AGAIN);
    expect_ok(__LINE__, "v1 on any", (const uint8_t *)v1, sizeof(v1) - 1, PROXYPROTO_ANY,
              sizeof(v1) - 1, &res);
    CHECK_INT(res.version, PROXYPROTO_V1);
    expect_ok(__LINE__, "v2 on any", b, n, PROXYPROTO_ANY, n, &res);
    CHECK_INT(res.version, PROXYPROTO_V2);
}

/* The 20 inputs of ../shared/fuzz/proxy-corpus, when it is there: each
 * parses to what its name says. */
static void test_shared_corpus(void)
{
    static const struct {
        const char *file;
        int r;
        const char *reason;
    } cases[] = {
        {"v1-bad-port", PROXYPROTO_ERROR, "bad_address"},
        {"v1-leading-zero", PROXYPROTO_ERROR, "bad_address"},
        {"v1-maxlen", PROXYPROTO_OK, NULL},
        {"v1-no-crlf", PROXYPROTO_ERROR, "bad_syntax"},
        {"v1-tcp4", PROXYPROTO_OK, NULL},
        {"v1-tcp6", PROXYPROTO_OK, NULL},
        {"v1-unknown", PROXYPROTO_OK, NULL},
        {"v1-unknown-addrs", PROXYPROTO_OK, NULL},
        {"v2-bad-command", PROXYPROTO_ERROR, "bad_command"},
        {"v2-bad-version", PROXYPROTO_ERROR, "bad_version"},
        {"v2-len-huge", PROXYPROTO_ERROR, "too_long"},
        {"v2-len-too-short", PROXYPROTO_ERROR, "truncated"},
        {"v2-local", PROXYPROTO_OK, NULL},
        {"v2-sig-partial", PROXYPROTO_AGAIN, NULL},
        {"v2-tcp4", PROXYPROTO_OK, NULL},
        {"v2-tcp6", PROXYPROTO_OK, NULL},
        {"v2-tlv-alpn-authority", PROXYPROTO_OK, NULL},
        {"v2-tlv-overrun", PROXYPROTO_ERROR, "bad_tlv"},
        /* its SSL TLV says 12 bytes of value and carries 10 (client 1,
         * verify 4, a 5-byte version sub-TLV) before the header ends */
        {"v2-tlv-ssl", PROXYPROTO_ERROR, "bad_tlv"},
        {"v2-unix", PROXYPROTO_OK, NULL},
    };
    char path[256];
    uint8_t buf[8192];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(path, sizeof(path), "../shared/fuzz/proxy-corpus/%s", cases[i].file);
        FILE *f = fopen(path, "rb");
        if (!f) {
            if (i == 0)
                printf("test_proxyproto: %s absent, shared corpus not checked\n", path);
            return;
        }
        size_t n = fread(buf, 1, sizeof(buf), f);
        fclose(f);
        struct proxyproto_result res;
        check_context = cases[i].file;
        int r = parse_all(buf, n, PROXYPROTO_ANY, &res);
        CHECK_INT(r, cases[i].r);
        if (r == PROXYPROTO_ERROR && cases[i].reason)
            CHECK_STR(res.reason, cases[i].reason);
    }
    check_context = NULL;
}

/* ---- writers ------------------------------------------------------------ */

static struct sockaddr_storage sa4(const char *a, unsigned port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    memset(&ss, 0, sizeof(ss));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    CHECK(inet_pton(AF_INET, a, &sin->sin_addr) == 1);
    return ss;
}

static struct sockaddr_storage sa6(const char *a, unsigned port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    memset(&ss, 0, sizeof(ss));
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)port);
    CHECK(inet_pton(AF_INET6, a, &sin6->sin6_addr) == 1);
    return ss;
}

/* Writes <src> -> <dst> in both versions, checks the v1 text, parses both
 * back and checks the family and addresses read. */
static void round_trip(int line, struct sockaddr_storage src, struct sockaddr_storage dst,
                       const char *v1_text, int family, const char *s, unsigned sp, const char *d,
                       unsigned dp)
{
    char t[PROXYPROTO_WRITE_MAX];
    uint8_t b[PROXYPROTO_WRITE_MAX];
    struct proxyproto_result res;

    check_context = v1_text;
    int n = proxyproto_write_v1(t, sizeof(t), (struct sockaddr *)&src, (struct sockaddr *)&dst);
    if (n < 0 || (size_t)n != strlen(v1_text) || memcmp(t, v1_text, (size_t)n) != 0)
        check_fail(__FILE__, line, NULL, "v1 wrote %d \"%.*s\"", n, n > 0 ? n : 0, t);
    if (n > 0) {
        expect_ok(line, v1_text, (const uint8_t *)t, (size_t)n, PROXYPROTO_V1, (size_t)n, &res);
        CHECK_INT(res.family, family);
        check_addr(line, &res.src, family, s, sp);
        check_addr(line, &res.dst, family, d, dp);
        /* exactly the room it needs, and one byte less */
        CHECK_INT(
            proxyproto_write_v1(t, (size_t)n, (struct sockaddr *)&src, (struct sockaddr *)&dst), n);
        CHECK_INT(
            proxyproto_write_v1(t, (size_t)n - 1, (struct sockaddr *)&src, (struct sockaddr *)&dst),
            -ENOSPC);
    }

    n = proxyproto_write_v2(b, sizeof(b), (struct sockaddr *)&src, (struct sockaddr *)&dst);
    size_t want = family == AF_INET ? 28 : 52;
    if (n < 0 || (size_t)n != want)
        check_fail(__FILE__, line, NULL, "v2 wrote %d bytes, expected %zu", n, want);
    if (n > 0) {
        expect_ok(line, "v2 written", b, (size_t)n, PROXYPROTO_V2, (size_t)n, &res);
        CHECK_INT(res.command, PROXYPROTO_CMD_PROXY);
        CHECK_INT(res.family, family);
        check_addr(line, &res.src, family, s, sp);
        check_addr(line, &res.dst, family, d, dp);
        CHECK_INT(
            proxyproto_write_v2(b, (size_t)n - 1, (struct sockaddr *)&src, (struct sockaddr *)&dst),
            -ENOSPC);
    }
    check_context = NULL;
}

static void test_writers(void)
{
    round_trip(__LINE__, sa4("192.0.2.1", 5555), sa4("10.0.0.2", 80),
               "PROXY TCP4 192.0.2.1 10.0.0.2 5555 80\r\n", AF_INET, "192.0.2.1", 5555, "10.0.0.2",
               80);
    round_trip(__LINE__, sa4("255.255.255.255", 65535), sa4("0.0.0.0", 0),
               "PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n", AF_INET, "255.255.255.255", 65535,
               "0.0.0.0", 0);
    round_trip(__LINE__, sa6("2001:db8::1", 40000), sa6("::1", 443),
               "PROXY TCP6 2001:db8::1 ::1 40000 443\r\n", AF_INET6, "2001:db8::1", 40000, "::1",
               443);
    round_trip(__LINE__, sa6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
               sa6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535),
               "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
               "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65535\r\n",
               AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
               "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535);
    /* a dual-stack listener sees IPv4 clients v4-mapped: sent as TCP4 */
    round_trip(__LINE__, sa6("::ffff:192.0.2.7", 1234), sa6("::ffff:10.1.1.1", 8080),
               "PROXY TCP4 192.0.2.7 10.1.1.1 1234 8080\r\n", AF_INET, "192.0.2.7", 1234,
               "10.1.1.1", 8080);
    /* mixed (an IPv6 client from a PROXY header on an IPv4 listener): TCP6 */
    round_trip(__LINE__, sa6("2001:db8::5", 1), sa4("10.0.0.1", 80),
               "PROXY TCP6 2001:db8::5 ::ffff:10.0.0.1 1 80\r\n", AF_INET6, "2001:db8::5", 1,
               "::ffff:10.0.0.1", 80);
    round_trip(__LINE__, sa4("192.0.2.1", 2), sa6("::1", 3),
               "PROXY TCP6 ::ffff:192.0.2.1 ::1 2 3\r\n", AF_INET6, "::ffff:192.0.2.1", 2, "::1",
               3);

    /* the health-check forms */
    char t[PROXYPROTO_WRITE_MAX];
    uint8_t b[PROXYPROTO_WRITE_MAX];
    struct proxyproto_result res;
    struct sockaddr_storage a = sa4("1.2.3.4", 1);
    CHECK_INT(proxyproto_write_v1(t, sizeof(t), NULL, NULL), 15);
    CHECK(memcmp(t, "PROXY UNKNOWN\r\n", 15) == 0);
    CHECK_INT(proxyproto_write_v1(t, sizeof(t), (struct sockaddr *)&a, NULL), 15);
    CHECK_INT(proxyproto_write_v1(t, 14, NULL, NULL), -ENOSPC);
    CHECK_INT(proxyproto_parse((const uint8_t *)t, 15, PROXYPROTO_V1, &res), PROXYPROTO_OK);
    CHECK_INT(res.command, PROXYPROTO_CMD_LOCAL);
    CHECK_INT(proxyproto_write_v2(b, sizeof(b), NULL, NULL), 16);
    CHECK(memcmp(b, sig, 12) == 0 && b[12] == 0x20 && b[13] == 0 && b[14] == 0 && b[15] == 0);
    CHECK_INT(proxyproto_write_v2(b, 15, NULL, NULL), -ENOSPC);
    CHECK_INT(proxyproto_write_v2(b, 16, NULL, (struct sockaddr *)&a), 16);
    CHECK_INT(proxyproto_parse(b, 16, PROXYPROTO_V2, &res), PROXYPROTO_OK);
    CHECK_INT(res.command, PROXYPROTO_CMD_LOCAL);
    CHECK_INT(res.family, AF_UNSPEC);

    /* a family the protocol cannot carry */
    struct sockaddr_un un = {.sun_family = AF_UNIX, .sun_path = "/tmp/x"};
    CHECK_INT(proxyproto_write_v1(t, sizeof(t), (struct sockaddr *)&un, (struct sockaddr *)&a),
              -EAFNOSUPPORT);
    CHECK_INT(proxyproto_write_v2(b, sizeof(b), (struct sockaddr *)&a, (struct sockaddr *)&un),
              -EAFNOSUPPORT);
}

int main(void)
{
    page_size = sysconf(_SC_PAGESIZE);
    test_v1_valid();
    test_v1_errors();
    test_v2_valid();
    test_v2_errors();
    test_accept_mask();
    test_shared_corpus();
    test_writers();
    return check_report("test_proxyproto");
}
