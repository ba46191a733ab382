// links: usher_conf
/* Unit tests of the config keys DESIGN.md added for routing, certificates,
 * HTTP/2, the PROXY protocol and TLS to backends: defaults, every value,
 * bounds, and every error with its "file:line:column: key: reason"; and the
 * deferred resolution of host names (CONF_LOAD_DEFER_RESOLVE). */
#include "conf/conf.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "test/unit/check.h"

/* The pools every listener below may name: 3 lines, placed last. */
#define POOLS                                                                                      \
    "pools:\n"                                                                                     \
    "  - {name: blue, backends: [{name: b1, address: 127.0.0.1:9001}]}\n"                          \
    "  - {name: green, backends: []}\n"

static struct conf *load_ok_flags(int line, const char *yaml, unsigned flags)
{
    struct conf_errors e = {0};
    struct conf *c = conf_load_string_flags("t.yaml", yaml, strlen(yaml), flags, &e);

    if (!c || e.count) {
        fprintf(stderr, "%s:%d: expected a valid config, got %zu errors:\n", __FILE__, line,
                e.count);
        for (size_t i = 0; i < e.count; i++)
            fprintf(stderr, "    %s\n", e.messages[i]);
        failures++;
    }
    conf_errors_clear(&e);
    return c;
}
#define LOAD_OK(yaml) load_ok_flags(__LINE__, yaml, 0)
#define LOAD_DEFERRED(yaml) load_ok_flags(__LINE__, yaml, CONF_LOAD_DEFER_RESOLVE)

/* <got> (count <n>) against the NULL-terminated <want>. */
static void errors_match(int line, const struct conf_errors *e, const char *const *want,
                         const char *what)
{
    size_t n = 0;
    bool ok;

    while (want[n])
        n++;
    ok = e->count == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = strcmp(e->messages[i], want[i]) == 0;
    if (ok)
        return;
    fprintf(stderr, "%s:%d: %s differ\n  expected:\n", __FILE__, line, what);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, "    %s\n", want[i]);
    fprintf(stderr, "  got:\n");
    for (size_t i = 0; i < e->count; i++)
        fprintf(stderr, "    %s\n", e->messages[i]);
    failures++;
}

static void expect_errors(int line, const char *yaml, unsigned flags, const char *const *want)
{
    struct conf_errors e = {0};
    struct conf *c = conf_load_string_flags("t.yaml", yaml, strlen(yaml), flags, &e);

    if (c) {
        fprintf(stderr, "%s:%d: the config loaded\n", __FILE__, line);
        failures++;
    }
    errors_match(line, &e, want, "errors");
    conf_free(c);
    conf_errors_clear(&e);
}
#define EXPECT_ERRORS(yaml, ...)                                                                   \
    expect_errors(__LINE__, yaml, 0, (const char *const[]){__VA_ARGS__, NULL})
#define EXPECT_ERRORS_DEFERRED(yaml, ...)                                                          \
    expect_errors(__LINE__, yaml, CONF_LOAD_DEFER_RESOLVE, (const char *const[]){__VA_ARGS__, NULL})

static char tmpdir[] = "/tmp/usher-test-routes-XXXXXX";

/* A file in the test's directory (its contents do not matter to conf). */
static char *temp_file(const char *name)
{
    char *path = NULL;
    FILE *f;

    if (asprintf(&path, "%s/%s", tmpdir, name) < 0)
        abort();
    if ((f = fopen(path, "w"))) {
        fputs("not really PEM\n", f);
        fclose(f);
    }
    return path;
}

static char *format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *format(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;

    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    return s;
}

/* ---- listeners ------------------------------------------------------------ */

static void test_listener_defaults(void)
{
    struct conf *c = LOAD_OK("listeners:\n"
                             "  - {name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}\n" POOLS);
    if (!c)
        return;
    const struct conf_listener *l = &c->listeners[0];
    CHECK_EQ(l->http2, CONF_HTTP2_AUTO);
    CHECK_EQ(l->proxy_protocol, CONF_PROXY_OFF);
    CHECK_EQ(l->num_proxy_protocol_from, 0);
    CHECK_EQ(l->num_routes, 0);
    CHECK(!l->tls.enabled);
    CHECK_EQ(l->tls.num_certificates, 0);
    CHECK(!l->tls.strict_sni);
    CHECK_EQ(c->limits.h2_max_streams, 100);
    CHECK_STR(conf_http2_str(l->http2), "auto");
    CHECK_STR(conf_proxy_protocol_str(l->proxy_protocol), "false");
    conf_free(c);
}

