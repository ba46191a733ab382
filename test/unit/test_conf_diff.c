// links: usher_conf
/* Unit tests of conf_diff(): each kind of change, their order, and what is
 * not a change. */
#include "conf/conf.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test/unit/check.h"

static struct conf *load(const char *yaml)
{
    struct conf_errors e = {0};
    struct conf *c = conf_load_string("t.yaml", yaml, strlen(yaml), &e);

    for (size_t i = 0; i < e.count; i++)
        fprintf(stderr, "unexpected: %s\n", e.messages[i]);
    conf_errors_clear(&e);
    if (!c) {
        fprintf(stderr, "config does not load:\n%s\n", yaml);
        failures++;
    }
    return c;
}

/* The reference config every test edits: one listener, two pools. */
static const char base[] = "listeners:\n"
                           "  - name: web\n"
                           "    bind: 127.0.0.1:8080\n"
                           "    pools: {blue: 100, green: 0}\n"
                           "pools:\n"
                           "  - name: blue\n"
                           "    health_check: {interval: 2s}\n"
                           "    backends:\n"
                           "      - {name: blue-1, address: 127.0.0.1:9001}\n"
                           "      - {name: blue-2, address: 127.0.0.1:9002, weight: 2}\n"
                           "  - name: green\n"
                           "    backends:\n"
                           "      - {name: green-1, address: 127.0.0.1:9003}\n";

/* <base> with the first occurrence of <from> replaced by <to>. */
static char *edit(const char *from, const char *to)
{
    const char *at = strstr(base, from);
    char *out = NULL;

    if (!at) {
        fprintf(stderr, "edit: \"%s\" not in the base config\n", from);
        failures++;
        return strdup(base);
    }
    if (asprintf(&out, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from)) < 0)
        abort();
    return out;
}

/* A want written without its route names none: that is what the shorter
 * initializers mean. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

/* One expected change: its kind and the names it is about ("-" for none). */
struct want {
    enum conf_change_kind kind;
    const char *pool;     /* pool of the change (old or new side) */
    const char *backend;  /* backend name */
    const char *listener; /* listener name */
    const char *route;    /* route name; NULL: "-" */
};

static const char *change_pool(const struct conf_change *ch)
{
    return ch->new_pool ? ch->new_pool->name : ch->old_pool ? ch->old_pool->name : "-";
}

static const char *change_backend(const struct conf_change *ch)
{
    return ch->new_backend ? ch->new_backend->name : ch->old_backend ? ch->old_backend->name : "-";
}

static const char *change_route(const struct conf_change *ch)
{
    return ch->new_route ? ch->new_route->name : ch->old_route ? ch->old_route->name : "-";
}

static const char *change_listener(const struct conf_change *ch)
{
    return ch->new_listener   ? ch->new_listener->name
           : ch->old_listener ? ch->old_listener->name
                              : "-";
}

/* Checks which side of each change is set, as enum conf_change_kind says. */
static bool sides_ok(const struct conf_change *ch)
{
    bool op = ch->old_pool, np = ch->new_pool, ob = ch->old_backend, nb = ch->new_backend;
    bool ol = ch->old_listener, nl = ch->new_listener, orr = ch->old_route, nr = ch->new_route;

    if (ch->kind < CONF_ROUTE_ADDED && (orr || nr))
        return false;
    switch (ch->kind) {
    case CONF_BACKEND_ADDED:
        return !op && np && !ob && nb && !ol && !nl;
    case CONF_BACKEND_REMOVED:
        return op && !np && ob && !nb && !ol && !nl;
    case CONF_BACKEND_WEIGHT:
        return op && np && ob && nb && !ol && !nl;
    case CONF_POOL_ADDED:
        return !op && np && !ob && !nb && !ol && !nl;
    case CONF_POOL_REMOVED:
        return op && !np && !ob && !nb && !ol && !nl;
    case CONF_POOL_CHANGED:
        return op && np && !ob && !nb && !ol && !nl;
    case CONF_LISTENER_ADDED:
        return !op && !np && !ob && !nb && !ol && nl;
    case CONF_LISTENER_REMOVED:
        return !op && !np && !ob && !nb && ol && !nl;
    case CONF_LISTENER_SPLIT:
        return !op && !np && !ob && !nb && ol && nl;
    case CONF_ROUTE_ADDED:
        return !op && !np && !ob && !nb && !ol && nl && !orr && nr;
    case CONF_ROUTE_REMOVED:
        return !op && !np && !ob && !nb && ol && !nl && orr && !nr;
    case CONF_ROUTE_CHANGED:
        return !op && !np && !ob && !nb && ol && nl && orr && nr;
    }
    return false;
}

static void check_diff(int line, const struct conf *a, const struct conf *b, const struct want *w,
                       size_t n)
{
    struct conf_diff d;
    bool ok;

    if (conf_diff(a, b, &d) != 0) {
        fprintf(stderr, "%s:%d: conf_diff failed\n", __FILE__, line);
        failures++;
        return;
    }
    ok = d.count == n;
    for (size_t i = 0; ok && i < n; i++) {
        const struct conf_change *ch = &d.changes[i];
        ok = ch->kind == w[i].kind && strcmp(change_pool(ch), w[i].pool) == 0 &&
             strcmp(change_backend(ch), w[i].backend) == 0 &&
             strcmp(change_listener(ch), w[i].listener) == 0 &&
             strcmp(change_route(ch), w[i].route ? w[i].route : "-") == 0 && sides_ok(ch);
    }
    if (!ok) {
        fprintf(stderr, "%s:%d: diff differs\n  expected:\n", __FILE__, line);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "    %s pool=%s backend=%s listener=%s route=%s\n",
                    conf_change_kind_str(w[i].kind), w[i].pool, w[i].backend, w[i].listener,
                    w[i].route ? w[i].route : "-");
        fprintf(stderr, "  got:\n");
        for (size_t i = 0; i < d.count; i++)
            fprintf(stderr, "    %s pool=%s backend=%s listener=%s route=%s%s\n",
                    conf_change_kind_str(d.changes[i].kind), change_pool(&d.changes[i]),
                    change_backend(&d.changes[i]), change_listener(&d.changes[i]),
                    change_route(&d.changes[i]),
                    sides_ok(&d.changes[i]) ? "" : " (wrong sides set)");
        failures++;
    }
    conf_diff_free(&d);
    CHECK(d.changes == NULL && d.count == 0);
}

