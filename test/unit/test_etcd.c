// links: usher_proxy_sources
/* The etcd gateway client's pure parts (proxy/sources/etcd.c, included
 * for its static functions): base64 both ways, the prefix's range_end,
 * int64-as-string fields, the reply head, the chunked decoder and the
 * watch's line splitter, fed one byte at a time. */
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
    for (size_t i = 0; i < sizeof(watch_reply) - 1; i++) {
        hbuf_append(&c.in, &watch_reply[i], 1);
        if (c.state == CONN_HEAD) {
            int rc = parse_head(&c);
            CHECK(rc != NET_ERROR, "head at byte %zu", i);
            if (rc != NET_OK)
                continue;
            c.state = CONN_BODY;
            CHECK(c.status == 200 && c.mode == BODY_CHUNKED, "status %d mode %d", c.status,
                  (int)c.mode);
        }
        int rc = decode_body(&c);
        CHECK(rc == NET_AGAIN, "body at byte %zu: %d", i, rc);
        CHECK(stream_lines(&c) == NET_OK, "lines at byte %zu", i);
    }
    CHECK(ups == 1 && results == 2, "ups %d results %d", ups, results);
    CHECK(last_rev == 9 && e.next_rev == 10, "revisions %lld %lld", last_rev, e.next_rev);
    /* the terminal chunk ends the body */
    hbuf_append_str(&c.in, "0\r\n\r\n");
    CHECK(decode_body(&c) == NET_OK, "last chunk");
    hbuf_free(&c.in);
    hbuf_free(&c.body);
}

static void test_unary_length(void)
{
    static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"count\":\"1\"}";
    struct econn c = {.state = CONN_HEAD, .fd = -1};
    hbuf_append(&c.in, reply, sizeof(reply) - 1);
    CHECK(parse_head(&c) == NET_OK && c.mode == BODY_LENGTH && c.left == 13, "head");
    CHECK(decode_body(&c) == NET_OK, "body complete");
    CHECK(c.body.len == 13 && !memcmp(c.body.data, "{\"count\":\"1\"}", 13), "body");
    hbuf_free(&c.in);
    hbuf_free(&c.body);
    struct econn bad = {.state = CONN_HEAD, .fd = -1};
    hbuf_append_str(&bad.in, "SSH-2.0-OpenSSH\r\n\r\n");
    CHECK(parse_head(&bad) == NET_ERROR, "not HTTP");
    hbuf_free(&bad.in);
    struct econn badch = {.state = CONN_BODY, .mode = BODY_CHUNKED, .ch = CH_SIZE, .fd = -1};
    hbuf_append_str(&badch.in, "zz\r\n");
    CHECK(decode_body(&badch) == NET_ERROR, "bad chunk size");
    hbuf_free(&badch.in);
    hbuf_free(&badch.body);
}

int main(void)
{
    test_b64();
    test_prefix_and_int();
    test_watch_stream_byte_by_byte();
    test_unary_length();
    return check_report("test_etcd");
}
