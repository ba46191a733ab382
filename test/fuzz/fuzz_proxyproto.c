/* libFuzzer harness for proxyproto_parse and the writers: no crash, no read
 * past the data (exactly sized heap copy), and the invariants hold: a
 * result is complete exactly at its length, a prefix of a bad header waits
 * or fails the same way, the accept mask only narrows, and the addresses
 * of a valid header written again (v1 and v2) parse back the same. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "parser/proxyproto.h"

static const char *const reasons[] = {
    "bad_signature", "bad_version", "bad_command", "bad_family", "bad_syntax",
    "bad_address",   "too_long",    "truncated",   "bad_tlv",
};

static bool known_reason(const char *r)
{
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (r && strcmp(r, reasons[i]) == 0)
            return true;
    return false;
}

static bool same(const struct proxyproto_result *a, const struct proxyproto_result *b)
{
    return a->len == b->len && a->version == b->version && a->command == b->command &&
           a->family == b->family && memcmp(&a->src, &b->src, sizeof(a->src)) == 0 &&
           memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0;
}

/* <ss> as 16 bytes of IPv6 (IPv4 mapped) and a port: the writers may change
 * the family (two v4-mapped addresses go out as TCP4), never the address. */
static void canon(const struct sockaddr_storage *ss, uint8_t a[16], uint16_t *port)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        memset(a, 0, 10);
        a[10] = a[11] = 0xff;
        memcpy(a + 12, &sin->sin_addr, 4);
        *port = sin->sin_port;
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        memcpy(a, &sin6->sin6_addr, 16);
        *port = sin6->sin6_port;
    } else {
        abort();
    }
}

static bool same_addresses(const struct proxyproto_result *a, const struct proxyproto_result *b)
{
    uint8_t x[16], y[16];
    uint16_t px, py;
    canon(&a->src, x, &px);
    canon(&b->src, y, &py);
    if (memcmp(x, y, 16) != 0 || px != py)
        return false;
    canon(&a->dst, x, &px);
    canon(&b->dst, y, &py);
    return memcmp(x, y, 16) == 0 && px == py;
}

/* Writes <r>'s addresses (or the LOCAL form) in both versions and parses
 * them back. */
static void rewrite(const struct proxyproto_result *r)
{
    const struct sockaddr *s = NULL, *d = NULL;
    char t[PROXYPROTO_WRITE_MAX];
    uint8_t b[PROXYPROTO_WRITE_MAX];
    struct proxyproto_result back;

    if (r->family != AF_UNSPEC) {
        s = (const struct sockaddr *)&r->src;
        d = (const struct sockaddr *)&r->dst;
    }
    int n = proxyproto_write_v1(t, sizeof(t), s, d);
    if (n <= 0 || (size_t)n > PROXYPROTO_V1_MAX_LEN)
        abort();
    if (proxyproto_parse((const uint8_t *)t, (size_t)n, PROXYPROTO_V1, &back) != PROXYPROTO_OK ||
        back.len != (size_t)n)
        abort();
    if ((r->family == AF_UNSPEC) != (back.family == AF_UNSPEC))
        abort();
    if (r->family != AF_UNSPEC && !same_addresses(r, &back))
        abort();

    n = proxyproto_write_v2(b, sizeof(b), s, d);
    if (n < PROXYPROTO_V2_HEADER_LEN)
        abort();
    if (proxyproto_parse(b, (size_t)n, PROXYPROTO_V2, &back) != PROXYPROTO_OK ||
        back.len != (size_t)n)
        abort();
    if (r->family == AF_UNSPEC ? back.command != PROXYPROTO_CMD_LOCAL
                               : back.command != PROXYPROTO_CMD_PROXY || !same_addresses(r, &back))
        abort();
}

static void check(const uint8_t *buf, size_t len, unsigned accept)
{
    struct proxyproto_result res, pre;
    int r = proxyproto_parse(buf, len, accept, &res);

    if (r == PROXYPROTO_AGAIN) {
        /* only a valid start waits, and never past the longest header */
        if (len >= PROXYPROTO_MAX_LEN)
            abort();
        return;
    }
    if (r == PROXYPROTO_ERROR) {
        if (!known_reason(res.reason))
            abort();
        /* a prefix either waits or fails the same way */
        int rp = proxyproto_parse(buf, len / 2, accept, &pre);
        if (rp != PROXYPROTO_AGAIN && (rp != PROXYPROTO_ERROR || pre.reason != res.reason))
            abort();
        return;
    }
    if (r != PROXYPROTO_OK || res.reason != NULL)
        abort();
    if (res.len > len || !(res.version & accept))
        abort();
    if (res.version == PROXYPROTO_V1 && (res.len < 15 || res.len > PROXYPROTO_V1_MAX_LEN))
        abort();
    if (res.version == PROXYPROTO_V2 &&
        (res.len < PROXYPROTO_V2_HEADER_LEN || res.len > PROXYPROTO_MAX_LEN))
        abort();
    if (res.command != PROXYPROTO_CMD_LOCAL && res.command != PROXYPROTO_CMD_PROXY)
        abort();
    if (res.family != AF_UNSPEC && res.family != AF_INET && res.family != AF_INET6)
        abort();
    if (res.family != AF_UNSPEC &&
        (res.command != PROXYPROTO_CMD_PROXY || res.src.ss_family != res.family ||
         res.dst.ss_family != res.family))
        abort();
    /* complete exactly at len, not a byte earlier, whatever follows */
    if (proxyproto_parse(buf, res.len - 1, accept, &pre) != PROXYPROTO_AGAIN)
        abort();
    if (proxyproto_parse(buf, res.len, accept, &pre) != PROXYPROTO_OK || !same(&pre, &res))
        abort();
    /* the mask only narrows: the version alone gives the same, the other
     * version alone refuses it */
    if (accept == PROXYPROTO_ANY) {
        if (proxyproto_parse(buf, len, res.version, &pre) != PROXYPROTO_OK || !same(&pre, &res))
            abort();
        if (proxyproto_parse(buf, len, PROXYPROTO_ANY & ~res.version, &pre) != PROXYPROTO_ERROR ||
            strcmp(pre.reason, "bad_version") != 0)
            abort();
    }
    rewrite(&res);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    check(buf, size, PROXYPROTO_ANY);
    check(buf, size, PROXYPROTO_V1);
    check(buf, size, PROXYPROTO_V2);
    free(buf);
    return 0;
}
