// links: usher_proxy_sources
/* The etcd gateway client's pure parts (proxy/sources/etcd.c, included
 * for its static functions): base64 both ways, the prefix's range_end,
 * int64-as-string fields, the reply read by the house's response reader
 * (the watch's chunked stream fed one byte at a time, a message over the
 * bound) and the watch's line splitter. */
#include "proxy/sources/etcd.c"
#include "test/unit/check.h"

static void test_b64(void)
{
    const char *in[] = {"", "a", "ab", "abc", "/usher/overrides/split/web", "\x01\xff"};
    const char *want[] = {"", "YQ==", "YWI=", "YWJj", NULL, "Af8="};
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
        json_t *v = etcd_b64(in[i], strlen(in[i]));
        CHECK(v && json_is_string(v), "b64 of %zu", i);
        if (want[i])
            CHECK(!strcmp(json_string_value(v), want[i]), "b64 %s", json_string_value(v));
        size_t n = 99;
        char *back = etcd_unb64(v, &n);
        CHECK(back && n == strlen(in[i]) && !memcmp(back, in[i], n), "round trip %zu", i);
        free(back);
        json_decref(v);
    }
    json_t *bad = json_string("abc");
    CHECK(etcd_unb64(bad, NULL) == NULL, "not a multiple of 4");
    json_decref(bad);
    bad = json_string("a$c=");
    char *r = etcd_unb64(bad, NULL);
    CHECK(r == NULL, "not base64");
    free(r);
    json_decref(bad);
    CHECK(etcd_unb64(NULL, NULL) == NULL, "absent");
}

static void test_prefix_and_int(void)
{
    char *e = etcd_prefix_end("/usher/");
    CHECK(e && !strcmp(e, "/usher0"), "range_end %s", e ? e : "(null)");
    free(e);
    json_t *o = json_pack("{s:s,s:i,s:s}", "revision", "42", "n", 7, "big", "4602575687314290953");
    CHECK(etcd_int(o, "revision", 0) == 42, "string int64");
    CHECK(etcd_int(o, "n", 0) == 7, "number");
    CHECK(etcd_int(o, "big", 0) == 4602575687314290953LL, "lease id");
    CHECK(etcd_int(o, "absent", -1) == -1, "default");
    json_decref(o);
}

static int ups, results;
static long long last_rev;
static void h_up(void *ctx)
{
    ups++;
}
static void h_result(void *ctx, json_t *res)
{
    results++;
    json_t *evs = json_object_get(res, "events");
    if (json_array_size(evs))
        last_rev = etcd_int(json_object_get(json_array_get(evs, 0), "kv"), "mod_revision", 0);
}
static void h_down(void *ctx, const char *why)
{
}

/* A watch reply, chunked, split across chunks mid-line. */
static const char watch_reply[] =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    "36\r\n{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}\n\r\n"
    "f\r\n{\"result\":{\"eve\r\n"
    "32\r\nnts\":[{\"kv\":{\"key\":\"YQ==\",\"mod_revision\":\"9\"}}]}}\n\r\n";

static void test_watch_stream_byte_by_byte(void)
{
    struct conf_address ep = {.text = "127.0.0.1:2379"};
    struct etcd e = {.backoff = ETCD_BACKOFF_MIN_S, .eps = &ep, .num_eps = 1};
    e.hooks = (struct etcd_watch_hooks){.up = h_up, .result = h_result, .down = h_down};
    struct econn c = {.e = &e, .stream = true, .state = CONN_HEAD, .fd = -1};
    h1resp_init(&c.rd, HTTP1_METHOD_POST, BODY_MAX);
    for (size_t i = 0; i < sizeof(watch_reply) - 1; i++) {
        int rc = h1resp_feed(&c.rd, &watch_reply[i], 1);
        CHECK(rc == H1RESP_AGAIN, "byte %zu: %d %s", i, rc, c.rd.error ? c.rd.error : "");
        if (!c.rd.have_head)
            continue;
        CHECK(c.rd.status == 200 && c.rd.framing == HTTP1_BODY_CHUNKED, "status %d framing %d",
              c.rd.status, (int)c.rd.framing);
        CHECK(stream_lines(&c) == NET_OK, "lines at byte %zu", i);
    }
    CHECK(ups == 1 && results == 2, "ups %d results %d", ups, results);
    CHECK(last_rev == 9 && e.next_rev == 10, "revisions %lld %lld", last_rev, e.next_rev);
    CHECK(c.rd.body.len == 0, "every line taken");
    /* the terminal chunk ends the body */
    CHECK(h1resp_feed(&c.rd, "0\r\n\r\n", 5) == H1RESP_DONE, "last chunk");
    h1resp_free(&c.rd);
}

