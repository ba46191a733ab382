// links: usher_conf
/* Unit tests of the config loader: defaults, every key parsed, every kind of
 * error with its exact "file:line:column: key: reason", durations and
 * addresses. */
#include "conf/conf.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test/unit/check.h"

/* A minimal valid document, 9 lines; tests put their section before it so
 * their own line numbers start at 1. */
#define LISTENERS                                                                                  \
    "listeners:\n"                                                                                 \
    "  - name: web\n"                                                                              \
    "    bind: 127.0.0.1:8080\n"                                                                   \
    "    pools: {blue: 1}\n"
#define POOLS                                                                                      \
    "pools:\n"                                                                                     \
    "  - name: blue\n"                                                                             \
    "    backends:\n"                                                                              \
    "      - name: b1\n"                                                                           \
    "        address: 127.0.0.1:9001\n"
#define MIN_DOC LISTENERS POOLS

static struct conf *load_ok(int line, const char *yaml)
{
    struct conf_errors e = {0};
    struct conf *c = conf_load_string("t.yaml", yaml, strlen(yaml), &e);

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
#define LOAD_OK(yaml) load_ok(__LINE__, yaml)

static void expect_errors(int line, const char *yaml, const char *const *want)
{
    struct conf_errors e = {0};
    struct conf *c = conf_load_string("t.yaml", yaml, strlen(yaml), &e);
    size_t n = 0;
    bool ok;

    while (want[n])
        n++;
    ok = c == NULL && e.count == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = strcmp(e.messages[i], want[i]) == 0;
    if (!ok) {
        fprintf(stderr, "%s:%d: errors differ (conf %s)\n  expected:\n", __FILE__, line,
                c ? "returned" : "NULL");
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "    %s\n", want[i]);
        fprintf(stderr, "  got:\n");
        for (size_t i = 0; i < e.count; i++)
            fprintf(stderr, "    %s\n", e.messages[i]);
        failures++;
    }
    conf_free(c);
    conf_errors_clear(&e);
}
#define EXPECT_ERRORS(yaml, ...)                                                                   \
    expect_errors(__LINE__, yaml, (const char *const[]){__VA_ARGS__, NULL})

static void test_defaults(void)
{
    struct conf *c = LOAD_OK(MIN_DOC);

    if (!c)
        return;
    CHECK_STR(c->path, "t.yaml");
    CHECK(!c->admin.enabled);
    CHECK_EQ(c->shutdown.drain_delay, 0);
    CHECK_EQ(c->shutdown.timeout, 30000);
    CHECK_EQ(c->timeouts.client_header, 10000);
    CHECK_EQ(c->timeouts.client_idle, 60000);
    CHECK_EQ(c->timeouts.connect, 3000);
    CHECK_EQ(c->timeouts.backend, 60000);
    CHECK_EQ(c->timeouts.tunnel, 3600000);
    CHECK_EQ(c->timeouts.backend_idle, 4000);
    CHECK_EQ(c->limits.max_connections, 10000);
    CHECK_EQ(c->limits.max_head_bytes, 16384);
    CHECK_EQ(c->limits.max_headers, 100);
    CHECK_EQ(c->limits.max_uri_bytes, 8192);
    CHECK_EQ(c->limits.backend_idle_connections, 64);
    CHECK_EQ(c->log.level, CONF_LOG_INFO);
    CHECK_EQ(c->log.format, CONF_LOG_TEXT);
    CHECK(!c->log.access);

    CHECK_EQ(c->num_listeners, 1);
    const struct conf_listener *l = &c->listeners[0];
    CHECK_STR(l->name, "web");
    CHECK_STR(l->bind.text, "127.0.0.1:8080");
    CHECK_STR(l->bind.host, "127.0.0.1");
    CHECK_EQ(l->bind.port, 8080);
    CHECK_EQ(l->bind.sa.ss_family, AF_INET);
    CHECK_EQ(l->bind.sa_len, sizeof(struct sockaddr_in));
    CHECK_EQ(ntohs(((const struct sockaddr_in *)&l->bind.sa)->sin_port), 8080);
    CHECK_EQ(l->protocol, CONF_PROTO_HTTP);
    CHECK(!l->tls.enabled);
    CHECK_EQ(l->num_splits, 1);
    CHECK_STR(l->splits[0].pool, "blue");
    CHECK_EQ(l->splits[0].weight, 1);
    CHECK_EQ(l->splits[0].pool_index, 0);
    CHECK_EQ(l->pos.line, 2);
    CHECK_EQ(l->pos.column, 5);

    CHECK_EQ(c->num_pools, 1);
    const struct conf_pool *p = &c->pools[0];
    CHECK_STR(p->name, "blue");
    CHECK_EQ(p->balance, CONF_BALANCE_ROUND_ROBIN);
    CHECK_EQ(p->deregistration_delay, 30000);
    CHECK(!p->health_check.enabled);
    CHECK_EQ(p->pos.line, 6);
    CHECK_EQ(p->pos.column, 5);
    CHECK_EQ(p->num_backends, 1);
    CHECK_STR(p->backends[0].name, "b1");
    CHECK_STR(p->backends[0].address.text, "127.0.0.1:9001");
    CHECK_EQ(p->backends[0].address.port, 9001);
    CHECK_EQ(p->backends[0].weight, 1);
    CHECK_EQ(p->backends[0].pos.line, 8);
    CHECK_EQ(p->backends[0].pos.column, 9);

    CHECK(conf_find_pool(c, "blue") == p);
    CHECK(conf_find_pool(c, "green") == NULL);
    CHECK(conf_find_listener(c, "web") == l);
    CHECK(conf_find_listener(c, "api") == NULL);
    conf_free(c);

    /* an empty health_check turns checks on with every default */
    c = LOAD_OK(LISTENERS "pools:\n"
                          "  - name: blue\n"
                          "    health_check: {}\n"
                          "    backends: []\n");
    if (!c)
        return;
    const struct conf_health_check *hc = &c->pools[0].health_check;
    CHECK(hc->enabled);
    CHECK_EQ(hc->protocol, CONF_PROTO_HTTP);
    CHECK_STR(hc->path, "/healthz");
    CHECK_EQ(hc->interval, 2000);
    CHECK_EQ(hc->timeout, 1000);
    CHECK_EQ(hc->healthy_threshold, 2);
    CHECK_EQ(hc->unhealthy_threshold, 3);
    CHECK_EQ(hc->expect_min, 200);
    CHECK_EQ(hc->expect_max, 399);
    CHECK_EQ(c->pools[0].num_backends, 0);
    conf_free(c);

    /* an empty admin section turns the admin listener on at its default */
    c = LOAD_OK("admin: {}\n" MIN_DOC);
    if (!c)
        return;
    CHECK(c->admin.enabled);
    CHECK_STR(c->admin.bind.text, "127.0.0.1:9901");
    CHECK_EQ(c->admin.bind.port, 9901);
    conf_free(c);
}

static char *write_temp(const char *dir, const char *name, const char *content)
{
    char *path = NULL;
    FILE *f;

    if (asprintf(&path, "%s/%s", dir, name) < 0)
        return NULL;
    f = fopen(path, "w");
    if (f) {
        fputs(content, f);
        fclose(f);
    }
    return path;
}

