// links: usher_proxy_core
/* proxy/core/headers.c: the heads usher rebuilds, byte for byte, from heads
 * parsed by the real parser: hop-by-hop fields dropped (with every field
 * Connection names), the X-Forwarded fields, absolute-form targets, upgrades
 * and how the response head ends for each kind of client connection. */
#include <stdio.h>
#include <string.h>

#include "parser/http1.h"
#include "proxy/core/headers.h"
#include "test/unit/check.h"

#define MAX_HEADERS 64

static const struct http1_limits limits = {
    .max_head_bytes = 16384,
    .max_headers = MAX_HEADERS,
    .max_uri_bytes = 8192,
};

static const struct forward_info plain = {.client_addr = "10.0.0.9", .proto = "http"};

static void check_bytes(int line, const struct hbuf *h, const char *want)
{
    if (h->len != strlen(want) || memcmp(h->data, want, h->len) != 0)
        check_fail(__FILE__, line, NULL, "built\n%.*s\nexpected\n%s", (int)h->len,
                   h->data ? h->data : "", want);
}

/* <in> parsed as a request and rebuilt with <fi> must be exactly <want>. */
static void expect_request(int line, const char *in, const struct forward_info *fi,
                           const char *want)
{
    struct http1_header hdrs[MAX_HEADERS];
    struct http1_request req = {.msg.headers = hdrs};
    struct hbuf out = {0};

    check_context = in;
    int r = http1_parse_request(in, strlen(in), &limits, &req);
    if (r != HTTP1_OK) {
        check_fail(__FILE__, line, NULL, "parse %d (%s)", r,
                   r == HTTP1_ERROR ? req.msg.error_reason : "");
    } else {
        if (headers_build_request(&out, &req, fi) != 0)
            check_fail(__FILE__, line, NULL, "headers_build_request failed");
        check_bytes(line, &out, want);
    }
    hbuf_free(&out);
    check_context = NULL;
}
#define EXPECT_REQUEST(in, fi, want) expect_request(__LINE__, in, fi, want)

/* <in> parsed as the response to a <method> request, rebuilt for <conn>. */
static void expect_response(int line, const char *in, enum http1_method method,
                            enum response_conn conn, bool dechunk, const char *want)
{
    struct http1_header hdrs[MAX_HEADERS];
    struct http1_response res = {.msg.headers = hdrs};
    struct hbuf out = {0};

    check_context = in;
    int r = http1_parse_response(in, strlen(in), &limits, method, &res);
    if (r != HTTP1_OK) {
        check_fail(__FILE__, line, NULL, "parse %d (%s)", r,
                   r == HTTP1_ERROR ? res.msg.error_reason : "");
    } else {
        if (headers_build_response(&out, &res, conn, dechunk) != 0)
            check_fail(__FILE__, line, NULL, "headers_build_response failed");
        check_bytes(line, &out, want);
    }
    hbuf_free(&out);
    check_context = NULL;
}
#define EXPECT_RESPONSE(in, method, conn, dechunk, want)                                           \
    expect_response(__LINE__, in, method, conn, dechunk, want)

static void test_request_plain(void)
{
    EXPECT_REQUEST("GET /a?b=1 HTTP/1.1\r\nHost: example.test\r\nAccept: */*\r\n\r\n", &plain,
                   "GET /a?b=1 HTTP/1.1\r\n"
                   "Host: example.test\r\n"
                   "Accept: */*\r\n"
                   "X-Forwarded-For: 10.0.0.9\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: example.test\r\n"
                   "\r\n");
    /* HTTP/1.0: no Host, so no X-Forwarded-Host; keep-alive asked for the pool */
    EXPECT_REQUEST("GET / HTTP/1.0\r\nUser-Agent: u\r\n\r\n", &plain,
                   "GET / HTTP/1.0\r\n"
                   "User-Agent: u\r\n"
                   "X-Forwarded-For: 10.0.0.9\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "Connection: keep-alive\r\n"
                   "\r\n");
    EXPECT_REQUEST("GET / HTTP/1.0\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", &plain,
                   "GET / HTTP/1.0\r\n"
                   "Host: h\r\n"
                   "X-Forwarded-For: 10.0.0.9\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: h\r\n"
                   "Connection: keep-alive\r\n"
                   "\r\n");
}

