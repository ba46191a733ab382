// links: usher_proxy_core
/* The route table (proxy/core/route.c): every precedence rule of DESIGN
 * "Routes and certificates" as a table of requests, segment boundaries,
 * query strings, ports, trailing dots, IPv6 literals, case, wildcards
 * against the apex, header tie-breaks, written order, strip_prefix and the
 * host normaliser. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parser/http1-t.h"
#include "proxy/core/route.h"

#include "test/unit/check.h"

#define MAX_FIELDS 8

/* The route tables below are short literals that leave the fields a route
 * does not use zero: that is what they mean, not an oversight. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

/* A route as a test writes it: the name is its data. */
struct troute {
    const char *name;
    const char *hosts[4];
    struct route_path_spec paths[4];
    struct route_header_spec headers[4];
};

/* A request and the route it must reach (NULL: none), with the prefix
 * length it must report. */
struct tcase {
    const char *host; /* NULL: no Host */
    const char *path;
    const char *fields; /* "Name: value\n..." or NULL */
    const char *want;
    size_t prefix_len;
};

static size_t count_hosts(const struct troute *r)
{
    size_t n = 0;
    while (n < 4 && r->hosts[n])
        n++;
    return n;
}

static size_t count_paths(const struct troute *r)
{
    size_t n = 0;
    while (n < 4 && r->paths[n].text)
        n++;
    return n;
}

static size_t count_headers(const struct troute *r)
{
    size_t n = 0;
    while (n < 4 && r->headers[n].name)
        n++;
    return n;
}

static struct route_table *build(const struct troute *routes, size_t n)
{
    struct route_spec specs[32];
    struct route_table *t = NULL;
    for (size_t i = 0; i < n; i++) {
        specs[i] = (struct route_spec){
            .hosts = routes[i].hosts,
            .n_hosts = count_hosts(&routes[i]),
            .paths = routes[i].paths,
            .n_paths = count_paths(&routes[i]),
            .headers = routes[i].headers,
            .n_headers = count_headers(&routes[i]),
            .data = (void *)routes[i].name,
        };
    }
    size_t bad = 0;
    const char *reason = NULL;
    int rc = route_table_build(specs, n, &t, &bad, &reason);
    CHECK_INT(rc, 0);
    if (rc < 0)
        fprintf(stderr, "route %zu: %s\n", bad, reason ? reason : "?");
    else
        CHECK_EQ(route_table_count(t), n);
    return t;
}

/* Splits "Name: value\n..." into header fields (views into <text>). */
static size_t make_fields(const char *text, struct http1_header *f)
{
    size_t n = 0;
    const char *p = text;
    while (p && *p && n < MAX_FIELDS) {
        const char *colon = strchr(p, ':');
        const char *nl = strchr(p, '\n');
        const char *end = nl ? nl : p + strlen(p);
        f[n].name = (struct http1_slice){p, (size_t)(colon - p)};
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        f[n].value = (struct http1_slice){v, (size_t)(end - v)};
        n++;
        p = nl ? nl + 1 : NULL;
    }
    return n;
}

