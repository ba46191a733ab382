// links: usher_proxy_core
/* proxy/core/body.c: how many bytes of a buffer belong to a body, for each
 * framing, with chunk extensions, trailers (the dangerous ones dropped in
 * place) and de-chunking. Every case is fed whole, then one byte at a time
 * keeping the framed bytes in the buffer, then one byte at a time sending
 * (consuming) them after each step as a connection does: all three must
 * frame the same bytes and leave the same bytes after the body. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "parser/http1.h"
#include "proxy/core/body.h"
#include "proxy/core/headers.h"
#include "test/unit/check.h"

#define CAP 1024

enum feed {
    FEED_WHOLE = 0,  /* all bytes, one body_frame() call */
    FEED_BYTES_KEEP, /* one byte per call, framed bytes stay in the buffer */
    FEED_BYTES_SEND, /* one byte per call, framed bytes consumed after each */
};

static const char *const feed_str[] = {"whole", "bytes kept", "bytes sent"};

struct result {
    int rc;
    bool done;
    const char *error_reason;
    char out[CAP]; /* every byte framed (sent) */
    size_t out_len;
    char rest[CAP]; /* bytes left in the buffer after the body */
    size_t rest_len;
};

static void feed(const struct http1_message *m, bool dechunk, const char *in, size_t in_len,
                 enum feed how, struct result *r)
{
    static char data[CAP];
    struct buf b = {.data = data, .start = 0, .end = 0, .cap = sizeof(data)};
    struct body_state bs;
    size_t fwd = 0;

    memset(data, 0, sizeof(data));
    memset(r, 0, sizeof(*r));
    body_start(&bs, m, dechunk);
    if (how == FEED_WHOLE) {
        memcpy(data, in, in_len);
        b.end = in_len;
        r->rc = body_frame(&bs, &b, &fwd);
    } else {
        for (size_t i = 0; i < in_len && r->rc == 0; i++) {
            b.data[b.end++] = in[i];
            r->rc = body_frame(&bs, &b, &fwd);
            if (how == FEED_BYTES_SEND && r->rc == 0) {
                memcpy(r->out + r->out_len, buf_head(&b), fwd);
                r->out_len += fwd;
                buf_consume(&b, fwd);
                fwd = 0;
            }
        }
    }
    CHECK(fwd <= buf_len(&b), "framed %zu of %zu bytes", fwd, buf_len(&b));
    if (fwd > buf_len(&b))
        fwd = buf_len(&b);
    memcpy(r->out + r->out_len, buf_head(&b), fwd);
    r->out_len += fwd;
    r->rest_len = buf_len(&b) - fwd;
    memcpy(r->rest, buf_head(&b) + fwd, r->rest_len);
    r->done = bs.done;
    r->error_reason = bs.chunked.error_reason;
}

static struct http1_message msg(enum http1_framing framing, uint64_t content_length)
{
    struct http1_message m = {.minor_version = 1, .framing = framing};
    m.content_length = content_length;
    return m;
}

/* <in> framed as <m> must forward <out>, leave <rest> and end with <done>,
 * however it is fed. */
static void expect(int line, const char *name, struct http1_message m, bool dechunk, const char *in,
                   const char *out, const char *rest, bool done)
{
    for (enum feed how = FEED_WHOLE; how <= FEED_BYTES_SEND; how++) {
        struct result r;
        char ctx[128];
        snprintf(ctx, sizeof(ctx), "%s, %s", name, feed_str[how]);
        check_context = ctx;
        feed(&m, dechunk, in, strlen(in), how, &r);
        if (r.rc != 0)
            check_fail(__FILE__, line, NULL, "rc %d (%s)", r.rc,
                       r.error_reason ? r.error_reason : "");
        if (r.out_len != strlen(out) || memcmp(r.out, out, r.out_len) != 0)
            check_fail(__FILE__, line, NULL, "framed %zu \"%.*s\", expected %zu \"%s\"", r.out_len,
                       (int)r.out_len, r.out, strlen(out), out);
        if (r.rest_len != strlen(rest) || memcmp(r.rest, rest, r.rest_len) != 0)
            check_fail(__FILE__, line, NULL, "left \"%.*s\", expected \"%s\"", (int)r.rest_len,
                       r.rest, rest);
        if (r.done != done)
            check_fail(__FILE__, line, NULL, "done %d, expected %d", r.done, done);
    }
    check_context = NULL;
}
#define EXPECT(name, m, dechunk, in, out, rest, done)                                              \
    expect(__LINE__, name, m, dechunk, in, out, rest, done)