static void test_listener_keys(void)
{
    char *cert = temp_file("server.pem"), *key = temp_file("server.key");
    char *api = temp_file("api.pem"), *apikey = temp_file("api.key");
    char *y =
        format("listeners:\n"
               "  - name: web\n"
               "    bind: 127.0.0.1:8443\n"
               "    tls:\n"
               "      cert: %s\n"
               "      key: %s\n"
               "      certificates:\n"
               "        - {cert: %s, key: %s}\n"
               "        - {cert: %s, key: %s}\n"
               "      strict_sni: true\n"
               "    http2: false\n"
               "    proxy_protocol: v2\n"
               "    proxy_protocol_from: [10.0.0.0/8, \"::1\", \"2001:db8::/32\", "
               "192.168.1.7, 0.0.0.0/0]\n"
               "    pools: {blue: 1}\n"
               "  - {name: a, bind: 127.0.0.1:8081, pools: {blue: 1}, http2: FALSE,\n"
               "     proxy_protocol: v1, proxy_protocol_from: [127.0.0.1]}\n"
               "  - {name: b, bind: 127.0.0.1:8082, pools: {blue: 1}, http2: auto,\n"
               "     proxy_protocol: any, proxy_protocol_from: [\"::/0\"]}\n"
               "  - {name: c, bind: 127.0.0.1:8083, pools: {blue: 1}, proxy_protocol: false,\n"
               "     proxy_protocol_from: [10.1.0.0/16]}\n"
               "limits: {h2_max_streams: 10000}\n" POOLS,
               cert, key, api, apikey, cert, key);
    struct conf *c = LOAD_OK(y);

    if (c) {
        const struct conf_listener *l = &c->listeners[0];
        CHECK(l->tls.enabled);
        CHECK_STR(l->tls.cert, cert);
        CHECK_EQ(l->tls.num_certificates, 2);
        CHECK_STR(l->tls.certificates[0].cert, api);
        CHECK_STR(l->tls.certificates[0].key, apikey);
        CHECK_STR(l->tls.certificates[1].cert, cert);
        CHECK_EQ(l->tls.certificates[1].pos.line, 9);
        CHECK_EQ(l->tls.certificates[1].pos.column, 11);
        CHECK(l->tls.strict_sni);
        CHECK_EQ(l->http2, CONF_HTTP2_OFF);
        CHECK_EQ(l->proxy_protocol, CONF_PROXY_V2);
        CHECK_EQ(l->num_proxy_protocol_from, 5);
        const struct conf_cidr *n = l->proxy_protocol_from;
        CHECK_STR(n[0].text, "10.0.0.0/8");
        CHECK_EQ(n[0].family, AF_INET);
        CHECK_EQ(n[0].prefix, 8);
        CHECK_EQ(n[0].addr[0], 10);
        CHECK_EQ(n[1].family, AF_INET6);
        CHECK_EQ(n[1].prefix, 128);
        CHECK_EQ(n[1].addr[15], 1);
        CHECK_EQ(n[2].prefix, 32);
        CHECK_EQ(n[3].family, AF_INET);
        CHECK_EQ(n[3].prefix, 32);
        CHECK_EQ(n[4].prefix, 0);
        CHECK_EQ(c->listeners[1].http2, CONF_HTTP2_OFF);
        CHECK_EQ(c->listeners[1].proxy_protocol, CONF_PROXY_V1);
        CHECK_EQ(c->listeners[2].http2, CONF_HTTP2_AUTO);
        CHECK_EQ(c->listeners[2].proxy_protocol, CONF_PROXY_ANY);
        CHECK_EQ(c->listeners[3].proxy_protocol, CONF_PROXY_OFF);
        CHECK_EQ(c->listeners[3].num_proxy_protocol_from, 1);
        CHECK_EQ(c->limits.h2_max_streams, 10000);
        CHECK_STR(conf_proxy_protocol_str(CONF_PROXY_ANY), "any");
        CHECK_STR(conf_http2_str(CONF_HTTP2_OFF), "false");
    }
    conf_free(c);
    free(y);

    /* relative certificate paths are the config file's directory's */
    char *dir_cfg = NULL;
    if (asprintf(&dir_cfg, "%s/usher.yaml", tmpdir) < 0)
        abort();
    FILE *f = fopen(dir_cfg, "w");
    if (f) {
        fputs("listeners:\n"
              "  - name: web\n"
              "    bind: 127.0.0.1:8443\n"
              "    tls: {cert: server.pem, key: server.key,\n"
              "          certificates: [{cert: api.pem, key: api.key}]}\n"
              "    pools: {blue: 1}\n" POOLS,
              f);
        fclose(f);
    }
    struct conf_errors e = {0};
    c = conf_load(dir_cfg, &e);
    CHECK(c != NULL && e.count == 0);
    if (c)
        CHECK_STR(c->listeners[0].tls.certificates[0].key, apikey);
    conf_free(c);
    conf_errors_clear(&e);
    unlink(dir_cfg);
    free(dir_cfg);

    y = format("listeners:\n"
               "  - name: web\n"
               "    bind: 127.0.0.1:8443\n"
               "    tls:\n"
               "      cert: %s\n"
               "      key: %s\n"
               "      certificates:\n"
               "        - {cert: %s}\n"
               "        - {cert: %s, key: %s/nope.key}\n"
               "        - api.pem\n"
               "      strict_sni: 1\n"
               "    pools: {blue: 1}\n"
               "  - name: api\n"
               "    bind: 127.0.0.1:8444\n"
               "    tls: {cert: %s, key: %s, certificates: {a: b}, strict_snl: true}\n"
               "    pools: {blue: 1}\n" POOLS,
               cert, key, api, api, tmpdir, cert, key);
    /* columns after the paths: "        - {cert: " is 17 characters, ", key: " 7... */
    size_t A = strlen(api), C = strlen(cert), K = strlen(key);
    char *nope = format("t.yaml:9:%zu: listeners[0].tls.certificates[1].key: cannot read "
                        "\"%s/nope.key\": No such file or directory",
                        A + 25, tmpdir);
    char *notlist =
        format("t.yaml:15:%zu: listeners[1].tls.certificates: expected a list", C + K + 40);
    char *typo = format("t.yaml:15:%zu: listeners[1].tls.strict_snl: unknown key, did you mean "
                        "strict_sni?",
                        C + K + 48);
    EXPECT_ERRORS(y, "t.yaml:8:11: listeners[0].tls.certificates[0].key: missing required key",
                  nope, "t.yaml:10:11: listeners[0].tls.certificates[2]: expected a mapping",
                  "t.yaml:11:19: listeners[0].tls.strict_sni: expected true or false", notlist,
                  typo);
    free(nope);
    free(notlist);
    free(typo);
    free(y);

    unlink(cert);
    unlink(key);
    unlink(api);
    unlink(apikey);
    free(cert);
    free(key);
    free(api);
    free(apikey);
}

static void test_listener_errors(void)
{
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    http2: true\n"
                  "    proxy_protocol: v3\n"
                  "    proxy_protocol_from: 10.0.0.0/8\n"
                  "    pools: {blue: 1}\n"
                  "limits: {h2_max_streams: 0}\n" POOLS,
                  "t.yaml:4:12: listeners[0].http2: invalid value \"true\": must be one of auto, "
                  "false",
                  "t.yaml:5:21: listeners[0].proxy_protocol: invalid value \"v3\": must be one "
                  "of false, v1, v2, any",
                  "t.yaml:6:26: listeners[0].proxy_protocol_from: expected a list",
                  "t.yaml:8:26: limits.h2_max_streams: must be between 1 and 10000");
    EXPECT_ERRORS("limits: {h2_max_streams: 10001}\n"
                  "listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n" POOLS,
                  "t.yaml:1:26: limits.h2_max_streams: must be between 1 and 10000");

    /* the networks: each mistake at its entry */
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    proxy_protocol: v1\n"
                  "    proxy_protocol_from:\n"
                  "      - 10.0.0.1/8\n"
                  "      - 10.0.0.0/33\n"
                  "      - \"::1/129\"\n"
                  "      - 10.0.0.0/\n"
                  "      - 10.0.0.0/08\n"
                  "      - 10.0.0/8\n"
                  "      - example.com\n"
                  "      - \"fe80::1/10\"\n"
                  "      - [10.0.0.0/8]\n"
                  "    pools: {blue: 1}\n" POOLS,
                  "t.yaml:6:9: listeners[0].proxy_protocol_from[0]: invalid network "
                  "\"10.0.0.1/8\": address bits set beyond the prefix length",
                  "t.yaml:7:9: listeners[0].proxy_protocol_from[1]: invalid network "
                  "\"10.0.0.0/33\": bad prefix length (0-32 for IPv4, 0-128 for IPv6)",
                  "t.yaml:8:9: listeners[0].proxy_protocol_from[2]: invalid network "
                  "\"::1/129\": bad prefix length (0-32 for IPv4, 0-128 for IPv6)",
                  "t.yaml:9:9: listeners[0].proxy_protocol_from[3]: invalid network "
                  "\"10.0.0.0/\": bad prefix length (0-32 for IPv4, 0-128 for IPv6)",
                  "t.yaml:10:9: listeners[0].proxy_protocol_from[4]: invalid network "
                  "\"10.0.0.0/08\": bad prefix length (0-32 for IPv4, 0-128 for IPv6)",
                  "t.yaml:11:9: listeners[0].proxy_protocol_from[5]: invalid network "
                  "\"10.0.0/8\": expected an IPv4 or IPv6 network such as 10.0.0.0/8 or "
                  "::1/128",
                  "t.yaml:12:9: listeners[0].proxy_protocol_from[6]: invalid network "
                  "\"example.com\": expected an IPv4 or IPv6 network such as 10.0.0.0/8 or "
                  "::1/128",
                  "t.yaml:13:9: listeners[0].proxy_protocol_from[7]: invalid network "
                  "\"fe80::1/10\": address bits set beyond the prefix length",
                  "t.yaml:14:9: listeners[0].proxy_protocol_from[8]: expected a string");

    /* with proxy_protocol on, proxy_protocol_from is required and not empty */
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    proxy_protocol: v1\n"
                  "    pools: {blue: 1}\n"
                  "  - name: api\n"
                  "    bind: 127.0.0.1:8081\n"
                  "    proxy_protocol: any\n"
                  "    proxy_protocol_from: []\n"
                  "    pools: {blue: 1}\n"
                  "  - {name: ok, bind: 127.0.0.1:8082, proxy_protocol: False,\n"
                  "     proxy_protocol_from: [], pools: {blue: 1}}\n" POOLS,
                  "t.yaml:2:5: listeners[0].proxy_protocol_from: missing required key "
                  "(proxy_protocol is v1: the networks allowed to connect)",
                  "t.yaml:9:26: listeners[1].proxy_protocol_from: must have at least one entry "
                  "with proxy_protocol any");
}