static void run_cases(int line, const struct route_table *t, const struct tcase *cases, size_t n)
{
    char ctx[256];
    for (size_t i = 0; i < n; i++) {
        const struct tcase *c = &cases[i];
        struct http1_header fields[MAX_FIELDS];
        struct http1_message msg = {.headers = fields};
        msg.num_headers = c->fields ? make_fields(c->fields, fields) : 0;
        struct route_request req = {
            .host = c->host,
            .host_len = c->host ? strlen(c->host) : 0,
            .path = c->path,
            .path_len = strlen(c->path),
            .has_header = route_http1_has_header,
            .ctx = &msg,
        };
        struct route_match m = {0};
        snprintf(ctx, sizeof(ctx), "line %d, case %zu: host %s path \"%s\" fields %s", line, i,
                 c->host ? c->host : "(none)", c->path, c->fields ? c->fields : "(none)");
        check_context = ctx;
        int rc = route_match(t, &req, &m);
        if (!c->want) {
            CHECK_INT(rc, ROUTE_NO_MATCH);
        } else if (rc != 0) {
            check_fail(__FILE__, line, NULL, "no match, expected %s", c->want);
        } else {
            CHECK_STR((const char *)m.data, c->want);
            CHECK_EQ(m.prefix_len, c->prefix_len);
        }
    }
    check_context = NULL;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define P(s)                                                                                       \
    {                                                                                              \
        s, false                                                                                   \
    }
#define EXACT(s)                                                                                   \
    {                                                                                              \
        s, true                                                                                    \
    }

/* Host first: exact, longer wildcard, shorter wildcard, no hosts. */
static void test_host_precedence(void)
{
    static const struct troute routes[] = {
        {"wild-short", {"*.example.com"}}, {"wild-long", {"*.b.example.com"}},
        {"exact", {"a.b.example.com"}},    {"any"},
        {"apex", {"example.com"}},         {"two-hosts", {"one.test", "*.two.test"}},
    };
    static const struct tcase cases[] = {
        {"a.b.example.com", "/", NULL, "exact", 0},
        {"x.b.example.com", "/", NULL, "wild-long", 0},
        {"y.x.b.example.com", "/", NULL, "wild-long", 0},
        {"c.example.com", "/", NULL, "wild-short", 0},
        {"z.y.example.com", "/", NULL, "wild-short", 0},
        {"b.example.com", "/", NULL, "wild-short", 0}, /* *.b does not cover b */
        {"example.com", "/", NULL, "apex", 0},         /* *.example.com does not cover it */
        {"notexample.com", "/", NULL, "any", 0},
        {"other.org", "/", NULL, "any", 0},
        {NULL, "/", NULL, "any", 0},
        {"", "/", NULL, "any", 0},
        /* case, port, trailing dot, IPv6 and IPv4 literals */
        {"A.B.EXAMPLE.COM", "/", NULL, "exact", 0},
        {"a.b.example.com:8080", "/", NULL, "exact", 0},
        {"a.b.example.com.", "/", NULL, "exact", 0},
        {"A.b.Example.com.:443", "/", NULL, "exact", 0},
        {"Q.B.example.COM:1", "/", NULL, "wild-long", 0},
        {"example.com.", "/", NULL, "apex", 0},
        {"example.com..", "/", NULL, "any", 0},
        {"[::1]:8080", "/", NULL, "any", 0},
        {"[2001:db8::1]", "/", NULL, "any", 0},
        {"127.0.0.1:80", "/", NULL, "any", 0},
        {":80", "/", NULL, "any", 0},
        /* a route with several hosts is in each of their groups */
        {"one.test", "/", NULL, "two-hosts", 0},
        {"x.two.test", "/", NULL, "two-hosts", 0},
        {"two.test", "/", NULL, "any", 0},
    };
    struct route_table *t = build(routes, N(routes));
    run_cases(__LINE__, t, cases, N(cases));
    route_table_free(t);

    /* without a host-less route, an unknown host matches nothing */
    static const struct troute host_only[] = {
        {"exact", {"a.example.com"}},
        {"wild", {"*.example.com"}},
    };
    static const struct tcase misses[] = {
        {"a.example.com", "/x", NULL, "exact", 0},
        {"example.com", "/x", NULL, NULL, 0},
        {"a.example.org", "/x", NULL, NULL, 0},
        {NULL, "/x", NULL, NULL, 0},
        {"[::1]", "/x", NULL, NULL, 0},
    };
    t = build(host_only, N(host_only));
    run_cases(__LINE__, t, misses, N(misses));
    route_table_free(t);
}

/* Lexicographic over the routes that match: a host group whose routes miss
 * the path or headers hands over to the next one. */
static void test_fall_through(void)
{
    static const struct troute routes[] = {
        {"exact-v1", {"api.example.com"}, {P("/v1/")}},
        {"wild-any", {"*.example.com"}},
        {"wild-v2", {"*.example.com"}, {P("/v2")}},
        {"any-v3", {NULL}, {P("/v3")}},
        {"any", {NULL}},
        {"exact-hdr", {"h.example.com"}, {{NULL}}, {{"x-env", "blue"}}},
        {"deep-wild-v4", {"*.api.example.com"}, {P("/v4")}},
    };
    static const struct tcase cases[] = {
        {"api.example.com", "/v1/x", NULL, "exact-v1", 3},
        {"api.example.com", "/v2/x", NULL, "wild-v2", 3}, /* exact host: no /v2 */
        {"api.example.com", "/v3", NULL, "wild-any", 0},  /* a wildcard beats no host */
        {"api.example.com", "/v10", NULL, "wild-any", 0},
        {"x.api.example.com", "/v1/x", NULL, "wild-any", 0},
        {"x.api.example.com", "/v4/y", NULL, "deep-wild-v4", 3},
        {"x.api.example.com", "/v2", NULL, "wild-v2", 3}, /* the longer wildcard misses */
        {"other.org", "/v3/a", NULL, "any-v3", 3},
        {"other.org", "/x", NULL, "any", 0},
        {"h.example.com", "/", "x-env: blue", "exact-hdr", 0},
        {"h.example.com", "/", "x-env: green", "wild-any", 0},
        {"h.example.com", "/v2", "x-env: blue", "exact-hdr", 0}, /* host before path */
    };
    struct route_table *t = build(routes, N(routes));
    run_cases(__LINE__, t, cases, N(cases));
    route_table_free(t);
}

/* Path second: exact, longer prefix, shorter prefix, "/", no paths; whole
 * segments; the query string ignored. */
static void test_path_precedence(void)
{
    static const struct troute routes[] = {
        {"root", {NULL}, {P("/")}},
        {"v1", {NULL}, {P("/v1/")}},
        {"v1-noslash", {NULL}, {P("/v1")}}, /* the same prefix, written later */
        {"v1-users", {NULL}, {P("/v1/users")}},
        {"exact-v1-users", {NULL}, {EXACT("/v1/users")}},
        {"none"},
        {"health", {NULL}, {EXACT("/healthz"), P("/status/")}},
        {"exact-root", {NULL}, {EXACT("/")}},
        {"deep", {NULL}, {P("/a/b/c/d/e/f/g/")}},
    };
    static const struct tcase cases[] = {
        {"h", "/v1/users", NULL, "exact-v1-users", 9},
        {"h", "/v1/users?x=1", NULL, "exact-v1-users", 9},
        {"h", "/v1/users/", NULL, "v1-users", 9},
        {"h", "/v1/users/42", NULL, "v1-users", 9},
        {"h", "/v1/users/42?a=/v2/", NULL, "v1-users", 9},
        {"h", "/v1/usersX", NULL, "v1", 3},
        {"h", "/v1/user", NULL, "v1", 3},
        {"h", "/v1", NULL, "v1", 3},
        {"h", "/v1/", NULL, "v1", 3},
        {"h", "/v1?q", NULL, "v1", 3},
        {"h", "/v1/?q", NULL, "v1", 3},
        {"h", "/v1//users", NULL, "v1", 3},
        {"h", "/v10", NULL, "root", 0},
        {"h", "/v", NULL, "root", 0},
        {"h", "/V1/users", NULL, "root", 0}, /* paths are case-sensitive */
        {"h", "/x/v1/users", NULL, "root", 0},
        {"h", "/", NULL, "exact-root", 1},
        {"h", "/?a=b", NULL, "exact-root", 1},
        {"h", "", NULL, "exact-root", 0}, /* empty: "/", nothing to strip */
        {"h", "?a=1", NULL, "exact-root", 0},
        {"h", "*", NULL, "root", 0}, /* OPTIONS * */
        {"h", "/healthz", NULL, "health", 8},
        {"h", "/healthz?probe=1", NULL, "health", 8},
        {"h", "/healthz/x", NULL, "root", 0}, /* an exact path is not a prefix */
        {"h", "/healthzz", NULL, "root", 0},
        {"h", "/status", NULL, "health", 7},
        {"h", "/status/x/y", NULL, "health", 7},
        {"h", "/a/b/c/d/e/f/g/h", NULL, "deep", 14},
        {"h", "/a/b/c/d/e/f/g", NULL, "deep", 14},
        {"h", "/a/b/c/d/e/f/gg", NULL, "root", 0},
    };
    struct route_table *t = build(routes, N(routes));
    run_cases(__LINE__, t, cases, N(cases));
    route_table_free(t);

    /* without "/", a path no prefix covers goes to the route without paths */
    static const struct troute no_root[] = {
        {"v1", {NULL}, {P("/v1")}},
        {"none"},
        {"v1-again", {NULL}, {P("/v1/")}},
    };
    static const struct tcase cases2[] = {
        {"h", "/v1/x", NULL, "v1", 3},
        {"h", "/x", NULL, "none", 0},
        {"h", "/", NULL, "none", 0},
        {"h", "", NULL, "none", 0},
    };
    t = build(no_root, N(no_root));
    run_cases(__LINE__, t, cases2, N(cases2));
    route_table_free(t);

    /* only paths: a path nothing covers matches nothing */
    static const struct troute paths_only[] = {
        {"v1", {NULL}, {P("/v1")}},
        {"exact", {NULL}, {EXACT("/x")}},
    };
    static const struct tcase cases3[] = {
        {"h", "/v2", NULL, NULL, 0},
        {"h", "/x/", NULL, NULL, 0},
        {"h", "/x", NULL, "exact", 2},
        {"h", "", NULL, NULL, 0},
    };
    t = build(paths_only, N(paths_only));
    run_cases(__LINE__, t, cases3, N(cases3));
    route_table_free(t);
}

/* Headers third (more first), written order last. */
static void test_header_precedence(void)
{
    static const struct troute routes[] = {
        {"plain", {NULL}, {P("/api")}},
        {"canary", {NULL}, {P("/api")}, {{"x-canary", "1"}}},
        {"canary-beta", {NULL}, {P("/api")}, {{"x-canary", "1"}, {"x-beta", "yes"}}},
        {"canary-again", {NULL}, {P("/api")}, {{"x-canary", "1"}}}, /* a tie: written later */
        {"short-hdr", {NULL}, {P("/")}, {{"x-canary", "1"}}},
        {"plain-again", {NULL}, {P("/api/")}},
        {"mixed-case", {NULL}, {P("/mc")}, {{"X-Mixed", "Value"}}},
    };
    static const struct tcase cases[] = {
        {"h", "/api", NULL, "plain", 4},
        {"h", "/api/x", "x-canary: 1", "canary", 4},
        {"h", "/api", "X-Canary: 1", "canary", 4}, /* names case-insensitive */
        {"h", "/api", "x-canary: 2", "plain", 4},
        {"h", "/api", "x-canary: 1, 2", "plain", 4}, /* exact value */
        {"h", "/api", "x-canary: 11", "plain", 4},
        {"h", "/api", "x-canary: ", "plain", 4},
        {"h", "/api", "x-canary-x: 1", "plain", 4},
        {"h", "/api", "x-canary: 2\nx-canary: 1", "canary", 4}, /* some field has it */
        {"h", "/api", "x-canary: 1\nx-beta: yes", "canary-beta", 4},
        {"h", "/api", "x-beta: yes\nX-CANARY: 1", "canary-beta", 4},
        {"h", "/api", "x-canary: 1\nx-beta: YES", "canary", 4}, /* values case-sensitive */
        {"h", "/api", "x-beta: yes", "plain", 4},
        {"h", "/other", "x-canary: 1", "short-hdr", 0}, /* a path beats headers */
        {"h", "/other", NULL, NULL, 0},
        {"h", "/mc", "x-mixed: Value", "mixed-case", 3},
        {"h", "/mc", "x-mixed: value", NULL, 0},
    };
    struct route_table *t = build(routes, N(routes));
    run_cases(__LINE__, t, cases, N(cases));

    /* no header accessor: header routes never match */
    struct route_request req = {.host = "h", .host_len = 1, .path = "/api", .path_len = 4};
    struct route_match m;
    CHECK_INT(route_match(t, &req, &m), 0);
    CHECK_STR((const char *)m.data, "plain");
    route_table_free(t);

    /* written order: identical routes, the first wins; with hosts too */
    static const struct troute ties[] = {
        {"first", {"a.test", "*.b.test"}, {P("/x")}},
        {"second", {"*.b.test", "a.test"}, {P("/x/")}},
        {"third", {"A.test"}, {P("/x")}},
    };
    static const struct tcase cases2[] = {
        {"a.test", "/x/y", NULL, "first", 2},
        {"c.b.test", "/x", NULL, "first", 2},
    };
    t = build(ties, N(ties));
    run_cases(__LINE__, t, cases2, N(cases2));
    route_table_free(t);
}

static void test_empty_and_errors(void)
{
    struct route_table *t = NULL;
    struct route_match m;
    struct route_request req = {.host = "a", .host_len = 1, .path = "/", .path_len = 1};
    size_t bad = 99;
    const char *reason = NULL;

    CHECK_INT(route_table_build(NULL, 0, &t, &bad, &reason), 0);
    CHECK_INT(route_match(t, &req, &m), ROUTE_NO_MATCH);
    CHECK_EQ(route_table_count(t), 0);
    route_table_free(t);
    route_table_free(NULL);

    static const char *const bad_hosts[] = {"*.", "a..b", "", "a.*.b", "a.b."};
    for (size_t i = 0; i < N(bad_hosts); i++) {
        const char *hosts[] = {"ok.test", bad_hosts[i]};
        struct route_spec specs[2] = {{.data = "x"}, {.hosts = hosts, .n_hosts = 2, .data = "y"}};
        check_context = bad_hosts[i];
        t = (struct route_table *)&bad; /* must be reset */
        CHECK_INT(route_table_build(specs, 2, &t, &bad, &reason), -EINVAL);
        CHECK(t == NULL);
        CHECK_EQ(bad, 1);
        CHECK_STR(reason, "bad host");
    }
    static const char *const bad_paths[] = {"", "v1", "*"};
    for (size_t i = 0; i < N(bad_paths); i++) {
        struct route_path_spec paths[] = {{"/ok", false}, {bad_paths[i], i == 2}};
        struct route_spec spec = {.paths = paths, .n_paths = 2, .data = "x"};
        check_context = bad_paths[i];
        CHECK_INT(route_table_build(&spec, 1, &t, &bad, &reason), -EINVAL);
        CHECK_EQ(bad, 0);
        CHECK_STR(reason, "bad path");
    }
    struct route_header_spec hdr = {"", "1"};
    struct route_spec spec = {.headers = &hdr, .n_headers = 1};
    CHECK_INT(route_table_build(&spec, 1, &t, NULL, NULL), -EINVAL);
    CHECK_INT(route_table_build(&spec, 1, &t, &bad, &reason), -EINVAL);
    CHECK_STR(reason, "bad header");
    check_context = NULL;
}

/* A thousand host routes, each with its own paths: every one found, and
 * its neighbours' paths not taken for its own. */
static void test_many_hosts(void)
{
    enum { N_ROUTES = 1000 };
    static char names[N_ROUTES][40], wild[N_ROUTES][40];
    static const char *hosts[N_ROUTES][2];
    static struct route_path_spec paths[N_ROUTES][2];
    static char path_text[N_ROUTES][24];
    static struct route_spec specs[N_ROUTES + 1];
    for (int i = 0; i < N_ROUTES; i++) {
        snprintf(names[i], sizeof(names[i]), "svc%d.example.com", i);
        snprintf(wild[i], sizeof(wild[i]), "*.svc%d.example.com", i);
        snprintf(path_text[i], sizeof(path_text[i]), "/api/v%d/", i);
        hosts[i][0] = names[i];
        hosts[i][1] = wild[i];
        paths[i][0] = (struct route_path_spec){path_text[i], false};
        paths[i][1] = (struct route_path_spec){"/ping", true};
        specs[i] = (struct route_spec){
            .hosts = hosts[i], .n_hosts = 2, .paths = paths[i], .n_paths = 2, .data = names[i]};
    }
    specs[N_ROUTES] = (struct route_spec){.data = "default"};
    struct route_table *t = NULL;
    CHECK_INT(route_table_build(specs, N_ROUTES + 1, &t, NULL, NULL), 0);
    if (!t)
        return;

    int wrong = 0;
    char host[64], path[64];
    struct route_match m;
    for (int i = 0; i < N_ROUTES; i++) {
        struct route_request req = {.host = host, .path = path};
        req.host_len = (size_t)snprintf(host, sizeof(host), "x.SVC%d.example.com:443", i);
        req.path_len = (size_t)snprintf(path, sizeof(path), "/api/v%d/items?id=%d", i, i);
        wrong += route_match(t, &req, &m) != 0 || m.index != (size_t)i || m.data != names[i];
        req.path_len = (size_t)snprintf(path, sizeof(path), "/api/v%d/items", (i + 1) % N_ROUTES);
        wrong += route_match(t, &req, &m) != 0 || m.index != N_ROUTES;
        req.path_len = (size_t)snprintf(path, sizeof(path), "/ping");
        wrong += route_match(t, &req, &m) != 0 || m.index != (size_t)i || m.prefix_len != 5;
    }
    CHECK_INT(wrong, 0);
    route_table_free(t);
}

static void test_strip_prefix(void)
{
    static const struct {
        const char *path;
        size_t prefix_len;
        const char *want;
    } cases[] = {
        {"/v1/users", 3, "/users"},
        {"/v1/users?a=1", 3, "/users?a=1"},
        {"/v1", 3, "/"},
        {"/v1/", 3, "/"},
        {"/v1?a=1", 3, "/?a=1"},
        {"/v1/x?a=1", 3, "/x?a=1"},
        {"/healthz", 8, "/"},
        {"/healthz?x", 8, "/?x"},
        {"/x", 0, "/x"},
        {"/x?y", 0, "/x?y"},
        {"", 0, "/"},
        {"?a", 0, "/?a"},
        {"/a/b/c", 4, "/c"},
        {"/v1", 9, "/"}, /* a prefix_len past the end */
    };
    for (size_t i = 0; i < N(cases); i++) {
        const char *rest;
        size_t rest_len;
        char out[64];
        bool slash = route_strip_prefix(cases[i].path, strlen(cases[i].path), cases[i].prefix_len,
                                        &rest, &rest_len);
        snprintf(out, sizeof(out), "%s%.*s", slash ? "/" : "", (int)rest_len, rest);
        check_context = cases[i].path;
        CHECK_STR(out, cases[i].want);
    }
    check_context = NULL;

    /* end to end: the prefix route_match reports is what strip removes */
    static const struct troute routes[] = {
        {"v1", {NULL}, {P("/v1/")}},
        {"hz", {NULL}, {EXACT("/healthz")}},
        {"root", {NULL}, {P("/")}},
    };
    static const struct {
        const char *path, *want;
    } e2e[] = {
        {"/v1/users", "/users"},
        {"/v1", "/"},
        {"/v1?a=1", "/?a=1"},
        {"/v1/x?a=1", "/x?a=1"},
        {"/healthz?a", "/?a"},
        {"/other?q", "/other?q"},
        {"", "/"},
    };
    struct route_table *t = build(routes, N(routes));
    for (size_t i = 0; i < N(e2e); i++) {
        struct route_request req = {.path = e2e[i].path, .path_len = strlen(e2e[i].path)};
        struct route_match m;
        const char *rest;
        size_t rest_len;
        char out[64];
        check_context = e2e[i].path;
        CHECK_INT(route_match(t, &req, &m), 0);
        bool slash = route_strip_prefix(req.path, req.path_len, m.prefix_len, &rest, &rest_len);
        snprintf(out, sizeof(out), "%s%.*s", slash ? "/" : "", (int)rest_len, rest);
        CHECK_STR(out, e2e[i].want);
    }
    check_context = NULL;
    route_table_free(t);
}

static void test_host_normalize(void)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"a.example", "a.example"},
        {"a.example:8080", "a.example"},
        {"a.example.", "a.example"},
        {"a.example.:80", "a.example"},
        {"A.Example", "A.Example"},
        {"[::1]:8080", "[::1]"},
        {"[::1]", "[::1]"},
        {"[2001:db8::1]:443", "[2001:db8::1]"},
        {"[::1", "[::1"},
        {"", ""},
        {":80", ""},
        {".", ""},
        {"127.0.0.1:80", "127.0.0.1"},
        {"a.example..", "a.example."},
    };
    for (size_t i = 0; i < N(cases); i++) {
        const char *out;
        char got[64];
        size_t n = route_host_normalize(cases[i].in, strlen(cases[i].in), &out);
        snprintf(got, sizeof(got), "%.*s", (int)n, out);
        check_context = cases[i].in;
        CHECK_STR(got, cases[i].want);
        CHECK(out == cases[i].in); /* a view, never a copy */
    }
    check_context = NULL;
}

int main(void)
{
    test_host_precedence();
    test_fall_through();
    test_path_precedence();
    test_header_precedence();
    test_empty_and_errors();
    test_many_hosts();
    test_strip_prefix();
    test_host_normalize();
    return check_report("test_route");
}
