// links: usher_proxy_admin
/* The runtime API's pure parts: who is loopback (auth_peer_is_loopback),
 * the token rule (auth_check) and the strict reading of a body (jansson,
 * with the API's rules: proxy/admin/api.c, included for its statics). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/admin/api.c"
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

/* The body <s> read with room for <cap> members; the names are copied
 * into <names> (the document is gone when this returns). */
static int flat(const char *s, struct body_member *m, size_t cap, size_t *n, const char **why)
{
    static char names[8][200];
    struct api_request rq = {.body = s, .body_len = strlen(s)};
    json_t *doc = NULL;
    *why = NULL;
    int rc = body_members(&rq, &doc, m, cap, n, why);
    CHECK(rc == 0 ? doc != NULL && *why == NULL : doc == NULL && *why != NULL,
          "%s: the document and the reason", s);
    for (size_t i = 0; rc == 0 && i < *n && i < 8; i++) {
        snprintf(names[i], sizeof(names[i]), "%s", m[i].name);
        m[i].name = names[i];
    }
    json_decref(doc);
    return rc;
}

static void test_flat_object(void)
{
    struct body_member m[4];
    size_t n;
    const char *why;
    CHECK(flat("{\"weight\": 5}", m, 4, &n, &why) == 0 && n == 1 && !strcmp(m[0].name, "weight") &&
              m[0].value == 5,
          "one member");
    CHECK(flat(" {\"blue\":0 , \"green\" :100}\n", m, 4, &n, &why) == 0 && n == 2 &&
              m[1].value == 100 && !strcmp(m[1].name, "green") && !strcmp(m[0].name, "blue"),
          "two members, whitespace, in order");
    CHECK(flat("{}", m, 4, &n, &why) == 0 && n == 0, "empty object");
    CHECK(flat("{\"a\\u00e9\\n\":1}", m, 4, &n, &why) == 0 && !strcmp(m[0].name, "a\xc3\xa9\n"),
          "escapes decode to UTF-8");
    CHECK(flat("{\"x\":4294967295}", m, 4, &n, &why) == 0 && m[0].value == 4294967295u,
          "UINT32_MAX");
    static const struct {
        const char *body, *why;
    } bad[] = {
        {"", NULL},
        {"   ", NULL},
        {"[]", "body is not a JSON object"},
        {"5", "body is not a JSON object"},
        {"\"x\"", "body is not a JSON object"},
        {"{", "the body ends before the JSON does"},
        {"{\"a\"}", NULL},
        {"{\"a\":}", NULL},
        {"{\"a\":-1}", "value must be a non-negative integer"},
        {"{\"a\":1.5}", "value must be a non-negative integer"},
        {"{\"a\":1.0}", "value must be a non-negative integer"},
        {"{\"a\":1e3}", "value must be a non-negative integer"},
        {"{\"a\":01}", NULL},
        {"{\"a\":\"1\"}", "value must be a non-negative integer"},
        {"{\"a\":true}", "value must be a non-negative integer"},
        {"{\"a\":null}", "value must be a non-negative integer"},
        {"{\"a\":{}}", "value must be a non-negative integer"},
        {"{\"a\":1,}", NULL},
        {"{\"a\":1}x", "trailing bytes after the object"},
        {"{\"a\":1}}", "trailing bytes after the object"},
        {"{\"a\":1} {\"b\":2}", "trailing bytes after the object"},
        {"{\"a\":1,\"a\":2}", "duplicate member name"},
        {"{a:1}", NULL},
        {"{\"a\":4294967296}", "value out of range"},
        {"{\"a\":99999999999999999999999}", "value out of range"},
        {"{\"a\":1 \"b\":2}", NULL},
        {"{\"a\\u0000\":1}", "NUL in a string"},
        {"{\"\\ud800\":1}", NULL},
        {"{\"a\\q\":1}", NULL},
        {"{\"a\x01\":1}", NULL},
        {"{\"\xff\":1}", "the body is not valid UTF-8"},
        {"{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}", "too many members"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        CHECK(flat(bad[i].body, m, 4, &n, &why) < 0, "rejects %s", bad[i].body);
        if (bad[i].why)
            CHECK(why && !strcmp(why, bad[i].why), "%s: reason '%s', want '%s'", bad[i].body,
                  why ? why : "(none)", bad[i].why);
    }
    /* a name longer than BODY_NAME_MAX is an error, not a truncation */
    char longname[BODY_NAME_MAX + 20];
    snprintf(longname, sizeof(longname), "{\"%0*d\":1}", BODY_NAME_MAX + 1, 0);
    CHECK(flat(longname, m, 4, &n, &why) < 0 && !strcmp(why, "member name too long"), "long name");
    snprintf(longname, sizeof(longname), "{\"%0*d\":1}", BODY_NAME_MAX, 0);
    CHECK(flat(longname, m, 4, &n, &why) == 0, "a name of BODY_NAME_MAX bytes");
}

int main(void)
{
    test_loopback();
    test_token_rule();
    test_flat_object();
    return check_report("test_admin_api");
}