static void test_request_hop_by_hop(void)
{
    EXPECT_REQUEST("GET / HTTP/1.1\r\n"
                   "Host: h\r\n"
                   "Connection: keep-alive, X-Secret,x-trace\r\n"
                   "Keep-Alive: timeout=5\r\n"
                   "TE: trailers\r\n"
                   "Trailer: X-Sum\r\n"
                   "Upgrade: websocket\r\n"
                   "Proxy-Connection: keep-alive\r\n"
                   "X-Secret: s\r\n"
                   "X-Kept: k\r\n"
                   "X-TRACE: t\r\n"
                   "\r\n",
                   &plain,
                   "GET / HTTP/1.1\r\n"
                   "Host: h\r\n"
                   "X-Kept: k\r\n"
                   "X-Forwarded-For: 10.0.0.9\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: h\r\n"
                   "\r\n");
    /* several Connection fields: the names of all count */
    EXPECT_REQUEST("GET / HTTP/1.1\r\nHost: h\r\nConnection: x-a\r\nX-A: 1\r\nX-B: 2\r\n"
                   "Connection: close, X-B\r\nX-C: 3\r\n\r\n",
                   &plain,
                   "GET / HTTP/1.1\r\n"
                   "Host: h\r\n"
                   "X-C: 3\r\n"
                   "X-Forwarded-For: 10.0.0.9\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: h\r\n"
                   "\r\n");
    /* the framing fields stay whatever Connection says, in one spelling */
    EXPECT_REQUEST("POST /f HTTP/1.1\r\nHost: h\r\nConnection: Content-Length\r\n"
                   "Content-Length: 005\r\n\r\nhello",
                   &plain,
                   "POST /f HTTP/1.1\r\n"
                   "Host: h\r\n"
                   "Content-Length: 5\r\n"
                   "X-Forwarded-For: 10.0.0.9\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: h\r\n"
                   "\r\n");
    EXPECT_REQUEST("POST /f HTTP/1.1\r\nHost: h\r\nConnection: transfer-encoding\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n",
                   &plain,
                   "POST /f HTTP/1.1\r\n"
                   "Host: h\r\n"
                   "Transfer-Encoding: chunked\r\n"
                   "X-Forwarded-For: 10.0.0.9\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: h\r\n"
                   "\r\n");
}

static void test_request_forwarded(void)
{
    static const struct forward_info tls = {.client_addr = "2001:db8::7", .proto = "https"};

    /* every earlier hop in order, then this client; Proto and Host replaced */
    EXPECT_REQUEST("GET / HTTP/1.1\r\n"
                   "X-Forwarded-For: 1.1.1.1\r\n"
                   "Host: real.test\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: spoof.test\r\n"
                   "x-forwarded-for: 2.2.2.2, 3.3.3.3\r\n"
                   "X-Forwarded-For: \r\n"
                   "\r\n",
                   &tls,
                   "GET / HTTP/1.1\r\n"
                   "Host: real.test\r\n"
                   "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 2001:db8::7\r\n"
                   "X-Forwarded-Proto: https\r\n"
                   "X-Forwarded-Host: real.test\r\n"
                   "\r\n");
}