static void test_cidr_match(void)
{
    struct conf_cidr n4, n6, all;
    struct sockaddr_in a4 = {.sin_family = AF_INET};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    const char *reason;

    CHECK(conf_parse_cidr("10.20.0.0/14", &n4, &reason) == 0);
    CHECK(conf_parse_cidr("2001:db8:1::/48", &n6, &reason) == 0);
    CHECK(conf_parse_cidr("0.0.0.0/0", &all, &reason) == 0);
    inet_pton(AF_INET, "10.23.255.255", &a4.sin_addr);
    CHECK(conf_cidr_match(&n4, (struct sockaddr *)&a4));
    CHECK(conf_cidr_match(&all, (struct sockaddr *)&a4));
    CHECK(!conf_cidr_match(&n6, (struct sockaddr *)&a4));
    inet_pton(AF_INET, "10.24.0.0", &a4.sin_addr);
    CHECK(!conf_cidr_match(&n4, (struct sockaddr *)&a4));
    inet_pton(AF_INET6, "2001:db8:1:ffff::7", &a6.sin6_addr);
    CHECK(conf_cidr_match(&n6, (struct sockaddr *)&a6));
    CHECK(!conf_cidr_match(&n4, (struct sockaddr *)&a6));
    inet_pton(AF_INET6, "2001:db8:2::7", &a6.sin6_addr);
    CHECK(!conf_cidr_match(&n6, (struct sockaddr *)&a6));
    /* an IPv4 peer on a dual-stack socket */
    inet_pton(AF_INET6, "::ffff:10.21.0.1", &a6.sin6_addr);
    CHECK(conf_cidr_match(&n4, (struct sockaddr *)&a6));
    inet_pton(AF_INET6, "::ffff:11.21.0.1", &a6.sin6_addr);
    CHECK(!conf_cidr_match(&n4, (struct sockaddr *)&a6));
    CHECK(!conf_cidr_match(&all, (struct sockaddr *)&un));
    CHECK(conf_parse_cidr("10.20.0.0/13", &n4, &reason) == -1);
    CHECK_STR(reason, "address bits set beyond the prefix length");
}

/* ---- pools ---------------------------------------------------------------- */

static void test_pool_defaults(void)
{
    struct conf *c = LOAD_OK("listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n"
                             "pools:\n"
                             "  - name: blue\n"
                             "    health_check: {}\n"
                             "    backends: []\n"
                             "  - {name: green, tls: {}, passive_health: true, backends: []}\n"
                             "  - {name: off, passive_health: false, backends: []}\n"
                             "  - {name: set, passive_health: {ejection_time: 1s}, backends: []}\n"
                             "  - {name: empty, passive_health: {}, backends: []}\n");
    if (!c)
        return;
    const struct conf_pool *p = &c->pools[0];
    CHECK_EQ(p->protocol, CONF_POOL_HTTP1);
    CHECK(!p->tls.enabled);
    CHECK(p->tls.verify);
    CHECK_EQ(p->send_proxy, CONF_PROXY_OFF);
    CHECK_STR(p->health_check.service, "");
    CHECK_EQ(p->health_check.protocol, CONF_PROTO_HTTP);
    /* passive health: on with its defaults unless written false */
    CHECK(p->passive_health.enabled);
    CHECK_EQ(p->passive_health.consecutive_failures, 5);
    CHECK_EQ(p->passive_health.ejection_time, 30000);
    CHECK_EQ(p->passive_health.max_ejected_percent, 50);
    const struct conf_pool *green = &c->pools[1];
    CHECK(green->tls.enabled);
    CHECK(green->tls.verify);
    CHECK(green->tls.ca == NULL && green->tls.sni == NULL);
    CHECK(green->tls.cert == NULL && green->tls.key == NULL);
    CHECK(green->passive_health.enabled);
    CHECK_EQ(green->passive_health.consecutive_failures, 5);
    CHECK(!c->pools[2].passive_health.enabled);
    CHECK(c->pools[3].passive_health.enabled);
    CHECK_EQ(c->pools[3].passive_health.ejection_time, 1000);
    CHECK_EQ(c->pools[3].passive_health.consecutive_failures, 5);
    CHECK(c->pools[4].passive_health.enabled);
    CHECK_STR(conf_pool_protocol_str(p->protocol), "http1");
    conf_free(c);
}

