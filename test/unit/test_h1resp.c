// links: usher_proxy_base
/* The HTTP/1.1 response reader of usher's own clients (proxy/base/h1resp.c):
 * every response fed whole, one byte at a time and in every two-piece split;
 * Content-Length, chunked with extensions and trailers, until close, no
 * body; interim 1xx heads; a body over the bound; broken heads and chunks;
 * a connection closed early; a streaming caller taking the body as it
 * comes. */
#include "proxy/base/h1resp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/unit/check.h"

#define FEED_WHOLE 0
#define FEED_BYTES 1

/* Feeds <wire> with a split at <cut> (FEED_BYTES: one byte at a time),
 * then the close if <close>. Returns the last return code. */
static int run(struct h1resp *r, const char *wire, size_t len, int how, size_t cut, bool close)
{
    int rc = H1RESP_AGAIN;
    if (how == FEED_BYTES) {
        for (size_t i = 0; i < len && rc == H1RESP_AGAIN; i++)
            rc = h1resp_feed(r, wire + i, 1);
    } else {
        rc = h1resp_feed(r, wire, cut);
        if (rc == H1RESP_AGAIN)
            rc = h1resp_feed(r, wire + cut, len - cut);
    }
    if (close && rc == H1RESP_AGAIN)
        rc = h1resp_eof(r);
    return rc;
}

struct want {
    const char *name;
    const char *wire;
    enum http1_method method;
    bool close;        /* the peer closes after the bytes */
    int rc;            /* H1RESP_DONE or H1RESP_ERROR */
    int status;        /* DONE: the final status */
    const char *body;  /* DONE: the decoded body */
    const char *error; /* ERROR: the reason, or NULL for any */
};

static const struct want cases[] = {
    {"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", HTTP1_METHOD_GET, false,
     H1RESP_DONE, 200, "hello", NULL},
    {"bytes after the body are not read",
     "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nnoEXTRA", HTTP1_METHOD_POST, false,
     H1RESP_DONE, 404, "no", NULL},
    {"empty length", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", HTTP1_METHOD_GET, false,
     H1RESP_DONE, 200, "", NULL},
    {"chunked, extensions, trailers",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5;name=value;q=\"x y\"\r\nhello\r\n"
     "1 ; ext\r\n,\r\n"
     "6\r\n world\r\n"
     "0;last\r\nX-Trailer: 1\r\nX-Other: two words\r\n\r\n",
     HTTP1_METHOD_POST, false, H1RESP_DONE, 200, "hello, world", NULL},
    {"chunked, upper-case size",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     "A\r\n0123456789\r\n0\r\n\r\n",
     HTTP1_METHOD_GET, false, H1RESP_DONE, 200, "0123456789", NULL},
    {"until close", "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it",
     HTTP1_METHOD_GET, true, H1RESP_DONE, 200, "all of it", NULL},
    {"interim 100 then the answer",
     "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
     "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
     HTTP1_METHOD_POST, false, H1RESP_DONE, 201, "ok", NULL},
    {"204 has no body", "HTTP/1.1 204 No Content\r\n\r\n", HTTP1_METHOD_GET, false, H1RESP_DONE,
     204, "", NULL},
    {"a HEAD answer has no body", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
     HTTP1_METHOD_HEAD, false, H1RESP_DONE, 200, "", NULL},
    {"not HTTP", "SSH-2.0-OpenSSH_9.2\r\n\r\n", HTTP1_METHOD_GET, false, H1RESP_ERROR, 0, NULL,
     NULL},
    {"bare LF in the head", "HTTP/1.1 200 OK\nContent-Length: 1\n\nx", HTTP1_METHOD_GET, false,
     H1RESP_ERROR, 0, NULL, NULL},
    {"Content-Length and chunked",
     "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1_METHOD_GET,
     false, H1RESP_ERROR, 0, NULL, "Content-Length with Transfer-Encoding"},
    {"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
     HTTP1_METHOD_GET, false, H1RESP_ERROR, 0, NULL, "invalid chunk size"},
    {"chunk data without its CRLF",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n", HTTP1_METHOD_GET,
     false, H1RESP_ERROR, 0, NULL, "missing CRLF after chunk data"},
    {"101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
     HTTP1_METHOD_GET, false, H1RESP_ERROR, 0, NULL, h1resp_err_upgrade},
    {"closed in the head", "HTTP/1.1 200 OK\r\nContent-Le", HTTP1_METHOD_GET, true, H1RESP_ERROR, 0,
     NULL, h1resp_err_closed_in_head},
    {"closed before anything", "", HTTP1_METHOD_GET, true, H1RESP_ERROR, 0, NULL,
     h1resp_err_closed_in_head},
    {"closed in a length body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
     HTTP1_METHOD_GET, true, H1RESP_ERROR, 0, NULL, h1resp_err_closed_in_body},
    {"closed in a chunked body", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
     HTTP1_METHOD_GET, true, H1RESP_ERROR, 0, NULL, h1resp_err_closed_in_body},
};

