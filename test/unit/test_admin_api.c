// links: usher_proxy_admin
/* The runtime API's pure parts: who is loopback (auth_peer_is_loopback),
 * the token rule (auth_check), the strict JSON body parser and the tree
 * parser usher ctl reads /status with. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/base/json.h"
#include "proxy/admin/auth.h"
#include "test/unit/check.h"

static bool v4(const char *ip)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(1)};
    inet_pton(AF_INET, ip, &sin.sin_addr);
    return auth_peer_is_loopback((struct sockaddr *)&sin, sizeof(sin));
}

static bool v6(const char *ip)
{
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(1)};
    inet_pton(AF_INET6, ip, &sin6.sin6_addr);
    return auth_peer_is_loopback((struct sockaddr *)&sin6, sizeof(sin6));
}

static void test_loopback(void)
{
    static const char *const yes4[] = {"127.0.0.1", "127.0.0.2", "127.255.255.255", "127.1.2.3"};
    static const char *const no4[] = {"128.0.0.1",     "126.255.255.255", "10.0.0.1", "0.0.0.0",
                                      "192.168.1.127", "255.255.255.255", "1.127.0.0"};
    for (size_t i = 0; i < sizeof(yes4) / sizeof(*yes4); i++)
        CHECK(v4(yes4[i]), "%s is loopback", yes4[i]);
    for (size_t i = 0; i < sizeof(no4) / sizeof(*no4); i++)
        CHECK(!v4(no4[i]), "%s is not loopback", no4[i]);
    static const char *const yes6[] = {"::1", "::ffff:127.0.0.1", "::ffff:127.9.8.7"};
    static const char *const no6[] = {
        "::",          "::2",         "fe80::1",        "::ffff:10.0.0.1", "::ffff:128.0.0.1",
        "::127.0.0.1", "2001:db8::1", "64:ff9b::7f00:1"};
    for (size_t i = 0; i < sizeof(yes6) / sizeof(*yes6); i++)
        CHECK(v6(yes6[i]), "%s is loopback", yes6[i]);
    for (size_t i = 0; i < sizeof(no6) / sizeof(*no6); i++)
        CHECK(!v6(no6[i]), "%s is not loopback", no6[i]);
    CHECK(!auth_peer_is_loopback(NULL, 0), "no peer");
    struct sockaddr_in short_sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &short_sa.sin_addr);
    CHECK(!auth_peer_is_loopback((struct sockaddr *)&short_sa, 2), "truncated address");
    struct sockaddr unix_sa = {.sa_family = AF_UNIX};
    CHECK(!auth_peer_is_loopback(&unix_sa, sizeof(unix_sa)), "AF_UNIX is not loopback");
}

static int check_authz(struct process *p, const char *authz, const char *peer_ip)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    inet_pton(AF_INET, peer_ip, &sin.sin_addr);
    const char *why = NULL;
    return auth_check(p, authz, authz ? strlen(authz) : 0, (struct sockaddr *)&sin, sizeof(sin),
                      &why);
}

static void test_token_rule(void)
{
    struct process p = {0};
    CHECK(check_authz(&p, NULL, "127.0.0.1") == 0, "no token: loopback allowed");
    CHECK(check_authz(&p, NULL, "10.1.2.3") == 403, "no token: others 403");
    CHECK(check_authz(&p, "Bearer x", "10.1.2.3") == 403, "no token: a header does not help");
    p.token = "s3cret";
    CHECK(check_authz(&p, NULL, "127.0.0.1") == 401, "token: loopback needs it too");
    CHECK(check_authz(&p, "Bearer s3cret", "10.1.2.3") == 0, "token: right one from anywhere");
    CHECK(check_authz(&p, "bearer s3cret", "127.0.0.1") == 0, "scheme is case-insensitive");
    CHECK(check_authz(&p, "Bearer s3cre", "127.0.0.1") == 401, "prefix of the token");
    CHECK(check_authz(&p, "Bearer s3cret2", "127.0.0.1") == 401, "longer token");
    CHECK(check_authz(&p, "Bearer S3cret", "127.0.0.1") == 401, "case matters in the token");
    CHECK(check_authz(&p, "Basic s3cret", "127.0.0.1") == 401, "other scheme");
    CHECK(check_authz(&p, "Bearer ", "127.0.0.1") == 401, "empty token");
    CHECK(check_authz(&p, "", "127.0.0.1") == 401, "empty header");
}

static int flat(const char *s, struct json_member *m, size_t cap, size_t *n)
{
    const char *err = NULL;
    return json_parse_flat_object(s, strlen(s), m, cap, n, &err);
}

static void test_flat_object(void)
{
    struct json_member m[4];
    size_t n;
    CHECK(flat("{\"weight\": 5}", m, 4, &n) == 0 && n == 1 && !strcmp(m[0].name, "weight") &&
              m[0].value == 5,
          "one member");
    CHECK(flat(" {\"blue\":0 , \"green\" :100}\n", m, 4, &n) == 0 && n == 2 && m[1].value == 100 &&
              !strcmp(m[1].name, "green"),
          "two members, whitespace");
    CHECK(flat("{}", m, 4, &n) == 0 && n == 0, "empty object");
    CHECK(flat("{\"a\\u00e9\\n\":1}", m, 4, &n) == 0 && !strcmp(m[0].name, "a\xc3\xa9\n"),
          "escapes decode to UTF-8");
    CHECK(flat("{\"x\":4294967295}", m, 4, &n) == 0 && m[0].value == 4294967295u, "UINT32_MAX");
    static const char *const bad[] = {
        "",
        "[]",
        "{",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":-1}",
        "{\"a\":1.5}",
        "{\"a\":1e3}",
        "{\"a\":01}",
        "{\"a\":\"1\"}",
        "{\"a\":true}",
        "{\"a\":null}",
        "{\"a\":1,}",
        "{\"a\":1}x",
        "{\"a\":1,\"a\":2}",
        "{a:1}",
        "{\"a\":4294967296}",
        "{\"a\":1 \"b\":2}",
        "{\"a\\u0000\":1}",
        "{\"\\ud800\":1}",
        "{\"a\\q\":1}",
        "{\"a\x01\":1}",
        "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        CHECK(flat(bad[i], m, 4, &n) < 0, "rejects %s", bad[i]);
    /* a name longer than JSON_NAME_MAX is an error, not a truncation */
    char longname[JSON_NAME_MAX + 20];
    snprintf(longname, sizeof(longname), "{\"%0*d\":1}", JSON_NAME_MAX + 1, 0);
    CHECK(flat(longname, m, 4, &n) < 0, "long name");
}