static void test_pool_keys(void)
{
    char *ca = temp_file("ca.pem"), *cert = temp_file("client.pem"), *key = temp_file("client.key");
    char *y = format("listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n"
                     "pools:\n"
                     "  - name: blue\n"
                     "    protocol: h2\n"
                     "    tls:\n"
                     "      ca: %s\n"
                     "      verify: false\n"
                     "      sni: App.Internal\n"
                     "      cert: %s\n"
                     "      key: %s\n"
                     "    send_proxy: v2\n"
                     "    health_check: {protocol: grpc, service: grpc.health.v1.Health}\n"
                     "    backends: []\n"
                     "  - name: green\n"
                     "    protocol: h2c\n"
                     "    send_proxy: v1\n"
                     "    health_check: {protocol: grpc}\n"
                     "    backends: []\n"
                     "  - {name: red, protocol: http1, tls: {sni: red.internal}, backends: []}\n",
                     ca, cert, key);
    struct conf *c = LOAD_OK(y);
    if (c) {
        const struct conf_pool *p = &c->pools[0];
        CHECK_EQ(p->protocol, CONF_POOL_H2);
        CHECK(p->tls.enabled);
        CHECK_STR(p->tls.ca, ca);
        CHECK(!p->tls.verify);
        CHECK_STR(p->tls.sni, "App.Internal");
        CHECK_STR(p->tls.cert, cert);
        CHECK_STR(p->tls.key, key);
        CHECK_EQ(p->send_proxy, CONF_PROXY_V2);
        CHECK_EQ(p->health_check.protocol, CONF_PROTO_GRPC);
        CHECK_STR(p->health_check.service, "grpc.health.v1.Health");
        const struct conf_pool *g = &c->pools[1];
        CHECK_EQ(g->protocol, CONF_POOL_H2C);
        CHECK(!g->tls.enabled);
        CHECK_EQ(g->send_proxy, CONF_PROXY_V1);
        CHECK_EQ(g->health_check.protocol, CONF_PROTO_GRPC);
        CHECK_STR(g->health_check.service, "");
        CHECK(c->pools[2].tls.enabled);
        CHECK_STR(c->pools[2].tls.sni, "red.internal");
        CHECK_STR(conf_pool_protocol_str(CONF_POOL_H2C), "h2c");
        CHECK_STR(conf_protocol_str(CONF_PROTO_GRPC), "grpc");
    }
    conf_free(c);
    free(y);

    y = format(
        "listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n"
        "pools:\n"
        "  - name: blue\n"
        "    protocol: http2\n"
        "    send_proxy: any\n"
        "    tls: {ca: %s/nope.pem, verify: no, sni: \"a b\", cert: %s, key: %s, ciphers: x}\n"
        "    passive_health: on\n"
        "    backends: []\n",
        tmpdir, cert, key);
    /* columns after the paths: "    tls: {ca: " is 14 characters... */
    size_t T = strlen(tmpdir), C = strlen(cert), K = strlen(key);
    char *nope = format("t.yaml:6:15: pools[0].tls.ca: cannot read \"%s/nope.pem\": No such file "
                        "or directory",
                        tmpdir);
    char *verify = format("t.yaml:6:%zu: pools[0].tls.verify: expected true or false", T + 34);
    char *sni = format("t.yaml:6:%zu: pools[0].tls.sni: invalid host name \"a b\": expected "
                       "dot-separated labels of letters, digits, '-' or '_' (no port, no brackets)",
                       T + 43);
    char *ciphers = format("t.yaml:6:%zu: pools[0].tls.ciphers: unknown key", T + C + K + 65);
    EXPECT_ERRORS(y,
                  "t.yaml:4:15: pools[0].protocol: invalid value \"http2\": must be one of http1, "
                  "h2c, h2",
                  "t.yaml:5:17: pools[0].send_proxy: invalid value \"any\": must be one of false, "
                  "v1, v2",
                  nope, verify, sni, ciphers,
                  "t.yaml:7:21: pools[0].passive_health: expected a mapping, true or false");
    free(nope);
    free(verify);
    free(sni);
    free(ciphers);
    free(y);

    /* the rules between protocol, tls and the health check, each where it is wrong */
    y = format("listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n"
               "pools:\n"
               "  - name: blue\n"
               "    protocol: h2\n"
               "    backends: []\n"
               "  - name: green\n"
               "    protocol: h2c\n"
               "    tls: {}\n"
               "    backends: []\n"
               "  - name: red\n"
               "    tls: {cert: %s}\n"
               "    backends: []\n"
               "  - name: grey\n"
               "    tls:\n"
               "      key: %s\n"
               "    backends: []\n"
               "  - name: grpc\n"
               "    health_check:\n"
               "      protocol: grpc\n"
               "    backends: []\n",
               cert, key);
    EXPECT_ERRORS(y,
                  "t.yaml:4:15: pools[0].protocol: h2 needs a tls block (HTTP/2 over TLS; h2c is "
                  "HTTP/2 without it)",
                  "t.yaml:8:5: pools[1].tls: not allowed with protocol h2c (HTTP/2 without TLS): "
                  "use protocol h2",
                  "t.yaml:11:10: pools[2].tls.key: missing required key (cert and key go "
                  "together)",
                  "t.yaml:15:7: pools[3].tls.cert: missing required key (cert and key go "
                  "together)",
                  "t.yaml:19:17: pools[4].health_check.protocol: grpc needs the pool's protocol "
                  "h2c or h2 (gRPC runs over HTTP/2)");
    free(y);
    unlink(ca);
    unlink(cert);
    unlink(key);
    free(ca);
    free(cert);
    free(key);
}

static void test_health_grpc(void)
{
    EXPECT_ERRORS("listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n"
                  "pools:\n"
                  "  - name: blue\n"
                  "    protocol: h2c\n"
                  "    health_check:\n"
                  "      protocol: grpc\n"
                  "      path: /healthz\n"
                  "      expect_status: 200\n"
                  "    backends: []\n"
                  "  - name: green\n"
                  "    health_check: {service: app, protocol: http}\n"
                  "    backends: []\n"
                  "  - name: red\n"
                  "    health_check: {protocol: tcp, service: \"\"}\n"
                  "    backends: []\n"
                  "  - name: grey\n"
                  "    protocol: h2c\n"
                  "    health_check: {protocol: grpc, service: \"a\\tb\"}\n"
                  "    backends: []\n",
                  "t.yaml:7:7: pools[0].health_check.path: not allowed with protocol grpc (it "
                  "asks grpc.health.v1.Health/Check)",
                  "t.yaml:8:7: pools[0].health_check.expect_status: not allowed with protocol "
                  "grpc (it asks grpc.health.v1.Health/Check)",
                  "t.yaml:11:20: pools[1].health_check.service: only for protocol grpc",
                  "t.yaml:14:35: pools[2].health_check.service: only for protocol grpc",
                  "t.yaml:18:45: pools[3].health_check.service: invalid value \"a?b\": at most "
                  "1024 characters, no control characters");
    /* a grpc check still needs its timeout below its interval */
    EXPECT_ERRORS("listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n"
                  "pools:\n"
                  "  - name: blue\n"
                  "    protocol: h2c\n"
                  "    health_check: {protocol: grpc, interval: 1s, timeout: 1s}\n"
                  "    backends: []\n",
                  "t.yaml:5:59: pools[0].health_check.timeout: must be shorter than interval (1s)");
}

/* ---- routes --------------------------------------------------------------- */