/* <in> must fail as chunked framing, however it is fed, with a reason. */
static void expect_invalid(int line, const char *name, bool dechunk, const char *in)
{
    struct http1_message m = msg(HTTP1_BODY_CHUNKED, 0);
    for (enum feed how = FEED_WHOLE; how <= FEED_BYTES_SEND; how++) {
        struct result r;
        char ctx[128];
        snprintf(ctx, sizeof(ctx), "%s%s, %s", name, dechunk ? " (dechunk)" : "", feed_str[how]);
        check_context = ctx;
        feed(&m, dechunk, in, strlen(in), how, &r);
        if (r.rc != -1)
            check_fail(__FILE__, line, NULL, "rc %d, expected -1", r.rc);
        if (!r.error_reason)
            check_fail(__FILE__, line, NULL, "no error reason");
        if (r.done)
            check_fail(__FILE__, line, NULL, "done after an error");
    }
    check_context = NULL;
}
#define EXPECT_INVALID(name, dechunk, in) expect_invalid(__LINE__, name, dechunk, in)

static void test_content_length(void)
{
    EXPECT("length exact", msg(HTTP1_BODY_LENGTH, 5), false, "hello", "hello", "", true);
    EXPECT("length then next", msg(HTTP1_BODY_LENGTH, 5), false, "helloGET / HTTP/1.1\r\n", "hello",
           "GET / HTTP/1.1\r\n", true);
    EXPECT("length short", msg(HTTP1_BODY_LENGTH, 10), false, "abc", "abc", "", false);
    EXPECT("length 0", msg(HTTP1_BODY_LENGTH, 0), false, "NEXT", "", "NEXT", true);
    EXPECT("no body", msg(HTTP1_BODY_NONE, 0), false, "NEXT", "", "NEXT", true);

    /* what is left of a length counts down across calls */
    struct http1_message m = msg(HTTP1_BODY_LENGTH, 7);
    struct body_state bs;
    char data[16] = "abcd";
    struct buf b = {.data = data, .start = 0, .end = 4, .cap = sizeof(data)};
    size_t fwd = 0;
    body_start(&bs, &m, false);
    CHECK(!bs.done);
    CHECK_INT(body_frame(&bs, &b, &fwd), 0);
    CHECK_UINT(fwd, 4);
    CHECK_UINT(bs.left, 3);
    CHECK(!bs.done);
    /* no buffer: nothing to frame, not an error */
    CHECK_INT(body_frame(&bs, NULL, &fwd), 0);
    CHECK_UINT(fwd, 4);
    CHECK_UINT(bs.left, 3);
}