static void test_every_key(void)
{
    char dir[] = "/tmp/usher-test-conf-XXXXXX";
    char *cert, *key, *yaml = NULL;
    struct conf *c;

    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    cert = write_temp(dir, "server.pem", "not really a certificate\n");
    key = write_temp(dir, "server.key", "not really a key\n");
    if (asprintf(&yaml,
                 "admin:\n"
                 "  bind: \"[::1]:9911\"\n"
                 "shutdown:\n"
                 "  drain_delay: 5s\n"
                 "  timeout: 2m\n"
                 "timeouts:\n"
                 "  client_header: 11s\n"
                 "  client_idle: 61s\n"
                 "  connect: 250ms\n"
                 "  backend: 1m\n"
                 "  tunnel: 2h\n"
                 "  backend_idle: 5s\n"
                 "limits:\n"
                 "  max_connections: 20000\n"
                 "  max_head_bytes: 32768\n"
                 "  max_headers: 50\n"
                 "  max_uri_bytes: 4096\n"
                 "  backend_idle_connections: 0\n"
                 "log:\n"
                 "  level: debug\n"
                 "  format: json\n"
                 "  access: true\n"
                 "listeners:\n"
                 "  - name: web\n"
                 "    bind: 127.0.0.1:8443\n"
                 "    protocol: http\n"
                 "    tls: {cert: %s, key: '%s'}\n"
                 "    pools:\n"
                 "      green: 10\n"
                 "      blue: 90\n"
                 "  - name: db\n"
                 "    bind: localhost:5432\n"
                 "    protocol: tcp\n"
                 "    pools: {green: 1}\n"
                 "pools:\n"
                 "  - name: blue\n"
                 "    balance: least_conn\n"
                 "    deregistration_delay: 0s\n"
                 "    health_check:\n"
                 "      protocol: tcp\n"
                 "      path: /ping?full=1\n"
                 "      interval: 500ms\n"
                 "      timeout: 100ms\n"
                 "      healthy_threshold: 1\n"
                 "      unhealthy_threshold: 5\n"
                 "      expect_status: 204\n"
                 "    backends:\n"
                 "      - name: blue-1\n"
                 "        address: 127.0.0.1:9001\n"
                 "        weight: 0\n"
                 "      - name: blue-2\n"
                 "        address: \"[::1]:9002\"\n"
                 "        weight: 1000000\n"
                 "  - name: green\n"
                 "    health_check:\n"
                 "      expect_status: \"200-204\"\n"
                 "    backends:\n"
                 "      - name: green-1\n"
                 "        address: localhost:9003\n",
                 cert, key) < 0) {
        CHECK(!"asprintf");
        goto out;
    }
    c = LOAD_OK(yaml);
    if (!c)
        goto out;
    CHECK(c->admin.enabled);
    CHECK_STR(c->admin.bind.host, "::1");
    CHECK_EQ(c->admin.bind.port, 9911);
    CHECK_EQ(c->admin.bind.sa.ss_family, AF_INET6);
    CHECK_EQ(c->shutdown.drain_delay, 5000);
    CHECK_EQ(c->shutdown.timeout, 120000);
    CHECK_EQ(c->timeouts.client_header, 11000);
    CHECK_EQ(c->timeouts.client_idle, 61000);
    CHECK_EQ(c->timeouts.connect, 250);
    CHECK_EQ(c->timeouts.backend, 60000);
    CHECK_EQ(c->timeouts.tunnel, 7200000);
    CHECK_EQ(c->timeouts.backend_idle, 5000);
    CHECK_EQ(c->limits.max_connections, 20000);
    CHECK_EQ(c->limits.max_head_bytes, 32768);
    CHECK_EQ(c->limits.max_headers, 50);
    CHECK_EQ(c->limits.max_uri_bytes, 4096);
    CHECK_EQ(c->limits.backend_idle_connections, 0);
    CHECK_EQ(c->log.level, CONF_LOG_DEBUG);
    CHECK_EQ(c->log.format, CONF_LOG_JSON);
    CHECK(c->log.access);

    CHECK_EQ(c->num_listeners, 2);
    const struct conf_listener *web = &c->listeners[0], *db = &c->listeners[1];
    CHECK(web->tls.enabled);
    CHECK_STR(web->tls.cert, cert);
    CHECK_STR(web->tls.key, key);
    CHECK_EQ(web->num_splits, 2);
    CHECK_STR(web->splits[0].pool, "green");
    CHECK_EQ(web->splits[0].weight, 10);
    CHECK_EQ(web->splits[0].pool_index, 1);
    CHECK_STR(web->splits[1].pool, "blue");
    CHECK_EQ(web->splits[1].weight, 90);
    CHECK_EQ(web->splits[1].pool_index, 0);
    CHECK_EQ(db->protocol, CONF_PROTO_TCP);
    CHECK_STR(db->bind.host, "localhost");
    CHECK_EQ(db->bind.port, 5432);
    CHECK(!db->tls.enabled);

    const struct conf_pool *blue = &c->pools[0], *green = &c->pools[1];
    CHECK_EQ(blue->balance, CONF_BALANCE_LEAST_CONN);
    CHECK_EQ(blue->deregistration_delay, 0);
    CHECK(blue->health_check.enabled);
    CHECK_EQ(blue->health_check.protocol, CONF_PROTO_TCP);
    CHECK_STR(blue->health_check.path, "/ping?full=1");
    CHECK_EQ(blue->health_check.interval, 500);
    CHECK_EQ(blue->health_check.timeout, 100);
    CHECK_EQ(blue->health_check.healthy_threshold, 1);
    CHECK_EQ(blue->health_check.unhealthy_threshold, 5);
    CHECK_EQ(blue->health_check.expect_min, 204);
    CHECK_EQ(blue->health_check.expect_max, 204);
    CHECK_EQ(blue->num_backends, 2);
    CHECK_EQ(blue->backends[0].weight, 0);
    CHECK_EQ(blue->backends[1].weight, 1000000);
    CHECK_EQ(blue->backends[1].address.sa.ss_family, AF_INET6);
    CHECK_EQ(green->health_check.expect_min, 200);
    CHECK_EQ(green->health_check.expect_max, 204);
    CHECK_EQ(green->deregistration_delay, 30000);
    CHECK_STR(green->backends[0].address.host, "localhost");
    CHECK_EQ(green->backends[0].address.sa.ss_family, AF_INET);
    conf_free(c);

out:
    free(yaml);
    if (cert)
        unlink(cert);
    if (key)
        unlink(key);
    free(cert);
    free(key);
    rmdir(dir);
}

static void test_unknown_keys(void)
{
    EXPECT_ERRORS("timeouts:\n"
                  "  conect: 5s\n" MIN_DOC,
                  "t.yaml:2:3: timeouts.conect: unknown key, did you mean connect?");
    EXPECT_ERRORS("listen: []\n" MIN_DOC, "t.yaml:1:1: listen: unknown key");
    EXPECT_ERRORS(
        LISTENERS "pools:\n"
                  "  - name: blue\n"
                  "    health_check: {intervall: 1s}\n"
                  "    backends:\n"
                  "      - name: b1\n"
                  "        adress: 127.0.0.1:9001\n",
        "t.yaml:7:20: pools[0].health_check.intervall: unknown key, did you mean interval?",
        "t.yaml:9:9: pools[0].backends[0].address: missing required key",
        "t.yaml:10:9: pools[0].backends[0].adress: unknown key, did you mean address?");
}

/* "did you mean": only for one key of the same level within two edits. */
static void test_suggestions(void)
{
    EXPECT_ERRORS("timeouts:\n"
                  "  tunel: 1h\n"
                  "  tiemouts: 1s\n" MIN_DOC,
                  "t.yaml:2:3: timeouts.tunel: unknown key, did you mean tunnel?",
                  "t.yaml:3:3: timeouts.tiemouts: unknown key");
    EXPECT_ERRORS("log: {levle: info, formta: json, acces: true, colour: red}\n" MIN_DOC,
                  "t.yaml:1:7: log.levle: unknown key, did you mean level?",
                  "t.yaml:1:20: log.formta: unknown key, did you mean format?",
                  "t.yaml:1:34: log.acces: unknown key, did you mean access?",
                  "t.yaml:1:47: log.colour: unknown key");
    /* a transposition is one edit; the keys of that level only */
    EXPECT_ERRORS("tiemouts: {}\nshutdown: {timeuot: 1s, connect: 1s}\n" MIN_DOC,
                  "t.yaml:1:1: tiemouts: unknown key, did you mean timeouts?",
                  "t.yaml:2:12: shutdown.timeuot: unknown key, did you mean timeout?",
                  "t.yaml:2:25: shutdown.connect: unknown key");
}

static void test_types(void)
{
    EXPECT_ERRORS("timeouts: 5s\n" MIN_DOC, "t.yaml:1:11: timeouts: expected a mapping");
    EXPECT_ERRORS("admin:\n" MIN_DOC, "t.yaml:1:7: admin: expected a mapping");
    EXPECT_ERRORS("listeners: {web: 1}\n" POOLS, "t.yaml:1:12: listeners: expected a list");
    EXPECT_ERRORS("listeners:\n"
                  "  - web\n" POOLS,
                  "t.yaml:2:5: listeners[0]: expected a mapping");
    EXPECT_ERRORS("admin:\n"
                  "  bind: [127.0.0.1, 80]\n" MIN_DOC,
                  "t.yaml:2:9: admin.bind: expected a string");
    EXPECT_ERRORS("timeouts:\n"
                  "  connect:\n" MIN_DOC,
                  "t.yaml:2:11: timeouts.connect: expected a string");
    EXPECT_ERRORS("limits:\n"
                  "  max_headers: many\n"
                  "  max_connections: \"10\"\n"
                  "  max_uri_bytes: 1.5\n" MIN_DOC,
                  "t.yaml:2:16: limits.max_headers: expected an integer",
                  "t.yaml:3:20: limits.max_connections: expected an integer",
                  "t.yaml:4:18: limits.max_uri_bytes: expected an integer");
    EXPECT_ERRORS("log:\n"
                  "  access: yes\n" MIN_DOC,
                  "t.yaml:2:11: log.access: expected true or false");
    EXPECT_ERRORS("log:\n"
                  "  access: \"true\"\n" MIN_DOC,
                  "t.yaml:2:11: log.access: expected true or false");
    EXPECT_ERRORS("- 1\n", "t.yaml:1:1: (root): expected a mapping");
}

static void test_ranges(void)
{
    EXPECT_ERRORS("limits:\n"
                  "  max_connections: 0\n"
                  "  max_head_bytes: 512\n"
                  "  max_headers: -3\n"
                  "  backend_idle_connections: 99999999999999999999999\n" MIN_DOC,
                  "t.yaml:2:20: limits.max_connections: must be between 1 and 1000000",
                  "t.yaml:3:19: limits.max_head_bytes: must be between 1024 and 1048576",
                  "t.yaml:4:16: limits.max_headers: must be between 1 and 10000",
                  "t.yaml:5:29: limits.backend_idle_connections: must be between 0 and 100000");
    EXPECT_ERRORS(
        LISTENERS "pools:\n"
                  "  - name: blue\n"
                  "    health_check:\n"
                  "      healthy_threshold: 0\n"
                  "      interval: 1ms\n"
                  "    backends:\n"
                  "      - {name: b1, address: 127.0.0.1:9001, weight: 1000001}\n",
        "t.yaml:8:26: pools[0].health_check.healthy_threshold: must be between 1 and 1000",
        "t.yaml:9:17: pools[0].health_check.interval: must be between 10ms and 720h",
        "t.yaml:11:53: pools[0].backends[0].weight: must be between 0 and 1000000");
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    pools: {blue: 2000000}\n" POOLS,
                  "t.yaml:4:19: listeners[0].pools.blue: must be between 0 and 1000000");
    EXPECT_ERRORS("timeouts:\n"
                  "  connect: 0s\n"
                  "  tunnel: 721h\n" MIN_DOC,
                  "t.yaml:2:12: timeouts.connect: must be between 1ms and 720h",
                  "t.yaml:3:11: timeouts.tunnel: invalid duration \"721h\": at most 720h");
}

