// links: usher_proxy_core
/* gRPC as usher sees it (proxy/core/grpc.c) and the HTTP/2 backend
 * translations (proxy/core/headers.c): a request is gRPC by its
 * content-type; usher's own errors become trailers-only answers with the
 * status DESIGN names; a call's response body is followed message by
 * message so a drain can end it at a boundary; an HTTP/1.1 head usher
 * rebuilt becomes the HTTP/2 request a backend gets, and an HTTP/2
 * response head the HTTP/1.1 head an exchange reads back. */
#include <stdlib.h>
#include <string.h>

#include "parser/http1.h"
#include "proxy/core/grpc.h"
#include "proxy/core/headers.h"
#include "test/unit/check.h"

static struct http1_slice sl(const char *s)
{
    return (struct http1_slice){s, strlen(s)};
}

static void content_types(void)
{
    CHECK(grpc_content_type(sl("application/grpc")));
    CHECK(grpc_content_type(sl("application/grpc+proto")));
    CHECK(grpc_content_type(sl("Application/GRPC;charset=x")));
    CHECK(!grpc_content_type(sl("application/grpc-web")));
    CHECK(!grpc_content_type(sl("application/grpcx")));
    CHECK(!grpc_content_type(sl("application/json")));
    CHECK(!grpc_content_type(sl("application/grp")));
}

static void codes(void)
{
    CHECK_INT(grpc_code_of(503), GRPC_UNAVAILABLE);
    CHECK_INT(grpc_code_of(502), GRPC_UNAVAILABLE);
    CHECK_INT(grpc_code_of(421), GRPC_UNAVAILABLE);
    CHECK_INT(grpc_code_of(504), GRPC_DEADLINE_EXCEEDED);
    CHECK_INT(grpc_code_of(408), GRPC_DEADLINE_EXCEEDED);
    CHECK_INT(grpc_code_of(431), GRPC_RESOURCE_EXHAUSTED);
    CHECK_INT(grpc_code_of(414), GRPC_RESOURCE_EXHAUSTED);
    CHECK_INT(grpc_code_of(404), GRPC_UNIMPLEMENTED);
    CHECK_INT(grpc_code_of(400), GRPC_INTERNAL);
}

static void error_fields(void)
{
    struct grpc_error e;
    size_t n = grpc_error_fields(&e, 503, "no backend available: 100% down\n");
    CHECK_UINT(n, 4);
    CHECK(http1_slice_eq(e.f[0].name, ":status") && http1_slice_eq(e.f[0].value, "200"));
    CHECK(http1_slice_eq(e.f[1].value, "application/grpc"));
    CHECK(http1_slice_eq(e.f[2].name, "grpc-status") && http1_slice_eq(e.f[2].value, "14"));
    CHECK_STR(e.message, "no backend available: 100%25 down%0A");
    grpc_error_fields(&e, 431, NULL);
    CHECK_STR(e.status, "8");
    CHECK_STR(e.message, "");
    /* a long detail is cut at a whole escape */
    char long_detail[400];
    memset(long_detail, '%', sizeof(long_detail) - 1);
    long_detail[sizeof(long_detail) - 1] = '\0';
    grpc_error_fields(&e, 504, long_detail);
    CHECK(strlen(e.message) < GRPC_MESSAGE_MAX && strlen(e.message) % 3 == 0);
    struct hbuf h = {0};
    CHECK_INT(grpc_trailer_lines(&h, GRPC_UNAVAILABLE, "drain deadline"), 0);
    CHECK_STR(h.data, "grpc-status: 14\r\ngrpc-message: drain deadline\r\n");
    hbuf_free(&h);
}

/* A Length-Prefixed-Message of <len> bytes of <c>. */
static size_t message(uint8_t *out, uint32_t len, uint8_t c)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
    memset(out + 5, c, len);
    return 5 + len;
}