static void test_request_absolute_form(void)
{
    EXPECT_REQUEST("GET http://b.test:8080/p?q=1 HTTP/1.1\r\nHost: other.test\r\nAccept: x\r\n\r\n",
                   &plain,
                   "GET /p?q=1 HTTP/1.1\r\n"
                   "Host: b.test:8080\r\n"
                   "Accept: x\r\n"
                   "X-Forwarded-For: 10.0.0.9\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: b.test:8080\r\n"
                   "\r\n");
    EXPECT_REQUEST("GET http://b.test HTTP/1.1\r\nHost: b.test\r\n\r\n", &plain,
                   "GET / HTTP/1.1\r\n"
                   "Host: b.test\r\n"
                   "X-Forwarded-For: 10.0.0.9\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: b.test\r\n"
                   "\r\n");
    EXPECT_REQUEST("GET http://b.test?x=1 HTTP/1.1\r\nHost: b.test\r\n\r\n", &plain,
                   "GET /?x=1 HTTP/1.1\r\n"
                   "Host: b.test\r\n"
                   "X-Forwarded-For: 10.0.0.9\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: b.test\r\n"
                   "\r\n");
}

static void test_request_upgrade(void)
{
    static const struct forward_info up = {
        .client_addr = "10.0.0.9", .proto = "http", .upgrade = true};
    static const char ws[] = "GET /ws HTTP/1.1\r\n"
                             "Host: h\r\n"
                             "Connection: Upgrade\r\n"
                             "Upgrade: websocket\r\n"
                             "Sec-WebSocket-Key: k\r\n"
                             "\r\n";

    EXPECT_REQUEST(ws, &up,
                   "GET /ws HTTP/1.1\r\n"
                   "Host: h\r\n"
                   "Sec-WebSocket-Key: k\r\n"
                   "X-Forwarded-For: 10.0.0.9\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: h\r\n"
                   "Connection: upgrade\r\n"
                   "Upgrade: websocket\r\n"
                   "\r\n");
    /* not upgrading (the route does not allow it): Upgrade goes */
    EXPECT_REQUEST(ws, &plain,
                   "GET /ws HTTP/1.1\r\n"
                   "Host: h\r\n"
                   "Sec-WebSocket-Key: k\r\n"
                   "X-Forwarded-For: 10.0.0.9\r\n"
                   "X-Forwarded-Proto: http\r\n"
                   "X-Forwarded-Host: h\r\n"
                   "\r\n");
}