static void test_routes(void)
{
    struct conf *c = LOAD_OK("listeners:\n"
                             "  - name: web\n"
                             "    bind: 127.0.0.1:8080\n"
                             "    routes:\n"
                             "      - name: api\n"
                             "        hosts: [API.Example.com., \"*.api.example.com\"]\n"
                             "        paths: [/v1/, =/healthz]\n"
                             "        headers: {X-Canary: \"1\", x-empty: \"\", X-Num: 2}\n"
                             "        strip_prefix: true\n"
                             "        pools: {green: 100, blue: 0}\n"
                             "      - name: any\n"
                             "        pools: {blue: 1}\n"
                             "  - name: edge\n"
                             "    bind: 127.0.0.1:8081\n"
                             "    routes: [{name: api, paths: [/], pools: {blue: 1}}]\n"
                             "    pools: {green: 1}\n" POOLS);
    if (!c)
        return;
    const struct conf_listener *web = &c->listeners[0];
    CHECK_EQ(web->num_splits, 0); /* no default route: 404 */
    CHECK_EQ(web->num_routes, 2);
    const struct conf_route *r = &web->routes[0];
    CHECK_STR(r->name, "api");
    CHECK_EQ(r->pos.line, 5);
    CHECK_EQ(r->pos.column, 9);
    CHECK_EQ(r->name_pos.line, 5);
    CHECK_EQ(r->name_pos.column, 15);
    CHECK_EQ(r->num_hosts, 2);
    CHECK_STR(r->hosts[0], "api.example.com");
    CHECK_STR(r->hosts[1], "*.api.example.com");
    CHECK_EQ(r->num_paths, 2);
    CHECK_STR(r->paths[0].path, "/v1/");
    CHECK(!r->paths[0].exact);
    CHECK_STR(r->paths[1].path, "/healthz");
    CHECK(r->paths[1].exact);
    CHECK_EQ(r->num_headers, 3);
    CHECK_STR(r->headers[0].name, "x-canary");
    CHECK_STR(r->headers[0].value, "1");
    CHECK_STR(r->headers[1].name, "x-empty");
    CHECK_STR(r->headers[1].value, "");
    CHECK_STR(r->headers[2].name, "x-num");
    CHECK_STR(r->headers[2].value, "2");
    CHECK(r->strip_prefix);
    CHECK_EQ(r->num_splits, 2);
    CHECK_STR(r->splits[0].pool, "green");
    CHECK_EQ(r->splits[0].pool_index, 1);
    CHECK_EQ(r->splits[0].weight, 100);
    CHECK_EQ(r->splits[1].pool_index, 0);
    CHECK(r->match_key != NULL);
    const struct conf_route *any = &web->routes[1];
    CHECK_EQ(any->num_hosts, 0);
    CHECK_EQ(any->num_paths, 0);
    CHECK_EQ(any->num_headers, 0);
    CHECK(!any->strip_prefix);
    CHECK(conf_find_route(web, "any") == any);
    CHECK(conf_find_route(web, "nope") == NULL);
    /* route names are per listener */
    const struct conf_listener *edge = &c->listeners[1];
    CHECK_EQ(edge->num_splits, 1);
    CHECK(conf_find_route(edge, "api") == &edge->routes[0]);
    conf_free(c);

    /* not the same match: a value, exact against prefix, a host, a header more */
    c = LOAD_OK(
        "listeners:\n"
        "  - name: web\n"
        "    bind: 127.0.0.1:8080\n"
        "    routes:\n"
        "      - {name: a, hosts: [a.com], paths: [/x], headers: {h: \"1\"}, pools: {blue: 1}}\n"
        "      - {name: b, hosts: [a.com], paths: [/x], headers: {h: \"2\"}, pools: {blue: 1}}\n"
        "      - {name: c, hosts: [a.com], paths: [=/x], headers: {h: \"1\"}, pools: {blue: 1}}\n"
        "      - {name: d, hosts: [b.com], paths: [/x], headers: {h: \"1\"}, pools: {blue: 1}}\n"
        "      - {name: e, hosts: [a.com], paths: [/x], headers: {h: \"1\", i: \"1\"},\n"
        "         pools: {blue: 1}}\n"
        "      - {name: f, hosts: [\"*.a.com\"], paths: [/x], headers: {h: \"1\"},\n"
        "         pools: {blue: 1}}\n"
        "      - {name: g, hosts: [a.com], paths: [/x/y], headers: {h: \"1\"}, pools: {blue: 1}}\n"
        "      - {name: h, hosts: [a.com], paths: [/x], pools: {blue: 1}}\n"
        "      - {name: i, hosts: [a.com], pools: {blue: 1}}\n"
        "      - {name: j, pools: {blue: 1}}\n"
        "    pools: {blue: 1}\n" POOLS);
    conf_free(c);
}