static void test_tree(void)
{
    const char *doc = "{\"a\":[1,2,{\"b\":null}],\"s\":\"x\\\"y\",\"t\":true,\"f\":false,"
                      "\"n\":-1.5e2,\"o\":{}}";
    const char *err = NULL;
    struct json_value *v = json_parse(doc, strlen(doc), &err);
    CHECK(v && v->type == JSON_OBJECT && v->count == 6, "tree parsed (%s)", err ? err : "");
    if (v) {
        const struct json_value *a = json_get(v, "a");
        CHECK(a && a->type == JSON_ARRAY && a->count == 3, "array");
        CHECK(a && a->items[2]->type == JSON_OBJECT &&
                  json_get(a->items[2], "b")->type == JSON_NULL,
              "nested null");
        CHECK(!strcmp(json_get_str(v, "s", ""), "x\"y"), "string");
        CHECK(json_get(v, "t")->boolean && !json_get(v, "f")->boolean, "booleans");
        CHECK(json_get_num(v, "n", 0) == -150.0, "number");
        CHECK(json_get(v, "missing") == NULL && json_get_num(v, "missing", 7) == 7, "missing");
    }
    json_free(v);
    static const char *const bad[] = {"", "{", "[1,]", "{\"a\" 1}", "tru", "{}x", "\"abc"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        struct json_value *b = json_parse(bad[i], strlen(bad[i]), &err);
        CHECK(!b, "rejects %s", bad[i]);
        json_free(b);
    }
    char deep[200];
    memset(deep, '[', sizeof(deep));
    struct json_value *d = json_parse(deep, sizeof(deep), &err);
    CHECK(!d, "nesting bounded");
    json_free(d);
}

int main(void)
{
    test_loopback();
    test_token_rule();
    test_flat_object();
    test_tree();
    return check_report("test_admin_api");
}