#define WANT(...) ((const struct want[]){__VA_ARGS__})
#define NWANT(...) (sizeof(WANT(__VA_ARGS__)) / sizeof(struct want))
#define CHECK_DIFF(a, b, ...) check_diff(__LINE__, a, b, WANT(__VA_ARGS__), NWANT(__VA_ARGS__))
#define CHECK_NO_DIFF(a, b) check_diff(__LINE__, a, b, NULL, 0)

/* Loads <base> edited by <from> -> <to> and compares it with <old>. */
#define EDITED(from, to) load_edit(from, to)

static struct conf *load_edit(const char *from, const char *to)
{
    char *y = edit(from, to);
    struct conf *c = load(y);

    free(y);
    return c;
}

static void test_no_change(struct conf *old)
{
    struct conf *same = load(base);
    /* a reordered split, a backend written by name, a re-set default: no change */
    struct conf *cosmetic = EDITED("{blue: 100, green: 0}", "{green: 0, blue: 100}");
    struct conf *host = EDITED("bind: 127.0.0.1:8080", "bind: localhost:8080");
    struct conf *dflt = EDITED("address: 127.0.0.1:9001}", "address: 127.0.0.1:9001, weight: 1}");

    if (same && cosmetic && host && dflt) {
        CHECK_NO_DIFF(old, old);
        CHECK_NO_DIFF(old, same);
        CHECK_NO_DIFF(old, cosmetic);
        CHECK_NO_DIFF(old, host);
        CHECK_NO_DIFF(old, dflt);
    }
    conf_free(same);
    conf_free(cosmetic);
    conf_free(host);
    conf_free(dflt);
}

static void test_backends(struct conf *old)
{
    struct conf *added =
        EDITED("      - {name: green-1,", "      - {name: green-2, address: 127.0.0.1:9004}\n"
                                          "      - {name: green-1,");
    struct conf *removed = EDITED("      - {name: blue-1, address: 127.0.0.1:9001}\n", "");
    struct conf *moved = EDITED("127.0.0.1:9002", "127.0.0.1:9012");
    /* same socket address, other host text: health checks send another Host */
    struct conf *renamed_host = EDITED("127.0.0.1:9003", "localhost:9003");
    struct conf *weight = EDITED("weight: 2", "weight: 5");
    /* moved and reweighted: only the move counts */
    struct conf *both = EDITED("127.0.0.1:9002, weight: 2", "127.0.0.1:9012, weight: 5");

    if (!added || !removed || !moved || !renamed_host || !weight || !both)
        goto out;
    CHECK_DIFF(old, added, {CONF_BACKEND_ADDED, "green", "green-2", "-"});
    CHECK_DIFF(old, removed, {CONF_BACKEND_REMOVED, "blue", "blue-1", "-"});
    CHECK_DIFF(old, moved, {CONF_BACKEND_REMOVED, "blue", "blue-2", "-"},
               {CONF_BACKEND_ADDED, "blue", "blue-2", "-"});
    CHECK_DIFF(old, renamed_host, {CONF_BACKEND_REMOVED, "green", "green-1", "-"},
               {CONF_BACKEND_ADDED, "green", "green-1", "-"});
    CHECK_DIFF(old, weight, {CONF_BACKEND_WEIGHT, "blue", "blue-2", "-"});
    CHECK_DIFF(old, both, {CONF_BACKEND_REMOVED, "blue", "blue-2", "-"},
               {CONF_BACKEND_ADDED, "blue", "blue-2", "-"});

    /* the pointers refer into the right config */
    struct conf_diff d;
    if (conf_diff(old, weight, &d) == 0 && d.count == 1) {
        CHECK(d.changes[0].old_pool == &old->pools[0]);
        CHECK(d.changes[0].new_pool == &weight->pools[0]);
        CHECK(d.changes[0].old_backend == &old->pools[0].backends[1]);
        CHECK(d.changes[0].new_backend == &weight->pools[0].backends[1]);
        CHECK(d.changes[0].old_backend->weight == 2 && d.changes[0].new_backend->weight == 5);
        conf_diff_free(&d);
    } else {
        CHECK(!"weight diff");
    }
out:
    conf_free(added);
    conf_free(removed);
    conf_free(moved);
    conf_free(renamed_host);
    conf_free(weight);
    conf_free(both);
}

/* A backend's identity for pool sync is its address text and what the text
 * resolved to: either changing means a new server (removed + added). The
 * resolution is patched by hand after loading, as a DNS change between two
 * loads of the same text would leave it, so no resolver is involved. */