static void test_route_errors(void)
{
    /* names: unique within a listener, both positions named */
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    routes:\n"
                  "      - name: api\n"
                  "        paths: [/a]\n"
                  "        pools: {blue: 1}\n"
                  "      - {name: web, paths: [/b], pools: {blue: 1}}\n"
                  "      - name: api\n"
                  "        paths: [/c]\n"
                  "        pools: {blue: 1}\n"
                  "      - {paths: [/d], pools: {blue: 1}}\n"
                  "      - {name: \"a b\", paths: [/e], pools: {blue: 1}}\n" POOLS,
                  "t.yaml:9:15: listeners[0].routes[2].name: duplicate route name \"api\" (first "
                  "at line 5, column 15)",
                  "t.yaml:12:9: listeners[0].routes[3].name: missing required key",
                  "t.yaml:13:16: listeners[0].routes[4].name: invalid name \"a b\": use 1 to 64 "
                  "letters, digits, '-', '_' or '.'");

    /* hosts */
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    routes:\n"
                  "      - name: api\n"
                  "        hosts:\n"
                  "          - api.example.com:8080\n"
                  "          - \"*\"\n"
                  "          - \"*.\"\n"
                  "          - \"a.*.com\"\n"
                  "          - \"**.a.com\"\n"
                  "          - a..com\n"
                  "          - \"a.com..\"\n"
                  "          - \"[::1]\"\n"
                  "          - -a.com\n"
                  "          - \"\"\n"
                  "          - ~\n"
                  "        pools: {blue: 1}\n"
                  "      - {name: b, hosts: a.com, pools: {blue: 1}}\n"
                  "      - {name: c, hosts: [], pools: {blue: 1}}\n" POOLS,
                  "t.yaml:7:13: listeners[0].routes[0].hosts[0]: invalid host "
                  "\"api.example.com:8080\": expected a DNS name, or *. and a DNS name (no port)",
                  "t.yaml:8:13: listeners[0].routes[0].hosts[1]: invalid host \"*\": expected a "
                  "DNS name, or *. and a DNS name (no port)",
                  "t.yaml:9:13: listeners[0].routes[0].hosts[2]: invalid host \"*.\": expected a "
                  "DNS name, or *. and a DNS name (no port)",
                  "t.yaml:10:13: listeners[0].routes[0].hosts[3]: invalid host \"a.*.com\": "
                  "expected a DNS name, or *. and a DNS name (no port)",
                  "t.yaml:11:13: listeners[0].routes[0].hosts[4]: invalid host \"**.a.com\": "
                  "expected a DNS name, or *. and a DNS name (no port)",
                  "t.yaml:12:13: listeners[0].routes[0].hosts[5]: invalid host \"a..com\": "
                  "expected a DNS name, or *. and a DNS name (no port)",
                  "t.yaml:13:13: listeners[0].routes[0].hosts[6]: invalid host \"a.com..\": "
                  "expected a DNS name, or *. and a DNS name (no port)",
                  "t.yaml:14:13: listeners[0].routes[0].hosts[7]: invalid host \"[::1]\": "
                  "expected a DNS name, or *. and a DNS name (no port)",
                  "t.yaml:15:13: listeners[0].routes[0].hosts[8]: invalid host \"-a.com\": "
                  "expected a DNS name, or *. and a DNS name (no port)",
                  "t.yaml:16:13: listeners[0].routes[0].hosts[9]: invalid host \"\": expected a "
                  "DNS name, or *. and a DNS name (no port)",
                  "t.yaml:17:13: listeners[0].routes[0].hosts[10]: expected a string",
                  "t.yaml:19:26: listeners[0].routes[1].hosts: expected a list",
                  "t.yaml:20:26: listeners[0].routes[2].hosts: must have at least one entry "
                  "(leave the key out to match any host)");

    /* paths and headers */
    EXPECT_ERRORS(
        "listeners:\n"
        "  - name: web\n"
        "    bind: 127.0.0.1:8080\n"
        "    routes:\n"
        "      - name: api\n"
        "        paths: [v1/, \"=v1\", \"/a b\", \"/a?x=1\", \"/a#b\", \"=\", \"\", /ok]\n"
        "        headers:\n"
        "          X-Canary: \"1\"\n"
        "          \"x canary\": \"1\"\n"
        "          \":authority\": a.com\n"
        "          x-canary: \"2\"\n"
        "          x-null: ~\n"
        "          x-space: \"a \"\n"
        "          x-ctl: \"a\\rb\"\n"
        "          x-list: [a]\n"
        "        pools: {blue: 1}\n"
        "      - {name: b, paths: [], headers: [a], pools: {blue: 1}}\n" POOLS,
        "t.yaml:6:17: listeners[0].routes[0].paths[0]: invalid path \"v1/\": must start "
        "with / (=/ for an exact path) and contain no spaces, control characters, ? or #",
        "t.yaml:6:22: listeners[0].routes[0].paths[1]: invalid path \"=v1\": must start "
        "with / (=/ for an exact path) and contain no spaces, control characters, ? or #",
        "t.yaml:6:29: listeners[0].routes[0].paths[2]: invalid path \"/a b\": must "
        "start with / (=/ for an exact path) and contain no spaces, control characters, "
        "? or #",
        "t.yaml:6:37: listeners[0].routes[0].paths[3]: invalid path \"/a?x=1\": must "
        "start with / (=/ for an exact path) and contain no spaces, control characters, "
        "? or #",
        "t.yaml:6:47: listeners[0].routes[0].paths[4]: invalid path \"/a#b\": must "
        "start with / (=/ for an exact path) and contain no spaces, control characters, "
        "? or #",
        "t.yaml:6:55: listeners[0].routes[0].paths[5]: invalid path \"=\": must start "
        "with / (=/ for an exact path) and contain no spaces, control characters, ? or #",
        "t.yaml:6:60: listeners[0].routes[0].paths[6]: invalid path \"\": must start "
        "with / (=/ for an exact path) and contain no spaces, control characters, ? or #",
        "t.yaml:9:11: listeners[0].routes[0].headers.x canary: invalid header name "
        "\"x canary\": expected letters, digits or !#$%&'*+-.^_`|~",
        "t.yaml:10:11: listeners[0].routes[0].headers.:authority: invalid header name "
        "\":authority\": expected letters, digits or !#$%&'*+-.^_`|~",
        "t.yaml:11:11: listeners[0].routes[0].headers.x-canary: duplicate header name "
        "\"x-canary\" (first at line 8, column 11)",
        "t.yaml:12:19: listeners[0].routes[0].headers.x-null: expected a string",
        "t.yaml:13:20: listeners[0].routes[0].headers.x-space: invalid header value "
        "\"a \": no control characters, no space at either end",
        "t.yaml:14:18: listeners[0].routes[0].headers.x-ctl: invalid header value "
        "\"a?b\": no control characters, no space at either end",
        "t.yaml:15:19: listeners[0].routes[0].headers.x-list: expected a string",
        "t.yaml:17:26: listeners[0].routes[1].paths: must have at least one entry "
        "(leave the key out to match any path)",
        "t.yaml:17:39: listeners[0].routes[1].headers: expected a mapping");

    /* pools of a route: required, existing, one weight above 0 */
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    routes:\n"
                  "      - {name: a, paths: [/a], pools: {blue: 1, purple: 2}}\n"
                  "      - {name: b, paths: [/b], pools: {blue: 0, green: 0}}\n"
                  "      - {name: c, paths: [/c], pools: {}}\n"
                  "      - {name: d, paths: [/d]}\n"
                  "      - {name: e, paths: [/e], pools: {blue: x}, strip_prefix: yes}\n"
                  "      - {name: f, paths: [/f], pools: {blue: 1}, strip: true}\n" POOLS,
                  "t.yaml:5:49: listeners[0].routes[0].pools.purple: unknown pool \"purple\"",
                  "t.yaml:6:39: listeners[0].routes[1].pools: all weights are 0: at least one "
                  "pool needs a weight above 0",
                  "t.yaml:7:39: listeners[0].routes[2].pools: must name at least one pool",
                  "t.yaml:8:9: listeners[0].routes[3].pools: missing required key",
                  "t.yaml:9:46: listeners[0].routes[4].pools.blue: expected an integer",
                  "t.yaml:9:64: listeners[0].routes[4].strip_prefix: expected true or false",
                  "t.yaml:10:50: listeners[0].routes[5].strip: unknown key");

    /* a route the one before shadows: the same hosts, paths and headers as
     * sets, hosts without case or final dot, a prefix with or without its
     * final slash; the error at the second, naming the first */
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    routes:\n"
                  "      - name: api\n"
                  "        hosts: [a.com, b.com]\n"
                  "        paths: [/v1/, =/x]\n"
                  "        headers: {x-a: \"1\", x-b: \"2\"}\n"
                  "        pools: {blue: 1}\n"
                  "      - name: api2\n"
                  "        hosts: [B.COM., a.com, a.com]\n"
                  "        paths: [=/x, /v1]\n"
                  "        headers: {X-B: \"2\", x-a: \"1\"}\n"
                  "        pools: {green: 1}\n"
                  "      - {name: all, pools: {blue: 1}}\n"
                  "      - {name: all2, pools: {blue: 1}}\n"
                  "      - {name: root, paths: [/], pools: {blue: 1}}\n"
                  "      - {name: root2, paths: [/], pools: {blue: 1}}\n" POOLS,
                  "t.yaml:10:9: listeners[0].routes[1]: same hosts, paths and headers as route "
                  "\"api\" (line 5, column 9): it could never match",
                  "t.yaml:16:9: listeners[0].routes[3]: same hosts, paths and headers as route "
                  "\"all\" (line 15, column 9): it could never match",
                  "t.yaml:18:9: listeners[0].routes[5]: same hosts, paths and headers as route "
                  "\"root\" (line 17, column 9): it could never match");

    /* routes belong to http listeners; pools may go only with routes */
    EXPECT_ERRORS("listeners:\n"
                  "  - name: db\n"
                  "    bind: 127.0.0.1:5432\n"
                  "    protocol: tcp\n"
                  "    routes: [{name: a, pools: {blue: 1}}]\n"
                  "    pools: {blue: 1}\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    routes: []\n"
                  "  - name: api\n"
                  "    bind: 127.0.0.1:8081\n"
                  "  - name: one\n"
                  "    bind: 127.0.0.1:8082\n"
                  "    routes: {name: a}\n" POOLS,
                  "t.yaml:5:5: listeners[0].routes: allowed on http listeners only",
                  "t.yaml:7:5: listeners[1].pools: missing required key (the listener has no "
                  "routes)",
                  "t.yaml:10:5: listeners[2].pools: missing required key",
                  "t.yaml:14:13: listeners[3].routes: expected a list");
}