static void test_response(void)
{
    static const char ok11[] = "HTTP/1.1 200 OK\r\n"
                               "Content-Length: 2\r\n"
                               "Connection: keep-alive, X-Hop\r\n"
                               "Keep-Alive: timeout=5\r\n"
                               "X-Hop: 1\r\n"
                               "Server: s\r\n"
                               "X-Forwarded-For: 1.2.3.4\r\n"
                               "\r\n";
    static const char ok10[] = "HTTP/1.0 200 Fine\r\nContent-Length: 2\r\nServer: s\r\n\r\n";

    /* HTTP/1.1 backend, to a 1.1 client kept alive / a 1.0 one / closing */
    EXPECT_RESPONSE(ok11, HTTP1_METHOD_GET, RESPONSE_CONN_KEEP_ALIVE, false,
                    "HTTP/1.1 200 OK\r\n"
                    "Content-Length: 2\r\n"
                    "Server: s\r\n"
                    "X-Forwarded-For: 1.2.3.4\r\n"
                    "\r\n");
    EXPECT_RESPONSE(ok11, HTTP1_METHOD_GET, RESPONSE_CONN_KEEP_ALIVE_10, false,
                    "HTTP/1.1 200 OK\r\n"
                    "Content-Length: 2\r\n"
                    "Server: s\r\n"
                    "X-Forwarded-For: 1.2.3.4\r\n"
                    "Connection: keep-alive\r\n"
                    "\r\n");
    EXPECT_RESPONSE(ok11, HTTP1_METHOD_GET, RESPONSE_CONN_CLOSE, false,
                    "HTTP/1.1 200 OK\r\n"
                    "Content-Length: 2\r\n"
                    "Server: s\r\n"
                    "X-Forwarded-For: 1.2.3.4\r\n"
                    "Connection: close\r\n"
                    "\r\n");
    /* HTTP/1.0 backend: usher speaks 1.1 to the client, reason kept */
    EXPECT_RESPONSE(ok10, HTTP1_METHOD_GET, RESPONSE_CONN_KEEP_ALIVE, false,
                    "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nServer: s\r\n\r\n");
    EXPECT_RESPONSE(ok10, HTTP1_METHOD_GET, RESPONSE_CONN_KEEP_ALIVE_10, false,
                    "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nServer: s\r\n"
                    "Connection: keep-alive\r\n\r\n");
    EXPECT_RESPONSE(ok10, HTTP1_METHOD_GET, RESPONSE_CONN_CLOSE, false,
                    "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nServer: s\r\n"
                    "Connection: close\r\n\r\n");
    EXPECT_RESPONSE("HTTP/1.0 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                    HTTP1_METHOD_GET, RESPONSE_CONN_CLOSE, false,
                    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");

    /* chunked: forwarded as is, or dropped when de-chunked for 1.0 */
    static const char chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Y: z\r\n\r\n";
    EXPECT_RESPONSE(chunked, HTTP1_METHOD_GET, RESPONSE_CONN_KEEP_ALIVE, false,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Y: z\r\n\r\n");
    EXPECT_RESPONSE(chunked, HTTP1_METHOD_GET, RESPONSE_CONN_CLOSE, true,
                    "HTTP/1.1 200 OK\r\nX-Y: z\r\nConnection: close\r\n\r\n");
}

static void test_response_upgrade(void)
{
    EXPECT_RESPONSE("HTTP/1.1 101 Switching Protocols\r\n"
                    "Connection: Upgrade\r\n"
                    "Upgrade: websocket\r\n"
                    "Sec-WebSocket-Accept: a\r\n"
                    "\r\n",
                    HTTP1_METHOD_GET, RESPONSE_CONN_UPGRADE, false,
                    "HTTP/1.1 101 Switching Protocols\r\n"
                    "Sec-WebSocket-Accept: a\r\n"
                    "Connection: upgrade\r\n"
                    "Upgrade: websocket\r\n"
                    "\r\n");
}

static void expect_error(int line, int status, const char *detail, bool close, bool head_only,
                         const char *want)
{
    struct hbuf out = {0};
    if (headers_build_error(&out, status, detail, close, head_only) != 0)
        check_fail(__FILE__, line, NULL, "headers_build_error failed");
    check_bytes(line, &out, want);
    hbuf_free(&out);
}

static void test_error(void)
{
    expect_error(__LINE__, 502, "no backend", true, false,
                 "HTTP/1.1 502 Bad Gateway\r\n"
                 "Content-Type: text/plain\r\n"
                 "Content-Length: 28\r\n"
                 "Cache-Control: no-store\r\n"
                 "Connection: close\r\n"
                 "\r\n"
                 "502 Bad Gateway: no backend\n");
    expect_error(__LINE__, 503, NULL, false, false,
                 "HTTP/1.1 503 Service Unavailable\r\n"
                 "Content-Type: text/plain\r\n"
                 "Content-Length: 24\r\n"
                 "Cache-Control: no-store\r\n"
                 "\r\n"
                 "503 Service Unavailable\n");
    /* the answer to HEAD: the length of the body it would have had */
    expect_error(__LINE__, 400, "bad", false, true,
                 "HTTP/1.1 400 Bad Request\r\n"
                 "Content-Type: text/plain\r\n"
                 "Content-Length: 21\r\n"
                 "Cache-Control: no-store\r\n"
                 "\r\n");
}

int main(void)
{
    test_request_plain();
    test_request_hop_by_hop();
    test_request_forwarded();
    test_request_absolute_form();
    test_request_upgrade();
    test_response();
    test_response_upgrade();
    test_error();
    return check_report("test_headers");
}