static void test_backend_identity(struct conf *old)
{
    struct conf *redns = load(base);
    struct conf *moved_port = load(base);
    struct conf *reweighted = EDITED("weight: 2", "weight: 5");
    struct conf *retext = EDITED("127.0.0.1:9003", "127.0.0.9:9003");

    if (!redns || !moved_port || !reweighted || !retext)
        goto out;

    /* same text "127.0.0.1:9003", resolved to 127.0.0.7 this time */
    struct sockaddr_in *sin = (struct sockaddr_in *)&redns->pools[1].backends[0].address.sa;
    CHECK_STR(redns->pools[1].backends[0].address.text, "127.0.0.1:9003");
    CHECK_INT(sin->sin_family, AF_INET);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK + 6);
    CHECK_DIFF(old, redns, {CONF_BACKEND_REMOVED, "green", "green-1", "-"},
               {CONF_BACKEND_ADDED, "green", "green-1", "-"});
    CHECK_DIFF(redns, old, {CONF_BACKEND_REMOVED, "green", "green-1", "-"},
               {CONF_BACKEND_ADDED, "green", "green-1", "-"});

    /* same text, the port of the resolution differs */
    sin = (struct sockaddr_in *)&moved_port->pools[0].backends[0].address.sa;
    sin->sin_port = htons(9999);
    CHECK_DIFF(old, moved_port, {CONF_BACKEND_REMOVED, "blue", "blue-1", "-"},
               {CONF_BACKEND_ADDED, "blue", "blue-1", "-"});

    /* a weight change riding on a new resolution: only the move counts */
    sin = (struct sockaddr_in *)&reweighted->pools[0].backends[1].address.sa;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK + 6);
    CHECK_DIFF(old, reweighted, {CONF_BACKEND_REMOVED, "blue", "blue-2", "-"},
               {CONF_BACKEND_ADDED, "blue", "blue-2", "-"});

    /* other text, resolved to the very same socket address */
    struct conf_address *a = &retext->pools[1].backends[0].address;
    CHECK_STR(a->text, "127.0.0.9:9003");
    memcpy(&a->sa, &old->pools[1].backends[0].address.sa, sizeof(a->sa));
    a->sa_len = old->pools[1].backends[0].address.sa_len;
    CHECK(conf_address_same(a, &old->pools[1].backends[0].address));
    CHECK_DIFF(old, retext, {CONF_BACKEND_REMOVED, "green", "green-1", "-"},
               {CONF_BACKEND_ADDED, "green", "green-1", "-"});
out:
    conf_free(redns);
    conf_free(moved_port);
    conf_free(reweighted);
    conf_free(retext);
}

static void test_pools(struct conf *old)
{
    struct conf *added =
        EDITED("  - name: green\n", "  - name: red\n"
                                    "    backends:\n"
                                    "      - {name: red-1, address: 127.0.0.1:9005}\n"
                                    "      - {name: red-2, address: 127.0.0.1:9006}\n"
                                    "  - name: green\n");
    struct conf *removed = load("listeners:\n"
                                "  - name: web\n"
                                "    bind: 127.0.0.1:8080\n"
                                "    pools: {green: 1}\n"
                                "pools:\n"
                                "  - name: green\n"
                                "    backends:\n"
                                "      - {name: green-1, address: 127.0.0.1:9003}\n");
    struct conf *balance =
        EDITED("  - name: green\n", "  - name: green\n    balance: least_conn\n");
    struct conf *delay =
        EDITED("  - name: green\n", "  - name: green\n    deregistration_delay: 5s\n");
    struct conf *hc_on = EDITED("  - name: green\n", "  - name: green\n    health_check: {}\n");
    struct conf *hc_off = EDITED("    health_check: {interval: 2s}\n", "");
    struct conf *hc_interval = EDITED("{interval: 2s}", "{interval: 3s}");
    struct conf *hc_same = EDITED("{interval: 2s}", "{path: /healthz}");
    struct conf *hc_status = EDITED("{interval: 2s}", "{expect_status: 200}");
    struct conf *hc_timeout = EDITED("{interval: 2s}", "{interval: 5s, timeout: 2s}");

    if (!added || !removed || !balance || !delay || !hc_on || !hc_off || !hc_interval || !hc_same ||
        !hc_status || !hc_timeout)
        goto out;
    CHECK_DIFF(old, added, {CONF_POOL_ADDED, "red", "-", "-"},
               {CONF_BACKEND_ADDED, "red", "red-1", "-"},
               {CONF_BACKEND_ADDED, "red", "red-2", "-"});
    /* backends of a removed pool drain first, then the pool goes; the split changed too */
    CHECK_DIFF(old, removed, {CONF_BACKEND_REMOVED, "blue", "blue-1", "-"},
               {CONF_BACKEND_REMOVED, "blue", "blue-2", "-"}, {CONF_POOL_REMOVED, "blue", "-", "-"},
               {CONF_LISTENER_SPLIT, "-", "-", "web"});
    CHECK_DIFF(old, balance, {CONF_POOL_CHANGED, "green", "-", "-"});
    CHECK_DIFF(old, delay, {CONF_POOL_CHANGED, "green", "-", "-"});
    CHECK_DIFF(old, hc_on, {CONF_POOL_CHANGED, "green", "-", "-"});
    CHECK_DIFF(old, hc_off, {CONF_POOL_CHANGED, "blue", "-", "-"});
    CHECK_DIFF(old, hc_interval, {CONF_POOL_CHANGED, "blue", "-", "-"});
    CHECK_NO_DIFF(old, hc_same);
    CHECK_DIFF(old, hc_status, {CONF_POOL_CHANGED, "blue", "-", "-"});
    CHECK_DIFF(old, hc_timeout, {CONF_POOL_CHANGED, "blue", "-", "-"});
    /* both ways: a pool added is removed going back */
    CHECK_DIFF(added, old, {CONF_BACKEND_REMOVED, "red", "red-1", "-"},
               {CONF_BACKEND_REMOVED, "red", "red-2", "-"}, {CONF_POOL_REMOVED, "red", "-", "-"});
out:
    conf_free(added);
    conf_free(removed);
    conf_free(balance);
    conf_free(delay);
    conf_free(hc_on);
    conf_free(hc_off);
    conf_free(hc_interval);
    conf_free(hc_same);
    conf_free(hc_status);
    conf_free(hc_timeout);
}

/* slow_start, passive_health and discover are pool settings: a change of
 * any of them is CONF_POOL_CHANGED, and the backends are left alone. */