/* ---- deferred resolution ------------------------------------------------- */

static const char deferred_doc[] = "admin: {bind: \"LocalHost:9901\"}\n"
                                   "listeners:\n"
                                   "  - {name: web, bind: localhost:8080, pools: {blue: 1}}\n"
                                   "  - {name: api, bind: 127.0.0.1:8081, pools: {blue: 1}}\n"
                                   "pools:\n"
                                   "  - name: blue\n"
                                   "    backends:\n"
                                   "      - {name: b1, address: 127.0.0.1:9001}\n"
                                   "      - {name: b2, address: backend.invalid:9002}\n"
                                   "      - {name: b3, address: \"[::1]:9003\"}\n"
                                   "      - {name: b4, address: localhost:9004}\n"
                                   "resolver: {nameservers: [dns.invalid:53, 127.0.0.1:53]}\n"
                                   "fleet: {etcd: [etcd.invalid:2379]}\n";

static void fill4(struct conf_address *a, const char *ip)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(1)};

    inet_pton(AF_INET, ip, &sin.sin_addr);
    CHECK(conf_address_fill(a, (struct sockaddr *)&sin, sizeof(sin)) == 0);
}

static void test_deferred(void)
{
    struct conf *c = LOAD_DEFERRED(deferred_doc);
    struct conf_errors e = {0};

    if (!c)
        return;
    /* every name left for the caller, in file order, with its key and position */
    static const struct {
        const char *key, *text;
        unsigned line, column;
    } want[] = {
        {"admin.bind", "LocalHost:9901", 1, 15},
        {"listeners[0].bind", "localhost:8080", 3, 23},
        {"pools[0].backends[1].address", "backend.invalid:9002", 9, 29},
        {"pools[0].backends[3].address", "localhost:9004", 11, 29},
        {"resolver.nameservers[0]", "dns.invalid:53", 12, 26},
        {"fleet.etcd[0]", "etcd.invalid:2379", 13, 16},
    };
    CHECK_EQ(c->num_unresolved, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < c->num_unresolved && i < sizeof(want) / sizeof(want[0]); i++) {
        const struct conf_unresolved *u = &c->unresolved[i];
        CHECK_STR(u->key, want[i].key);
        CHECK_STR(u->address->text, want[i].text);
        CHECK_EQ(u->address->pos.line, want[i].line);
        CHECK_EQ(u->address->pos.column, want[i].column);
        CHECK(u->address->named);
        CHECK(!conf_address_resolved(u->address));
        CHECK_EQ(u->address->sa.ss_family, AF_UNSPEC);
        CHECK_EQ(u->address->sa_len, 0);
    }
    CHECK(c->unresolved[1].address == &c->listeners[0].bind);
    CHECK(c->unresolved[2].address == &c->pools[0].backends[1].address);
    CHECK_EQ(c->pools[0].backends[1].address.port, 9002);
    CHECK_STR(c->pools[0].backends[1].address.host, "backend.invalid");
    /* literals are parsed as always */
    CHECK(conf_address_resolved(&c->pools[0].backends[0].address));
    CHECK(!c->pools[0].backends[0].address.named);
    CHECK(conf_address_resolved(&c->pools[0].backends[2].address));
    CHECK(conf_address_resolved(&c->listeners[1].bind));

    /* nothing filled in: each one "cannot resolve host", as conf_load() says it */
    CHECK(conf_check_resolved(c, &e) == -1);
    const char *const unfilled[] = {
        "t.yaml:1:15: admin.bind: invalid address \"LocalHost:9901\": cannot resolve host",
        "t.yaml:3:23: listeners[0].bind: invalid address \"localhost:8080\": cannot resolve host",
        "t.yaml:9:29: pools[0].backends[1].address: invalid address \"backend.invalid:9002\": "
        "cannot resolve host",
        "t.yaml:11:29: pools[0].backends[3].address: invalid address \"localhost:9004\": cannot "
        "resolve host",
        "t.yaml:12:26: resolver.nameservers[0]: invalid address \"dns.invalid:53\": cannot "
        "resolve host",
        "t.yaml:13:16: fleet.etcd[0]: invalid address \"etcd.invalid:2379\": cannot resolve host",
        NULL};
    errors_match(__LINE__, &e, unfilled, "errors");
    conf_errors_clear(&e);

    /* a caller's own reason, in the same form */
    conf_unresolved_error(c, &c->unresolved[2], "cannot resolve host (timeout)", &e);
    errors_match(__LINE__, &e,
                 (const char *const[]){"t.yaml:9:29: pools[0].backends[1].address: invalid "
                                       "address \"backend.invalid:9002\": cannot resolve host "
                                       "(timeout)",
                                       NULL},
                 "errors");
    conf_errors_clear(&e);

    /* filled in: the port is the address's own, whatever the answer's */
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    CHECK(conf_address_fill(c->unresolved[2].address, (struct sockaddr *)&un, sizeof(un)) == -1);
    CHECK(!conf_address_resolved(c->unresolved[2].address));
    struct sockaddr_in short4 = {.sin_family = AF_INET};
    CHECK(conf_address_fill(c->unresolved[2].address, (struct sockaddr *)&short4, 4) == -1);
    fill4(c->unresolved[0].address, "127.0.0.2");
    fill4(c->unresolved[1].address, "127.0.0.1");
    fill4(c->unresolved[2].address, "10.1.2.3");
    struct sockaddr_in6 six = {.sin6_family = AF_INET6, .sin6_scope_id = 0};
    inet_pton(AF_INET6, "::1", &six.sin6_addr);
    CHECK(conf_address_fill(c->unresolved[3].address, (struct sockaddr *)&six, sizeof(six)) == 0);
    fill4(c->unresolved[4].address, "127.0.0.53");
    fill4(c->unresolved[5].address, "127.0.0.1");
    const struct conf_address *b2 = &c->pools[0].backends[1].address;
    CHECK(conf_address_resolved(b2));
    CHECK_EQ(b2->sa.ss_family, AF_INET);
    CHECK_EQ(b2->sa_len, sizeof(struct sockaddr_in));
    CHECK_EQ(ntohs(((const struct sockaddr_in *)&b2->sa)->sin_port), 9002);
    CHECK_EQ(ntohl(((const struct sockaddr_in *)&b2->sa)->sin_addr.s_addr), 0x0a010203);
    const struct conf_address *b4 = &c->pools[0].backends[3].address;
    CHECK_EQ(b4->sa.ss_family, AF_INET6);
    CHECK_EQ(ntohs(((const struct sockaddr_in6 *)&b4->sa)->sin6_port), 9004);
    CHECK(conf_check_resolved(c, &e) == 0);
    CHECK_EQ(e.count, 0);
    conf_errors_clear(&e);
    /* still listed once filled */
    CHECK_EQ(c->num_unresolved, 6);
    conf_free(c);

    /* the default still resolves at load: nothing left over */
    c = LOAD_OK("listeners: [{name: web, bind: localhost:8080, pools: {blue: 1}}]\n" POOLS);
    if (c) {
        CHECK_EQ(c->num_unresolved, 0);
        CHECK(c->unresolved == NULL);
        CHECK(conf_address_resolved(&c->listeners[0].bind));
        CHECK(c->listeners[0].bind.named);
        CHECK(conf_check_resolved(c, &e) == 0);
    }
    conf_free(c);
    /* and a name that does not resolve is an error at load, deferred or not */
    EXPECT_ERRORS("listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n"
                  "pools: [{name: blue, backends: [{name: b, address: nope.invalid:80}]}]\n",
                  "t.yaml:2:52: pools[0].backends[0].address: invalid address \"nope.invalid:80\": "
                  "cannot resolve host");
    /* deferred, what cannot be a name still fails at load */
    EXPECT_ERRORS_DEFERRED(
        "listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n"
        "pools: [{name: blue, backends: [{name: b, address: \"bad host:80\"}]}]\n",
        "t.yaml:2:52: pools[0].backends[0].address: invalid address \"bad "
        "host:80\": bad host name");
}