static void test_durations(void)
{
    static const struct {
        const char *text;
        conf_ms ms;
    } good[] = {
        {"0s", 0},
        {"0ms", 0},
        {"1ms", 1},
        {"250ms", 250},
        {"5s", 5000},
        {"2m", 120000},
        {"1h", 3600000},
        {"720h", 2592000000ULL},
        {"90s", 90000},
        {"007s", 7000},
        {"43200m", 2592000000ULL},
    };
    static const struct {
        const char *text, *reason;
    } bad[] = {
        {"5", "missing unit (ms, s, m or h)"},
        {"1.5s", "no fractions, use a smaller unit (1500ms, not 1.5s)"},
        {"", "must be a whole number with a unit ms, s, m or h"},
        {"s", "must be a whole number with a unit ms, s, m or h"},
        {"-5s", "must be a whole number with a unit ms, s, m or h"},
        {"5 s", "must be a whole number with a unit ms, s, m or h"},
        {"5S", "must be a whole number with a unit ms, s, m or h"},
        {"5d", "must be a whole number with a unit ms, s, m or h"},
        {"5us", "must be a whole number with a unit ms, s, m or h"},
        {"1m30s", "must be a whole number with a unit ms, s, m or h"},
        {"721h", "at most 720h"},
        {"2592000001ms", "at most 720h"},
        {"99999999999999999999999s", "at most 720h"},
    };
    char buf[32];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        conf_ms ms = 12345;
        const char *reason = NULL;
        if (conf_parse_duration(good[i].text, &ms, &reason) != 0 || ms != good[i].ms) {
            fprintf(stderr, "duration \"%s\": got %llu (%s), expected %llu\n", good[i].text,
                    (unsigned long long)ms, reason ? reason : "ok", (unsigned long long)good[i].ms);
            failures++;
        }
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        conf_ms ms = 0;
        const char *reason = NULL;
        if (conf_parse_duration(bad[i].text, &ms, &reason) != -1 || !reason ||
            strcmp(reason, bad[i].reason) != 0) {
            fprintf(stderr, "duration \"%s\": got reason \"%s\", expected \"%s\"\n", bad[i].text,
                    reason ? reason : "(none)", bad[i].reason);
            failures++;
        }
    }
    CHECK_STR(conf_format_duration(0, buf, sizeof(buf)), "0s");
    CHECK_STR(conf_format_duration(250, buf, sizeof(buf)), "250ms");
    CHECK_STR(conf_format_duration(1500, buf, sizeof(buf)), "1500ms");
    CHECK_STR(conf_format_duration(10000, buf, sizeof(buf)), "10s");
    CHECK_STR(conf_format_duration(90000, buf, sizeof(buf)), "90s");
    CHECK_STR(conf_format_duration(120000, buf, sizeof(buf)), "2m");
    CHECK_STR(conf_format_duration(7200000, buf, sizeof(buf)), "2h");

    /* in a document: the value node's position, the text quoted back */
    EXPECT_ERRORS(
        "timeouts:\n"
        "  connect: 5\n"
        "  backend: 1.5s\n"
        "  tunnel: forever\n"
        "shutdown:\n"
        "  timeout: \"10 s\"\n" MIN_DOC,
        "t.yaml:2:12: timeouts.connect: invalid duration \"5\": missing unit (ms, s, m or h)",
        "t.yaml:3:12: timeouts.backend: invalid duration \"1.5s\": no fractions, use a "
        "smaller unit (1500ms, not 1.5s)",
        "t.yaml:4:11: timeouts.tunnel: invalid duration \"forever\": must be a whole "
        "number with a unit ms, s, m or h",
        "t.yaml:6:12: shutdown.timeout: invalid duration \"10 s\": must be a whole "
        "number with a unit ms, s, m or h");
}

static void test_addresses(void)
{
    struct conf_address a;
    const char *reason = NULL;
    static const struct {
        const char *text, *reason;
    } bad[] = {
        {"127.0.0.1", "expected host:port"},
        {"8080", "expected host:port"},
        {":8080", "missing host"},
        {"127.0.0.1:", "port must be between 1 and 65535"},
        {"127.0.0.1:0", "port must be between 1 and 65535"},
        {"127.0.0.1:65536", "port must be between 1 and 65535"},
        {"127.0.0.1:http", "port must be between 1 and 65535"},
        {"127.0.0.1:-1", "port must be between 1 and 65535"},
        {"::1:80", "IPv6 addresses need brackets, e.g. [::1]:80"},
        {"[::1]", "expected host:port"},
        {"[::1:80", "bad IPv6 address"},
        {"[::g]:80", "bad IPv6 address"},
        {"[127.0.0.1]:80", "bad IPv6 address"},
        {"[]:80", "missing host"},
        {"1.2.3:80", "bad IPv4 address"},
        {"256.1.1.1:80", "bad IPv4 address"},
        {"bad host:80", "bad host name"},
        {"nonexistent.invalid:80", "cannot resolve host"},
    };

    CHECK(conf_parse_address("127.0.0.1:80", &a, &reason) == 0);
    CHECK_STR(a.text, "127.0.0.1:80");
    CHECK_STR(a.host, "127.0.0.1");
    CHECK_EQ(a.port, 80);
    CHECK_EQ(a.sa.ss_family, AF_INET);
    CHECK_EQ(a.sa_len, sizeof(struct sockaddr_in));
    CHECK_EQ(((struct sockaddr_in *)&a.sa)->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    CHECK_EQ(ntohs(((struct sockaddr_in *)&a.sa)->sin_port), 80);
    conf_address_clear(&a);
    CHECK(a.text == NULL && a.host == NULL);

    CHECK(conf_parse_address("[::1]:80", &a, &reason) == 0);
    CHECK_STR(a.text, "[::1]:80");
    CHECK_STR(a.host, "::1");
    CHECK_EQ(a.port, 80);
    CHECK_EQ(a.sa.ss_family, AF_INET6);
    CHECK_EQ(a.sa_len, sizeof(struct sockaddr_in6));
    CHECK(IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&a.sa)->sin6_addr));
    CHECK_EQ(ntohs(((struct sockaddr_in6 *)&a.sa)->sin6_port), 80);
    conf_address_clear(&a);

    CHECK(conf_parse_address("0.0.0.0:65535", &a, &reason) == 0);
    CHECK_EQ(a.port, 65535);
    conf_address_clear(&a);

    /* a host name resolves at load; IPv4 preferred */
    CHECK(conf_parse_address("localhost:8080", &a, &reason) == 0);
    CHECK_STR(a.host, "localhost");
    CHECK_EQ(a.sa.ss_family, AF_INET);
    CHECK_EQ(ntohs(((struct sockaddr_in *)&a.sa)->sin_port), 8080);
    conf_address_clear(&a);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        reason = NULL;
        int rc = conf_parse_address(bad[i].text, &a, &reason);
        if (rc != -1 || !reason || strcmp(reason, bad[i].reason) != 0 || a.text || a.host) {
            fprintf(stderr, "address \"%s\": rc %d reason \"%s\", expected \"%s\"\n", bad[i].text,
                    rc, reason ? reason : "(none)", bad[i].reason);
            failures++;
        }
    }

    /* same / overlap */
    struct conf_address x, y;
    CHECK(conf_parse_address("127.0.0.1:80", &x, &reason) == 0);
    CHECK(conf_parse_address("localhost:80", &y, &reason) == 0);
    CHECK(conf_address_same(&x, &y));
    conf_address_clear(&y);
    CHECK(conf_parse_address("0.0.0.0:80", &y, &reason) == 0);
    CHECK(!conf_address_same(&x, &y));
    CHECK(conf_address_overlap(&x, &y));
    conf_address_clear(&y);
    CHECK(conf_parse_address("127.0.0.1:81", &y, &reason) == 0);
    CHECK(!conf_address_overlap(&x, &y));
    conf_address_clear(&y);
    CHECK(conf_parse_address("[::]:80", &y, &reason) == 0);
    CHECK(!conf_address_same(&x, &y));
    conf_address_clear(&y);
    conf_address_clear(&x);

    /* in a document */
    EXPECT_ERRORS(
        "admin:\n"
        "  bind: localhost\n"
        "listeners:\n"
        "  - name: web\n"
        "    bind: \"[::1]:80\"\n"
        "    pools: {blue: 1}\n"
        "pools:\n"
        "  - name: blue\n"
        "    backends:\n"
        "      - name: b1\n"
        "        address: nonexistent.invalid:9001\n"
        "      - name: b2\n"
        "        address: 127.0.0.1:70000\n"
        "      - name: b3\n"
        "        address: fe80::1:80\n",
        "t.yaml:2:9: admin.bind: invalid address \"localhost\": expected host:port",
        "t.yaml:11:18: pools[0].backends[0].address: invalid address "
        "\"nonexistent.invalid:9001\": cannot resolve host",
        "t.yaml:13:18: pools[0].backends[1].address: invalid address \"127.0.0.1:70000\": "
        "port must be between 1 and 65535",
        "t.yaml:15:18: pools[0].backends[2].address: invalid address \"fe80::1:80\": IPv6 "
        "addresses need brackets, e.g. [::1]:80");
}