static void test_pool_new_settings(struct conf *old)
{
    static const char green[] = "  - name: green\n";
    static const struct {
        const char *to; /* inserted after green's name */
        bool changed;
    } cases[] = {
        {"    slow_start: 30s\n", true},
        {"    slow_start: 0s\n", false}, /* the default, written out */
        /* passive health is on by default: {} and true are the default written out */
        {"    passive_health: {}\n", false},
        {"    passive_health: true\n", false},
        {"    passive_health: false\n", true},
        {"    passive_health: {consecutive_failures: 3}\n", true},
        {"    discover: {dns: green.internal, port: 8080}\n", true},
        {"    discover: {dns: green.internal, srv: true}\n", true},
    };
    /* from a green pool that has them all, each one edited */
    static const char full[] = "  - name: green\n"
                               "    slow_start: 30s\n"
                               "    passive_health: {consecutive_failures: 5}\n"
                               "    discover: {dns: green.internal, port: 8080}\n";
    static const struct {
        const char *from, *to;
        bool changed;
    } edits[] = {
        {"slow_start: 30s", "slow_start: 31s", true},
        {"{consecutive_failures: 5}", "{consecutive_failures: 6}", true},
        {"{consecutive_failures: 5}", "{ejection_time: 1m}", true},
        {"{consecutive_failures: 5}", "{max_ejected_percent: 10}", true},
        {"{consecutive_failures: 5}", "{ejection_time: 30s}", false}, /* all defaults still */
        /* left out: on with the defaults, which {consecutive_failures: 5} is */
        {"    passive_health: {consecutive_failures: 5}\n", "", false},
        {"{consecutive_failures: 5}", "false", true},
        {"green.internal, port: 8080", "green2.internal, port: 8080", true},
        {"port: 8080", "port: 8081", true},
        {"port: 8080", "port: 8080, interval: 10s", true},
        {"port: 8080", "port: 8080, interval: 5s", false},
        {"port: 8080", "srv: true", true},
        {"    discover: {dns: green.internal, port: 8080}\n", "", true},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *to = NULL;
        if (asprintf(&to, "%s%s", green, cases[i].to) < 0)
            abort();
        struct conf *c = EDITED(green, to);
        if (c && cases[i].changed) {
            CHECK_DIFF(old, c, {CONF_POOL_CHANGED, "green", "-", "-"});
            CHECK_DIFF(c, old, {CONF_POOL_CHANGED, "green", "-", "-"});
        } else if (c) {
            CHECK_NO_DIFF(old, c);
        }
        conf_free(c);
        free(to);
    }

    char *base_full = edit(green, full);
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        struct conf *a = load(base_full);
        const char *at = strstr(base_full, edits[i].from);
        char *y = NULL;
        if (!at || asprintf(&y, "%.*s%s%s", (int)(at - base_full), base_full, edits[i].to,
                            at + strlen(edits[i].from)) < 0)
            abort();
        struct conf *b = load(y);
        if (a && b && edits[i].changed)
            CHECK_DIFF(a, b, {CONF_POOL_CHANGED, "green", "-", "-"});
        else if (a && b)
            CHECK_NO_DIFF(a, b);
        conf_free(a);
        conf_free(b);
        free(y);
    }
    free(base_full);

    /* a pool turned from static backends to discovered: settings changed,
     * and its static backends drain */
    struct conf *disc = EDITED("  - name: green\n"
                               "    backends:\n"
                               "      - {name: green-1, address: 127.0.0.1:9003}\n",
                               "  - name: green\n"
                               "    discover: {dns: green.internal, port: 9003}\n");
    if (disc)
        CHECK_DIFF(old, disc, {CONF_POOL_CHANGED, "green", "-", "-"},
                   {CONF_BACKEND_REMOVED, "green", "green-1", "-"});
    conf_free(disc);
}

static void test_listeners(struct conf *old)
{
    struct conf *added = EDITED("pools:\n  - name: blue\n", "  - name: api\n"
                                                            "    bind: 127.0.0.1:8081\n"
                                                            "    pools: {green: 1}\n"
                                                            "pools:\n  - name: blue\n");
    struct conf *rebind = EDITED("127.0.0.1:8080", "127.0.0.1:8090");
    struct conf *renamed = EDITED("name: web", "name: www");
    struct conf *switched = EDITED("{blue: 100, green: 0}", "{blue: 0, green: 100}");
    struct conf *fewer = EDITED("{blue: 100, green: 0}", "{blue: 100}");
    struct conf *protocol = EDITED("    pools: {blue", "    protocol: tcp\n    pools: {blue");

    if (!added || !rebind || !renamed || !switched || !fewer || !protocol)
        goto out;
    CHECK_DIFF(old, added, {CONF_LISTENER_ADDED, "-", "-", "api"});
    CHECK_DIFF(added, old, {CONF_LISTENER_REMOVED, "-", "-", "api"});
    CHECK_DIFF(old, rebind, {CONF_LISTENER_REMOVED, "-", "-", "web"},
               {CONF_LISTENER_ADDED, "-", "-", "web"});
    CHECK_DIFF(old, renamed, {CONF_LISTENER_REMOVED, "-", "-", "web"},
               {CONF_LISTENER_ADDED, "-", "-", "www"});
    CHECK_DIFF(old, switched, {CONF_LISTENER_SPLIT, "-", "-", "web"});
    CHECK_DIFF(old, fewer, {CONF_LISTENER_SPLIT, "-", "-", "web"});
    CHECK_DIFF(old, protocol, {CONF_LISTENER_SPLIT, "-", "-", "web"});
out:
    conf_free(added);
    conf_free(rebind);
    conf_free(renamed);
    conf_free(switched);
    conf_free(fewer);
    conf_free(protocol);
}