static void boundaries(void)
{
    uint8_t buf[200];
    size_t n = message(buf, 10, 'a');
    n += message(buf + n, 0, 0);
    n += message(buf + n, 20, 'b');
    /* whole, then a byte at a time: the same boundaries */
    for (int way = 0; way < 2; way++) {
        struct grpc_call g = {0};
        uint64_t cut;
        CHECK(grpc_cut(&g, 0, &cut) && cut == 0); /* nothing yet: the start */
        if (way == 0) {
            grpc_follow(&g, buf, n);
        } else {
            for (size_t i = 0; i < n; i++) {
                grpc_follow(&g, buf + i, 1);
                if (i == 3) /* inside the first prefix */
                    CHECK(!grpc_cut(&g, 2, &cut));
                if (i == 14) /* the first message ends: 15 bytes */
                    CHECK(grpc_cut(&g, 7, &cut) && cut == 15);
            }
        }
        CHECK_UINT(g.framed, n);
        CHECK(grpc_cut(&g, 0, &cut) && cut == n);
        CHECK(grpc_cut(&g, n, &cut) && cut == n);
    }
    /* half of a message sent: the cut waits for its end */
    struct grpc_call g = {0};
    uint64_t cut;
    grpc_follow(&g, buf, 12);
    CHECK(!grpc_cut(&g, 8, &cut));
    CHECK(grpc_cut(&g, 0, &cut) && cut == 0);
    grpc_follow(&g, buf + 12, 3);
    CHECK(grpc_cut(&g, 8, &cut) && cut == 15);
}

static const struct http1_limits big = {1 << 20, 64, 1 << 20};

static struct http1_header hs[64];

static void request_to_h2(void)
{
    const char *head =
        "POST /svc/M?x=1 HTTP/1.1\r\nHost: api.test:8080\r\nUser-Agent: u\r\n"
        "Content-Type: application/grpc\r\nTE: trailers\r\nConnection: keep-alive\r\n"
        "Transfer-Encoding: chunked\r\nX-Forwarded-For: 1.2.3.4\r\nCookie: a=1\r\n\r\n";
    struct http1_request req = {.msg.headers = hs};
    CHECK_INT(http1_parse_request(head, strlen(head), &big, &req), HTTP1_OK);
    struct h2_field f[64 + 5];
    struct hbuf scratch = {0};
    int n = headers_h2_from_h1_request(&req, "http", true, &scratch, f);
    const char *want[][2] = {
        {":method", "POST"},
        {":scheme", "http"},
        {":authority", "api.test:8080"},
        {":path", "/svc/M?x=1"},
        {"user-agent", "u"},
        {"content-type", "application/grpc"},
        {"x-forwarded-for", "1.2.3.4"},
        {"cookie", "a=1"},
        {"te", "trailers"},
    };
    CHECK_INT(n, (int)(sizeof(want) / sizeof(want[0])));
    for (int i = 0; i < n && i < (int)(sizeof(want) / sizeof(want[0])); i++) {
        CHECK(f[i].name.len == strlen(want[i][0]) &&
                  memcmp(f[i].name.ptr, want[i][0], f[i].name.len) == 0,
              "field %d: %.*s", i, (int)f[i].name.len, f[i].name.ptr);
        CHECK(f[i].value.len == strlen(want[i][1]) &&
                  memcmp(f[i].value.ptr, want[i][1], f[i].value.len) == 0,
              "field %d value", i);
    }
    /* HTTP/1.0 without Host: no :authority; no te unless asked */
    const char *h10 = "GET / HTTP/1.0\r\nX-A: b\r\n\r\n";
    struct http1_request r10 = {.msg.headers = hs};
    CHECK_INT(http1_parse_request(h10, strlen(h10), &big, &r10), HTTP1_OK);
    n = headers_h2_from_h1_request(&r10, "https", false, &scratch, f);
    CHECK_INT(n, 4);
    CHECK(http1_slice_eq(f[1].value, "https") && http1_slice_eq(f[2].name, ":path"));
    CHECK(http1_slice_eq(f[3].name, "x-a"));
    hbuf_free(&scratch);
}

/* The fields of "name: value" strings. */
static size_t fields(struct h2_field *f, const char *const *lines)
{
    size_t n = 0;
    for (; lines[n]; n++) {
        const char *colon = strchr(lines[n] + 1, ':');
        f[n].name = (struct http1_slice){lines[n], (size_t)(colon - lines[n])};
        f[n].value = sl(colon + 2);
    }
    return n;
}

#define RES(...) ((const char *const[]){__VA_ARGS__, NULL})

