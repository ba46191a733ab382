// links: usher_parser
/* Unit tests of parser/http1.c: every rejection with its status and reason,
 * each framing kind, and for every input: fed whole == fed one byte more at
 * a time, and no byte read past the data (input ending at a guard page). */
#include "parser/http1.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "test/unit/check.h"

#define MAX_HEADERS 100

/* Every prefix is re-parsed up to this input size; longer inputs (the
 * too-large tests) are sampled so the quadratic cost stays small. */
#define FULL_PREFIX_MAX 4096
#define SAMPLE_STEP 61

#define CHECK_SLICE(s, lit)                                                                        \
    do {                                                                                           \
        struct http1_slice s_ = (s);                                                               \
        if (s_.len != strlen(lit) || memcmp(s_.ptr, lit, s_.len))                                  \
            check_fail(__FILE__, __LINE__, NULL, "%s == \"%.*s\", expected \"%s\"", #s,            \
                       (int)s_.len, s_.ptr ? s_.ptr : "", lit);                                    \
    } while (0)

static const struct http1_limits default_limits = {
    .max_head_bytes = 16384,
    .max_headers = MAX_HEADERS,
    .max_uri_bytes = 8192,
};

/* ---- guard page: the input's last byte is the last readable byte -------- */

static long page_size;

/* Copies <len> bytes to the end of a fresh mapping followed by a
 * PROT_NONE page; *<map>/<maplen> to unmap it afterwards. */