static void test_tls(struct conf *old)
{
    char path[] = "/tmp/usher-test-diff-XXXXXX";
    int fd = mkstemp(path);
    char *to = NULL;
    struct conf *tls = NULL, *tls2 = NULL;

    if (fd < 0) {
        CHECK(!"mkstemp");
        return;
    }
    close(fd);
    if (asprintf(&to, "    tls: {cert: %s, key: %s}\n    pools: {blue", path, path) > 0) {
        tls = EDITED("    pools: {blue", to);
        tls2 = EDITED("    pools: {blue", to);
    }
    if (tls && tls2) {
        CHECK_DIFF(old, tls, {CONF_LISTENER_SPLIT, "-", "-", "web"});
        CHECK_DIFF(tls, old, {CONF_LISTENER_SPLIT, "-", "-", "web"});
        CHECK_NO_DIFF(tls, tls2);
    }
    conf_free(tls);
    conf_free(tls2);
    free(to);
    unlink(path);
}

/* Many things at once: the documented order. */
static void test_order(struct conf *old)
{
    struct conf *next = load("listeners:\n"
                             "  - name: api\n"
                             "    bind: 127.0.0.1:8081\n"
                             "    pools: {red: 1}\n"
                             "  - name: web\n"
                             "    bind: 127.0.0.1:8080\n"
                             "    pools: {red: 1, green: 1}\n"
                             "pools:\n"
                             "  - name: red\n"
                             "    backends:\n"
                             "      - {name: red-1, address: 127.0.0.1:9005}\n"
                             "  - name: green\n"
                             "    balance: least_conn\n"
                             "    backends:\n"
                             "      - {name: green-2, address: 127.0.0.1:9004}\n"
                             "      - {name: green-1, address: 127.0.0.1:9003, weight: 3}\n");
    if (!next)
        return;
    CHECK_DIFF(old, next, {CONF_BACKEND_REMOVED, "blue", "blue-1", "-"},
               {CONF_BACKEND_REMOVED, "blue", "blue-2", "-"}, {CONF_POOL_REMOVED, "blue", "-", "-"},
               {CONF_POOL_ADDED, "red", "-", "-"}, {CONF_BACKEND_ADDED, "red", "red-1", "-"},
               {CONF_POOL_CHANGED, "green", "-", "-"},
               {CONF_BACKEND_ADDED, "green", "green-2", "-"},
               {CONF_BACKEND_WEIGHT, "green", "green-1", "-"},
               {CONF_LISTENER_ADDED, "-", "-", "api"}, {CONF_LISTENER_SPLIT, "-", "-", "web"});
    conf_free(next);
}

static void test_from_nothing(struct conf *old)
{
    CHECK_DIFF(
        NULL, old, {CONF_POOL_ADDED, "blue", "-", "-"}, {CONF_BACKEND_ADDED, "blue", "blue-1", "-"},
        {CONF_BACKEND_ADDED, "blue", "blue-2", "-"}, {CONF_POOL_ADDED, "green", "-", "-"},
        {CONF_BACKEND_ADDED, "green", "green-1", "-"}, {CONF_LISTENER_ADDED, "-", "-", "web"});
    CHECK_DIFF(old, NULL, {CONF_BACKEND_REMOVED, "blue", "blue-1", "-"},
               {CONF_BACKEND_REMOVED, "blue", "blue-2", "-"}, {CONF_POOL_REMOVED, "blue", "-", "-"},
               {CONF_BACKEND_REMOVED, "green", "green-1", "-"},
               {CONF_POOL_REMOVED, "green", "-", "-"}, {CONF_LISTENER_REMOVED, "-", "-", "web"});
    CHECK_NO_DIFF(NULL, NULL);
}

/* ---- routes and the settings DESIGN added --------------------------------- */

/* A listener with routes, edited by each test. */
static const char routed[] = "listeners:\n"
                             "  - name: web\n"
                             "    bind: 127.0.0.1:8080\n"
                             "    routes:\n"
                             "      - name: api\n"
                             "        hosts: [api.example.com, \"*.api.example.com\"]\n"
                             "        paths: [/v1/, =/healthz]\n"
                             "        headers: {x-canary: \"1\"}\n"
                             "        pools: {blue: 100, green: 0}\n"
                             "      - {name: static, paths: [/static/], pools: {green: 1}}\n"
                             "    pools: {blue: 1}\n"
                             "pools:\n"
                             "  - {name: blue, backends: []}\n"
                             "  - {name: green, backends: []}\n";

static struct conf *routed_edit(const char *from, const char *to)
{
    const char *at = strstr(routed, from);
    char *y = NULL;

    if (!at) {
        fprintf(stderr, "edit: \"%s\" not in the routed config\n", from);
        failures++;
        return NULL;
    }
    if (asprintf(&y, "%.*s%s%s", (int)(at - routed), routed, to, at + strlen(from)) < 0)
        abort();
    struct conf *c = load(y);
    free(y);
    return c;
}