static void test_names_and_references(void)
{
    EXPECT_ERRORS(
        "listeners:\n"
        "  - name: web\n"
        "    bind: 127.0.0.1:8080\n"
        "    pools: {blue: 1}\n"
        "  - name: web\n"
        "    bind: 127.0.0.1:8081\n"
        "    pools: {blue: 1}\n" POOLS,
        "t.yaml:5:11: listeners[1].name: duplicate listener name \"web\" (first at line 2)");
    EXPECT_ERRORS(LISTENERS "pools:\n"
                            "  - name: blue\n"
                            "    backends: []\n"
                            "  - name: blue\n"
                            "    backends: []\n",
                  "t.yaml:8:11: pools[1].name: duplicate pool name \"blue\" (first at line 6)");
    EXPECT_ERRORS(
        LISTENERS "pools:\n"
                  "  - name: blue\n"
                  "    backends:\n"
                  "      - {name: b1, address: 127.0.0.1:9001}\n"
                  "      - {name: b2, address: 127.0.0.1:9002}\n"
                  "      - {name: b1, address: 127.0.0.1:9003}\n"
                  "  - name: green\n"
                  "    backends:\n"
                  "      - {name: b1, address: 127.0.0.1:9001}\n",
        "t.yaml:10:16: pools[0].backends[2].name: duplicate backend name \"b1\" (first at "
        "line 8)");
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    pools:\n"
                  "      blue: 90\n"
                  "      purple: 10\n" POOLS,
                  "t.yaml:6:7: listeners[0].pools.purple: unknown pool \"purple\"");
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    pools: {blue: 0, green: 0}\n"
                  "pools:\n"
                  "  - {name: blue, backends: []}\n"
                  "  - {name: green, backends: []}\n",
                  "t.yaml:4:12: listeners[0].pools: all weights are 0: at least one pool needs a "
                  "weight above 0");
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    pools: {}\n" POOLS,
                  "t.yaml:4:12: listeners[0].pools: must name at least one pool");
    EXPECT_ERRORS("admin:\n"
                  "  bind: 127.0.0.1:8081\n"
                  "listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    pools: {blue: 1}\n"
                  "  - name: api\n"
                  "    bind: localhost:8080\n"
                  "    pools: {blue: 1}\n"
                  "  - name: all\n"
                  "    bind: 0.0.0.0:8081\n"
                  "    pools: {blue: 1}\n" POOLS,
                  "t.yaml:2:9: admin.bind: address \"127.0.0.1:8081\" is already used by listener "
                  "\"all\"",
                  "t.yaml:8:11: listeners[1].bind: address \"localhost:8080\" is already used by "
                  "listener \"web\"");
    EXPECT_ERRORS("listeners:\n"
                  "  - name: w b\n"
                  "    bind: 127.0.0.1:8080\n"
                  "    pools: {blue: 1}\n" POOLS,
                  "t.yaml:2:11: listeners[0].name: invalid name \"w b\": use 1 to 64 letters, "
                  "digits, '-', '_' or '.'");
}

static void test_enums(void)
{
    EXPECT_ERRORS("log:\n"
                  "  level: verbose\n"
                  "  format: xml\n" MIN_DOC,
                  "t.yaml:2:10: log.level: invalid value \"verbose\": must be one of debug, info, "
                  "warn, error",
                  "t.yaml:3:11: log.format: invalid value \"xml\": must be one of text, json");
    EXPECT_ERRORS(
        "listeners:\n"
        "  - name: web\n"
        "    bind: 127.0.0.1:8080\n"
        "    protocol: udp\n"
        "    pools: {blue: 1}\n"
        "pools:\n"
        "  - name: blue\n"
        "    balance: random\n"
        "    health_check: {protocol: udp}\n"
        "    backends: []\n",
        "t.yaml:4:15: listeners[0].protocol: invalid value \"udp\": must be one of http, tcp",
        "t.yaml:8:14: pools[0].balance: invalid value \"random\": must be one of "
        "round_robin, least_conn",
        "t.yaml:9:30: pools[0].health_check.protocol: invalid value \"udp\": must be one "
        "of http, tcp, grpc");
}

static void test_missing(void)
{
    EXPECT_ERRORS("", "t.yaml:1:1: listeners: missing required key",
                  "t.yaml:1:1: pools: missing required key");
    EXPECT_ERRORS("# nothing but a comment\n---\n", "t.yaml:1:1: listeners: missing required key",
                  "t.yaml:1:1: pools: missing required key");
    EXPECT_ERRORS("log: {level: info}\n" LISTENERS, "t.yaml:1:1: pools: missing required key");
    EXPECT_ERRORS("listeners: []\n"
                  "pools: []\n",
                  "t.yaml:1:12: listeners: must have at least one entry",
                  "t.yaml:2:8: pools: must have at least one entry");
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    pools: {blue: 1}\n"
                  "  - bind: 127.0.0.1:8081\n"
                  "    pools: {blue: 1}\n"
                  "  - {name: c, bind: 127.0.0.1:8082}\n"
                  "pools:\n"
                  "  - name: blue\n"
                  "    backends:\n"
                  "      - name: b1\n"
                  "  - backends: []\n"
                  "  - name: green\n",
                  "t.yaml:2:5: listeners[0].bind: missing required key",
                  "t.yaml:4:5: listeners[1].name: missing required key",
                  "t.yaml:6:5: listeners[2].pools: missing required key",
                  "t.yaml:10:9: pools[0].backends[0].address: missing required key",
                  "t.yaml:11:5: pools[1].name: missing required key",
                  "t.yaml:12:5: pools[2].backends: missing required key");
}

static void test_health_check(void)
{
    EXPECT_ERRORS(LISTENERS "pools:\n"
                            "  - name: blue\n"
                            "    health_check:\n"
                            "      interval: 1s\n"
                            "      timeout: 1s\n"
                            "    backends: []\n",
                  "t.yaml:9:16: pools[0].health_check.timeout: must be shorter than interval (1s)");
    /* the default timeout (1s) against a short interval: the interval is what was written */
    EXPECT_ERRORS(LISTENERS "pools:\n"
                            "  - name: blue\n"
                            "    health_check:\n"
                            "      interval: 500ms\n"
                            "    backends: []\n",
                  "t.yaml:8:17: pools[0].health_check.interval: must be longer than timeout (1s)");
    EXPECT_ERRORS(LISTENERS "pools:\n"
                            "  - name: blue\n"
                            "    health_check:\n"
                            "      expect_status: 600\n"
                            "      path: healthz\n"
                            "    backends: []\n"
                            "  - name: green\n"
                            "    health_check: {expect_status: 399-200}\n"
                            "    backends: []\n"
                            "  - name: red\n"
                            "    health_check: {expect_status: 2xx, path: \"/a b\"}\n"
                            "    backends: []\n",
                  "t.yaml:8:22: pools[0].health_check.expect_status: invalid status \"600\": "
                  "expected a status code 100-599 or a range like 200-399",
                  "t.yaml:9:13: pools[0].health_check.path: invalid path \"healthz\": must start "
                  "with / and contain no spaces or control characters",
                  "t.yaml:12:35: pools[1].health_check.expect_status: invalid status \"399-200\": "
                  "expected a status code 100-599 or a range like 200-399",
                  "t.yaml:15:35: pools[2].health_check.expect_status: invalid status \"2xx\": "
                  "expected a status code 100-599 or a range like 200-399",
                  "t.yaml:15:46: pools[2].health_check.path: invalid path \"/a b\": must start "
                  "with / and contain no spaces or control characters");
}

static void test_tls(void)
{
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8443\n"
                  "    tls:\n"
                  "      cert: /nonexistent/server.pem\n"
                  "    pools: {blue: 1}\n"
                  "  - name: api\n"
                  "    bind: 127.0.0.1:8444\n"
                  "    tls: {cert: /tmp, key: ''}\n"
                  "    pools: {blue: 1}\n" POOLS,
                  "t.yaml:5:7: listeners[0].tls.key: missing required key",
                  "t.yaml:5:13: listeners[0].tls.cert: cannot read \"/nonexistent/server.pem\": No "
                  "such file or directory",
                  "t.yaml:9:17: listeners[1].tls.cert: cannot read \"/tmp\": not a regular file",
                  "t.yaml:9:28: listeners[1].tls.key: must not be empty");
    EXPECT_ERRORS("listeners:\n"
                  "  - name: web\n"
                  "    bind: 127.0.0.1:8443\n"
                  "    tls: true\n"
                  "    pools: {blue: 1}\n" POOLS,
                  "t.yaml:4:10: listeners[0].tls: expected a mapping");
}

