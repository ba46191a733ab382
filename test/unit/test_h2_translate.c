// links: usher_proxy_core
/* proxy/core/headers.c, the HTTP/2 side: an HTTP/2 request's header list
 * becomes the HTTP/1.1 head its backend gets, byte for byte (RFC 9113
 * section 8); malformed requests are refused with the status DESIGN names;
 * response heads and trailers become HTTP/2 field lists; and body.c keeps a
 * chunked response's trailers for its trailing HEADERS. */
#include <stdlib.h>
#include <string.h>

#include "parser/http1.h"
#include "proxy/core/body.h"
#include "proxy/core/headers.h"
#include "test/unit/check.h"

static const struct http1_limits limits = {
    .max_head_bytes = 16384,
    .max_headers = 8,
    .max_uri_bytes = 64,
};

static const char *fixed_id(void *ctx)
{
    return "rid";
}

static const struct forward_info fi = {
    .client_addr = "10.0.0.9",
    .proto = "https",
    .request_id_max = 16,
    .new_request_id = fixed_id,
};

/* A header list written as "name: value" strings (names may start with ':'). */
static size_t fields(struct h2_field *f, const char *const *lines)
{
    size_t n = 0;
    for (; lines[n]; n++) {
        const char *colon = strchr(lines[n] + 1, ':');
        f[n].name = (struct http1_slice){lines[n], (size_t)(colon - lines[n])};
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        f[n].value = (struct http1_slice){v, strlen(v)};
    }
    return n;
}

#define REQ(...) ((const char *const[]){__VA_ARGS__, NULL})
#define PSEUDO ":method: GET", ":scheme: https", ":authority: a.test", ":path: /p?q=1"

static void expect_head(int line, const char *const *lines, bool end_stream, const char *want,
                        enum http1_framing framing)
{
    struct h2_field f[32];
    size_t n = fields(f, lines);
    struct hbuf out = {0};
    struct h2_request req;
    int rc = headers_h2_request(&out, f, n, end_stream, &limits, &fi, &req);
    if (rc != 0) {
        check_fail(__FILE__, line, NULL, "refused: %d %s", req.error_status, req.error_reason);
    } else {
        if (out.len != strlen(want) || memcmp(out.data, want, out.len) != 0)
            check_fail(__FILE__, line, NULL, "built\n%.*s\nexpected\n%s", (int)out.len, out.data,
                       want);
        if (req.framing != framing)
            check_fail(__FILE__, line, NULL, "framing %d, want %d", req.framing, framing);
        /* whatever it is, the strict HTTP/1.1 parser takes it whole */
        struct http1_header hs[32];
        struct http1_request p = {.msg.headers = hs};
        struct http1_limits big = {65536, 32, 65536};
        if (http1_parse_request(out.data, out.len, &big, &p) != HTTP1_OK ||
            p.msg.head_len != out.len)
            check_fail(__FILE__, line, NULL, "the head does not parse: %s",
                       p.msg.error_reason ? p.msg.error_reason : "incomplete");
    }
    hbuf_free(&out);
}
#define EXPECT_HEAD(lines, end, want, framing) expect_head(__LINE__, lines, end, want, framing)

static void expect_refused(int line, const char *const *lines, bool end_stream, int status)
{
    struct h2_field f[32];
    size_t n = fields(f, lines);
    struct hbuf out = {0};
    struct h2_request req;
    int rc = headers_h2_request(&out, f, n, end_stream, &limits, &fi, &req);
    if (rc == 0)
        check_fail(__FILE__, line, NULL, "accepted:\n%.*s", (int)out.len, out.data);
    else if (req.error_status != status)
        check_fail(__FILE__, line, NULL, "status %d (%s), want %d", req.error_status,
                   req.error_reason, status);
    hbuf_free(&out);
}
#define EXPECT_REFUSED(lines, end, status) expect_refused(__LINE__, lines, end, status)

#define XF "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: a.test\r\n"