static void test_routes(void)
{
    struct conf *old = load(routed);
    static const struct {
        const char *from, *to;
        bool changed;
    } api_edits[] = {
        {"api.example.com,", "api2.example.com,", true},
        {"[api.example.com, \"*.api.example.com\"]", "[\"*.api.example.com\", api.example.com]",
         true}, /* as written: reordered counts (and costs nothing) */
        {"[api.example.com,", "[API.Example.COM.,", false}, /* the same once normalised */
        {"=/healthz", "/healthz", true},
        {"/v1/,", "/v2/,", true},
        {"{x-canary: \"1\"}", "{x-canary: \"2\"}", true},
        {"{x-canary: \"1\"}", "{X-Canary: \"1\"}", false},
        {"{x-canary: \"1\"}", "{x-canary: \"1\", x-b: \"\"}", true},
        {"        headers: {x-canary: \"1\"}\n", "", true},
        {"        pools: {blue: 100, green: 0}\n",
         "        strip_prefix: true\n        pools: {blue: 100, green: 0}\n", true},
        {"        pools: {blue: 100, green: 0}\n",
         "        strip_prefix: false\n        pools: {blue: 100, green: 0}\n", false},
        {"{blue: 100, green: 0}", "{blue: 0, green: 100}", true},
        {"{blue: 100, green: 0}", "{blue: 100}", true},
        {"{blue: 100, green: 0}", "{green: 0, blue: 100}", false},
    };

    if (!old)
        return;
    CHECK_NO_DIFF(old, old);
    for (size_t i = 0; i < sizeof(api_edits) / sizeof(api_edits[0]); i++) {
        struct conf *c = routed_edit(api_edits[i].from, api_edits[i].to);
        if (c && api_edits[i].changed) {
            CHECK_DIFF(old, c, {CONF_ROUTE_CHANGED, "-", "-", "web", "api"});
            CHECK_DIFF(c, old, {CONF_ROUTE_CHANGED, "-", "-", "web", "api"});
        } else if (c) {
            CHECK_NO_DIFF(old, c);
        }
        conf_free(c);
    }

    struct conf *added = routed_edit("    pools: {blue: 1}\n",
                                     "      - {name: new, hosts: [new.com], pools: {blue: 1}}\n"
                                     "    pools: {blue: 1}\n");
    struct conf *renamed = routed_edit("name: static", "name: assets");
    struct conf *split = routed_edit("    pools: {blue: 1}\n", "    pools: {blue: 1, green: 1}\n");
    struct conf *nodefault = routed_edit("    pools: {blue: 1}\n", "");
    struct conf *rebind = routed_edit("127.0.0.1:8080", "127.0.0.1:8090");
    struct conf *rebind_changed = NULL;
    if (rebind) {
        /* the same listener name on a new socket: its unchanged routes are not changes */
        CHECK_DIFF(old, rebind, {CONF_LISTENER_REMOVED, "-", "-", "web"},
                   {CONF_LISTENER_ADDED, "-", "-", "web"});
    }
    {
        const char *at = strstr(routed, "127.0.0.1:8080");
        char *y = NULL;
        if (asprintf(&y, "%.*s127.0.0.1:8090%s", (int)(at - routed), routed, at + 14) < 0)
            abort();
        char *z = NULL, *w = strstr(y, "/static/");
        if (asprintf(&z, "%.*s/assets/%s", (int)(w - y), y, w + 8) < 0)
            abort();
        rebind_changed = load(z);
        free(y);
        free(z);
    }
    if (added && renamed && split && nodefault && rebind_changed) {
        CHECK_DIFF(old, added, {CONF_ROUTE_ADDED, "-", "-", "web", "new"});
        CHECK_DIFF(added, old, {CONF_ROUTE_REMOVED, "-", "-", "web", "new"});
        CHECK_DIFF(old, renamed, {CONF_ROUTE_REMOVED, "-", "-", "web", "static"},
                   {CONF_ROUTE_ADDED, "-", "-", "web", "assets"});
        /* the default split is the listener's own: routes unchanged */
        CHECK_DIFF(old, split, {CONF_LISTENER_SPLIT, "-", "-", "web"});
        CHECK_DIFF(old, nodefault, {CONF_LISTENER_SPLIT, "-", "-", "web"});
        CHECK_DIFF(old, rebind_changed, {CONF_LISTENER_REMOVED, "-", "-", "web"},
                   {CONF_LISTENER_ADDED, "-", "-", "web"},
                   {CONF_ROUTE_CHANGED, "-", "-", "web", "static"});

        /* the pointers refer into the right config */
        struct conf_diff d;
        if (conf_diff(old, renamed, &d) == 0 && d.count == 2) {
            CHECK(d.changes[0].old_route == &old->listeners[0].routes[1]);
            CHECK(d.changes[0].old_listener == &old->listeners[0]);
            CHECK(d.changes[1].new_route == &renamed->listeners[0].routes[1]);
            CHECK(d.changes[1].new_listener == &renamed->listeners[0]);
            conf_diff_free(&d);
        } else {
            CHECK(!"renamed route diff");
        }
        if (conf_diff(old, rebind_changed, &d) == 0 && d.count == 3) {
            CHECK(d.changes[2].old_route == &old->listeners[0].routes[1]);
            CHECK(d.changes[2].new_route == &rebind_changed->listeners[0].routes[1]);
            CHECK(d.changes[2].old_listener == &old->listeners[0]);
            CHECK(d.changes[2].new_listener == &rebind_changed->listeners[0]);
            conf_diff_free(&d);
        } else {
            CHECK(!"rebind diff");
        }
    }
    conf_free(added);
    conf_free(renamed);
    conf_free(split);
    conf_free(nodefault);
    conf_free(rebind);
    conf_free(rebind_changed);

    /* whole listeners: their routes come and go with them, in the documented order */
    struct conf *two = load("listeners:\n"
                            "  - name: edge\n"
                            "    bind: 127.0.0.1:8081\n"
                            "    routes:\n"
                            "      - {name: a, paths: [/a], pools: {green: 1}}\n"
                            "      - {name: b, paths: [/b], pools: {green: 1}}\n"
                            "  - name: web\n"
                            "    bind: 127.0.0.1:8080\n"
                            "    routes:\n"
                            "      - {name: static, paths: [/static/], pools: {green: 1}}\n"
                            "      - {name: api, hosts: [api.example.com, \"*.api.example.com\"],\n"
                            "         paths: [/v1/, =/healthz], headers: {x-canary: \"1\"},\n"
                            "         pools: {blue: 100, green: 0}}\n"
                            "    pools: {blue: 1}\n"
                            "pools:\n"
                            "  - {name: blue, backends: []}\n"
                            "  - {name: green, backends: []}\n");
    struct conf *other = load("listeners:\n"
                              "  - name: api\n"
                              "    bind: 127.0.0.1:8080\n"
                              "    routes: [{name: x, pools: {blue: 1}}]\n"
                              "pools:\n"
                              "  - {name: blue, backends: []}\n"
                              "  - {name: green, backends: []}\n");
    if (two && other) {
        /* routes reordered in the file: matched by name, no change */
        CHECK_DIFF(old, two, {CONF_LISTENER_ADDED, "-", "-", "edge"},
                   {CONF_ROUTE_ADDED, "-", "-", "edge", "a"},
                   {CONF_ROUTE_ADDED, "-", "-", "edge", "b"});
        CHECK_DIFF(two, old, {CONF_ROUTE_REMOVED, "-", "-", "edge", "a"},
                   {CONF_ROUTE_REMOVED, "-", "-", "edge", "b"},
                   {CONF_LISTENER_REMOVED, "-", "-", "edge"});
        CHECK_DIFF(old, other, {CONF_ROUTE_REMOVED, "-", "-", "web", "api"},
                   {CONF_ROUTE_REMOVED, "-", "-", "web", "static"},
                   {CONF_LISTENER_REMOVED, "-", "-", "web"}, {CONF_LISTENER_ADDED, "-", "-", "api"},
                   {CONF_ROUTE_ADDED, "-", "-", "api", "x"});
        CHECK_DIFF(
            NULL, two, {CONF_POOL_ADDED, "blue", "-", "-"}, {CONF_POOL_ADDED, "green", "-", "-"},
            {CONF_LISTENER_ADDED, "-", "-", "edge"}, {CONF_ROUTE_ADDED, "-", "-", "edge", "a"},
            {CONF_ROUTE_ADDED, "-", "-", "edge", "b"}, {CONF_LISTENER_ADDED, "-", "-", "web"},
            {CONF_ROUTE_ADDED, "-", "-", "web", "static"},
            {CONF_ROUTE_ADDED, "-", "-", "web", "api"});
    }
    conf_free(two);
    conf_free(other);
    conf_free(old);
}