static void expect_res(int line, const char *const *lines, bool end_stream, bool head,
                       const char *want, enum h2_body want_body)
{
    struct h2_field f[16];
    size_t n = fields(f, lines);
    struct hbuf out = {0};
    int status = 0;
    enum h2_body body = 0;
    int rc = headers_h1_from_h2_response(&out, f, n, end_stream, head, &status, &body);
    if (!want) {
        if (rc == 0)
            check_fail(__FILE__, line, NULL, "accepted: %s", out.data);
        hbuf_free(&out);
        return;
    }
    if (rc != 0 || strcmp(out.data, want) != 0 || body != want_body)
        check_fail(__FILE__, line, NULL, "rc %d body %d:\n%s\nwanted:\n%s", rc, (int)body,
                   out.data ? out.data : "", want);
    /* and the strict parser reads it back as exactly one head */
    struct http1_response res = {.msg.headers = hs};
    if (rc == 0 &&
        (http1_parse_response(out.data, out.len, &big, head ? HTTP1_METHOD_HEAD : HTTP1_METHOD_GET,
                              &res) != HTTP1_OK ||
         res.msg.head_len != out.len || res.status != status))
        check_fail(__FILE__, line, NULL, "does not read back");
    hbuf_free(&out);
}

static void response_to_h1(void)
{
    expect_res(__LINE__, RES(":status: 200", "content-type: application/grpc"), false, false,
               "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\n"
               "Transfer-Encoding: chunked\r\n\r\n",
               H2_BODY_CHUNKED);
    /* trailers-only: a length so HTTP/1.1 knows it ends */
    expect_res(__LINE__, RES(":status: 200", "grpc-status: 14", "grpc-message: x"), true, false,
               "HTTP/1.1 200 OK\r\ngrpc-status: 14\r\ngrpc-message: x\r\nContent-Length: 0\r\n\r\n",
               H2_BODY_NONE);
    expect_res(__LINE__, RES(":status: 404", "content-length: 12"), false, false,
               "HTTP/1.1 404 Not Found\r\ncontent-length: 12\r\n\r\n", H2_BODY_LENGTH);
    expect_res(__LINE__, RES(":status: 200", "content-length: 12"), true, true,
               "HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n", H2_BODY_NONE);
    expect_res(__LINE__, RES(":status: 103", "link: </a>"), false, false,
               "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n", H2_BODY_NONE);
    expect_res(__LINE__, RES(":status: 204"), true, false, "HTTP/1.1 204 No Content\r\n\r\n",
               H2_BODY_NONE);
    expect_res(__LINE__, RES(":status: 299"), false, false,
               "HTTP/1.1 299 Unknown\r\nTransfer-Encoding: chunked\r\n\r\n", H2_BODY_CHUNKED);
    /* what could not read back, or is no response */
    expect_res(__LINE__, RES("x: y"), false, false, NULL, 0);
    expect_res(__LINE__, RES(":status: 20"), false, false, NULL, 0);
    expect_res(__LINE__, RES(":status: 600"), false, false, NULL, 0);
    expect_res(__LINE__, RES(":status: 200", ":status: 200"), false, false, NULL, 0);
    expect_res(__LINE__, RES(":status: 200", ":path: /"), false, false, NULL, 0);
    expect_res(__LINE__, RES(":status: 200", "a b: c"), false, false, NULL, 0);
    expect_res(__LINE__, RES(":status: 200", "Upper: c"), false, false, NULL, 0);
    expect_res(__LINE__, RES(":status: 200", "content-length: x"), false, false, NULL, 0);
    struct h2_field f[2] = {{sl(":status"), sl("200")}, {sl("x"), {"a\r\nb", 4}}};
    struct hbuf out = {0};
    int st;
    enum h2_body b;
    CHECK_INT(headers_h1_from_h2_response(&out, f, 2, false, false, &st, &b), -1);
    hbuf_free(&out);
    /* connection-specific fields never make it */
    expect_res(__LINE__, RES(":status: 200", "connection: close", "content-length: 0"), true, false,
               "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", H2_BODY_LENGTH);
}

int main(void)
{
    content_types();
    codes();
    error_fields();
    boundaries();
    request_to_h2();
    response_to_h1();
    return check_report("test_grpc");
}