static void test_syntax_and_documents(void)
{
    EXPECT_ERRORS("timeouts:\n"
                  "  connect: 1s\n"
                  "   backend: 2s\n",
                  "t.yaml:3:11: syntax error: mapping values are not allowed in this context");
    EXPECT_ERRORS("listeners:\n"
                  "\t- name: web\n",
                  "t.yaml:2:1: syntax error: found character that cannot start any token (while "
                  "scanning for the next token)");
    EXPECT_ERRORS("listeners: [web\n",
                  "t.yaml:2:1: syntax error: did not find expected ',' or ']' (while parsing a "
                  "flow sequence at line 1, column 12)");
    EXPECT_ERRORS("listeners: *nope\n", "t.yaml:1:12: syntax error: found undefined alias");
    /* the problem where libyaml found it, the construct it broke where it began */
    EXPECT_ERRORS("admin:\n  bind: \"127.0.0.1:9901\n",
                  "t.yaml:3:1: syntax error: found unexpected end of stream (while scanning a "
                  "quoted scalar at line 2, column 9)");
    EXPECT_ERRORS("listeners:\n  - {name: web,\n     bind: x\n",
                  "t.yaml:4:1: syntax error: did not find expected ',' or '}' (while parsing a "
                  "flow mapping at line 2, column 5)");
    EXPECT_ERRORS("listeners: \xff\n", "t.yaml:1:12: syntax error: invalid leading UTF-8 octet");
    EXPECT_ERRORS(MIN_DOC "---\n" MIN_DOC,
                  "t.yaml:10:1: (root): only one YAML document is allowed");
    EXPECT_ERRORS("timeouts:\n"
                  "  connect: 1s\n"
                  "  connect: 2s\n" MIN_DOC,
                  "t.yaml:3:3: timeouts.connect: duplicate key (first at line 2)");
    /* aliases are fine; a self-referencing one is just a wrong type */
    struct conf *c;
    EXPECT_ERRORS("listeners: &l [*l]\n" POOLS, "t.yaml:1:12: listeners[0]: expected a mapping");
    c = LOAD_OK(LISTENERS "pools:\n"
                          "  - name: blue\n"
                          "    backends:\n"
                          "      - &b {name: b1, address: 127.0.0.1:9001}\n"
                          "  - name: green\n"
                          "    backends: [*b]\n");
    if (c)
        CHECK_STR(c->pools[1].backends[0].name, "b1");
    conf_free(c);
}

/* Every kind of mistake in one file: all reported, in file order. */
static void test_all_errors_in_one_run(void)
{
    EXPECT_ERRORS(
        "admin:\n"
        "  bind: 127.0.0.1\n"
        "timeouts:\n"
        "  connect: 3\n"
        "  tunel: 1h\n"
        "limits:\n"
        "  max_headers: 0\n"
        "log:\n"
        "  level: loud\n"
        "  access: 1\n"
        "listeners:\n"
        "  - name: web\n"
        "    bind: 127.0.0.1:8080\n"
        "    pools: {blue: 1, purple: 1}\n"
        "  - name: web\n"
        "    bind: 127.0.0.1:8080\n"
        "    pools: {blue: 0}\n"
        "pools:\n"
        "  - name: blue\n"
        "    health_check: {interval: 1s, timeout: 1s}\n"
        "    backends:\n"
        "      - {name: b1, address: 127.0.0.1:9001}\n"
        "      - {name: b1, address: \"[::1]:0\"}\n"
        "      - {weight: x}\n",
        "t.yaml:2:9: admin.bind: invalid address \"127.0.0.1\": expected host:port",
        "t.yaml:4:12: timeouts.connect: invalid duration \"3\": missing unit (ms, s, m or h)",
        "t.yaml:5:3: timeouts.tunel: unknown key, did you mean tunnel?",
        "t.yaml:7:16: limits.max_headers: must be between 1 and 10000",
        "t.yaml:9:10: log.level: invalid value \"loud\": must be one of debug, info, warn, "
        "error",
        "t.yaml:10:11: log.access: expected true or false",
        "t.yaml:14:22: listeners[0].pools.purple: unknown pool \"purple\"",
        "t.yaml:15:11: listeners[1].name: duplicate listener name \"web\" (first at line 12)",
        "t.yaml:16:11: listeners[1].bind: address \"127.0.0.1:8080\" is already used by "
        "listener \"web\"",
        "t.yaml:17:12: listeners[1].pools: all weights are 0: at least one pool needs a "
        "weight above 0",
        "t.yaml:20:43: pools[0].health_check.timeout: must be shorter than interval (1s)",
        "t.yaml:23:16: pools[0].backends[1].name: duplicate backend name \"b1\" (first at "
        "line 22)",
        "t.yaml:23:29: pools[0].backends[1].address: invalid address \"[::1]:0\": port "
        "must be between 1 and 65535",
        "t.yaml:24:9: pools[0].backends[2].name: missing required key",
        "t.yaml:24:9: pools[0].backends[2].address: missing required key",
        "t.yaml:24:18: pools[0].backends[2].weight: expected an integer");
}

static void test_errors_accumulate(void)
{
    struct conf_errors e = {0};
    const char *bad = "listen: 1\n";

    CHECK(conf_load_string("a.yaml", bad, strlen(bad), &e) == NULL);
    CHECK(conf_load_string("b.yaml", bad, strlen(bad), &e) == NULL);
    CHECK_EQ(e.count, 6);
    if (e.count == 6) {
        CHECK_STR(e.messages[0], "a.yaml:1:1: listen: unknown key");
        CHECK_STR(e.messages[3], "b.yaml:1:1: listen: unknown key");
    }
    conf_errors_clear(&e);
    CHECK(e.count == 0 && e.messages == NULL);
}

static void test_load_file(void)
{
    char dir[] = "/tmp/usher-test-conf-XXXXXX";
    char *cfg = NULL, *cert = NULL, *key = NULL, *missing = NULL;
    struct conf_errors e = {0};
    struct conf *c;

    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    cert = write_temp(dir, "cert.pem", "x\n");
    key = write_temp(dir, "key.pem", "x\n");
    /* relative tls paths are relative to the config file, not to the cwd */
    cfg = write_temp(dir, "usher.yaml",
                     "listeners:\n"
                     "  - name: web\n"
                     "    bind: 127.0.0.1:8443\n"
                     "    tls: {cert: cert.pem, key: key.pem}\n"
                     "    pools: {blue: 1}\n" POOLS);
    c = conf_load(cfg, &e);
    CHECK(c != NULL);
    CHECK_EQ(e.count, 0);
    if (c) {
        CHECK_STR(c->path, cfg);
        CHECK_STR(c->listeners[0].tls.cert, cert);
        CHECK_STR(c->listeners[0].tls.key, key);
    }
    conf_free(c);

    free(cfg);
    cfg = write_temp(dir, "bad.yaml", "listeners: 1\n" POOLS);
    c = conf_load(cfg, &e);
    CHECK(c == NULL);
    CHECK_EQ(e.count, 1);
    if (e.count == 1) {
        char *want = NULL;
        if (asprintf(&want, "%s:1:12: listeners: expected a list", cfg) > 0)
            CHECK_STR(e.messages[0], want);
        free(want);
    }
    conf_errors_clear(&e);

    if (asprintf(&missing, "%s/missing.yaml", dir) > 0) {
        char *want = NULL;
        CHECK(conf_load(missing, &e) == NULL);
        CHECK_EQ(e.count, 1);
        if (e.count == 1 &&
            asprintf(&want, "%s: cannot open: No such file or directory", missing) > 0)
            CHECK_STR(e.messages[0], want);
        free(want);
        conf_errors_clear(&e);
    }
    CHECK(conf_load(dir, &e) == NULL);
    CHECK_EQ(e.count, 1);
    conf_errors_clear(&e);

    unlink(cfg);
    unlink(cert);
    unlink(key);
    if (cfg) {
        char *p = NULL;
        if (asprintf(&p, "%s/usher.yaml", dir) > 0)
            unlink(p);
        free(p);
    }
    rmdir(dir);
    free(cfg);
    free(cert);
    free(key);
    free(missing);
}

/* The shipped examples must load. */
static void test_examples(void)
{
    static const char *const files[] = {"conf/usher.yaml", "conf/demo.yaml"};

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        struct conf_errors e = {0};
        struct conf *c = conf_load(files[i], &e);
        if (!c) {
            fprintf(stderr, "%s does not load:\n", files[i]);
            for (size_t j = 0; j < e.count; j++)
                fprintf(stderr, "    %s\n", e.messages[j]);
            failures++;
        }
        if (c && i == 0) {
            /* usher.yaml shows every key at its default */
            CHECK_EQ(c->workers, 0);
            CHECK(c->admin.token_file == NULL && c->admin.state_file == NULL);
            CHECK_EQ(c->upgrade.timeout, 30000);
            CHECK_EQ(c->shutdown.idle_close, CONF_IDLE_CLOSE_NOW);
            CHECK_EQ(c->shutdown.tunnel_close_grace, 2000);
            CHECK_EQ(c->timeouts.first_byte, c->timeouts.backend);
            CHECK(c->pools[0].passive_health.enabled && !c->pools[0].discover.enabled);
            CHECK_EQ(c->pools[0].protocol, CONF_POOL_HTTP1);
            CHECK(!c->pools[0].tls.enabled);
            CHECK_EQ(c->pools[0].send_proxy, CONF_PROXY_OFF);
            CHECK_EQ(c->listeners[0].http2, CONF_HTTP2_AUTO);
            CHECK_EQ(c->listeners[0].proxy_protocol, CONF_PROXY_OFF);
            CHECK_EQ(c->listeners[0].num_proxy_protocol_from, 0);
            CHECK_EQ(c->listeners[0].num_routes, 0);
            CHECK_EQ(c->limits.h2_max_streams, 100);
            CHECK(!c->resolver.enabled && !c->fleet.enabled);
        }
        if (c && i == 1) {
            /* demo.yaml is what the README walks through */
            CHECK(c->admin.enabled);
            CHECK_STR(c->admin.bind.text, "127.0.0.1:9901");
            CHECK_EQ(c->shutdown.drain_delay, 0);
            CHECK_EQ(c->shutdown.timeout, 10000);
            CHECK_EQ(c->num_listeners, 1);
            CHECK_STR(c->listeners[0].bind.text, "127.0.0.1:8080");
            CHECK_EQ(c->num_pools, 2);
            CHECK_EQ(c->pools[1].deregistration_delay, 10000);
            CHECK_EQ(c->pools[1].health_check.interval, 1000);
            CHECK_STR(c->pools[1].backends[1].address.text, "127.0.0.1:9004");
        }
        conf_free(c);
        conf_errors_clear(&e);
    }
}