/* The pool and listener settings DESIGN added: a pool's protocol, tls and
 * send_proxy are CONF_POOL_CHANGED; a listener's tls, http2 and PROXY
 * protocol settings are CONF_LISTENER_SPLIT. */
static void test_new_settings(struct conf *old)
{
    static const char green[] = "  - name: green\n";
    static const struct {
        const char *to; /* inserted after green's name */
        bool changed;
    } pool_cases[] = {
        {"    protocol: http1\n", false},
        {"    protocol: h2c\n", true},
        {"    protocol: h2\n    tls: {}\n", true},
        {"    tls: {}\n", true},
        {"    tls: {verify: true}\n", true},
        {"    tls: {verify: false}\n", true},
        {"    tls: {sni: green.internal}\n", true},
        {"    send_proxy: false\n", false},
        {"    send_proxy: v1\n", true},
        {"    send_proxy: v2\n", true},
        {"    protocol: h2c\n    health_check: {protocol: grpc}\n", true},
    };
    for (size_t i = 0; i < sizeof(pool_cases) / sizeof(pool_cases[0]); i++) {
        char *to = NULL;
        if (asprintf(&to, "%s%s", green, pool_cases[i].to) < 0)
            abort();
        struct conf *c = EDITED(green, to);
        if (c && pool_cases[i].changed) {
            CHECK_DIFF(old, c, {CONF_POOL_CHANGED, "green", "-", "-"});
            CHECK_DIFF(c, old, {CONF_POOL_CHANGED, "green", "-", "-"});
        } else if (c) {
            CHECK_NO_DIFF(old, c);
        }
        conf_free(c);
        free(to);
    }

    /* between two settings of the same pool */
    static const char grpc[] = "  - name: green\n"
                               "    protocol: h2c\n"
                               "    send_proxy: v1\n"
                               "    health_check: {protocol: grpc, service: app}\n";
    static const struct {
        const char *from, *to;
        bool changed;
    } pool_edits[] = {
        {"service: app", "service: app2", true},
        {", service: app", "", true},
        {"send_proxy: v1", "send_proxy: v2", true},
        {"protocol: h2c", "protocol: h2\n    tls: {sni: x.internal}", true},
    };
    char *with = edit(green, grpc);
    for (size_t i = 0; i < sizeof(pool_edits) / sizeof(pool_edits[0]); i++) {
        const char *at = strstr(with, pool_edits[i].from);
        char *y = NULL;
        if (!at || asprintf(&y, "%.*s%s%s", (int)(at - with), with, pool_edits[i].to,
                            at + strlen(pool_edits[i].from)) < 0)
            abort();
        struct conf *a = load(with), *b = load(y);
        if (a && b && pool_edits[i].changed)
            CHECK_DIFF(a, b, {CONF_POOL_CHANGED, "green", "-", "-"});
        else if (a && b)
            CHECK_NO_DIFF(a, b);
        conf_free(a);
        conf_free(b);
        free(y);
    }
    free(with);

    static const char web[] = "    pools: {blue";
    static const struct {
        const char *to; /* inserted before web's pools */
        bool changed;
    } listener_cases[] = {
        {"    http2: auto\n", false},
        {"    http2: false\n", true},
        {"    proxy_protocol: false\n", false},
        /* networks that do nothing while proxy_protocol is off */
        {"    proxy_protocol_from: [10.0.0.0/8]\n", false},
        {"    proxy_protocol: v1\n    proxy_protocol_from: [10.0.0.0/8]\n", true},
        {"    proxy_protocol: any\n    proxy_protocol_from: [\"::1\"]\n", true},
        /* the default route's split is the listener's; routes are not */
        {"    routes: [{name: r, pools: {blue: 1}}]\n", false},
    };
    for (size_t i = 0; i < sizeof(listener_cases) / sizeof(listener_cases[0]); i++) {
        char *to = NULL;
        if (asprintf(&to, "%s%s", listener_cases[i].to, web) < 0)
            abort();
        struct conf *c = EDITED(web, to);
        if (c && i == sizeof(listener_cases) / sizeof(listener_cases[0]) - 1) {
            CHECK_DIFF(old, c, {CONF_ROUTE_ADDED, "-", "-", "web", "r"});
        } else if (c && listener_cases[i].changed) {
            CHECK_DIFF(old, c, {CONF_LISTENER_SPLIT, "-", "-", "web"});
            CHECK_DIFF(c, old, {CONF_LISTENER_SPLIT, "-", "-", "web"});
        } else if (c) {
            CHECK_NO_DIFF(old, c);
        }
        conf_free(c);
        free(to);
    }
    static const char pp[] = "    proxy_protocol: v2\n"
                             "    proxy_protocol_from: [10.0.0.0/8, \"::1\"]\n"
                             "    pools: {blue";
    static const struct {
        const char *from, *to;
        bool changed;
    } listener_edits[] = {
        {"10.0.0.0/8, ", "10.0.0.0/16, ", true},
        {"10.0.0.0/8, ", "", true},
        {"\"::1\"", "\"0:0::1\"", false}, /* the same network, written otherwise */
        {"v2", "any", true},
    };
    with = edit(web, pp);
    for (size_t i = 0; i < sizeof(listener_edits) / sizeof(listener_edits[0]); i++) {
        const char *at = strstr(with, listener_edits[i].from);
        char *y = NULL;
        if (!at || asprintf(&y, "%.*s%s%s", (int)(at - with), with, listener_edits[i].to,
                            at + strlen(listener_edits[i].from)) < 0)
            abort();
        struct conf *a = load(with), *b = load(y);
        if (a && b && listener_edits[i].changed)
            CHECK_DIFF(a, b, {CONF_LISTENER_SPLIT, "-", "-", "web"});
        else if (a && b)
            CHECK_NO_DIFF(a, b);
        conf_free(a);
        conf_free(b);
        free(y);
    }
    free(with);

    /* certificates and strict_sni */
    char dir[] = "/tmp/usher-test-diff-XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(!"mkdtemp");
        return;
    }
    char *files[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++) {
        if (asprintf(&files[i], "%s/f%d.pem", dir, i) < 0)
            abort();
        FILE *f = fopen(files[i], "w");
        if (f)
            fclose(f);
    }
    char *t0 = NULL, *t1 = NULL, *t2 = NULL, *t3 = NULL;
    if (asprintf(&t0, "    tls: {cert: %s, key: %s}\n%s", files[0], files[0], web) < 0 ||
        asprintf(&t1, "    tls: {cert: %s, key: %s, certificates: [{cert: %s, key: %s}]}\n%s",
                 files[0], files[0], files[1], files[1], web) < 0 ||
        asprintf(&t2, "    tls: {cert: %s, key: %s, certificates: [{cert: %s, key: %s}]}\n%s",
                 files[0], files[0], files[2], files[1], web) < 0 ||
        asprintf(&t3, "    tls: {cert: %s, key: %s, strict_sni: true}\n%s", files[0], files[0],
                 web) < 0)
        abort();
    struct conf *c0 = EDITED(web, t0), *c1 = EDITED(web, t1), *c2 = EDITED(web, t2),
                *c3 = EDITED(web, t3);
    if (c0 && c1 && c2 && c3) {
        CHECK_DIFF(c0, c1, {CONF_LISTENER_SPLIT, "-", "-", "web"});
        CHECK_DIFF(c1, c2, {CONF_LISTENER_SPLIT, "-", "-", "web"});
        CHECK_DIFF(c0, c3, {CONF_LISTENER_SPLIT, "-", "-", "web"});
        CHECK_NO_DIFF(c1, c1);
    }
    conf_free(c0);
    conf_free(c1);
    conf_free(c2);
    conf_free(c3);
    free(t0);
    free(t1);
    free(t2);
    free(t3);
    for (int i = 0; i < 3; i++) {
        unlink(files[i]);
        free(files[i]);
    }
    rmdir(dir);
}