static void test_request(void)
{
    EXPECT_HEAD(REQ(PSEUDO, "user-agent: t"), true,
                "GET /p?q=1 HTTP/1.1\r\nHost: a.test\r\nuser-agent: t\r\n" XF
                "X-Request-Id: rid\r\n\r\n",
                HTTP1_BODY_NONE);
    /* cookie crumbs joined (RFC 9113 8.2.3), te and host dropped (Host is
     * :authority), earlier X-Forwarded-For kept, X-Forwarded-Host/Proto
     * replaced, the client's request id forwarded */
    EXPECT_HEAD(REQ(PSEUDO, "cookie: a=1", "te: trailers", "host: A.test", "cookie: b=2",
                    "x-forwarded-for: 1.2.3.4", "x-forwarded-proto: http",
                    "x-forwarded-host: evil", "x-request-id: abc", "x-request-id: def"),
                true,
                "GET /p?q=1 HTTP/1.1\r\nHost: a.test\r\nCookie: a=1; b=2\r\nx-request-id: abc\r\n"
                "X-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nX-Forwarded-Proto: https\r\n"
                "X-Forwarded-Host: a.test\r\n\r\n",
                HTTP1_BODY_NONE);
    /* without :authority, host stands in */
    EXPECT_HEAD(REQ(":method: GET", ":scheme: http", ":path: /", "host: a.test"), true,
                "GET / HTTP/1.1\r\nHost: a.test\r\n" XF "X-Request-Id: rid\r\n\r\n",
                HTTP1_BODY_NONE);
    /* a body: with its length as it is, without one chunked */
    EXPECT_HEAD(REQ(":method: POST", ":scheme: https", ":authority: a.test", ":path: /u",
                    "content-length: 5"),
                false,
                "POST /u HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n" XF
                "X-Request-Id: rid\r\n\r\n",
                HTTP1_BODY_LENGTH);
    EXPECT_HEAD(REQ(":method: POST", ":scheme: https", ":authority: a.test", ":path: /u"), false,
                "POST /u HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n" XF
                "X-Request-Id: rid\r\n\r\n",
                HTTP1_BODY_CHUNKED);
    /* no body: a POST still says so (RFC 9110 8.6), a GET does not */
    EXPECT_HEAD(REQ(":method: POST", ":scheme: https", ":authority: a.test", ":path: /u"), true,
                "POST /u HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\n" XF
                "X-Request-Id: rid\r\n\r\n",
                HTTP1_BODY_NONE);
    EXPECT_HEAD(REQ(":method: OPTIONS", ":scheme: https", ":authority: a.test", ":path: *"), true,
                "OPTIONS * HTTP/1.1\r\nHost: a.test\r\n" XF "X-Request-Id: rid\r\n\r\n",
                HTTP1_BODY_NONE);
}

static void test_refused(void)
{
    /* RFC 9113 8.2.2: connection-specific fields; te other than trailers */
    EXPECT_REFUSED(REQ(PSEUDO, "connection: keep-alive"), true, 400);
    EXPECT_REFUSED(REQ(PSEUDO, "keep-alive: 5"), true, 400);
    EXPECT_REFUSED(REQ(PSEUDO, "proxy-connection: close"), true, 400);
    EXPECT_REFUSED(REQ(PSEUDO, "transfer-encoding: chunked"), true, 400);
    EXPECT_REFUSED(REQ(PSEUDO, "upgrade: h2c"), true, 400);
    EXPECT_REFUSED(REQ(PSEUDO, "te: gzip"), true, 400);
    /* RFC 9113 8.2.1, 8.3: names, values and pseudo-headers */
    EXPECT_REFUSED(REQ(PSEUDO, "X-Upper: 1"), true, 400);
    EXPECT_REFUSED(REQ(PSEUDO, "x-v: a\r\nInjected: 1"), true, 400);
    EXPECT_REFUSED(REQ(PSEUDO, "x-v: padded "), true, 400);
    EXPECT_REFUSED(REQ(PSEUDO, ":protocol: websocket"), true, 400);
    EXPECT_REFUSED(REQ("x-a: 1", PSEUDO), true, 400);
    EXPECT_REFUSED(REQ(PSEUDO, ":method: GET"), true, 400);
    EXPECT_REFUSED(REQ(":method: GET", ":scheme: https", ":path: /"), true, 400);
    EXPECT_REFUSED(REQ(":method: GET", ":scheme: https", ":authority: u@a.test", ":path: /"),
                   true, 400);
    EXPECT_REFUSED(REQ(":method: GET", ":scheme: https", ":authority: a.test", ":path: p"), true,
                   400);
    EXPECT_REFUSED(REQ(":method: GET", ":scheme: https", ":authority: a.test", ":path: /a b"),
                   true, 400);
    EXPECT_REFUSED(REQ(":method: G T", ":scheme: https", ":authority: a.test", ":path: /"), true,
                   400);
    EXPECT_REFUSED(REQ(PSEUDO, "host: b.test"), true, 400);
    EXPECT_REFUSED(REQ(PSEUDO, "content-length: 1", "content-length: 2"), false, 400);
    EXPECT_REFUSED(REQ(PSEUDO, "content-length: 5"), true, 400);
    EXPECT_REFUSED(REQ(PSEUDO, "content-length: 1x"), false, 400);
    /* limits and methods */
    EXPECT_REFUSED(REQ(":method: CONNECT", ":authority: a.test:443"), true, 501);
    EXPECT_REFUSED(REQ(":method: GET", ":scheme: https", ":authority: a.test",
                       ":path: /0123456789012345678901234567890123456789012345678901234567890123"),
                   true, 414);
    EXPECT_REFUSED(REQ(PSEUDO, "a: 1", "b: 1", "c: 1", "d: 1", "e: 1", "f: 1", "g: 1", "h: 1",
                       "i: 1"),
                   true, 431);
    /* cookie crumbs count once */
    EXPECT_HEAD(REQ(PSEUDO, "a: 1", "b: 1", "c: 1", "d: 1", "e: 1", "f: 1", "g: 1", "cookie: x",
                    "cookie: y"),
                true,
                "GET /p?q=1 HTTP/1.1\r\nHost: a.test\r\nCookie: x; y\r\na: 1\r\nb: 1\r\nc: 1\r\n"
                "d: 1\r\ne: 1\r\nf: 1\r\ng: 1\r\n" XF "X-Request-Id: rid\r\n\r\n",
                HTTP1_BODY_NONE);
}