/* Binds that collide once resolved: found at load between the same
 * names, by conf_check_resolved() for the rest. */
static void test_deferred_binds(void)
{
    struct conf_errors e = {0};

    EXPECT_ERRORS_DEFERRED("listeners:\n"
                           "  - {name: web, bind: proxy.internal:8080, pools: {blue: 1}}\n"
                           "  - {name: api, bind: PROXY.internal:8080, pools: {blue: 1}}\n" POOLS,
                           "t.yaml:3:23: listeners[1].bind: address \"PROXY.internal:8080\" is "
                           "already used by listener \"web\"");

    struct conf *c =
        LOAD_DEFERRED("admin: {}\n"
                      "listeners:\n"
                      "  - {name: web, bind: a.internal:8080, pools: {blue: 1}}\n"
                      "  - {name: api, bind: 127.0.0.1:8080, pools: {blue: 1}}\n"
                      "  - {name: all, bind: b.internal:9901, pools: {blue: 1}}\n"
                      "  - {name: ok, bind: c.internal:8080, pools: {blue: 1}}\n" POOLS);
    if (!c)
        return;
    CHECK_EQ(c->num_unresolved, 3);
    fill4(c->unresolved[0].address, "127.0.0.1");
    fill4(c->unresolved[1].address, "0.0.0.0");
    fill4(c->unresolved[2].address, "127.0.0.3");
    CHECK(conf_check_resolved(c, &e) == -1);
    errors_match(__LINE__, &e,
                 (const char *const[]){
                     "t.yaml:1:8: admin.bind: address \"127.0.0.1:9901\" is already used by "
                     "listener \"all\"",
                     "t.yaml:4:23: listeners[1].bind: address \"127.0.0.1:8080\" is already used "
                     "by listener \"web\"",
                     NULL},
                 "errors");
    conf_errors_clear(&e);
    conf_free(c);
}

/* conf_address_same() and the diff when names were resolved by the caller. */
static void test_deferred_identity(void)
{
    static const char doc[] = "listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n"
                              "pools:\n"
                              "  - name: blue\n"
                              "    backends: [{name: b, address: app.internal:80}]\n";
    struct conf *a = LOAD_DEFERRED(doc), *b = LOAD_DEFERRED(doc);
    struct conf_address x, y;
    const char *reason;
    struct conf_diff d;

    if (!a || !b)
        goto out;
    struct conf_address *aa = &a->pools[0].backends[0].address;
    struct conf_address *ba = &b->pools[0].backends[0].address;
    /* unresolved: the same name and port are the same address, nothing else */
    CHECK(conf_address_same(aa, ba));
    CHECK(conf_parse_address_ex("APP.internal:80", false, &x, &reason) == 0);
    CHECK(conf_address_same(aa, &x));
    CHECK(!conf_address_overlap(aa, &a->listeners[0].bind));
    conf_address_clear(&x);
    CHECK(conf_parse_address_ex("app.internal:81", false, &x, &reason) == 0);
    CHECK(!conf_address_same(aa, &x));
    conf_address_clear(&x);
    /* a name against its own resolution: not known to be the same */
    fill4(aa, "10.0.0.1");
    CHECK(!conf_address_same(aa, ba));
    fill4(ba, "10.0.0.1");
    CHECK(conf_address_same(aa, ba));
    CHECK(conf_diff(a, b, &d) == 0);
    CHECK_EQ(d.count, 0);
    conf_diff_free(&d);
    /* the name now resolves elsewhere: the backend moves */
    fill4(ba, "10.0.0.2");
    CHECK(!conf_address_same(aa, ba));
    CHECK(conf_diff(a, b, &d) == 0);
    CHECK_EQ(d.count, 2);
    if (d.count == 2) {
        CHECK_EQ(d.changes[0].kind, CONF_BACKEND_REMOVED);
        CHECK_EQ(d.changes[1].kind, CONF_BACKEND_ADDED);
    }
    conf_diff_free(&d);
    /* parse without resolving, then a literal */
    CHECK(conf_parse_address_ex("10.0.0.2:80", false, &y, &reason) == 0);
    CHECK(conf_address_resolved(&y));
    CHECK(!y.named);
    CHECK(conf_address_same(ba, &y));
    conf_address_clear(&y);
out:
    conf_free(a);
    conf_free(b);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_listener_defaults();
    test_listener_keys();
    test_listener_errors();
    test_cidr_match();
    test_pool_defaults();
    test_pool_keys();
    test_health_grpc();
    test_routes();
    test_route_errors();
    test_deferred();
    test_deferred_binds();
    test_deferred_identity();
    rmdir(tmpdir);
    return check_report("test_conf_routes");
}