static void check_case(const struct want *w, int how, size_t cut, const char *how_name)
{
    struct h1resp r;
    h1resp_init(&r, w->method, 1024);
    int rc = run(&r, w->wire, strlen(w->wire), how, cut, w->close);
    CHECK(rc == w->rc, "%s (%s %zu): rc %d, want %d (%s)", w->name, how_name, cut, rc, w->rc,
          r.error ? r.error : "-");
    if (w->rc == H1RESP_DONE && rc == H1RESP_DONE) {
        CHECK(r.done && r.have_head && r.status == w->status, "%s: status %d", w->name, r.status);
        CHECK(r.body.len == strlen(w->body) &&
                  !memcmp(r.body.data ? r.body.data : "", w->body, r.body.len),
              "%s (%s %zu): body '%.*s'", w->name, how_name, cut, (int)r.body.len,
              r.body.data ? r.body.data : "");
    }
    if (w->rc == H1RESP_ERROR && rc == H1RESP_ERROR) {
        CHECK(r.error != NULL, "%s: a reason", w->name);
        if (w->error)
            CHECK(r.error && !strcmp(r.error, w->error), "%s: reason '%s'", w->name,
                  r.error ? r.error : "(none)");
        CHECK(h1resp_feed(&r, "more", 4) == H1RESP_ERROR, "%s: stays an error", w->name);
    }
    h1resp_free(&r);
}

static void test_cases(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct want *w = &cases[i];
        size_t len = strlen(w->wire);
        check_case(w, FEED_WHOLE, len, "whole");
        check_case(w, FEED_BYTES, 0, "byte by byte");
        for (size_t cut = 0; cut <= len; cut++)
            check_case(w, FEED_WHOLE, cut, "split at");
    }
}

/* A body over the bound, by each framing, and a head over its own. */
static void test_bounds(void)
{
    static const char *const big[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789A",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
        "chunked\r\n\r\n6\r\n012345\r\n5\r\n6789A\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\r\n0123456789A",
    };
    for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++) {
        struct h1resp r;
        h1resp_init(&r, HTTP1_METHOD_GET, 10);
        int rc = run(&r, big[i], strlen(big[i]), FEED_BYTES, 0, true);
        CHECK(rc == H1RESP_ERROR && r.error == h1resp_err_body_too_large, "big body %zu: %s", i,
              r.error ? r.error : "-");
        CHECK(r.body.len <= 10, "never holds more than the bound");
        h1resp_free(&r);
        /* exactly at the bound is fine */
        h1resp_init(&r, HTTP1_METHOD_GET, 11);
        rc = run(&r, big[i], strlen(big[i]), FEED_WHOLE, 7, true);
        CHECK(rc == H1RESP_DONE && r.body.len == 11, "at the bound %zu", i);
        h1resp_free(&r);
    }
    size_t n = H1RESP_HEAD_MAX + 100;
    char *head = malloc(n + 1);
    memcpy(head, "HTTP/1.1 200 OK\r\nX-Big: ", 24);
    memset(head + 24, 'a', n - 24);
    head[n] = '\0';
    struct h1resp r;
    h1resp_init(&r, HTTP1_METHOD_GET, 10);
    int rc = run(&r, head, n, FEED_WHOLE, n / 2, false);
    CHECK(rc == H1RESP_ERROR && r.error && strstr(r.error, "too large"), "head too large: %s",
          r.error ? r.error : "-");
    h1resp_free(&r);
    free(head);
}

/* A streaming caller (the etcd watch): newline-delimited messages in
 * chunks that split them anywhere, taken off the body as they complete;
 * the bound applies to what is held, not to the whole stream. */
static void test_stream(void)
{
    static const char wire[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "8\r\n{\"n\":1}\n\r\n"
                               "3\r\n{\"n\r\n"
                               "b\r\n\":2}\n{\"n\":3\r\n"
                               "2\r\n}\n\r\n";
    struct h1resp r;
    h1resp_init(&r, HTTP1_METHOD_POST, 16);
    char got[64] = "";
    for (int round = 0; round < 40; round++) {
        /* the same stream again and again: far more than the bound in all */
        const char *p = round == 0 ? wire : strstr(wire, "\r\n\r\n") + 4;
        size_t len = strlen(p);
        for (size_t i = 0; i < len; i++) {
            int rc = h1resp_feed(&r, p + i, 1);
            CHECK(rc == H1RESP_AGAIN, "round %d byte %zu: %d %s", round, i, rc,
                  r.error ? r.error : "");
            if (rc != H1RESP_AGAIN)
                goto out;
            char *nl;
            while (r.body.len && (nl = memchr(r.body.data, '\n', r.body.len))) {
                size_t ll = (size_t)(nl - r.body.data);
                if (round == 0)
                    strncat(got, r.body.data, ll);
                h1resp_body_take(&r, ll + 1);
            }
        }
        if (round == 0)
            CHECK(!strcmp(got, "{\"n\":1}{\"n\":2}{\"n\":3}"), "messages: %s", got);
    }
    CHECK(h1resp_feed(&r, "0\r\n\r\n", 5) == H1RESP_DONE && r.body.len == 0, "the last chunk");
out:
    h1resp_free(&r);
}

int main(void)
{
    test_cases();
    test_bounds();
    test_stream();
    return check_report("test_h1resp");
}