static void test_response(void)
{
    const char *in = "HTTP/1.1 200 OK\r\nContent-Type: text/x\r\nConnection: keep-alive, X-Hop\r\n"
                     "X-Hop: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n"
                     "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n";
    struct http1_header hs[16];
    struct http1_response res = {.msg.headers = hs};
    struct http1_limits big = {65536, 16, 65536};
    CHECK_INT(http1_parse_response(in, strlen(in), &big, HTTP1_METHOD_GET, &res), HTTP1_OK);
    struct h2_field out[17];
    struct hbuf scratch = {0};
    int n = headers_h2_response(&res, &scratch, out);
    const char *want[][2] = {{":status", "200"},
                             {"content-type", "text/x"},
                             {"set-cookie", "a=1"},
                             {"set-cookie", "b=2"}};
    CHECK_INT(n, 4);
    for (int i = 0; i < n && i < 4; i++) {
        CHECK(out[i].name.len == strlen(want[i][0]) &&
                  !memcmp(out[i].name.ptr, want[i][0], out[i].name.len),
              "field %d name %.*s", i, (int)out[i].name.len, out[i].name.ptr);
        CHECK(out[i].value.len == strlen(want[i][1]) &&
                  !memcmp(out[i].value.ptr, want[i][1], out[i].value.len),
              "field %d value", i);
    }
    hbuf_free(&scratch);
}

/* A chunked body de-chunked for an HTTP/2 client, fed in pieces of every
 * size: the payload comes out whole, the kept trailers go to the side. */
static void test_dechunk_trailers(void)
{
    const char *wire = "5\r\nhello\r\n6\r\n world\r\n0\r\nGrpc-Status: 0\r\nContent-Length: 9\r\n"
                       "X-Sum: abc\r\n\r\nNEXT";
    for (size_t step = 1; step <= strlen(wire); step++) {
        struct body_state bs;
        struct http1_message m = {.framing = HTTP1_BODY_CHUNKED};
        body_start(&bs, &m, true);
        struct hbuf trailers = {0};
        bs.trailers = &trailers;
        struct buf b = {.data = malloc(256), .cap = 256};
        size_t fwd = 0, fed = 0;
        char payload[64] = {0};
        size_t got = 0;
        while (fed < strlen(wire) && !bs.done) {
            size_t k = strlen(wire) - fed < step ? strlen(wire) - fed : step;
            memcpy(b.data + b.end, wire + fed, k);
            b.end += k;
            fed += k;
            CHECK_INT(body_frame(&bs, &b, &fwd), 0);
            memcpy(payload + got, buf_head(&b), fwd); /* what is ready goes out */
            got += fwd;
            buf_consume(&b, fwd);
            fwd = 0;
        }
        CHECK(bs.done, "step %zu", step);
        CHECK(got == 11 && !memcmp(payload, "hello world", 11), "step %zu: %.*s", step, (int)got,
              payload);
        CHECK(trailers.len == strlen("Grpc-Status: 0\r\nX-Sum: abc\r\n\r\n") &&
                  !memcmp(trailers.data, "Grpc-Status: 0\r\nX-Sum: abc\r\n\r\n", trailers.len),
              "step %zu: trailers %zu bytes: %.*s", step, trailers.len, (int)trailers.len, trailers.data);
        /* what follows the body stays for the next message */
        CHECK(buf_len(&b) == strlen(wire) - fed + 4 || fed < strlen(wire), "step %zu", step);
        struct h2_field tf[4];
        struct hbuf scratch = {0};
        int n = headers_h2_trailers(&trailers, &scratch, tf, 4);
        CHECK_INT(n, 2);
        if (n == 2) {
            CHECK(tf[0].name.len == 11 && !memcmp(tf[0].name.ptr, "grpc-status", 11));
            CHECK(tf[0].value.len == 1 && tf[0].value.ptr[0] == '0');
            CHECK(tf[1].name.len == 5 && !memcmp(tf[1].name.ptr, "x-sum", 5));
            CHECK(tf[1].value.len == 3 && !memcmp(tf[1].value.ptr, "abc", 3));
        }
        hbuf_free(&scratch);
        hbuf_free(&trailers);
        free(b.data);
    }
}

int main(void)
{
    test_request();
    test_refused();
    test_response();
    test_dechunk_trailers();
    return check_report("test_h2_translate");
}