/* ---- the keys of DESIGN.md added with workers, upgrade, discovery and fleets */

static void test_new_defaults(void)
{
    char host[256] = "";
    struct conf *c = LOAD_OK(MIN_DOC);

    if (!c)
        return;
    gethostname(host, sizeof(host));
    CHECK_EQ(c->workers, 0);
    CHECK(c->admin.token_file == NULL);
    CHECK(c->admin.state_file == NULL);
    CHECK(!c->admin.ready_requires_backends);
    CHECK_EQ(c->upgrade.timeout, 30000);
    CHECK_EQ(c->shutdown.close_spread, 0);
    CHECK_EQ(c->shutdown.idle_close, CONF_IDLE_CLOSE_NOW);
    CHECK_EQ(c->shutdown.tunnel_close_grace, 2000);
    CHECK_EQ(c->timeouts.first_byte, 60000);
    CHECK_EQ(c->pools[0].slow_start, 0);
    /* passive health is on by default, at its defaults */
    CHECK(c->pools[0].passive_health.enabled);
    CHECK_EQ(c->pools[0].passive_health.consecutive_failures, 5);
    CHECK_EQ(c->pools[0].passive_health.ejection_time, 30000);
    CHECK_EQ(c->pools[0].passive_health.max_ejected_percent, 50);
    CHECK(!c->pools[0].discover.enabled);
    CHECK(!c->resolver.enabled);
    CHECK_EQ(c->resolver.num_nameservers, 0);
    CHECK_EQ(c->resolver.hold, 30000);
    CHECK(!c->fleet.enabled);
    CHECK_EQ(c->fleet.num_etcd, 1);
    CHECK_STR(c->fleet.etcd[0].text, "127.0.0.1:2379");
    CHECK_EQ(c->fleet.etcd[0].port, 2379);
    CHECK_STR(c->fleet.prefix, "/usher/");
    CHECK_STR(c->fleet.instance, host);
    conf_free(c);

    /* empty sections turn their feature on with every default */
    c = LOAD_OK("upgrade: {}\nresolver: {}\nfleet: {}\n" LISTENERS "pools:\n"
                "  - name: blue\n"
                "    passive_health: {}\n"
                "    discover: {dns: blue.internal, port: 8080}\n");
    if (!c)
        return;
    const struct conf_pool *p = &c->pools[0];
    CHECK(p->passive_health.enabled);
    CHECK_EQ(p->passive_health.consecutive_failures, 5);
    CHECK_EQ(p->passive_health.ejection_time, 30000);
    CHECK_EQ(p->passive_health.max_ejected_percent, 50);
    CHECK(p->discover.enabled);
    CHECK_STR(p->discover.dns, "blue.internal");
    CHECK_EQ(p->discover.port, 8080);
    CHECK(!p->discover.srv);
    CHECK_EQ(p->discover.interval, 5000);
    CHECK_EQ(p->num_backends, 0);
    CHECK(c->resolver.enabled);
    CHECK_EQ(c->resolver.num_nameservers, 0);
    CHECK_EQ(c->resolver.hold, 30000);
    CHECK(c->fleet.enabled);
    CHECK_EQ(c->fleet.num_etcd, 1);
    CHECK_STR(c->fleet.etcd[0].text, "127.0.0.1:2379");
    CHECK_STR(c->fleet.prefix, "/usher/");
    CHECK_STR(c->fleet.instance, host);
    conf_free(c);

    /* DESIGN writes the unset strings as "": the same as leaving them out */
    c = LOAD_OK("admin: {token_file: \"\", state_file: \"\"}\n"
                "fleet: {instance: \"\"}\n" MIN_DOC);
    if (c) {
        CHECK(c->admin.token_file == NULL);
        CHECK(c->admin.state_file == NULL);
        CHECK_STR(c->fleet.instance, host);
    }
    conf_free(c);
}

static void test_first_byte_follows_backend(void)
{
    struct conf *c = LOAD_OK("timeouts: {backend: 5s}\n" MIN_DOC);

    if (c)
        CHECK_EQ(c->timeouts.first_byte, 5000);
    conf_free(c);
    c = LOAD_OK("timeouts: {first_byte: 1500ms, backend: 5s}\n" MIN_DOC);
    if (c) {
        CHECK_EQ(c->timeouts.first_byte, 1500);
        CHECK_EQ(c->timeouts.backend, 5000);
    }
    conf_free(c);
    c = LOAD_OK("timeouts: {connect: 1s}\n" MIN_DOC);
    if (c)
        CHECK_EQ(c->timeouts.first_byte, 60000);
    conf_free(c);
    EXPECT_ERRORS("timeouts:\n"
                  "  first_byte: 0s\n" MIN_DOC,
                  "t.yaml:2:15: timeouts.first_byte: must be between 1ms and 720h");
    EXPECT_ERRORS("timeouts: {first_bite: 1s}\n" MIN_DOC,
                  "t.yaml:1:12: timeouts.first_bite: unknown key, did you mean first_byte?");
}

static void test_workers(void)
{
    static const struct {
        const char *text;
        unsigned want;
    } ok[] = {{"auto", 0}, {"\"auto\"", 0}, {"1", 1}, {"4", 4}, {"256", 256}};

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char *yaml = NULL;
        if (asprintf(&yaml, "workers: %s\n" MIN_DOC, ok[i].text) < 0)
            abort();
        struct conf *c = LOAD_OK(yaml);
        if (c)
            CHECK_EQ(c->workers, ok[i].want);
        conf_free(c);
        free(yaml);
    }
    EXPECT_ERRORS("workers: 0\n" MIN_DOC,
                  "t.yaml:1:10: workers: must be auto or between 1 and 256");
    EXPECT_ERRORS("workers: 257\n" MIN_DOC,
                  "t.yaml:1:10: workers: must be auto or between 1 and 256");
    EXPECT_ERRORS("workers: -2\n" MIN_DOC,
                  "t.yaml:1:10: workers: must be auto or between 1 and 256");
    EXPECT_ERRORS("workers: all\n" MIN_DOC, "t.yaml:1:10: workers: expected auto or an integer");
    EXPECT_ERRORS("workers: \"4\"\n" MIN_DOC, "t.yaml:1:10: workers: expected auto or an integer");
    EXPECT_ERRORS("workers:\n" MIN_DOC, "t.yaml:1:9: workers: expected auto or an integer");
    EXPECT_ERRORS("wrokers: 2\n" MIN_DOC,
                  "t.yaml:1:1: wrokers: unknown key, did you mean workers?");
}