static char *guarded_copy(const char *s, size_t len, char **map, size_t *maplen)
{
    size_t pages = (len + (size_t)page_size - 1) / (size_t)page_size + 1;
    char *m = mmap(NULL, (pages + 1) * (size_t)page_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    if (mprotect(m + pages * (size_t)page_size, (size_t)page_size, PROT_NONE)) {
        perror("mprotect");
        exit(2);
    }
    char *dst = m + pages * (size_t)page_size - len;
    memcpy(dst, s, len);
    *map = m;
    *maplen = (pages + 1) * (size_t)page_size;
    return dst;
}

static bool tested_prefix(size_t k, size_t len)
{
    return len <= FULL_PREFIX_MAX || k % SAMPLE_STEP == 0 || len - k < 64 || k < 64;
}

/* ---- requests ------------------------------------------------------------ */

static long off(struct http1_slice s, const char *base)
{
    return s.len ? s.ptr - base : -1;
}

static bool same_message(const struct http1_message *a, const char *abase,
                         const struct http1_message *b, const char *bbase)
{
    if (a->num_headers != b->num_headers || a->head_len != b->head_len ||
        a->framing != b->framing || a->flags != b->flags || a->minor_version != b->minor_version ||
        a->content_length != b->content_length ||
        off(a->upgrade, abase) != off(b->upgrade, bbase) || a->upgrade.len != b->upgrade.len ||
        off(a->connection, abase) != off(b->connection, bbase) ||
        a->connection.len != b->connection.len)
        return false;
    for (size_t i = 0; i < a->num_headers; i++) {
        const struct http1_header *ha = &a->headers[i], *hb = &b->headers[i];
        if (off(ha->name, abase) != off(hb->name, bbase) || ha->name.len != hb->name.len ||
            off(ha->value, abase) != off(hb->value, bbase) || ha->value.len != hb->value.len)
            return false;
    }
    return true;
}

static bool same_request(int ra, const struct http1_request *a, const char *abase, int rb,
                         const struct http1_request *b, const char *bbase)
{
    if (ra != rb)
        return false;
    if (ra == HTTP1_ERROR)
        return a->msg.error_status == b->msg.error_status &&
               a->msg.error_reason == b->msg.error_reason;
    if (ra == HTTP1_AGAIN)
        return true;
    return same_message(&a->msg, abase, &b->msg, bbase) && a->method_id == b->method_id &&
           off(a->method, abase) == off(b->method, bbase) && a->method.len == b->method.len &&
           off(a->target, abase) == off(b->target, bbase) && a->target.len == b->target.len &&
           off(a->host, abase) == off(b->host, bbase) && a->host.len == b->host.len;
}

static struct http1_header hdrs[MAX_HEADERS], hdrs2[MAX_HEADERS];

/* Parses <s> whole, then every prefix (one byte more each time) both in
 * place and ending at a guard page: each must say AGAIN or exactly what the
 * whole input said, and a complete head must be complete exactly at
 * head_len. */
static int parse_req_lim(const char *s, size_t len, const struct http1_limits *lim,
                         struct http1_request *req)
{
    struct http1_request pre;
    char *map;
    size_t maplen;
    int r, rp;

    req->msg.headers = hdrs;
    r = http1_parse_request(s, len, lim, req);
    CHECK(r == HTTP1_OK || r == HTTP1_ERROR || r == HTTP1_AGAIN);
    if (r == HTTP1_OK)
        CHECK(req->msg.head_len <= len);

    for (size_t k = 0; k <= len; k++) {
        if (!tested_prefix(k, len))
            continue;
        pre.msg.headers = hdrs2;
        rp = http1_parse_request(s, k, lim, &pre);
        if (!same_request(rp, &pre, s, r, req, s) && rp != HTTP1_AGAIN)
            check_fail(__FILE__, __LINE__, NULL,
                       "prefix %zu: result %d (%s) differs from whole %d (%s)", k, rp,
                       rp == HTTP1_ERROR ? pre.msg.error_reason : "", r,
                       r == HTTP1_ERROR ? req->msg.error_reason : "");
        if (r == HTTP1_OK && k < req->msg.head_len && rp != HTTP1_AGAIN)
            check_fail(__FILE__, __LINE__, NULL, "prefix %zu < head_len %zu not AGAIN", k,
                       req->msg.head_len);

        char *g = guarded_copy(s, k, &map, &maplen);
        int rg = http1_parse_request(g, k, lim, &pre);
        if (rg != rp)
            check_fail(__FILE__, __LINE__, NULL, "guarded prefix %zu: %d != %d", k, rg, rp);
        munmap(map, maplen);
    }
    return r;
}

static int parse_req(const char *s, struct http1_request *req)
{
    return parse_req_lim(s, strlen(s), &default_limits, req);
}

static void expect_req_error(int line, const char *s, size_t len, int status, const char *reason)
{
    struct http1_request req;
    check_context = s;
    int r = parse_req_lim(s, len, &default_limits, &req);
    if (r != HTTP1_ERROR)
        check_fail(__FILE__, line, NULL, "expected error %d \"%s\", got %d", status, reason, r);
    else if (req.msg.error_status != status || strcmp(req.msg.error_reason, reason))
        check_fail(__FILE__, line, NULL, "expected %d \"%s\", got %d \"%s\"", status, reason,
                   req.msg.error_status, req.msg.error_reason);
}

#define REQ_ERR(s, status, reason) expect_req_error(__LINE__, s, strlen(s), status, reason)
#define REQ_ERR_N(lit, status, reason)                                                             \
    expect_req_error(__LINE__, lit, sizeof(lit) - 1, status, reason)

static void test_request_valid(void)
{
    struct http1_request req;
    const char *s;

    s = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_INT(req.msg.head_len, strlen(s));
    CHECK_SLICE(req.method, "GET");
    CHECK_INT(req.method_id, HTTP1_METHOD_GET);
    CHECK_SLICE(req.target, "/index.html?q=1");
    CHECK_INT(req.msg.minor_version, 1);
    CHECK_SLICE(req.host, "example.com");
    CHECK_INT(req.msg.num_headers, 2);
    CHECK_SLICE(req.msg.headers[1].name, "User-Agent");
    CHECK_SLICE(req.msg.headers[1].value, "t");
    CHECK_INT(req.msg.framing, HTTP1_BODY_NONE);
    CHECK_INT(req.msg.flags, HTTP1_F_KEEP_ALIVE);

    s = "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 42\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_INT(req.method_id, HTTP1_METHOD_POST);
    CHECK_INT(req.msg.framing, HTTP1_BODY_LENGTH);
    CHECK_INT(req.msg.content_length, 42);
    CHECK_INT(req.msg.flags, HTTP1_F_HAS_CL | HTTP1_F_KEEP_ALIVE);

    s = "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_INT(req.msg.framing, HTTP1_BODY_LENGTH);
    CHECK_INT(req.msg.content_length, 0);

    s = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_INT(req.msg.framing, HTTP1_BODY_CHUNKED);
    CHECK(req.msg.flags & HTTP1_F_HAS_TE);

    s = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_INT(req.msg.framing, HTTP1_BODY_CHUNKED);

    /* several TE fields form one list */
    s = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: "
        "chunked\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_INT(req.msg.framing, HTTP1_BODY_CHUNKED);

    /* identical duplicate Content-Length, largest value */
    s = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n"
        "Content-Length: 18446744073709551615\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK(req.msg.content_length == UINT64_MAX);

    s = "GET / HTTP/1.0\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_INT(req.msg.minor_version, 0);
    CHECK_INT(req.msg.flags, 0);
    CHECK_INT(req.host.len, 0);

    s = "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_INT(req.msg.flags, HTTP1_F_CONN_KEEPALIVE | HTTP1_F_KEEP_ALIVE);
    CHECK_SLICE(req.msg.connection, "Keep-Alive");

    s = "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_INT(req.msg.flags, HTTP1_F_CONN_CLOSE | HTTP1_F_CONN_KEEPALIVE);
    CHECK_SLICE(req.msg.connection, "close");

    s = "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, "
        "Upgrade\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_INT(req.msg.flags, HTTP1_F_HAS_UPGRADE | HTTP1_F_CONN_UPGRADE | HTTP1_F_CONN_KEEPALIVE |
                                 HTTP1_F_KEEP_ALIVE);
    CHECK_SLICE(req.msg.upgrade, "websocket");
    CHECK_SLICE(req.msg.connection, "keep-alive, Upgrade");

    s = "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK(req.msg.flags & HTTP1_F_EXPECT_CONTINUE);
    s = "PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK(!(req.msg.flags & HTTP1_F_EXPECT_CONTINUE)); /* RFC 9110 10.1.1 */

    /* empty lines before the request line are skipped; OWS trimmed, HTAB and
     * obs-text kept inside values; empty values; unknown method */
    s = "\r\n\r\nPROPFIND /d%20x/\xc3\xa9 HTTP/1.1\r\nHost:\th:8080 \r\nX-A:  a\tb\xff  \r\n"
        "X-Empty:\r\nX-Sp:   \r\n\r\n";
    check_context = "leading CRLF, OWS";
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_SLICE(req.method, "PROPFIND");
    CHECK_INT(req.method_id, HTTP1_METHOD_OTHER);
    CHECK_SLICE(req.target, "/d%20x/\xc3\xa9");
    CHECK_SLICE(req.host, "h:8080");
    CHECK_SLICE(req.msg.headers[1].value, "a\tb\xff");
    CHECK_SLICE(req.msg.headers[2].value, "");
    CHECK_SLICE(req.msg.headers[3].value, "");
    CHECK_INT(req.msg.head_len, strlen(s));

    /* HTTP/1.x above 1.1 is processed as 1.1 (RFC 9110 section 2.5) */
    s = "GET / HTTP/1.2\r\nHost: h\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_INT(req.msg.minor_version, 1);

    /* methods */
    static const struct {
        const char *m;
        enum http1_method id;
    } methods[] = {
        {"GET", HTTP1_METHOD_GET},         {"HEAD", HTTP1_METHOD_HEAD},
        {"POST", HTTP1_METHOD_POST},       {"PUT", HTTP1_METHOD_PUT},
        {"DELETE", HTTP1_METHOD_DELETE},   {"OPTIONS", HTTP1_METHOD_OPTIONS},
        {"CONNECT", HTTP1_METHOD_CONNECT}, {"TRACE", HTTP1_METHOD_TRACE},
        {"PATCH", HTTP1_METHOD_PATCH},     {"get", HTTP1_METHOD_OTHER},
        {"GETS", HTTP1_METHOD_OTHER},
    };
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        char b[128];
        snprintf(b, sizeof(b), "%s * HTTP/1.1\r\nHost: h\r\n\r\n", methods[i].m);
        check_context = b;
        CHECK_INT(parse_req(b, &req), HTTP1_OK);
        CHECK_INT(req.method_id, methods[i].id);
    }

    /* every header slot and the whole head budget may be used */
    {
        char b[8192];
        size_t n = (size_t)snprintf(b, sizeof(b), "GET / HTTP/1.1\r\nHost: h\r\n");
        for (int i = 1; i < MAX_HEADERS; i++)
            n += (size_t)snprintf(b + n, sizeof(b) - n, "X-%d: %d\r\n", i, i);
        n += (size_t)snprintf(b + n, sizeof(b) - n, "\r\n");
        check_context = "max headers";
        CHECK_INT(parse_req(b, &req), HTTP1_OK);
        CHECK_INT(req.msg.num_headers, MAX_HEADERS);
        struct http1_limits lim = default_limits;
        lim.max_head_bytes = n;
        check_context = "head_len == max_head_bytes";
        CHECK_INT(parse_req_lim(b, n, &lim, &req), HTTP1_OK);
        lim.max_head_bytes = n - 1;
        check_context = "head_len == max_head_bytes + 1";
        CHECK_INT(parse_req_lim(b, n, &lim, &req), HTTP1_ERROR);
        CHECK_INT(req.msg.error_status, 431);
        CHECK_STR(req.msg.error_reason, "request head too large");
    }
    {
        struct http1_limits lim = default_limits;
        lim.max_uri_bytes = 5;
        s = "GET /abcd HTTP/1.1\r\nHost: h\r\n\r\n";
        check_context = "target == max_uri_bytes";
        CHECK_INT(parse_req_lim(s, strlen(s), &lim, &req), HTTP1_OK);
    }
}