static void test_chunked(void)
{
    struct http1_message m = msg(HTTP1_BODY_CHUNKED, 0);

    EXPECT("chunked", m, false, "5\r\nhello\r\n0\r\n\r\n", "5\r\nhello\r\n0\r\n\r\n", "", true);
    EXPECT("chunked then next", m, false, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET /",
           "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "GET /", true);
    EXPECT("chunked hex sizes", m, false, "A\r\n0123456789\r\n0\r\n\r\nX",
           "A\r\n0123456789\r\n0\r\n\r\n", "X", true);
    EXPECT("chunked extensions", m, false,
           "5;name=val\r\nhello\r\n3;a;b=\"q s\"\r\nabc\r\n0;last\r\n\r\nNEXT",
           "5;name=val\r\nhello\r\n3;a;b=\"q s\"\r\nabc\r\n0;last\r\n\r\n", "NEXT", true);
    EXPECT("chunked unfinished", m, false, "5\r\nhel", "5\r\nhel", "", false);
    EXPECT("chunked before last", m, false, "5\r\nhello\r\n", "5\r\nhello\r\n", "", false);
}

static void test_trailers(void)
{
    struct http1_message m = msg(HTTP1_BODY_CHUNKED, 0);

    EXPECT("trailers kept", m, false, "3\r\nabc\r\n0\r\nX-Checksum: 1f\r\nX-Other: 2\r\n\r\nNEXT",
           "3\r\nabc\r\n0\r\nX-Checksum: 1f\r\nX-Other: 2\r\n\r\n", "NEXT", true);
    EXPECT("trailers dropped and kept", m, false,
           "3\r\nabc\r\n0\r\n"
           "Content-Length: 5\r\n"
           "X-Checksum: 1f\r\n"
           "Host: evil.test\r\n"
           "authorization: Basic eA==\r\n"
           "TRANSFER-ENCODING: chunked\r\n"
           "X-Other: 2\r\n"
           "Set-Cookie: a=b\r\n"
           "Connection: close\r\n"
           "X-Forwarded-For: 10.0.0.1\r\n"
           "\r\nNEXT",
           "3\r\nabc\r\n0\r\nX-Checksum: 1f\r\nX-Other: 2\r\n\r\n", "NEXT", true);
    EXPECT("trailers all dropped", m, false,
           "0\r\nHost: a\r\nCookie: c=d\r\nProxy-Authorization: x\r\n\r\nNEXT", "0\r\n\r\n", "NEXT",
           true);
    /* only the name decides: a kept field may mention a dropped one */
    EXPECT("trailer value names host", m, false, "0\r\nX-Note: Host: a\r\n\r\n",
           "0\r\nX-Note: Host: a\r\n\r\n", "", true);

    /* every name of the list, one at a time */
    static const char *const dropped[] = {
        "Content-Length",
        "Transfer-Encoding",
        "Host",
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "Set-Cookie",
        "Content-Type",
        "Content-Encoding",
        "Content-Range",
        "Expect",
        "Connection",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Upgrade",
        "Proxy-Connection",
        "Max-Forwards",
        "Range",
        "Cache-Control",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Forwarded",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
    };
    for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++) {
        char in[256];
        snprintf(in, sizeof(in), "1\r\nz\r\n0\r\nX-A: 1\r\n%s: v\r\nX-B: 2\r\n\r\n", dropped[i]);
        EXPECT(dropped[i], m, false, in, "1\r\nz\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\n", "", true);
        CHECK(headers_trailer_dropped((struct http1_slice){dropped[i], strlen(dropped[i])}), "%s",
              dropped[i]);
    }
    CHECK(!headers_trailer_dropped((struct http1_slice){"X-Checksum", 10}));
    CHECK(!headers_trailer_dropped((struct http1_slice){"Hos", 3}));
}

static void test_until_close(void)
{
    struct http1_message m = msg(HTTP1_BODY_UNTIL_CLOSE, 0);

    EXPECT("until close", m, false, "anything\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
           "anything\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "", false);
    EXPECT("until close, nothing yet", m, false, "", "", "", false);
}

static void test_dechunk(void)
{
    struct http1_message m = msg(HTTP1_BODY_CHUNKED, 0);

    EXPECT("dechunk", m, true, "5\r\nhello\r\n0\r\n\r\n", "hello", "", true);
    EXPECT("dechunk then next", m, true, "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT",
           "hello world", "NEXT", true);
    /* trailers cannot follow a de-chunked body: all go */
    EXPECT("dechunk trailers", m, true, "3\r\nabc\r\n0\r\nX-Checksum: 1f\r\nHost: a\r\n\r\nNEXT",
           "abc", "NEXT", true);
    EXPECT("dechunk empty", m, true, "0\r\n\r\nNEXT", "", "NEXT", true);
    EXPECT("dechunk unfinished", m, true, "5\r\nhello\r\n3\r\nab", "helloab", "", false);
}

static void test_invalid(void)
{
    for (int d = 0; d <= 1; d++) {
        EXPECT_INVALID("size not hex", d, "zz\r\nhello\r\n0\r\n\r\n");
        EXPECT_INVALID("size negative", d, "-1\r\n");
        EXPECT_INVALID("size empty", d, "\r\nhello\r\n");
        EXPECT_INVALID("size 0x prefix", d, "0x5\r\nhello\r\n");
        EXPECT_INVALID("size overflows 64 bits", d, "10000000000000000\r\n");
        EXPECT_INVALID("size after data not CRLF", d, "5\r\nhelloX\r\n0\r\n\r\n");
        EXPECT_INVALID("second size invalid", d, "5\r\nhello\r\nq\r\n");
    }
}

int main(void)
{
    test_content_length();
    test_chunked();
    test_trailers();
    test_until_close();
    test_dechunk();
    test_invalid();
    return check_report("test_body");
}