static void test_admin_files(void)
{
    char dir[] = "/tmp/usher-test-conf-XXXXXX";
    char *token = NULL, *blank = NULL, *big = NULL, *cfg = NULL, *want = NULL, *state = NULL;
    struct conf_errors e = {0};
    struct conf *c;
    char *fill;

    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    token = write_temp(dir, "token", "  s3cret\n");
    blank = write_temp(dir, "blank", " \n\t\n");
    fill = malloc(5000);
    memset(fill, 'a', 4999);
    fill[4999] = '\0';
    big = write_temp(dir, "big", fill);
    free(fill);
    if (asprintf(&state, "%s/state.json", dir) < 0)
        abort();

    /* relative to the config file; the state file need not exist yet */
    cfg = write_temp(dir, "usher.yaml",
                     "admin:\n"
                     "  token_file: token\n"
                     "  state_file: state.json\n"
                     "  ready_requires_backends: true\n" MIN_DOC);
    c = conf_load(cfg, &e);
    CHECK(c != NULL);
    CHECK_EQ(e.count, 0);
    if (c) {
        CHECK(c->admin.enabled);
        CHECK_STR(c->admin.token_file, token);
        CHECK_STR(c->admin.state_file, state);
        CHECK(c->admin.ready_requires_backends);
    }
    conf_free(c);
    conf_errors_clear(&e);

    /* a token file that does not exist, a blank one, a directory, one too big */
    unlink(cfg); /* else the directory stays behind */
    free(cfg);
    cfg = write_temp(dir, "bad.yaml",
                     "admin: {token_file: nope}\n"
                     "listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n"
                     "pools: [{name: blue, backends: []}]\n");
    CHECK(conf_load(cfg, &e) == NULL);
    CHECK_EQ(e.count, 1);
    if (e.count == 1 &&
        asprintf(&want,
                 "%s:1:21: admin.token_file: cannot read \"%s/nope\": No such file or directory",
                 cfg, dir) > 0)
        CHECK_STR(e.messages[0], want);
    free(want);
    want = NULL;
    conf_errors_clear(&e);

    unlink(cfg);
    free(cfg);
    cfg = write_temp(dir, "bad.yaml",
                     "admin:\n"
                     "  token_file: blank\n"
                     "listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n"
                     "pools: [{name: blue, backends: []}]\n");
    CHECK(conf_load(cfg, &e) == NULL);
    CHECK_EQ(e.count, 1);
    if (e.count == 1 &&
        asprintf(&want, "%s:2:15: admin.token_file: token file \"%s\" is empty", cfg, blank) > 0)
        CHECK_STR(e.messages[0], want);
    free(want);
    want = NULL;
    conf_errors_clear(&e);

    unlink(cfg);
    free(cfg);
    cfg = write_temp(dir, "bad.yaml",
                     "admin:\n"
                     "  token_file: big\n"
                     "  state_file: missing/state.json\n"
                     "listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n"
                     "pools: [{name: blue, backends: []}]\n");
    CHECK(conf_load(cfg, &e) == NULL);
    CHECK_EQ(e.count, 2);
    if (e.count == 2 &&
        asprintf(&want, "%s:2:15: admin.token_file: token file \"%s\" is longer than 4096 bytes",
                 cfg, big) > 0)
        CHECK_STR(e.messages[0], want);
    free(want);
    want = NULL;
    if (e.count == 2 &&
        asprintf(&want,
                 "%s:3:15: admin.state_file: cannot use \"%s/missing/state.json\": its "
                 "directory: No such file or directory",
                 cfg, dir) > 0)
        CHECK_STR(e.messages[1], want);
    free(want);
    want = NULL;
    conf_errors_clear(&e);

    unlink(cfg);
    free(cfg);
    cfg = write_temp(dir, "bad.yaml",
                     "admin:\n"
                     "  token_file: .\n"
                     "  state_file: .\n"
                     "listeners: [{name: web, bind: 127.0.0.1:8080, pools: {blue: 1}}]\n"
                     "pools: [{name: blue, backends: []}]\n");
    CHECK(conf_load(cfg, &e) == NULL);
    CHECK_EQ(e.count, 2);
    if (e.count == 2 && asprintf(&want,
                                 "%s:2:15: admin.token_file: cannot read \"%s/.\": not a "
                                 "regular file",
                                 cfg, dir) > 0)
        CHECK_STR(e.messages[0], want);
    free(want);
    want = NULL;
    if (e.count == 2 &&
        asprintf(&want, "%s:3:15: admin.state_file: cannot use \"%s/.\": not a regular file", cfg,
                 dir) > 0)
        CHECK_STR(e.messages[1], want);
    free(want);
    want = NULL;
    conf_errors_clear(&e);

    EXPECT_ERRORS("admin:\n"
                  "  token_file:\n"
                  "  state_file: [a]\n"
                  "  ready_requires_backends: 1\n" MIN_DOC,
                  "t.yaml:2:14: admin.token_file: expected a string",
                  "t.yaml:3:15: admin.state_file: expected a string",
                  "t.yaml:4:28: admin.ready_requires_backends: expected true or false");
    EXPECT_ERRORS("admin: {token_flie: x}\n" MIN_DOC,
                  "t.yaml:1:9: admin.token_flie: unknown key, did you mean token_file?");

    /* the token file and the other admin keys but bind are reloadable */
    char *y1 = NULL, *y2 = NULL;
    char *token2 = write_temp(dir, "token2", "other\n");
    if (asprintf(&y1, "admin: {token_file: %s}\n" MIN_DOC, token) < 0 ||
        asprintf(&y2,
                 "admin: {token_file: %s, state_file: %s, ready_requires_backends: true}\n" MIN_DOC,
                 token2, state) < 0)
        abort();
    struct conf *t1 = LOAD_OK(y1);
    struct conf *t2 = LOAD_OK(y2);
    if (t1 && t2) {
        CHECK_STR(t1->admin.token_file, token);
        CHECK_STR(t2->admin.token_file, token2);
        CHECK(conf_restart_needed(t1, t2) == NULL);
    }
    conf_free(t1);
    conf_free(t2);
    free(y1);
    free(y2);
    unlink(token2);
    free(token2);

    unlink(cfg);
    unlink(token);
    unlink(blank);
    unlink(big);
    rmdir(dir);
    free(cfg);
    free(token);
    free(blank);
    free(big);
    free(state);
}

static void test_upgrade_and_shutdown(void)
{
    struct conf *c = LOAD_OK("upgrade: {timeout: 5s}\n"
                             "shutdown:\n"
                             "  close_spread: 10s\n"
                             "  idle_close: after_request\n"
                             "  tunnel_close_grace: 0s\n" MIN_DOC);
    if (c) {
        CHECK_EQ(c->upgrade.timeout, 5000);
        CHECK_EQ(c->shutdown.close_spread, 10000);
        CHECK_EQ(c->shutdown.idle_close, CONF_IDLE_CLOSE_AFTER_REQUEST);
        CHECK_EQ(c->shutdown.tunnel_close_grace, 0);
    }
    conf_free(c);
    c = LOAD_OK("shutdown: {idle_close: now}\n" MIN_DOC);
    if (c)
        CHECK_EQ(c->shutdown.idle_close, CONF_IDLE_CLOSE_NOW);
    conf_free(c);

    EXPECT_ERRORS(
        "upgrade:\n"
        "  timeout: 0s\n"
        "shutdown:\n"
        "  close_spread: 5\n"
        "  idle_close: later\n"
        "  tunnel_close_grace: 721h\n" MIN_DOC,
        "t.yaml:2:12: upgrade.timeout: must be between 1ms and 720h",
        "t.yaml:4:17: shutdown.close_spread: invalid duration \"5\": missing unit (ms, s, "
        "m or h)",
        "t.yaml:5:15: shutdown.idle_close: invalid value \"later\": must be one of now, "
        "after_request",
        "t.yaml:6:23: shutdown.tunnel_close_grace: invalid duration \"721h\": at most "
        "720h");
    EXPECT_ERRORS("upgrade: 30s\n" MIN_DOC, "t.yaml:1:10: upgrade: expected a mapping");
    EXPECT_ERRORS("upgrade: {timeuot: 1s}\nshutdown: {idle_clos: now}\n" MIN_DOC,
                  "t.yaml:1:11: upgrade.timeuot: unknown key, did you mean timeout?",
                  "t.yaml:2:12: shutdown.idle_clos: unknown key, did you mean idle_close?");
}

static void test_pool_keys(void)
{
    struct conf *c = LOAD_OK(LISTENERS "pools:\n"
                                       "  - name: blue\n"
                                       "    slow_start: 1m\n"
                                       "    passive_health:\n"
                                       "      consecutive_failures: 3\n"
                                       "      ejection_time: 10s\n"
                                       "      max_ejected_percent: 100\n"
                                       "    discover:\n"
                                       "      dns: _http._tcp.blue.internal.\n"
                                       "      srv: true\n"
                                       "      interval: 100ms\n"
                                       "    backends:\n"
                                       "      - {name: b1, address: 127.0.0.1:9001}\n");
    if (c) {
        const struct conf_pool *p = &c->pools[0];
        CHECK_EQ(p->slow_start, 60000);
        CHECK(p->passive_health.enabled);
        CHECK_EQ(p->passive_health.consecutive_failures, 3);
        CHECK_EQ(p->passive_health.ejection_time, 10000);
        CHECK_EQ(p->passive_health.max_ejected_percent, 100);
        CHECK(p->discover.enabled);
        CHECK_STR(p->discover.dns, "_http._tcp.blue.internal.");
        CHECK(p->discover.srv);
        CHECK_EQ(p->discover.port, 0);
        CHECK_EQ(p->discover.interval, 100);
        CHECK_EQ(p->num_backends, 1);
    }
    conf_free(c);
    c = LOAD_OK(LISTENERS "pools:\n"
                          "  - name: blue\n"
                          "    passive_health: {max_ejected_percent: 0}\n"
                          "    discover: {dns: localhost, port: 65535, srv: false}\n");
    if (c) {
        CHECK_EQ(c->pools[0].passive_health.max_ejected_percent, 0);
        CHECK_EQ(c->pools[0].discover.port, 65535);
    }
    conf_free(c);

    EXPECT_ERRORS(
        LISTENERS "pools:\n"
                  "  - name: blue\n"
                  "    slow_start: 1.5s\n"
                  "    passive_health:\n"
                  "      consecutive_failures: 0\n"
                  "      ejection_time: 0s\n"
                  "      max_ejected_percent: 101\n"
                  "    backends: []\n",
        "t.yaml:7:17: pools[0].slow_start: invalid duration \"1.5s\": no fractions, use a "
        "smaller unit (1500ms, not 1.5s)",
        "t.yaml:9:29: pools[0].passive_health.consecutive_failures: must be between 1 "
        "and 1000",
        "t.yaml:10:22: pools[0].passive_health.ejection_time: must be between 1ms and "
        "720h",
        "t.yaml:11:28: pools[0].passive_health.max_ejected_percent: must be between 0 "
        "and 100");
    EXPECT_ERRORS(LISTENERS "pools:\n"
                            "  - name: blue\n"
                            "    passive_health: on\n"
                            "    discover: []\n",
                  "t.yaml:7:21: pools[0].passive_health: expected a mapping, true or false",
                  "t.yaml:8:15: pools[0].discover: expected a mapping");
    EXPECT_ERRORS(LISTENERS "pools:\n"
                            "  - name: blue\n"
                            "    passive_health: {consecutive_failure: 1}\n"
                            "    discovr: {dns: a, port: 1}\n"
                            "    backends: []\n",
                  "t.yaml:7:22: pools[0].passive_health.consecutive_failure: unknown key, did you "
                  "mean consecutive_failures?",
                  "t.yaml:8:5: pools[0].discovr: unknown key, did you mean discover?");
}