/* A message split across chunks is delivered whole; a message larger than
 * BODY_MAX is refused, not buffered without bound. */
static void test_watch_message_bound(void)
{
    struct econn c = {.stream = true, .state = CONN_HEAD, .fd = -1};
    h1resp_init(&c.rd, HTTP1_METHOD_POST, BODY_MAX);
    static const char head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    CHECK(h1resp_feed(&c.rd, head, sizeof(head) - 1) == H1RESP_AGAIN && c.rd.have_head);
    static char chunk[1 << 16];
    memset(chunk, 'x', sizeof(chunk));
    char size[32];
    int rc = H1RESP_AGAIN;
    for (size_t sent = 0; rc == H1RESP_AGAIN && sent <= BODY_MAX; sent += sizeof(chunk)) {
        int n = snprintf(size, sizeof(size), "%zx\r\n", sizeof(chunk));
        rc = h1resp_feed(&c.rd, size, (size_t)n);
        if (rc == H1RESP_AGAIN)
            rc = h1resp_feed(&c.rd, chunk, sizeof(chunk));
        if (rc == H1RESP_AGAIN)
            rc = h1resp_feed(&c.rd, "\r\n", 2);
    }
    CHECK(rc == H1RESP_ERROR && reply_error(&c.rd) == err_too_large, "refused: %s",
          c.rd.error ? c.rd.error : "-");
    CHECK(c.rd.body.len <= BODY_MAX);
    h1resp_free(&c.rd);
}

static void test_unary_length(void)
{
    static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"count\":\"1\"}";
    struct econn c = {.state = CONN_HEAD, .fd = -1};
    h1resp_init(&c.rd, HTTP1_METHOD_POST, BODY_MAX);
    CHECK(h1resp_feed(&c.rd, reply, sizeof(reply) - 1) == H1RESP_DONE, "complete");
    CHECK(c.rd.status == 200 && c.rd.body.len == 13 &&
              !memcmp(c.rd.body.data, "{\"count\":\"1\"}", 13),
          "body");
    h1resp_free(&c.rd);
    struct econn bad = {.state = CONN_HEAD, .fd = -1};
    h1resp_init(&bad.rd, HTTP1_METHOD_POST, BODY_MAX);
    CHECK(h1resp_feed(&bad.rd, "SSH-2.0-OpenSSH\r\n\r\n", 19) == H1RESP_ERROR &&
              reply_error(&bad.rd) == err_proto,
          "not HTTP");
    h1resp_free(&bad.rd);
    struct econn badch = {.state = CONN_BODY, .fd = -1};
    h1resp_init(&badch.rd, HTTP1_METHOD_POST, BODY_MAX);
    static const char chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    CHECK(h1resp_feed(&badch.rd, chunked, sizeof(chunked) - 1) == H1RESP_ERROR &&
              reply_error(&badch.rd) == err_proto,
          "bad chunk size");
    h1resp_free(&badch.rd);
    struct econn cut = {.state = CONN_BODY, .fd = -1};
    h1resp_init(&cut.rd, HTTP1_METHOD_POST, BODY_MAX);
    CHECK(h1resp_feed(&cut.rd, reply, sizeof(reply) - 5) == H1RESP_AGAIN &&
              h1resp_eof(&cut.rd) == H1RESP_ERROR && reply_error(&cut.rd) == err_closed,
          "closed inside the body");
    h1resp_free(&cut.rd);
}

int main(void)
{
    test_b64();
    test_prefix_and_int();
    test_watch_stream_byte_by_byte();
    test_watch_message_bound();
    test_unary_length();
    return check_report("test_etcd");
}