static void test_kind_names(void)
{
    CHECK(strcmp(conf_change_kind_str(CONF_BACKEND_ADDED), "backend_added") == 0);
    CHECK(strcmp(conf_change_kind_str(CONF_BACKEND_REMOVED), "backend_removed") == 0);
    CHECK(strcmp(conf_change_kind_str(CONF_BACKEND_WEIGHT), "backend_weight") == 0);
    CHECK(strcmp(conf_change_kind_str(CONF_POOL_ADDED), "pool_added") == 0);
    CHECK(strcmp(conf_change_kind_str(CONF_POOL_REMOVED), "pool_removed") == 0);
    CHECK(strcmp(conf_change_kind_str(CONF_POOL_CHANGED), "pool_changed") == 0);
    CHECK(strcmp(conf_change_kind_str(CONF_LISTENER_ADDED), "listener_added") == 0);
    CHECK(strcmp(conf_change_kind_str(CONF_LISTENER_REMOVED), "listener_removed") == 0);
    CHECK(strcmp(conf_change_kind_str(CONF_LISTENER_SPLIT), "listener_split") == 0);
    CHECK(strcmp(conf_change_kind_str(CONF_ROUTE_ADDED), "route_added") == 0);
    CHECK(strcmp(conf_change_kind_str(CONF_ROUTE_REMOVED), "route_removed") == 0);
    CHECK(strcmp(conf_change_kind_str(CONF_ROUTE_CHANGED), "route_changed") == 0);
    CHECK(strcmp(conf_change_kind_str((enum conf_change_kind)0), "?") == 0);
}

int main(void)
{
    struct conf *old = load(base);

    if (old) {
        test_no_change(old);
        test_backends(old);
        test_backend_identity(old);
        test_pools(old);
        test_pool_new_settings(old);
        test_listeners(old);
        test_tls(old);
        test_order(old);
        test_from_nothing(old);
        test_new_settings(old);
    }
    test_routes();
    test_kind_names();
    conf_free(old);
    return check_report("test_conf_diff");
}