static void test_discover(void)
{
    EXPECT_ERRORS(LISTENERS "pools:\n"
                            "  - name: blue\n"
                            "    discover: {dns: blue.internal}\n",
                  "t.yaml:7:15: pools[0].discover.port: missing required key (only SRV records "
                  "carry a port: srv: true)");
    EXPECT_ERRORS(LISTENERS "pools:\n"
                            "  - name: blue\n"
                            "    discover: {dns: blue.internal, srv: true, port: 80}\n",
                  "t.yaml:7:47: pools[0].discover.port: not allowed with srv: true (the port comes "
                  "from the SRV records)");
    EXPECT_ERRORS(LISTENERS "pools:\n"
                            "  - name: blue\n"
                            "    discover: {port: 80}\n",
                  "t.yaml:7:15: pools[0].discover.dns: missing required key");
    EXPECT_ERRORS(LISTENERS "pools:\n"
                            "  - name: blue\n"
                            "    discover:\n"
                            "      dns: blue.internal:8080\n"
                            "      port: 0\n"
                            "      srv: yes\n"
                            "      interval: 10ms\n",
                  "t.yaml:8:12: pools[0].discover.dns: invalid host name \"blue.internal:8080\": "
                  "expected dot-separated labels of letters, digits, '-' or '_' (no port, no "
                  "brackets)",
                  "t.yaml:9:13: pools[0].discover.port: must be between 1 and 65535",
                  "t.yaml:10:12: pools[0].discover.srv: expected true or false",
                  "t.yaml:11:17: pools[0].discover.interval: must be between 100ms and 720h");
    static const char *const bad_names[] = {
        "a..b",
        ".a",
        "-a.b",
        "a-.b",
        "a b",
        "[::1]",
        "a/b",
        "",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
        "xxxxxxx.com"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        char *yaml = NULL;
        struct conf_errors e = {0};
        if (asprintf(&yaml, LISTENERS "pools: [{name: blue, discover: {dns: \"%s\", port: 1}}]\n",
                     bad_names[i]) < 0)
            abort();
        struct conf *c = conf_load_string("t.yaml", yaml, strlen(yaml), &e);
        CHECK(c == NULL);
        CHECK(e.count == 1 && strstr(e.messages[0], "invalid host name"));
        conf_free(c);
        conf_errors_clear(&e);
        free(yaml);
    }
    /* a pool with neither backends nor discover keeps today's error */
    EXPECT_ERRORS(LISTENERS "pools:\n"
                            "  - name: blue\n",
                  "t.yaml:6:5: pools[0].backends: missing required key");
}

static void test_resolver_and_fleet(void)
{
    struct conf *c = LOAD_OK("resolver:\n"
                             "  nameservers: [127.0.0.1:53, \"[::1]:5353\"]\n"
                             "  hold: 0s\n"
                             "fleet:\n"
                             "  etcd: [127.0.0.1:2379, localhost:2380]\n"
                             "  prefix: /prod/usher/\n"
                             "  instance: edge-1.eu\n" MIN_DOC);
    if (c) {
        CHECK(c->resolver.enabled);
        CHECK_EQ(c->resolver.num_nameservers, 2);
        CHECK_STR(c->resolver.nameservers[0].text, "127.0.0.1:53");
        CHECK_EQ(c->resolver.nameservers[0].port, 53);
        CHECK_STR(c->resolver.nameservers[1].host, "::1");
        CHECK_EQ(c->resolver.nameservers[1].sa.ss_family, AF_INET6);
        CHECK_EQ(c->resolver.hold, 0);
        CHECK(c->fleet.enabled);
        CHECK_EQ(c->fleet.num_etcd, 2);
        CHECK_STR(c->fleet.etcd[1].host, "localhost");
        CHECK_EQ(c->fleet.etcd[1].port, 2380);
        CHECK_STR(c->fleet.prefix, "/prod/usher/");
        CHECK_STR(c->fleet.instance, "edge-1.eu");
    }
    conf_free(c);
    c = LOAD_OK("resolver: {nameservers: []}\nfleet: {prefix: /}\n" MIN_DOC);
    if (c) {
        CHECK_EQ(c->resolver.num_nameservers, 0);
        CHECK_STR(c->fleet.prefix, "/");
    }
    conf_free(c);

    EXPECT_ERRORS("resolver:\n"
                  "  nameservers: [127.0.0.1, 127.0.0.1:53, [x]]\n"
                  "  hold: 1h1m\n" MIN_DOC,
                  "t.yaml:2:17: resolver.nameservers[0]: invalid address \"127.0.0.1\": expected "
                  "host:port",
                  "t.yaml:2:42: resolver.nameservers[2]: expected a string",
                  "t.yaml:3:9: resolver.hold: invalid duration \"1h1m\": must be a whole "
                  "number with a unit ms, s, m or h");
    EXPECT_ERRORS("resolver: {nameservers: 127.0.0.1:53}\n" MIN_DOC,
                  "t.yaml:1:25: resolver.nameservers: expected a list");
    EXPECT_ERRORS("fleet:\n"
                  "  etcd: []\n"
                  "  prefix: usher/\n"
                  "  instance: edge 1\n" MIN_DOC,
                  "t.yaml:2:9: fleet.etcd: must have at least one entry",
                  "t.yaml:3:11: fleet.prefix: invalid prefix \"usher/\": must start and end with / "
                  "and contain no spaces or control characters",
                  "t.yaml:4:13: fleet.instance: invalid instance id \"edge 1\": use 1 to 64 "
                  "letters, digits, '-', '_' or '.'");
    EXPECT_ERRORS("fleet:\n"
                  "  etcd: [\"127.0.0.1:0\"]\n"
                  "  prefix: /usher\n" MIN_DOC,
                  "t.yaml:2:10: fleet.etcd[0]: invalid address \"127.0.0.1:0\": port must be "
                  "between 1 and 65535",
                  "t.yaml:3:11: fleet.prefix: invalid prefix \"/usher\": must start and end with / "
                  "and contain no spaces or control characters");
    EXPECT_ERRORS("fleet: {etc: []}\nresolvers: {}\n" MIN_DOC,
                  "t.yaml:1:9: fleet.etc: unknown key, did you mean etcd?",
                  "t.yaml:2:1: resolvers: unknown key, did you mean resolver?");
}

static void test_restart_new_keys(void)
{
    struct conf *a = LOAD_OK("workers: 2\n" MIN_DOC);
    struct conf *b = LOAD_OK("workers: 4\n" MIN_DOC);
    struct conf *autow = LOAD_OK(MIN_DOC);
    struct conf *up = LOAD_OK("workers: 2\nupgrade: {timeout: 5s}\n"
                              "shutdown: {idle_close: after_request}\n"
                              "timeouts: {first_byte: 1s}\n" MIN_DOC);
    struct conf *adm = LOAD_OK("workers: 4\nadmin: {bind: 127.0.0.1:9902}\n" MIN_DOC);

    if (a && b && autow && up && adm) {
        CHECK_STR(conf_restart_needed(a, b), "workers");
        CHECK_STR(conf_restart_needed(autow, a), "workers");
        CHECK(conf_restart_needed(a, up) == NULL);
        CHECK(conf_restart_needed(up, a) == NULL);
        /* workers comes first in the file, so first in the answer */
        CHECK_STR(conf_restart_needed(a, adm), "workers");
        CHECK_STR(conf_restart_needed(b, adm), "admin");
    }
    conf_free(a);
    conf_free(b);
    conf_free(autow);
    conf_free(up);
    conf_free(adm);
}

static void test_restart_and_names(void)
{
    struct conf *a = LOAD_OK("admin: {bind: 127.0.0.1:9901}\n" MIN_DOC);
    struct conf *b = LOAD_OK("admin: {bind: 127.0.0.1:9902}\n" MIN_DOC);
    struct conf *none = LOAD_OK(MIN_DOC);
    struct conf *a2 = LOAD_OK("admin: {bind: 127.0.0.1:9901}\nlog: {level: debug}\n" MIN_DOC);

    if (a && b && none && a2) {
        CHECK(conf_restart_needed(a, a2) == NULL);
        CHECK(conf_restart_needed(none, none) == NULL);
        CHECK_STR(conf_restart_needed(a, b), "admin.bind");
        CHECK_STR(conf_restart_needed(none, a), "admin");
        CHECK_STR(conf_restart_needed(a, none), "admin");
    }
    conf_free(a);
    conf_free(b);
    conf_free(none);
    conf_free(a2);

    CHECK_STR(conf_protocol_str(CONF_PROTO_TCP), "tcp");
    CHECK_STR(conf_balance_str(CONF_BALANCE_LEAST_CONN), "least_conn");
    CHECK_STR(conf_log_level_str(CONF_LOG_WARN), "warn");
    CHECK_STR(conf_log_format_str(CONF_LOG_JSON), "json");
    CHECK_STR(conf_protocol_str((enum conf_protocol)0), "?");
}

int main(void)
{
    test_defaults();
    test_every_key();
    test_unknown_keys();
    test_suggestions();
    test_types();
    test_ranges();
    test_durations();
    test_addresses();
    test_names_and_references();
    test_enums();
    test_missing();
    test_health_check();
    test_tls();
    test_syntax_and_documents();
    test_all_errors_in_one_run();
    test_errors_accumulate();
    test_load_file();
    test_examples();
    test_restart_and_names();
    test_new_defaults();
    test_first_byte_follows_backend();
    test_workers();
    test_admin_files();
    test_upgrade_and_shutdown();
    test_pool_keys();
    test_discover();
    test_resolver_and_fleet();
    test_restart_new_keys();
    return check_report("test_conf");
}