static void test_request_pipelined(void)
{
    struct http1_request req;
    const char *first = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n";
    const char *s = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nPOS";
    char copy[256];
    strcpy(copy, s);
    check_context = "pipelined";
    CHECK_INT(parse_req(copy, &req), HTTP1_OK);
    CHECK_INT(req.msg.head_len, strlen(first));
    CHECK_SLICE(req.target, "/1");
    CHECK(!strcmp(copy, s)); /* nothing written into the buffer */
    size_t at = req.msg.head_len;
    CHECK_INT(parse_req(copy + at, &req), HTTP1_OK);
    CHECK_SLICE(req.target, "/2");
    at += req.msg.head_len;
    CHECK_INT(parse_req(copy + at, &req), HTTP1_AGAIN);
}

static void test_request_errors(void)
{
    /* framing */
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: "
            "chunked\r\n\r\n",
            400, "Content-Length with Transfer-Encoding");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: "
            "3\r\n\r\n",
            400, "Content-Length with Transfer-Encoding");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400,
            "differing Content-Length values");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n", 400,
            "invalid Content-Length");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", 400,
            "invalid Content-Length");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400,
            "invalid Content-Length");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5 5\r\n\r\n", 400,
            "invalid Content-Length");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n", 400,
            "invalid Content-Length");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400, "invalid Content-Length");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400,
            "invalid Content-Length");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n", 400,
            "Content-Length too large");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400,
            "Content-Length too large");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400,
            "Transfer-Encoding not ending in chunked");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400,
            "Transfer-Encoding not ending in chunked");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", 400,
            "Transfer-Encoding not ending in chunked");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: br, chunked\r\n\r\n", 501,
            "unknown transfer coding");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 501,
            "unknown transfer coding");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400,
            "chunked applied more than once");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
            "chunked\r\n\r\n",
            400, "chunked applied more than once");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400,
            "malformed Transfer-Encoding");
    REQ_ERR("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400,
            "malformed Transfer-Encoding");
    REQ_ERR("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
            "Transfer-Encoding in HTTP/1.0 message");

    /* field syntax */
    REQ_ERR("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400,
            "whitespace between header field name and colon");
    REQ_ERR("GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400,
            "whitespace between header field name and colon");
    REQ_ERR("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n b\r\n\r\n", 400, "obsolete line folding");
    REQ_ERR("GET / HTTP/1.1\r\n\tHost: h\r\n\r\n", 400, "obsolete line folding");
    REQ_ERR("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n", 400,
            "bare CR (line endings must be CRLF)");
    REQ_ERR("GET / HTTP/1.1\r\nHost: h\r\n\rX", 400, "bare CR (line endings must be CRLF)");
    REQ_ERR("GET / HTTP/1.1\rHost: h\r\n\r\n", 400, "bare CR (line endings must be CRLF)");
    REQ_ERR("GET /\r HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bare CR (line endings must be CRLF)");
    REQ_ERR("GET / HTTP/1.1\r\nHost\r: h\r\n\r\n", 400, "bare CR (line endings must be CRLF)");
    REQ_ERR("\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bare CR (line endings must be CRLF)");
    REQ_ERR("GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400, "bare LF (line endings must be CRLF)");
    REQ_ERR("GET / HTTP/1.1\nHost: h\r\n\r\n", 400, "bare LF (line endings must be CRLF)");
    REQ_ERR("GET / HTTP/1.1\r\nHost: h\r\n\n", 400, "bare LF (line endings must be CRLF)");
    REQ_ERR("GET / HTTP/1.1\r\nHost: h\r\nX\n: y\r\n\r\n", 400,
            "bare LF (line endings must be CRLF)");
    REQ_ERR("\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "bare LF (line endings must be CRLF)");
    REQ_ERR("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01"
            "b\r\n\r\n",
            400, "control character in header field");
    REQ_ERR("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7f\r\n\r\n", 400,
            "control character in header field");
    REQ_ERR("GET / HTTP/1.1\r\nHost: h\r\nX\x1b-A: a\r\n\r\n", 400,
            "control character in header field");
    REQ_ERR("GET / HTTP/1.1\r\nHost: h\r\n: a\r\n\r\n", 400, "empty header field name");
    REQ_ERR("GET / HTTP/1.1\r\nHost: h\r\nX(A): a\r\n\r\n", 400,
            "invalid character in header field name");
    REQ_ERR("GET / HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: a\r\n\r\n", 400,
            "invalid character in header field name");
    REQ_ERR("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400, "header field without colon");

    /* request line */
    REQ_ERR("G(ET / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid method");
    REQ_ERR(" / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid method");
    REQ_ERR("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid method");
    REQ_ERR("GET\r\n\r\n", 400, "malformed request line");
    REQ_ERR("GET /\r\nHost: h\r\n\r\n", 400, "malformed request line");
    REQ_ERR("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "empty request target");
    REQ_ERR("GET /a\x01"
            "b HTTP/1.1\r\nHost: h\r\n\r\n",
            400, "invalid character in request target");
    REQ_ERR("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid character in request target");
    REQ_ERR("GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid character in request target");
    REQ_ERR("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, "unsupported HTTP version");
    REQ_ERR("GET / HTTP/0.9\r\n\r\n", 505, "unsupported HTTP version");
    REQ_ERR("GET / HTTP/2.0x\r\n\r\n", 400, "invalid HTTP version");
    REQ_ERR("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400, "invalid HTTP version");
    REQ_ERR("GET / http/1.1\r\nHost: h\r\n\r\n", 400, "invalid HTTP version");
    REQ_ERR("GET / HTTP/11.1\r\nHost: h\r\n\r\n", 400, "invalid HTTP version");
    REQ_ERR("GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400, "invalid HTTP version");
    REQ_ERR("GET / FOO\r\nHost: h\r\n\r\n", 400, "invalid HTTP version");
    REQ_ERR("GET / / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid HTTP version");

    /* Host */
    REQ_ERR("GET / HTTP/1.1\r\nX: y\r\n\r\n", 400, "missing Host header");
    REQ_ERR("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, "multiple Host headers");
    REQ_ERR("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400, "multiple Host headers");
    REQ_ERR("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, "invalid Host header");
    REQ_ERR("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400, "invalid Host header");
    REQ_ERR("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "invalid Host header");

    /* NUL: a C string cannot hold it, so these go by length */
    REQ_ERR_N("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n", 400, "NUL byte in header field");
    REQ_ERR_N("GET / HTTP/1.1\r\nHost: h\r\nX\0A: a\r\n\r\n", 400, "NUL byte in header field");
    REQ_ERR_N("GET /\0 HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid character in request target");
    REQ_ERR_N("GE\0T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "invalid method");
    REQ_ERR_N("GET / HTTP/1.\0\r\nHost: h\r\n\r\n", 400, "invalid HTTP version");

    /* limits */
    struct http1_request req;
    struct http1_limits lim = default_limits;
    lim.max_headers = 3;
    check_context = "too many fields";
    const char *s = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    CHECK_INT(parse_req_lim(s, strlen(s), &lim, &req), HTTP1_ERROR);
    CHECK_INT(req.msg.error_status, 431);
    CHECK_STR(req.msg.error_reason, "too many header fields");
    /* ... detected before the head is complete */
    CHECK_INT(http1_parse_request(s, 40, &lim, &req), HTTP1_ERROR);

    /* a head that never ends: 431 once max_head_bytes have arrived */
    static char big[20000];
    size_t n = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\n");
    while (n < sizeof(big) - 256)
        n += (size_t)sprintf(big + n, "X-Pad: %0200d\r\n", 0);
    check_context = "head too large";
    CHECK_INT(parse_req_lim(big, n, &default_limits, &req), HTTP1_ERROR);
    CHECK_INT(req.msg.error_status, 431);
    CHECK_STR(req.msg.error_reason, "request head too large");
    CHECK_INT(http1_parse_request(big, default_limits.max_head_bytes - 1, &default_limits, &req),
              HTTP1_AGAIN);
    /* an endless run of empty lines before the request line is no way out */
    memset(big, 0, sizeof(big));
    for (size_t i = 0; i + 1 < sizeof(big); i += 2)
        memcpy(big + i, "\r\n", 2);
    check_context = "endless CRLF";
    CHECK_INT(parse_req_lim(big, sizeof(big), &default_limits, &req), HTTP1_ERROR);
    CHECK_INT(req.msg.error_status, 431);

    /* a target over max_uri_bytes: 414 before the request line ends */
    lim = default_limits;
    lim.max_uri_bytes = 100;
    memset(big, 0, sizeof(big));
    n = (size_t)sprintf(big, "GET /");
    memset(big + n, 'a', 300);
    n += 300;
    check_context = "uri too long";
    CHECK_INT(parse_req_lim(big, n, &lim, &req), HTTP1_ERROR);
    CHECK_INT(req.msg.error_status, 414);
    CHECK_STR(req.msg.error_reason, "request target too long");
    CHECK_INT(http1_parse_request(big, 4 + 100, &lim, &req), HTTP1_AGAIN);
    CHECK_INT(http1_parse_request(big, 4 + 101, &lim, &req), HTTP1_ERROR);
    CHECK_INT(req.msg.error_status, 414);
    /* ... unless the head budget runs out first */
    lim.max_head_bytes = 50;
    CHECK_INT(http1_parse_request(big, n, &lim, &req), HTTP1_ERROR);
    CHECK_INT(req.msg.error_status, 431);
    lim.max_head_bytes = 200;
    CHECK_INT(http1_parse_request(big, n, &lim, &req), HTTP1_ERROR);
    CHECK_INT(req.msg.error_status, 414);
}

/* ---- responses ----------------------------------------------------------- */

static bool same_response(int ra, const struct http1_response *a, const char *abase, int rb,
                          const struct http1_response *b, const char *bbase)
{
    if (ra != rb)
        return false;
    if (ra == HTTP1_ERROR)
        return a->msg.error_status == b->msg.error_status &&
               a->msg.error_reason == b->msg.error_reason;
    if (ra == HTTP1_AGAIN)
        return true;
    return same_message(&a->msg, abase, &b->msg, bbase) && a->status == b->status &&
           off(a->reason, abase) == off(b->reason, bbase) && a->reason.len == b->reason.len;
}

static int parse_res_lim(const char *s, size_t len, const struct http1_limits *lim,
                         enum http1_method method, struct http1_response *res)
{
    struct http1_response pre;
    char *map;
    size_t maplen;
    int r, rp;

    res->msg.headers = hdrs;
    r = http1_parse_response(s, len, lim, method, res);
    if (r == HTTP1_OK)
        CHECK(res->msg.head_len <= len);
    for (size_t k = 0; k <= len; k++) {
        if (!tested_prefix(k, len))
            continue;
        pre.msg.headers = hdrs2;
        rp = http1_parse_response(s, k, lim, method, &pre);
        if (!same_response(rp, &pre, s, r, res, s) && rp != HTTP1_AGAIN)
            check_fail(__FILE__, __LINE__, NULL, "prefix %zu: result %d differs from whole %d", k,
                       rp, r);
        if (r == HTTP1_OK && k < res->msg.head_len && rp != HTTP1_AGAIN)
            check_fail(__FILE__, __LINE__, NULL, "prefix %zu < head_len %zu not AGAIN", k,
                       res->msg.head_len);
        char *g = guarded_copy(s, k, &map, &maplen);
        int rg = http1_parse_response(g, k, lim, method, &pre);
        if (rg != rp)
            check_fail(__FILE__, __LINE__, NULL, "guarded prefix %zu: %d != %d", k, rg, rp);
        munmap(map, maplen);
    }
    return r;
}

static int parse_res(const char *s, enum http1_method method, struct http1_response *res)
{
    return parse_res_lim(s, strlen(s), &default_limits, method, res);
}

static void expect_res(int line, const char *s, enum http1_method method,
                       enum http1_framing framing, unsigned flags)
{
    struct http1_response res;
    check_context = s;
    int r = parse_res(s, method, &res);
    if (r != HTTP1_OK)
        check_fail(__FILE__, line, NULL, "expected OK, got %d (%s)", r,
                   r == HTTP1_ERROR ? res.msg.error_reason : "");
    else if (res.msg.framing != framing || res.msg.flags != flags)
        check_fail(__FILE__, line, NULL, "framing %d flags %#x, expected %d %#x", res.msg.framing,
                   res.msg.flags, framing, flags);
}

static void expect_res_error(int line, const char *s, const char *reason)
{
    struct http1_response res;
    check_context = s;
    int r = parse_res(s, HTTP1_METHOD_GET, &res);
    if (r != HTTP1_ERROR)
        check_fail(__FILE__, line, NULL, "expected error \"%s\", got %d", reason, r);
    else if (res.msg.error_status != 502 || strcmp(res.msg.error_reason, reason))
        check_fail(__FILE__, line, NULL, "expected 502 \"%s\", got %d \"%s\"", reason,
                   res.msg.error_status, res.msg.error_reason);
}

#define RES_OK(s, method, framing, flags) expect_res(__LINE__, s, method, framing, flags)
#define RES_ERR(s, reason) expect_res_error(__LINE__, s, reason)

static void test_response(void)
{
    struct http1_response res;
    const char *s = "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nServer: x\r\n\r\nnot found";
    check_context = s;
    CHECK_INT(parse_res(s, HTTP1_METHOD_GET, &res), HTTP1_OK);
    CHECK_INT(res.status, 404);
    CHECK_SLICE(res.reason, "Not Found");
    CHECK_INT(res.msg.head_len, strlen(s) - 9);
    CHECK_INT(res.msg.framing, HTTP1_BODY_LENGTH);
    CHECK_INT(res.msg.content_length, 9);
    CHECK_INT(res.msg.num_headers, 2);

    const unsigned CL = HTTP1_F_HAS_CL, TE = HTTP1_F_HAS_TE, KA = HTTP1_F_KEEP_ALIVE;
    const enum http1_method GET = HTTP1_METHOD_GET;
    RES_OK("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", GET, HTTP1_BODY_LENGTH, CL | KA);
    RES_OK("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", GET, HTTP1_BODY_CHUNKED,
           TE | KA);
    RES_OK("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", GET, HTTP1_BODY_UNTIL_CLOSE, TE);
    RES_OK("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", GET,
           HTTP1_BODY_UNTIL_CLOSE, TE);
    RES_OK("HTTP/1.1 200 OK\r\n\r\n", GET, HTTP1_BODY_UNTIL_CLOSE, 0);
    RES_OK("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n", GET, HTTP1_BODY_UNTIL_CLOSE,
           HTTP1_F_CONN_KEEPALIVE);
    RES_OK("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", HTTP1_METHOD_HEAD, HTTP1_BODY_NONE,
           CL | KA);
    RES_OK("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1_METHOD_HEAD,
           HTTP1_BODY_NONE, TE | KA);
    RES_OK("HTTP/1.1 204 No Content\r\n\r\n", GET, HTTP1_BODY_NONE, KA);
    RES_OK("HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n", GET, HTTP1_BODY_NONE,
           CL | KA);
    RES_OK("HTTP/1.1 100 Continue\r\n\r\n", GET, HTTP1_BODY_NONE, KA);
    RES_OK("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n", GET, HTTP1_BODY_NONE, KA);
    RES_OK("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
           "Upgrade\r\n\r\n",
           GET, HTTP1_BODY_NONE, HTTP1_F_HAS_UPGRADE | HTTP1_F_CONN_UPGRADE | KA);
    RES_OK("HTTP/1.1 200 Connection established\r\n\r\n", HTTP1_METHOD_CONNECT,
           HTTP1_BODY_UNTIL_CLOSE, 0);
    RES_OK("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", HTTP1_METHOD_CONNECT,
           HTTP1_BODY_UNTIL_CLOSE, CL);
    RES_OK("HTTP/1.1 407 Proxy Auth\r\nContent-Length: 4\r\n\r\n", HTTP1_METHOD_CONNECT,
           HTTP1_BODY_LENGTH, CL | KA);
    RES_OK("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n", GET,
           HTTP1_BODY_LENGTH, CL | HTTP1_F_CONN_CLOSE);
    RES_OK("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", GET, HTTP1_BODY_LENGTH, CL);
    RES_OK("HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n", GET,
           HTTP1_BODY_LENGTH, CL | HTTP1_F_CONN_KEEPALIVE | KA);
    RES_OK("HTTP/1.0 200 OK\r\n\r\n", GET, HTTP1_BODY_UNTIL_CLOSE, 0);
    RES_OK("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", GET, HTTP1_BODY_LENGTH, CL | KA);
    RES_OK("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", GET, HTTP1_BODY_LENGTH, CL | KA);
    RES_OK("HTTP/1.1 599 Wei\trd \xe2\x9c\x93\r\nContent-Length: 0\r\n\r\n", GET, HTTP1_BODY_LENGTH,
           CL | KA);
    /* Host rules are for requests only */
    RES_OK("HTTP/1.1 200 OK\r\nHost: a\r\nHost: b/c\r\nContent-Length: 0\r\n\r\n", GET,
           HTTP1_BODY_LENGTH, CL | KA);

    RES_ERR("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Content-Length with Transfer-Encoding");
    RES_ERR("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "differing Content-Length values");
    RES_ERR("HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n", "invalid Content-Length");
    RES_ERR("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n",
            "Content-Length too large");
    RES_ERR("HTTP/1.1 200 OK\r\nTransfer-Encoding: br\r\n\r\n", "unknown transfer coding");
    RES_ERR("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "chunked applied more than once");
    RES_ERR("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding in HTTP/1.0 message");
    RES_ERR("HTTP/1.1 2x0 OK\r\n\r\n", "invalid status code");
    RES_ERR("HTTP/1.1 099 Low\r\n\r\n", "invalid status code");
    RES_ERR("HTTP/1.1 600 High\r\n\r\n", "invalid status code");
    RES_ERR("HTTP/1.1 2000 OK\r\n\r\n", "invalid status code");
    RES_ERR("HTTP/1.1 20\r\n\r\n", "invalid status code");
    RES_ERR("HTTP/2.0 200 OK\r\n\r\n", "unsupported HTTP version");
    RES_ERR("HTTP/1.1\r\n\r\n", "malformed status line");
    RES_ERR("HTTP/1.1x200 OK\r\n\r\n", "invalid HTTP version");
    RES_ERR("ICY 200 OK\r\n\r\n", "invalid HTTP version");
    RES_ERR("HTTP/1.1 200 O\x01K\r\n\r\n", "control character in reason phrase");
    RES_ERR("HTTP/1.1 200 OK\nServer: x\r\n\r\n", "bare LF (line endings must be CRLF)");
    RES_ERR("HTTP/1.1 200 OK\r\nServer: x\ry\r\n\r\n", "bare CR (line endings must be CRLF)");
    RES_ERR("HTTP/1.1 200 OK\r\nServer : x\r\n\r\n",
            "whitespace between header field name and colon");
    RES_ERR("HTTP/1.1 200 OK\r\nServer: x\r\n y\r\n\r\n", "obsolete line folding");
    RES_ERR("HTTP/1.1 200 OK\r\nServer: x\x7f\r\n\r\n", "control character in header field");

    struct http1_limits lim = default_limits;
    lim.max_head_bytes = 30;
    s = "HTTP/1.1 200 OK\r\nServer: something long\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_res_lim(s, strlen(s), &lim, GET, &res), HTTP1_ERROR);
    CHECK_INT(res.msg.error_status, 502);
    CHECK_STR(res.msg.error_reason, "response head too large");
    lim = default_limits;
    lim.max_headers = 1;
    s = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_res_lim(s, strlen(s), &lim, GET, &res), HTTP1_ERROR);
    CHECK_INT(res.msg.error_status, 502);
    CHECK_STR(res.msg.error_reason, "too many header fields");
}

/* ---- chunked ------------------------------------------------------------- */

/* Scans <s> whole and one byte per call; both must agree. Returns the
 * result and sets *<consumed>, *<c>. */
static int chunked_both(const char *s, size_t len, size_t *consumed, struct http1_chunked *c)
{
    struct http1_chunked c1;
    size_t total = 0, n;
    int r1 = HTTP1_AGAIN, r;
    char *map;
    size_t maplen;

    /* the whole input ending at a guard page */
    char *g = guarded_copy(s, len, &map, &maplen);
    http1_chunked_init(c);
    r = http1_chunked_scan(c, g, len, consumed);
    munmap(map, maplen);
    CHECK(*consumed <= len);

    http1_chunked_init(&c1);
    for (size_t i = 0; i < len; i++) {
        g = guarded_copy(s + i, 1, &map, &maplen);
        r1 = http1_chunked_scan(&c1, g, 1, &n);
        munmap(map, maplen);
        total += n;
        if (r1 != HTTP1_AGAIN)
            break;
    }
    if (r1 != r || total != *consumed || c1.data_bytes != c->data_bytes ||
        c1.error_reason != c->error_reason)
        check_fail(__FILE__, __LINE__, NULL,
                   "byte by byte: %d consumed %zu data %llu, whole: %d %zu %llu", r1, total,
                   (unsigned long long)c1.data_bytes, r, *consumed,
                   (unsigned long long)c->data_bytes);
    return r;
}

static void expect_chunked(int line, const char *s, size_t len, int want, size_t want_consumed,
                           uint64_t want_data, const char *reason)
{
    struct http1_chunked c;
    size_t consumed;
    int r = chunked_both(s, len, &consumed, &c);
    if (r != want || (want != HTTP1_ERROR && consumed != want_consumed) ||
        (want != HTTP1_ERROR && c.data_bytes != want_data))
        check_fail(__FILE__, line, NULL, "got %d consumed %zu data %llu (%s)", r, consumed,
                   (unsigned long long)c.data_bytes, c.error_reason ? c.error_reason : "");
    if (want == HTTP1_ERROR && (!c.error_reason || strcmp(c.error_reason, reason)))
        check_fail(__FILE__, line, NULL, "reason \"%s\", expected \"%s\"",
                   c.error_reason ? c.error_reason : "(null)", reason);
}

#define CH_OK(s, consumed, data)                                                                   \
    expect_chunked(__LINE__, s, strlen(s), HTTP1_OK, consumed, data, NULL)
#define CH_AGAIN(s, data) expect_chunked(__LINE__, s, strlen(s), HTTP1_AGAIN, strlen(s), data, NULL)
#define CH_ERR(s, reason) expect_chunked(__LINE__, s, strlen(s), HTTP1_ERROR, 0, 0, reason)

static void test_chunked(void)
{
    check_context = "chunked";
    CH_OK("5\r\nhello\r\n0\r\n\r\n", 15, 5);
    CH_OK("5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 15, 5);
    CH_OK("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 26, 11);
    CH_OK("A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n", 35, 20);
    CH_OK("0005\r\nhello\r\n000\r\n\r\n", 20, 5);
    CH_OK("5;name=value;x=\"q s\"\r\nhello\r\n0;last\r\n\r\n", 39, 5);
    CH_OK("5 ; a=b\r\nhello\r\n0\r\n\r\n", 21, 5);
    CH_OK("0\r\nX-Sum: abc\r\nX-B:\t v \r\n\r\n", 27, 0);
    CH_AGAIN("5\r\nhel", 3);
    CH_AGAIN("5\r\nhello\r\n0\r\n", 5);
    CH_AGAIN("5\r\nhello\r\n0\r\nX-T: 1\r\n", 5);
    CH_AGAIN("ffffffffffffffff\r\nabc", 3);

    CH_ERR("x\r\n", "invalid chunk size");
    CH_ERR("\r\n", "invalid chunk size");
    CH_ERR(";a\r\n", "invalid chunk size");
    CH_ERR("-5\r\n", "invalid chunk size");
    CH_ERR("0x5\r\n", "invalid chunk size");
    CH_ERR("5 \r\nhello\r\n", "invalid chunk size");
    CH_ERR("5 5\r\n", "invalid chunk size");
    CH_ERR("10000000000000000\r\n", "chunk size too large");
    CH_ERR("5\n", "bare LF (line endings must be CRLF)");
    CH_ERR("\n", "bare LF (line endings must be CRLF)");
    CH_ERR("5\rX", "bare CR (line endings must be CRLF)");
    CH_ERR("5;a\nhello", "bare LF (line endings must be CRLF)");
    CH_ERR("5;a\x01\r\nhello\r\n", "invalid chunk extension");
    CH_ERR("5;a\x7f\r\nhello\r\n", "invalid chunk extension");
    CH_ERR("5\r\nhelloX\r\n", "missing CRLF after chunk data");
    CH_ERR("5\r\nhello\rX", "missing CRLF after chunk data");
    CH_ERR("5\r\nhello\n0\r\n\r\n", "missing CRLF after chunk data");
    CH_ERR("0\r\nX : y\r\n\r\n", "whitespace between header field name and colon");
    CH_ERR("0\r\n y\r\n\r\n", "obsolete line folding");
    CH_ERR("0\r\n: y\r\n\r\n", "empty header field name");
    CH_ERR("0\r\nX(: y\r\n\r\n", "invalid character in header field name");
    CH_ERR("0\r\nX\r\n\r\n", "header field without colon");
    CH_ERR("0\r\nX: a\rb\r\n\r\n", "bare CR (line endings must be CRLF)");
    CH_ERR("0\r\nX: a\nb\r\n\r\n", "bare LF (line endings must be CRLF)");
    CH_ERR("0\r\nX: a\x01\r\n\r\n", "control character in header field");
    CH_ERR("0\r\n\n", "bare LF (line endings must be CRLF)");
    CH_ERR("0\r\n\rX", "bare CR (line endings must be CRLF)");
    CH_ERR("0\r\n\r\r", "bare CR (line endings must be CRLF)");
    {
        const char nul[] = "0\r\nX: a\0\r\n\r\n";
        expect_chunked(__LINE__, nul, sizeof(nul) - 1, HTTP1_ERROR, 0, 0,
                       "NUL byte in header field");
    }

    /* never-ending lines are errors, not endless scans */
    static char big[10000];
    memset(big, '0', sizeof(big) - 1);
    CH_ERR(big, "chunk size line too long");
    memcpy(big, "1;", 2);
    memset(big + 2, 'a', sizeof(big) - 3);
    CH_ERR(big, "chunk size line too long");
    memcpy(big, "0\r\nX:", 5);
    memset(big + 5, 'a', sizeof(big) - 6);
    CH_ERR(big, "trailer line too long");

    /* state after the end and after an error */
    struct http1_chunked c;
    size_t n;
    http1_chunked_init(&c);
    CHECK_STR(http1_chunked_state_str(&c), "size-first");
    CHECK_INT(http1_chunked_scan(&c, "3\r\nabc\r\n0\r\n\r\nrest", 17, &n), HTTP1_OK);
    CHECK_INT(n, 13);
    CHECK_STR(http1_chunked_state_str(&c), "done");
    CHECK_INT(http1_chunked_scan(&c, "rest", 4, &n), HTTP1_OK);
    CHECK_INT(n, 0);
    http1_chunked_init(&c);
    CHECK_INT(http1_chunked_scan(&c, "3\r\nab", 5, &n), HTTP1_AGAIN);
    CHECK_INT(c.chunk_left, 1);
    CHECK_STR(http1_chunked_state_str(&c), "data");
    CHECK_INT(http1_chunked_scan(&c, "cX", 2, &n), HTTP1_ERROR);
    CHECK_INT(n, 1);
    CHECK_STR(http1_chunked_state_str(&c), "error");
    CHECK_INT(http1_chunked_scan(&c, "\r\n", 2, &n), HTTP1_ERROR);
    CHECK_INT(http1_chunked_scan(&c, "", 0, &n), HTTP1_ERROR);
}

/* ---- helpers ------------------------------------------------------------- */

static struct http1_slice sl(const char *s)
{
    return (struct http1_slice){s, strlen(s)};
}

static void test_helpers(void)
{
    check_context = "helpers";
    CHECK(http1_slice_eq(sl("Keep-Alive"), "keep-alive"));
    CHECK(!http1_slice_eq(sl("Keep-Alive2"), "keep-alive"));
    CHECK(!http1_slice_eq(sl("Keep"), "keep-alive"));
    CHECK(http1_slice_eq(sl(""), ""));
    CHECK(http1_list_has_token(sl("keep-alive, Upgrade"), "upgrade"));
    CHECK(http1_list_has_token(sl(" ,upgrade ,"), "upgrade"));
    CHECK(http1_list_has_token(sl("a,\tUPGRADE\t"), "upgrade"));
    CHECK(!http1_list_has_token(sl("upgrades"), "upgrade"));
    CHECK(!http1_list_has_token(sl("up grade"), "upgrade"));
    CHECK(!http1_list_has_token(sl(""), "upgrade"));
    CHECK(!http1_list_has_token((struct http1_slice){NULL, 0}, "upgrade"));

    static const int codes[] = {100, 101, 200, 201, 202, 203, 204, 205, 206, 301, 302, 303,
                                304, 307, 308, 400, 401, 403, 404, 405, 408, 411, 413, 414,
                                415, 417, 426, 429, 431, 500, 501, 502, 503, 504, 505};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (!strcmp(http1_status_text(codes[i]), "Unknown"))
            check_fail(__FILE__, __LINE__, NULL, "no text for %d", codes[i]);
    CHECK_STR(http1_status_text(200), "OK");
    CHECK_STR(http1_status_text(431), "Request Header Fields Too Large");
    CHECK_STR(http1_status_text(299), "Unknown");
}

/* Decodes <s> feeding at most <step> bytes a call; appends the payload to
 * <out>. Returns the last result. */
static int decode_all(const char *s, size_t len, size_t step, char *out, size_t *out_len)
{
    struct http1_chunked c;
    http1_chunked_init(&c);
    size_t pos = 0;
    int rc = HTTP1_AGAIN;
    *out_len = 0;
    while (pos < len && rc == HTTP1_AGAIN) {
        size_t avail = len - pos < step ? len - pos : step;
        size_t used, off, dlen;
        rc = http1_chunked_decode(&c, s + pos, avail, &used, &off, &dlen);
        memcpy(out + *out_len, s + pos + off, dlen);
        *out_len += dlen;
        pos += used;
    }
    return rc;
}

static void test_chunked_decode(void)
{
    check_context = "chunked_decode";
    static const char body[] = "5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
    char out[64];
    size_t out_len;
    for (size_t step = 1; step <= sizeof(body); step++) {
        int rc = decode_all(body, sizeof(body) - 1, step, out, &out_len);
        if (rc != HTTP1_OK || out_len != 11 || memcmp(out, "hello world", 11) != 0)
            check_fail(__FILE__, __LINE__, NULL, "step %zu: rc %d payload \"%.*s\"", step, rc,
                       (int)out_len, out);
    }
    if (decode_all("5\r\nhelloX", 10, 64, out, &out_len) != HTTP1_ERROR)
        check_fail(__FILE__, __LINE__, NULL, "missing CRLF after data must fail");
}

/* Canonical forwarding, parser side: an absolute-form target is split into
 * authority (the host) and path; duplicate identical Content-Length fields
 * and empty list elements are accepted (the rebuilder writes them once). */
static void test_request_canonical(void)
{
    struct http1_request req;
    const char *s;

    s = "GET http://b.test/x?y=1 HTTP/1.1\r\nHost: a.test\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK(req.msg.flags & HTTP1_F_ABSOLUTE_FORM);
    CHECK_SLICE(req.host, "b.test");
    CHECK_SLICE(req.target, "/x?y=1");

    s = "GET HTTPS://B.test:8443 HTTP/1.1\r\nHost: a.test\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK(req.msg.flags & HTTP1_F_ABSOLUTE_FORM);
    CHECK_SLICE(req.host, "B.test:8443");
    CHECK_SLICE(req.target, "");

    s = "GET http://[::1]:80?q HTTP/1.0\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_SLICE(req.host, "[::1]:80");
    CHECK_SLICE(req.target, "?q");

    s = "GET /http://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK(!(req.msg.flags & HTTP1_F_ABSOLUTE_FORM));
    CHECK_SLICE(req.host, "a.test");

    s = "GET ftp://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK(!(req.msg.flags & HTTP1_F_ABSOLUTE_FORM));
    CHECK_SLICE(req.target, "ftp://b.test/");

    REQ_ERR("GET http://user@b.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n", 400,
            "invalid authority in request target");
    REQ_ERR("GET http:///x HTTP/1.1\r\nHost: b.test\r\n\r\n", 400,
            "invalid authority in request target");
    REQ_ERR("GET http://b.test/ HTTP/1.1\r\n\r\n", 400, "missing Host header");

    s = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 00040\r\ncontent-length: 40\r\n\r\n";
    check_context = s;
    CHECK_INT(parse_req(s, &req), HTTP1_OK);
    CHECK_INT(req.msg.framing, HTTP1_BODY_LENGTH);
    CHECK_INT(req.msg.content_length, 40);

    static const char *const te_lists[] = {",chunked", "chunked,", "chunked, ,", " , chunked"};
    for (size_t i = 0; i < sizeof(te_lists) / sizeof(te_lists[0]); i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: %s\r\n\r\n",
                 te_lists[i]);
        check_context = te_lists[i];
        CHECK_INT(parse_req(buf, &req), HTTP1_OK);
        CHECK_INT(req.msg.framing, HTTP1_BODY_CHUNKED);
    }
}

static bool drop_test_fields(struct http1_slice name)
{
    return http1_slice_eq(name, "host") || http1_slice_eq(name, "authorization") ||
           http1_slice_eq(name, "content-length");
}

/* Runs http1_chunked_filter over <s> as a connection would: at most <step>
 * new bytes per call, behind the bytes held back by the call before.
 * Appends what was passed on to <out>; *<rest> is where the body ended in
 * the filtered stream (bytes after it are the next message's). */
static int filter_all(const char *s, size_t len, size_t step, char *out, size_t *out_len,
                      const char **reason)
{
    struct http1_chunked c;
    char buf[8192];
    size_t have = 0, pos = 0;
    int rc = HTTP1_AGAIN;
    http1_chunked_init(&c);
    *out_len = 0;
    while (rc == HTTP1_AGAIN && (pos < len || have > 0)) {
        size_t add = len - pos < step ? len - pos : step;
        if (add == 0 && have > 0)
            break; /* held back and nothing more to come */
        memcpy(buf + have, s + pos, add);
        pos += add;
        have += add;
        size_t n = have, used;
        rc = http1_chunked_filter(&c, buf, &n, &used, drop_test_fields);
        if (used > n)
            check_fail(__FILE__, __LINE__, NULL, "consumed %zu of %zu", used, n);
        memcpy(out + *out_len, buf, used);
        *out_len += used;
        memmove(buf, buf + used, n - used);
        have = n - used;
    }
    *reason = c.error_reason;
    return rc;
}

static void test_chunked_filter(void)
{
    static const char body[] = "3\r\nabc\r\n0\r\nHost: evil\r\nX-Ok: 1\r\nAuthorization: x\r\n"
                               "X-Also: 2\r\ncontent-length: 5\r\n\r\nNEXT";
    static const char want[] = "3\r\nabc\r\n0\r\nX-Ok: 1\r\nX-Also: 2\r\n\r\n";
    static char out[8192];
    size_t out_len;
    const char *reason;
    check_context = "chunked_filter";
    for (size_t step = 1; step <= sizeof(body); step++) {
        int rc = filter_all(body, sizeof(body) - 1, step, out, &out_len, &reason);
        if (rc != HTTP1_OK || out_len != sizeof(want) - 1 || memcmp(out, want, out_len))
            check_fail(__FILE__, __LINE__, NULL, "step %zu: rc %d out \"%.*s\"", step, rc,
                       (int)out_len, out);
    }

    /* no trailers, and every trailer dropped */
    for (size_t step = 1; step < 20; step++) {
        int rc = filter_all("0\r\n\r\n", 5, step, out, &out_len, &reason);
        CHECK(rc == HTTP1_OK && out_len == 5);
        rc = filter_all("0\r\nHost: x\r\n\r\n", 14, step, out, &out_len, &reason);
        CHECK(rc == HTTP1_OK && out_len == 5 && !memcmp(out, "0\r\n\r\n", 5));
    }

    /* invalid trailer bytes fail as soon as they are seen, whole line or not */
    for (size_t step = 1; step < 12; step++) {
        int rc = filter_all("0\r\nX: a\x01", 8, step, out, &out_len, &reason);
        CHECK_INT(rc, HTTP1_ERROR);
        CHECK_STR(reason, "control character in header field");
        rc = filter_all("0\r\nX a: b\r\n", 11, step, out, &out_len, &reason);
        CHECK_INT(rc, HTTP1_ERROR);
        CHECK_STR(reason, "whitespace between header field name and colon");
    }

    /* a trailer line that never ends is refused at the line bound */
    static char longline[6000];
    memcpy(longline, "0\r\nX: ", 6);
    memset(longline + 6, 'a', sizeof(longline) - 6);
    CHECK_INT(filter_all(longline, sizeof(longline), 1000, out, &out_len, &reason), HTTP1_ERROR);
    CHECK_STR(reason, "trailer line too long");

    /* the filter matches the scanner on the framing: same end, same error */
    struct http1_chunked c;
    size_t n, used;
    char bad[] = "3\r\nabcX";
    http1_chunked_init(&c);
    n = sizeof(bad) - 1;
    CHECK_INT(http1_chunked_filter(&c, bad, &n, &used, drop_test_fields), HTTP1_ERROR);
    CHECK_STR(c.error_reason, "missing CRLF after chunk data");
    CHECK_INT(used, 6);
}

int main(void)
{
    page_size = sysconf(_SC_PAGESIZE);
    test_request_valid();
    test_request_pipelined();
    test_request_errors();
    test_response();
    test_chunked();
    test_chunked_decode();
    test_request_canonical();
    test_chunked_filter();
    test_helpers();
    return check_report("test_http1");
}
