/* The configuration loader: YAML (libyaml document API) -> struct conf.
 *
 * The schema is data, not code: one table per mapping of DESIGN.md (root,
 * its sections, a listener, a pool, a backend, a health check, tls). Each
 * row says the key, its type, its bounds, its default and where the value
 * lands in the struct; one generic walker applies the defaults, parses each
 * value by its type and reports every mistake with its position, so adding a
 * key is adding a row. What a row cannot say (names unique, a listener's pool
 * exists, bind addresses distinct, timeout < interval) is checked after the
 * walk, by the functions under "cross-checks".
 *
 * Every error reads "file:line:column: key: reason", with 1-based positions
 * and the dotted key path ("pools[0].backends[1].address"). All errors of a
 * file are collected and handed out sorted by position. */
#include "conf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

/* ---- arena: every allocation of one struct conf, freed in one go -------- */

struct arena_block {
    struct arena_block *next;
    max_align_t data[];
};

struct arena {
    struct arena_block *head;
};

static void *arena_alloc(struct arena *a, size_t size)
{
    struct arena_block *b = calloc(1, sizeof(*b) + size);

    if (!b)
        return NULL;
    b->next = a->head;
    a->head = b;
    return b->data;
}

static char *arena_strdup(struct arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = arena_alloc(a, n);

    if (p)
        memcpy(p, s, n);
    return p;
}

static void arena_free(struct arena *a)
{
    while (a && a->head) {
        struct arena_block *b = a->head;
        a->head = b->next;
        free(b);
    }
}

/* ---- the schema --------------------------------------------------------- */

enum key_type {
    T_SECTION = 1, /* a mapping described by key->sub; same base struct */
    T_LIST,        /* a list of mappings, each a new element of key->sub->elem_size */
    T_BOOL,        /* true | false */
    T_UINT,        /* unsigned, within [min, max] */
    T_DURATION,    /* conf_ms, within [min, max] */
    T_ENUM,        /* one of key->names, stored as an int */
    T_NAME,        /* an identifier: listener, pool, backend names */
    T_HTTP_PATH,   /* an absolute URL path such as /healthz */
    T_ADDRESS,     /* struct conf_address, resolved at load */
    T_FILE,        /* a readable file; stored as a path */
    T_STATUS,      /* an HTTP status or range: stored at offset (min) and aux (max) */
    T_SPLITS,      /* a listener's pools map: pool name -> weight */
    T_WORKERS,     /* "auto" (stored as 0) or an unsigned within [min, max] */
    T_PORT,        /* uint16_t, 1..65535 */
    T_ADDRESSES,   /* a list of addresses: struct conf_address *, count at aux */
    T_TOKEN_FILE,  /* like T_FILE, holding a secret that must not be blank; "" = unset */
    T_STATE_FILE,  /* a path usher writes: need not exist, its directory must; "" = unset */
    T_HOSTNAME,    /* a DNS name to resolve later (discovery): checked, not resolved */
    T_KEY_PREFIX,  /* an etcd key prefix: starts and ends with "/" */
    T_INSTANCE,    /* a fleet instance id (name rules); "" = the host name */
};

#define K_REQUIRED 0x1u /* missing key is an error */
#define K_NONEMPTY 0x2u /* a list that must have at least one entry */
#define K_RESTART 0x4u  /* a reload cannot apply a change: see conf_restart_needed() */

#define NO_OFFSET ((size_t)-1)

struct enum_name {
    const char *name;
    int value;
};

struct loader;
struct section;

struct key {
    const char *name;
    enum key_type type;
    unsigned flags;
    size_t offset; /* where the value goes, from the base of the table's struct */
    size_t aux;    /* T_SECTION: bool set when present; T_LIST: its size_t count;
                      T_STATUS: the upper bound of the range */
    uint64_t min, max;
    uint64_t def;        /* default of a bool, integer, duration or enum */
    const char *def_str; /* default of a string, address or status */
    const struct enum_name *names;
    const struct section *sub;
    const char *dotted; /* full key path, for K_RESTART keys */
    const char *unless; /* K_REQUIRED: not required when this sibling key is present */
};

struct section {
    const struct key *keys; /* ends with a row whose name is NULL */
    size_t elem_size;       /* list elements: sizeof the element struct */
    size_t pos_offset;      /* list elements: their struct conf_pos */
    /* Rules across keys of one mapping; runs only when its keys parsed. */
    void (*check)(struct loader *l, void *base, yaml_node_t *map);
};

/* The most keys a mapping of the schema has: a bitmap of seen keys fits. */
#define SECTION_MAX_KEYS 16

#define MS(n) ((uint64_t)(n))
#define SEC(n) ((uint64_t)(n)*1000)
#define HOUR(n) ((uint64_t)(n)*3600000)

/* Weights are relative; a million leaves room for percentages with four
 * decimals while smooth weighted round robin sums stay far from overflow. */
#define WEIGHT_MAX 1000000
/* Consecutive checks to change state: beyond this, a typo. */
#define THRESHOLD_MAX 1000
/* Names end up in logs (key=value) and metric labels: keep them tame. */
#define NAME_MAX_LEN 64
#define HTTP_PATH_MAX_LEN 1024
/* DESIGN's bound for workers: more event-loop threads than this is a typo
 * on any host usher targets. */
#define WORKERS_MAX 256
/* A DNS name is at most 253 characters in text form, each label at most
 * 63 (RFC 1035 section 2.3.4). */
#define HOSTNAME_MAX_LEN 253
#define LABEL_MAX_LEN 63
/* A bearer token is a line of text: anything larger is not a token file. */
#define TOKEN_FILE_MAX_BYTES 4096
/* HTTP status codes are three digits, 1xx..5xx (RFC 9110 section 15). */
#define STATUS_MIN 100
#define STATUS_MAX 599
/* A config bigger than this is not a config. */
#define FILE_MAX_BYTES (16u << 20)

static const struct enum_name protocol_names[] = {
    {"http", CONF_PROTO_HTTP}, {"tcp", CONF_PROTO_TCP}, {NULL, 0}};
static const struct enum_name balance_names[] = {
    {"round_robin", CONF_BALANCE_ROUND_ROBIN}, {"least_conn", CONF_BALANCE_LEAST_CONN}, {NULL, 0}};
static const struct enum_name log_level_names[] = {{"debug", CONF_LOG_DEBUG},
                                                   {"info", CONF_LOG_INFO},
                                                   {"warn", CONF_LOG_WARN},
                                                   {"error", CONF_LOG_ERROR},
                                                   {NULL, 0}};
static const struct enum_name log_format_names[] = {
    {"text", CONF_LOG_TEXT}, {"json", CONF_LOG_JSON}, {NULL, 0}};
static const struct enum_name idle_close_names[] = {
    {"now", CONF_IDLE_CLOSE_NOW}, {"after_request", CONF_IDLE_CLOSE_AFTER_REQUEST}, {NULL, 0}};

static void check_health(struct loader *l, void *base, yaml_node_t *map);
static void check_discover(struct loader *l, void *base, yaml_node_t *map);
static void check_timeouts(struct loader *l, void *base, yaml_node_t *map);

#define KEY(T, n, ty, field, ...)                                                                  \
    {                                                                                              \
        .name = n, .type = ty, .offset = offsetof(T, field), __VA_ARGS__                           \
    }

/* health_check: offsets from struct conf_pool */
#define HC(n, ty, field, ...) KEY(struct conf_pool, n, ty, health_check.field, __VA_ARGS__)
static const struct key health_keys[] = {
    HC("protocol", T_ENUM, protocol, .names = protocol_names, .def = CONF_PROTO_HTTP),
    HC("path", T_HTTP_PATH, path, .def_str = "/healthz"),
    HC("interval", T_DURATION, interval, .min = MS(10), .max = CONF_DURATION_MAX, .def = SEC(2)),
    HC("timeout", T_DURATION, timeout, .min = MS(1), .max = CONF_DURATION_MAX, .def = SEC(1)),
    HC("healthy_threshold", T_UINT, healthy_threshold, .min = 1, .max = THRESHOLD_MAX, .def = 2),
    HC("unhealthy_threshold", T_UINT, unhealthy_threshold, .min = 1, .max = THRESHOLD_MAX,
       .def = 3),
    HC("expect_status", T_STATUS, expect_min,
       .aux = offsetof(struct conf_pool, health_check.expect_max), .def_str = "200-399"),
    {.name = NULL}};
static const struct section health_section = {.keys = health_keys, .check = check_health};

/* passive_health: offsets from struct conf_pool */
#define PH(n, ty, field, ...) KEY(struct conf_pool, n, ty, passive_health.field, __VA_ARGS__)
static const struct key passive_keys[] = {
    PH("consecutive_failures", T_UINT, consecutive_failures, .min = 1, .max = THRESHOLD_MAX,
       .def = 5),
    PH("ejection_time", T_DURATION, ejection_time, .min = MS(1), .max = CONF_DURATION_MAX,
       .def = SEC(30)),
    /* 0 still ejects one backend of a pool of two or more (DESIGN) */
    PH("max_ejected_percent", T_UINT, max_ejected_percent, .min = 0, .max = 100, .def = 50),
    {.name = NULL}};
static const struct section passive_section = {.keys = passive_keys};

/* discover: offsets from struct conf_pool */
#define DI(n, ty, field, ...) KEY(struct conf_pool, n, ty, discover.field, __VA_ARGS__)
static const struct key discover_keys[] = {
    DI("dns", T_HOSTNAME, dns, .flags = K_REQUIRED),
    /* required unless srv: see check_discover() */
    DI("port", T_PORT, port),
    DI("srv", T_BOOL, srv, .def = false),
    /* a query every 100ms per pool is already more than any TTL asks for */
    DI("interval", T_DURATION, interval, .min = MS(100), .max = CONF_DURATION_MAX, .def = SEC(5)),
    {.name = NULL}};
static const struct section discover_section = {.keys = discover_keys, .check = check_discover};

#define BE(n, ty, field, ...) KEY(struct conf_backend, n, ty, field, __VA_ARGS__)
static const struct key backend_keys[] = {
    BE("name", T_NAME, name, .flags = K_REQUIRED),
    BE("address", T_ADDRESS, address, .flags = K_REQUIRED),
    BE("weight", T_UINT, weight, .min = 0, .max = WEIGHT_MAX, .def = 1),
    {.name = NULL}};
static const struct section backend_section = {.keys = backend_keys,
                                               .elem_size = sizeof(struct conf_backend),
                                               .pos_offset = offsetof(struct conf_backend, pos)};

#define PO(n, ty, field, ...) KEY(struct conf_pool, n, ty, field, __VA_ARGS__)
static const struct key pool_keys[] = {
    PO("name", T_NAME, name, .flags = K_REQUIRED),
    PO("balance", T_ENUM, balance, .names = balance_names, .def = CONF_BALANCE_ROUND_ROBIN),
    PO("deregistration_delay", T_DURATION, deregistration_delay, .min = 0, .max = CONF_DURATION_MAX,
       .def = SEC(30)),
    PO("slow_start", T_DURATION, slow_start, .min = 0, .max = CONF_DURATION_MAX, .def = 0),
    PO("passive_health", T_SECTION, passive_health, .sub = &passive_section,
       .aux = offsetof(struct conf_pool, passive_health.enabled)),
    PO("discover", T_SECTION, discover, .sub = &discover_section,
       .aux = offsetof(struct conf_pool, discover.enabled)),
    PO("health_check", T_SECTION, health_check, .sub = &health_section,
       .aux = offsetof(struct conf_pool, health_check.enabled)),
    /* required unless discovered, but may be empty: a blue/green pool can
     * stand idle */
    PO("backends", T_LIST, backends, .flags = K_REQUIRED, .unless = "discover",
       .sub = &backend_section, .aux = offsetof(struct conf_pool, num_backends)),
    {.name = NULL}};
static const struct section pool_section = {.keys = pool_keys,
                                            .elem_size = sizeof(struct conf_pool),
                                            .pos_offset = offsetof(struct conf_pool, pos)};

#define LI(n, ty, field, ...) KEY(struct conf_listener, n, ty, field, __VA_ARGS__)
static const struct key tls_keys[] = {LI("cert", T_FILE, tls.cert, .flags = K_REQUIRED),
                                      LI("key", T_FILE, tls.key, .flags = K_REQUIRED),
                                      {.name = NULL}};
static const struct section tls_section = {.keys = tls_keys};

static const struct key listener_keys[] = {
    LI("name", T_NAME, name, .flags = K_REQUIRED),
    LI("bind", T_ADDRESS, bind, .flags = K_REQUIRED),
    LI("protocol", T_ENUM, protocol, .names = protocol_names, .def = CONF_PROTO_HTTP),
    LI("tls", T_SECTION, tls, .sub = &tls_section,
       .aux = offsetof(struct conf_listener, tls.enabled)),
    LI("pools", T_SPLITS, splits, .flags = K_REQUIRED, .max = WEIGHT_MAX,
       .aux = offsetof(struct conf_listener, num_splits)),
    {.name = NULL}};
static const struct section listener_section = {.keys = listener_keys,
                                                .elem_size = sizeof(struct conf_listener),
                                                .pos_offset = offsetof(struct conf_listener, pos)};

#define CF(n, ty, field, ...) KEY(struct conf, n, ty, field, __VA_ARGS__)
static const struct key admin_keys[] = {
    CF("bind", T_ADDRESS, admin.bind, .def_str = "127.0.0.1:9901", .flags = K_RESTART,
       .dotted = "admin.bind"),
    /* re-read at each reload: rotating the token needs no restart */
    CF("token_file", T_TOKEN_FILE, admin.token_file),
    CF("state_file", T_STATE_FILE, admin.state_file),
    CF("ready_requires_backends", T_BOOL, admin.ready_requires_backends, .def = false),
    {.name = NULL}};
static const struct section admin_section = {.keys = admin_keys};

static const struct key upgrade_keys[] = {CF("timeout", T_DURATION, upgrade.timeout, .min = MS(1),
                                             .max = CONF_DURATION_MAX, .def = SEC(30)),
                                          {.name = NULL}};
static const struct section upgrade_section = {.keys = upgrade_keys};

static const struct key shutdown_keys[] = {
    CF("drain_delay", T_DURATION, shutdown.drain_delay, .max = CONF_DURATION_MAX, .def = 0),
    CF("timeout", T_DURATION, shutdown.timeout, .max = CONF_DURATION_MAX, .def = SEC(30)),
    CF("close_spread", T_DURATION, shutdown.close_spread, .max = CONF_DURATION_MAX, .def = 0),
    CF("idle_close", T_ENUM, shutdown.idle_close, .names = idle_close_names,
       .def = CONF_IDLE_CLOSE_NOW),
    CF("tunnel_close_grace", T_DURATION, shutdown.tunnel_close_grace, .max = CONF_DURATION_MAX,
       .def = SEC(2)),
    {.name = NULL}};
static const struct section shutdown_section = {.keys = shutdown_keys};

#define TIMEOUT(n, dflt)                                                                           \
    CF(#n, T_DURATION, timeouts.n, .min = MS(1), .max = CONF_DURATION_MAX, .def = dflt)
static const struct key timeout_keys[] = {TIMEOUT(client_header, SEC(10)),
                                          TIMEOUT(client_idle, SEC(60)),
                                          TIMEOUT(connect, SEC(3)),
                                          TIMEOUT(backend, SEC(60)),
                                          /* absent: = backend, see check_timeouts() */
                                          TIMEOUT(first_byte, SEC(60)),
                                          TIMEOUT(tunnel, HOUR(1)),
                                          TIMEOUT(backend_idle, SEC(4)),
                                          {.name = NULL}};
static const struct section timeouts_section = {.keys = timeout_keys, .check = check_timeouts};

static const struct key limit_keys[] = {
    CF("max_connections", T_UINT, limits.max_connections, .min = 1, .max = 1000000, .def = 10000),
    /* a head below 1 KiB cannot hold ordinary browser requests */
    CF("max_head_bytes", T_UINT, limits.max_head_bytes, .min = 1024, .max = 1048576, .def = 16384),
    CF("max_headers", T_UINT, limits.max_headers, .min = 1, .max = 10000, .def = 100),
    CF("max_uri_bytes", T_UINT, limits.max_uri_bytes, .min = 16, .max = 1048576, .def = 8192),
    /* 0 turns upstream keep-alive pooling off */
    CF("backend_idle_connections", T_UINT, limits.backend_idle_connections, .min = 0, .max = 100000,
       .def = 64),
    {.name = NULL}};
static const struct section limits_section = {.keys = limit_keys};

static const struct key log_keys[] = {
    CF("level", T_ENUM, log.level, .names = log_level_names, .def = CONF_LOG_INFO),
    CF("format", T_ENUM, log.format, .names = log_format_names, .def = CONF_LOG_TEXT),
    CF("access", T_BOOL, log.access, .def = false),
    {.name = NULL}};
static const struct section log_section = {.keys = log_keys};

static const struct key resolver_keys[] = {
    CF("nameservers", T_ADDRESSES, resolver.nameservers,
       .aux = offsetof(struct conf, resolver.num_nameservers)),
    CF("hold", T_DURATION, resolver.hold, .max = CONF_DURATION_MAX, .def = SEC(30)),
    {.name = NULL}};
static const struct section resolver_section = {.keys = resolver_keys};

static const struct key fleet_keys[] = {
    CF("etcd", T_ADDRESSES, fleet.etcd, .flags = K_NONEMPTY, .def_str = "127.0.0.1:2379",
       .aux = offsetof(struct conf, fleet.num_etcd)),
    CF("prefix", T_KEY_PREFIX, fleet.prefix, .def_str = "/usher/"),
    CF("instance", T_INSTANCE, fleet.instance),
    {.name = NULL}};
static const struct section fleet_section = {.keys = fleet_keys};

static const struct key root_keys[] = {
    /* a reload keeps the running threads (DESIGN: an upgrade changes them) */
    CF("workers", T_WORKERS, workers, .min = 1, .max = WORKERS_MAX, .def = 0, .flags = K_RESTART,
       .dotted = "workers"),
    CF("admin", T_SECTION, admin, .sub = &admin_section,
       .aux = offsetof(struct conf, admin.enabled), .flags = K_RESTART, .dotted = "admin"),
    CF("upgrade", T_SECTION, upgrade, .sub = &upgrade_section, .aux = NO_OFFSET),
    CF("shutdown", T_SECTION, shutdown, .sub = &shutdown_section, .aux = NO_OFFSET),
    CF("timeouts", T_SECTION, timeouts, .sub = &timeouts_section, .aux = NO_OFFSET),
    CF("limits", T_SECTION, limits, .sub = &limits_section, .aux = NO_OFFSET),
    CF("log", T_SECTION, log, .sub = &log_section, .aux = NO_OFFSET),
    CF("listeners", T_LIST, listeners, .flags = K_REQUIRED | K_NONEMPTY, .sub = &listener_section,
       .aux = offsetof(struct conf, num_listeners)),
    CF("pools", T_LIST, pools, .flags = K_REQUIRED | K_NONEMPTY, .sub = &pool_section,
       .aux = offsetof(struct conf, num_pools)),
    CF("resolver", T_SECTION, resolver, .sub = &resolver_section,
       .aux = offsetof(struct conf, resolver.enabled)),
    CF("fleet", T_SECTION, fleet, .sub = &fleet_section,
       .aux = offsetof(struct conf, fleet.enabled)),
    {.name = NULL}};
static const struct section root_section = {.keys = root_keys};

#define FITS(keys) _Static_assert(sizeof(keys) / sizeof(keys[0]) <= SECTION_MAX_KEYS, #keys)
FITS(health_keys);
FITS(passive_keys);
FITS(discover_keys);
FITS(upgrade_keys);
FITS(resolver_keys);
FITS(fleet_keys);
FITS(backend_keys);
FITS(pool_keys);
FITS(tls_keys);
FITS(listener_keys);
FITS(admin_keys);
FITS(shutdown_keys);
FITS(timeout_keys);
FITS(limit_keys);
FITS(log_keys);
FITS(root_keys);
/* enums are stored through an int */
_Static_assert(sizeof(enum conf_protocol) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_balance) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_log_format) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_idle_close) == sizeof(int), "enum size");

/* ---- the loader ---------------------------------------------------------- */

/* Longest dotted key path kept for a message; deeper ones are cut. */
#define PATH_BUF 512
/* Longest user text quoted back in a message. */
#define QUOTE_MAX 64
#define QUOTE_BUF (QUOTE_MAX + 8)

struct pending_error {
    unsigned line, column;
    size_t seq;
    char *msg;
};

struct loader {
    const char *file;     /* name in messages */
    const char *base_dir; /* relative tls paths are resolved against it; NULL: as written */
    yaml_document_t *doc;
    struct arena *arena;
    struct conf *conf;
    struct pending_error *errs;
    size_t nerrs, cap;
    bool oom;
    char path[PATH_BUF];
    size_t path_len;
};

static const char *const null_words[] = {"", "~", "null", "Null", "NULL"};
static const char *const true_words[] = {"true", "True", "TRUE"};
static const char *const false_words[] = {"false", "False", "FALSE"};

static bool word_in(const char *s, const char *const *words, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, words[i]) == 0)
            return true;
    return false;
}

#define WORD_IN(s, words) word_in(s, words, sizeof(words) / sizeof(words[0]))

static void *lalloc(struct loader *l, size_t size)
{
    void *p = arena_alloc(l->arena, size);

    if (!p)
        l->oom = true;
    return p;
}

static char *lstrdup(struct loader *l, const char *s)
{
    char *p = arena_strdup(l->arena, s);

    if (!p)
        l->oom = true;
    return p;
}

static void verror(struct loader *l, unsigned line, unsigned column, const char *fmt, va_list ap)
{
    char *reason = NULL, *msg = NULL;

    if (vasprintf(&reason, fmt, ap) < 0)
        goto fail;
    if (asprintf(&msg, "%s:%u:%u: %s: %s", l->file, line, column, l->path_len ? l->path : "(root)",
                 reason) < 0)
        goto fail;
    if (l->nerrs == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct pending_error *e = realloc(l->errs, cap * sizeof(*e));
        if (!e)
            goto fail;
        l->errs = e;
        l->cap = cap;
    }
    l->errs[l->nerrs] = (struct pending_error){line, column, l->nerrs, msg};
    l->nerrs++;
    free(reason);
    return;

fail:
    l->oom = true;
    free(reason);
    free(msg);
}

static __attribute__((format(printf, 3, 4))) void error_node(struct loader *l, yaml_node_t *n,
                                                             const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verror(l, (unsigned)n->start_mark.line + 1, (unsigned)n->start_mark.column + 1, fmt, ap);
    va_end(ap);
}

static __attribute__((format(printf, 4, 5))) void error_at(struct loader *l, unsigned line,
                                                           unsigned column, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verror(l, line, column, fmt, ap);
    va_end(ap);
}

/* Copies user text for a message: quoted, control bytes as '?', cut after
 * <max> bytes; <buf> holds max + 6. */
static const char *quote_n(const char *s, char *buf, size_t max)
{
    size_t o = 0, i;

    buf[o++] = '"';
    for (i = 0; s[i] && i < max; i++)
        buf[o++] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    if (s[i]) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

static const char *quote(const char *s, char *buf)
{
    return quote_n(s, buf, QUOTE_MAX);
}

static size_t path_append(struct loader *l, const char *s, size_t n)
{
    size_t old = l->path_len;

    if (n > sizeof(l->path) - 1 - l->path_len)
        n = sizeof(l->path) - 1 - l->path_len;
    for (size_t i = 0; i < n; i++)
        l->path[l->path_len++] = ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) ? '?' : s[i];
    l->path[l->path_len] = '\0';
    return old;
}

/* Returns the length to give back to path_pop(). */
static size_t path_push_key(struct loader *l, const char *key)
{
    size_t old = l->path_len;
    size_t n = strlen(key);

    if (l->path_len)
        path_append(l, ".", 1);
    path_append(l, key, n > QUOTE_MAX ? QUOTE_MAX : n);
    if (n > QUOTE_MAX)
        path_append(l, "...", 3);
    return old;
}

static size_t path_push_index(struct loader *l, size_t i)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "[%zu]", i);

    return path_append(l, buf, (size_t)n);
}

static void path_pop(struct loader *l, size_t old)
{
    l->path_len = old;
    l->path[old] = '\0';
}

static yaml_node_t *node_get(struct loader *l, int id)
{
    return yaml_document_get_node(l->doc, id);
}

static const char *scalar_text(yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static bool is_plain(yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static bool is_null(yaml_node_t *n)
{
    return is_plain(n) && WORD_IN(scalar_text(n), null_words);
}

static size_t seq_len(yaml_node_t *n)
{
    return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static yaml_node_t *seq_item(struct loader *l, yaml_node_t *n, size_t i)
{
    return node_get(l, n->data.sequence.items.start[i]);
}

/* The pair of <map> whose key is the string <key>, first one wins. */
static yaml_node_pair_t *map_pair(struct loader *l, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_get(l, p->key);
        if (k && k->type == YAML_SCALAR_NODE && strcmp(scalar_text(k), key) == 0)
            return p;
    }
    return NULL;
}

static yaml_node_t *map_get(struct loader *l, yaml_node_t *map, const char *key)
{
    yaml_node_pair_t *p = map_pair(l, map, key);

    return p ? node_get(l, p->value) : NULL;
}

/* A non-null scalar without NUL bytes, or NULL after reporting why not. */
static const char *want_string(struct loader *l, yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || is_null(n)) {
        error_node(l, n, "expected a string");
        return NULL;
    }
    if (strlen(scalar_text(n)) != n->data.scalar.length) {
        error_node(l, n, "must not contain a NUL character");
        return NULL;
    }
    return scalar_text(n);
}

/* Reports pair <p> of <map> if an earlier pair has the same key. */
static bool duplicate_key(struct loader *l, yaml_node_t *map, yaml_node_pair_t *p)
{
    yaml_node_t *kn = node_get(l, p->key);

    for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
        yaml_node_t *qk = node_get(l, q->key);
        if (qk && qk->type == YAML_SCALAR_NODE && strcmp(scalar_text(qk), scalar_text(kn)) == 0) {
            error_node(l, kn, "duplicate key (first at line %u)",
                       (unsigned)qk->start_mark.line + 1);
            return true;
        }
    }
    return false;
}

static int address_load(struct loader *l, const char *text, struct conf_address *dst,
                        const char **reason)
{
    struct conf_address tmp;

    if (conf_parse_address(text, &tmp, reason) < 0)
        return -1;
    *dst = tmp;
    dst->text = lstrdup(l, tmp.text);
    dst->host = lstrdup(l, tmp.host);
    conf_address_clear(&tmp);
    return 0;
}

/* "200" or "200-399" -> [min, max]. */
static int status_range(const char *s, unsigned *min, unsigned *max)
{
    unsigned v[2] = {0, 0};
    int n = 0;

    for (;;) {
        int digits = 0;
        for (; *s >= '0' && *s <= '9'; s++, digits++)
            v[n] = v[n] * 10 + (unsigned)(*s - '0');
        if (digits != 3 || v[n] < STATUS_MIN || v[n] > STATUS_MAX)
            return -1;
        n++;
        if (*s == '\0')
            break;
        if (*s != '-' || n == 2)
            return -1;
        s++;
    }
    if (n == 1)
        v[1] = v[0];
    if (v[0] > v[1])
        return -1;
    *min = v[0];
    *max = v[1];
    return 0;
}

#define UINT_NOT_A_NUMBER (-1)
#define UINT_OUT_OF_RANGE (-2)

/* A plain decimal integer within [min, max]: 0, or UINT_NOT_A_NUMBER /
 * UINT_OUT_OF_RANGE, for the caller to word. */
static int uint_parse(yaml_node_t *n, uint64_t min, uint64_t max, uint64_t *out)
{
    const char *s;
    bool negative = false;
    uint64_t v = 0;
    bool too_big = false;

    if (!is_plain(n) || is_null(n))
        return UINT_NOT_A_NUMBER;
    s = scalar_text(n);
    if (*s == '-' || *s == '+') {
        negative = *s == '-';
        s++;
    }
    if (*s == '\0')
        return UINT_NOT_A_NUMBER;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return UINT_NOT_A_NUMBER;
        if (v > (UINT64_MAX - 9) / 10)
            too_big = true;
        else
            v = v * 10 + (uint64_t)(*s - '0');
    }
    if (too_big || (negative && v != 0) || v < min || v > max)
        return UINT_OUT_OF_RANGE;
    *out = v;
    return 0;
}

/* Parses a plain decimal integer within [min, max] into *out. */
static int uint_value(struct loader *l, yaml_node_t *n, uint64_t min, uint64_t max, uint64_t *out)
{
    int rc = uint_parse(n, min, max, out);

    if (rc == UINT_NOT_A_NUMBER)
        error_node(l, n, "expected an integer");
    else if (rc == UINT_OUT_OF_RANGE)
        error_node(l, n, "must be between %llu and %llu", (unsigned long long)min,
                   (unsigned long long)max);
    return rc < 0 ? -1 : 0;
}

static void parse_section(struct loader *l, const struct section *s, void *base, yaml_node_t *map);
static void apply_defaults(struct loader *l, const struct key *keys, void *base);

static void parse_list(struct loader *l, const struct key *k, void *base, yaml_node_t *n)
{
    const struct section *s = k->sub;
    size_t count;
    char *elems = NULL;

    if (n->type != YAML_SEQUENCE_NODE) {
        error_node(l, n, "expected a list");
        return;
    }
    count = seq_len(n);
    if (count == 0 && (k->flags & K_NONEMPTY))
        error_node(l, n, "must have at least one entry");
    if (count) {
        elems = lalloc(l, count * s->elem_size);
        if (!elems)
            return;
    }
    memcpy((char *)base + k->offset, &elems, sizeof(elems));
    memcpy((char *)base + k->aux, &count, sizeof(count));
    for (size_t i = 0; i < count; i++) {
        void *elem = elems + i * s->elem_size;
        yaml_node_t *item = seq_item(l, n, i);
        size_t old = path_push_index(l, i);
        struct conf_pos pos = {(unsigned)item->start_mark.line + 1,
                               (unsigned)item->start_mark.column + 1};

        memcpy((char *)elem + s->pos_offset, &pos, sizeof(pos));
        apply_defaults(l, s->keys, elem);
        if (item->type != YAML_MAPPING_NODE)
            error_node(l, item, "expected a mapping");
        else
            parse_section(l, s, elem, item);
        path_pop(l, old);
    }
}

/* A listener's pools map: pool name -> weight. The names are checked
 * against the pools once the whole file is read (check_references). */
static void parse_splits(struct loader *l, const struct key *k, void *base, yaml_node_t *n)
{
    size_t count, used = 0, errs_before = l->nerrs;
    struct conf_split *splits;
    bool any_weight = false;

    if (n->type != YAML_MAPPING_NODE) {
        error_node(l, n, "expected a mapping");
        return;
    }
    count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    if (count == 0) {
        error_node(l, n, "must name at least one pool");
        return;
    }
    splits = lalloc(l, count * sizeof(*splits));
    if (!splits)
        return;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = node_get(l, p->key), *vn = node_get(l, p->value);
        uint64_t w;
        size_t old;

        if (kn->type != YAML_SCALAR_NODE || is_null(kn)) {
            error_node(l, kn, "expected a string");
            continue;
        }
        old = path_push_key(l, scalar_text(kn));
        if (!duplicate_key(l, n, p) && uint_value(l, vn, k->min, k->max, &w) == 0) {
            splits[used].pool = lstrdup(l, scalar_text(kn));
            splits[used].weight = (unsigned)w;
            any_weight |= w > 0;
            used++;
        }
        path_pop(l, old);
    }
    if (l->nerrs == errs_before && !any_weight)
        error_node(l, n, "all weights are 0: at least one pool needs a weight above 0");
    memcpy((char *)base + k->offset, &splits, sizeof(splits));
    memcpy((char *)base + k->aux, &used, sizeof(used));
}

static void parse_enum(struct loader *l, const struct key *k, void *dst, yaml_node_t *n)
{
    char q[QUOTE_BUF], list[256];
    const char *s = want_string(l, n);
    size_t o = 0;

    if (!s)
        return;
    for (const struct enum_name *e = k->names; e->name; e++) {
        if (strcmp(s, e->name) == 0) {
            int v = e->value;
            memcpy(dst, &v, sizeof(v));
            return;
        }
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", o ? ", " : "", e->name);
    }
    error_node(l, n, "invalid value %s: must be one of %s", quote(s, q), list);
}

static bool name_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > NAME_MAX_LEN)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

static bool http_path_valid(const char *s)
{
    if (s[0] != '/' || strlen(s) > HTTP_PATH_MAX_LEN)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* <s> made relative to the config file's directory (as written for a
 * config loaded from memory), in the arena; NULL when out of memory. */
static char *resolve_path(struct loader *l, const char *s)
{
    char *full = NULL, *path;
    size_t bl;

    if (s[0] == '/' || !l->base_dir)
        return lstrdup(l, s);
    bl = strlen(l->base_dir);
    if (asprintf(&full, "%s%s%s", l->base_dir, bl && l->base_dir[bl - 1] == '/' ? "" : "/", s) <
        0) {
        l->oom = true;
        return NULL;
    }
    path = lstrdup(l, full);
    free(full);
    return path;
}

/* Checks that <text> names a readable regular file; stores the path, made
 * relative to the config file's directory. <fd_out>, if not NULL, gets the
 * open file (or -1) for the caller to read and close. */
static void parse_file(struct loader *l, void *dst, yaml_node_t *n, int *fd_out)
{
    char q[PATH_MAX + 8];
    const char *s = want_string(l, n);
    char *path;
    struct stat st;
    int fd;

    if (fd_out)
        *fd_out = -1;
    if (!s)
        return;
    if (*s == '\0') {
        error_node(l, n, "must not be empty");
        return;
    }
    if (!(path = resolve_path(l, s)))
        return;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error_node(l, n, "cannot read %s: %s", quote_n(path, q, PATH_MAX), strerror(errno));
        return;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        error_node(l, n, "cannot read %s: not a regular file", quote_n(path, q, PATH_MAX));
        close(fd);
        return;
    }
    memcpy(dst, &path, sizeof(path));
    if (fd_out)
        *fd_out = fd;
    else
        close(fd);
}

/* admin.token_file: a readable file whose contents, without surrounding
 * whitespace, are the token. Only checked here: usher re-reads it at each
 * reload. A blank token would let any caller that sends "Bearer " in. */
static void parse_token_file(struct loader *l, void *dst, yaml_node_t *n)
{
    char q[PATH_MAX + 8], buf[TOKEN_FILE_MAX_BYTES + 1];
    size_t len = 0;
    bool blank = true;
    int fd;

    if (n->type == YAML_SCALAR_NODE && !is_null(n) && n->data.scalar.length == 0)
        return; /* "": unset, as DESIGN writes the default */
    parse_file(l, dst, n, &fd);
    if (fd < 0)
        return;
    for (;;) {
        ssize_t r = read(fd, buf + len, sizeof(buf) - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            error_node(l, n, "cannot read %s: %s", quote_n(*(char **)dst, q, PATH_MAX),
                       strerror(errno));
            goto done;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len == sizeof(buf)) {
            error_node(l, n, "token file %s is longer than %u bytes",
                       quote_n(*(char **)dst, q, PATH_MAX), TOKEN_FILE_MAX_BYTES);
            goto done;
        }
    }
    for (size_t i = 0; i < len; i++)
        if (buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\r' && buf[i] != '\n')
            blank = false;
    if (blank)
        error_node(l, n, "token file %s is empty", quote_n(*(char **)dst, q, PATH_MAX));
done:
    close(fd);
}

/* admin.state_file: usher replaces it atomically (a temporary file in the
 * same directory, renamed), so the file need not exist yet but its
 * directory must. */
static void parse_state_file(struct loader *l, void *dst, yaml_node_t *n)
{
    char q[PATH_MAX + 8];
    const char *s = want_string(l, n);
    char *path, *dir, *slash;
    struct stat st;

    if (!s || *s == '\0') /* "": unset */
        return;
    if (!(path = resolve_path(l, s)))
        return;
    quote_n(path, q, PATH_MAX);
    if (stat(path, &st) == 0) {
        if (!S_ISREG(st.st_mode))
            error_node(l, n, "cannot use %s: not a regular file", q);
        else
            memcpy(dst, &path, sizeof(path));
        return;
    }
    if (errno != ENOENT) {
        error_node(l, n, "cannot use %s: %s", q, strerror(errno));
        return;
    }
    if (!(dir = lstrdup(l, path)))
        return;
    slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        strcpy(dir, ".");
    if (stat(dir, &st) < 0)
        error_node(l, n, "cannot use %s: its directory: %s", q, strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        error_node(l, n, "cannot use %s: its directory: %s", q, strerror(ENOTDIR));
    else
        memcpy(dst, &path, sizeof(path));
}

/* A DNS name in text form (RFC 1035 section 2.3.4, with '_' for SRV
 * names such as _http._tcp.example.com), an optional final dot. */
static bool hostname_valid(const char *s)
{
    size_t n = strlen(s), label = 0;

    if (n == 0 || n > HOSTNAME_MAX_LEN + 1 || (n == HOSTNAME_MAX_LEN + 1 && s[n - 1] != '.'))
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || (ch == '-' && label > 0)))
            return false;
        if (++label > LABEL_MAX_LEN)
            return false;
    }
    return s[n - 1] == '.' || s[n - 1] != '-';
}

/* An etcd key prefix: "/usher/", "/prod/usher/". Instance keys are the
 * prefix + "instances/" + id, so the ends must be slashes. */
static bool key_prefix_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || s[0] != '/' || s[n - 1] != '/')
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
            return false;
    return true;
}

/* A list of host:port strings into an arena array; the count at key->aux. */
static void parse_addresses(struct loader *l, const struct key *k, void *base, yaml_node_t *n)
{
    struct conf_address *addrs = NULL;
    size_t count;
    char q[QUOTE_BUF];

    if (n->type != YAML_SEQUENCE_NODE) {
        error_node(l, n, "expected a list");
        return;
    }
    count = seq_len(n);
    if (count == 0 && (k->flags & K_NONEMPTY))
        error_node(l, n, "must have at least one entry");
    if (count && !(addrs = lalloc(l, count * sizeof(*addrs))))
        return;
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = seq_item(l, n, i);
        size_t old = path_push_index(l, i);
        const char *s = want_string(l, item), *reason;
        if (s && address_load(l, s, &addrs[i], &reason) < 0)
            error_node(l, item, "invalid address %s: %s", quote(s, q), reason);
        path_pop(l, old);
    }
    memcpy((char *)base + k->offset, &addrs, sizeof(addrs));
    memcpy((char *)base + k->aux, &count, sizeof(count));
}

/* Names: what every "invalid name" style error says is allowed. */
#define STR_(x) #x
#define STR(x) STR_(x)
#define RULE_NAME "use 1 to " STR(NAME_MAX_LEN) " letters, digits, '-', '_' or '.'"

/* Copies string <s> of node <n> into <dst> if <valid> says so; else the
 * error "invalid <what> "<s>": <rule>". */
static void store_checked(struct loader *l, yaml_node_t *n, const char *s, void *dst,
                          bool (*valid)(const char *), const char *what, const char *rule)
{
    char q[QUOTE_BUF];
    if (valid(s))
        *(char **)dst = lstrdup(l, s);
    else
        error_node(l, n, "invalid %s %s: %s", what, quote(s, q), rule);
}

static void parse_value(struct loader *l, const struct key *k, void *base, yaml_node_t *n)
{
    void *dst = (char *)base + k->offset;
    char q[QUOTE_BUF], lo[32], hi[32];
    const char *s, *reason;
    uint64_t v;
    conf_ms ms;

    switch (k->type) {
    case T_SECTION:
        if (n->type != YAML_MAPPING_NODE) {
            error_node(l, n, "expected a mapping");
            return;
        }
        if (k->aux != NO_OFFSET)
            *(bool *)((char *)base + k->aux) = true;
        parse_section(l, k->sub, base, n);
        return;
    case T_LIST:
        parse_list(l, k, base, n);
        return;
    case T_SPLITS:
        parse_splits(l, k, base, n);
        return;
    case T_BOOL:
        if (is_plain(n) && WORD_IN(scalar_text(n), true_words))
            *(bool *)dst = true;
        else if (is_plain(n) && WORD_IN(scalar_text(n), false_words))
            *(bool *)dst = false;
        else
            error_node(l, n, "expected true or false");
        return;
    case T_UINT:
        if (uint_value(l, n, k->min, k->max, &v) == 0)
            *(unsigned *)dst = (unsigned)v;
        return;
    case T_DURATION:
        if (!(s = want_string(l, n)))
            return;
        if (conf_parse_duration(s, &ms, &reason) < 0) {
            error_node(l, n, "invalid duration %s: %s", quote(s, q), reason);
        } else if (ms < k->min || ms > k->max) {
            error_node(l, n, "must be between %s and %s",
                       conf_format_duration(k->min, lo, sizeof(lo)),
                       conf_format_duration(k->max, hi, sizeof(hi)));
        } else {
            *(conf_ms *)dst = ms;
        }
        return;
    case T_ENUM:
        parse_enum(l, k, dst, n);
        return;
    case T_NAME:
        if ((s = want_string(l, n)))
            store_checked(l, n, s, dst, name_valid, "name", RULE_NAME);
        return;
    case T_HTTP_PATH:
        if ((s = want_string(l, n)))
            store_checked(l, n, s, dst, http_path_valid, "path",
                          "must start with / and contain no spaces or control characters");
        return;
    case T_ADDRESS:
        if (!(s = want_string(l, n)))
            return;
        if (address_load(l, s, dst, &reason) < 0)
            error_node(l, n, "invalid address %s: %s", quote(s, q), reason);
        return;
    case T_FILE:
        parse_file(l, dst, n, NULL);
        return;
    case T_TOKEN_FILE:
        parse_token_file(l, dst, n);
        return;
    case T_STATE_FILE:
        parse_state_file(l, dst, n);
        return;
    case T_ADDRESSES:
        parse_addresses(l, k, base, n);
        return;
    case T_WORKERS: {
        int rc;
        if (n->type == YAML_SCALAR_NODE && strcmp(scalar_text(n), "auto") == 0) {
            *(unsigned *)dst = 0;
            return;
        }
        rc = uint_parse(n, k->min, k->max, &v);
        if (rc == UINT_NOT_A_NUMBER)
            error_node(l, n, "expected auto or an integer");
        else if (rc == UINT_OUT_OF_RANGE)
            error_node(l, n, "must be auto or between %llu and %llu", (unsigned long long)k->min,
                       (unsigned long long)k->max);
        else
            *(unsigned *)dst = (unsigned)v;
        return;
    }
    case T_PORT:
        if (uint_value(l, n, 1, UINT16_MAX, &v) == 0)
            *(uint16_t *)dst = (uint16_t)v;
        return;
    case T_HOSTNAME:
        if ((s = want_string(l, n)))
            store_checked(l, n, s, dst, hostname_valid, "host name",
                          "expected dot-separated labels of letters, digits, '-' or '_' (no port, "
                          "no brackets)");
        return;
    case T_KEY_PREFIX:
        if ((s = want_string(l, n)))
            store_checked(l, n, s, dst, key_prefix_valid, "prefix",
                          "must start and end with / and contain no spaces or control characters");
        return;
    case T_INSTANCE:
        /* "": the host name, filled in by fleet_instance_default() */
        if ((s = want_string(l, n)) && *s)
            store_checked(l, n, s, dst, name_valid, "instance id", RULE_NAME);
        return;
    case T_STATUS: {
        unsigned min, max;
        if (n->type != YAML_SCALAR_NODE || is_null(n)) {
            error_node(l, n, "expected a string");
            return;
        }
        s = scalar_text(n);
        if (status_range(s, &min, &max) < 0) {
            error_node(l, n,
                       "invalid status %s: expected a status code %d-%d or a range like 200-399",
                       quote(s, q), STATUS_MIN, STATUS_MAX);
            return;
        }
        *(unsigned *)dst = min;
        *(unsigned *)((char *)base + k->aux) = max;
        return;
    }
    }
}

/* A typo is at most this many single-character edits away from the key
 * meant: enough for "conect", "intervall", "tiemout"; more and unrelated
 * keys start to match. */
#define SUGGEST_MAX_EDITS 2

/* Longest key compared for a suggestion (the schema's keys are shorter). */
#define SUGGEST_MAX_LEN 48

/* Edit distance of <a> and <b> with adjacent transpositions counted as one
 * edit (optimal string alignment); anything above <max> is max + 1. */
static size_t edit_distance(const char *a, const char *b, size_t max)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > SUGGEST_MAX_LEN || lb > SUGGEST_MAX_LEN || (la > lb ? la - lb : lb - la) > max)
        return max + 1;
    size_t d[SUGGEST_MAX_LEN + 1][SUGGEST_MAX_LEN + 1];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t best = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb] > max ? max + 1 : d[la][lb];
}

/* The key of <s> that <name> is a typo of: the only one within
 * SUGGEST_MAX_EDITS at the smallest distance, or NULL (none, or a tie: a
 * guess between two would mislead). */
static const char *suggest_key(const struct section *s, const char *name)
{
    const char *best = NULL;
    size_t best_d = SUGGEST_MAX_EDITS + 1;
    bool tie = false;
    for (const struct key *k = s->keys; k->name; k++) {
        size_t d = edit_distance(name, k->name, SUGGEST_MAX_EDITS);
        if (d < best_d) {
            best = k->name;
            best_d = d;
            tie = false;
        } else if (d == best_d && d <= SUGGEST_MAX_EDITS) {
            tie = true;
        }
    }
    return best && !tie ? best : NULL;
}

static void parse_section(struct loader *l, const struct section *s, void *base, yaml_node_t *map)
{
    bool seen[SECTION_MAX_KEYS] = {false};
    size_t errs_before = l->nerrs;

    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *kn = node_get(l, p->key), *vn = node_get(l, p->value);
        const struct key *k;
        size_t old;

        if (kn->type != YAML_SCALAR_NODE || is_null(kn)) {
            error_node(l, kn, "expected a string");
            continue;
        }
        old = path_push_key(l, scalar_text(kn));
        if (duplicate_key(l, map, p)) {
            path_pop(l, old);
            continue;
        }
        for (k = s->keys; k->name; k++)
            if (strcmp(k->name, scalar_text(kn)) == 0)
                break;
        if (!k->name) {
            const char *hint = suggest_key(s, scalar_text(kn));
            if (hint)
                error_node(l, kn, "unknown key, did you mean %s?", hint);
            else
                error_node(l, kn, "unknown key");
        } else {
            seen[k - s->keys] = true;
            parse_value(l, k, base, vn);
        }
        path_pop(l, old);
    }
    for (const struct key *k = s->keys; k->name; k++) {
        if ((k->flags & K_REQUIRED) && !seen[k - s->keys] &&
            !(k->unless && map_pair(l, map, k->unless))) {
            size_t old = path_push_key(l, k->name);
            error_node(l, map, "missing required key");
            path_pop(l, old);
        }
    }
    if (s->check && l->nerrs == errs_before)
        s->check(l, base, map);
}

static void apply_defaults(struct loader *l, const struct key *keys, void *base)
{
    for (const struct key *k = keys; k->name; k++) {
        void *dst = (char *)base + k->offset;
        const char *reason;
        int v;

        switch (k->type) {
        case T_SECTION:
            apply_defaults(l, k->sub->keys, base);
            break;
        case T_BOOL:
            *(bool *)dst = k->def != 0;
            break;
        case T_UINT:
            *(unsigned *)dst = (unsigned)k->def;
            break;
        case T_DURATION:
            *(conf_ms *)dst = k->def;
            break;
        case T_ENUM:
            v = (int)k->def;
            memcpy(dst, &v, sizeof(v));
            break;
        case T_HTTP_PATH:
            if (k->def_str)
                *(char **)dst = lstrdup(l, k->def_str);
            break;
        case T_ADDRESS:
            /* defaults are numeric: they cannot fail to resolve */
            if (k->def_str)
                address_load(l, k->def_str, dst, &reason);
            break;
        case T_STATUS:
            if (k->def_str)
                status_range(k->def_str, (unsigned *)dst, (unsigned *)((char *)base + k->aux));
            break;
        case T_WORKERS:
            *(unsigned *)dst = (unsigned)k->def;
            break;
        case T_KEY_PREFIX:
            if (k->def_str)
                *(char **)dst = lstrdup(l, k->def_str);
            break;
        case T_ADDRESSES:
            /* one numeric default address at most: it cannot fail to resolve */
            if (k->def_str) {
                struct conf_address *a = lalloc(l, sizeof(*a));
                size_t one = 1;
                if (!a)
                    break;
                address_load(l, k->def_str, a, &reason);
                memcpy(dst, &a, sizeof(a));
                memcpy((char *)base + k->aux, &one, sizeof(one));
            }
            break;
        case T_LIST:
        case T_SPLITS:
        case T_NAME:
        case T_FILE:
        case T_TOKEN_FILE:
        case T_STATE_FILE:
        case T_PORT:
        case T_HOSTNAME:
        case T_INSTANCE:
            break;
        }
    }
}

/* ---- cross-checks ------------------------------------------------------- */

static void check_health(struct loader *l, void *base, yaml_node_t *map)
{
    const struct conf_health_check *hc = &((struct conf_pool *)base)->health_check;
    yaml_node_t *tn = map_get(l, map, "timeout"), *in = map_get(l, map, "interval");
    char buf[32];
    size_t old;

    if (hc->timeout < hc->interval)
        return;
    if (tn || !in) {
        old = path_push_key(l, "timeout");
        error_node(l, tn ? tn : map, "must be shorter than interval (%s)",
                   conf_format_duration(hc->interval, buf, sizeof(buf)));
    } else {
        old = path_push_key(l, "interval");
        error_node(l, in, "must be longer than timeout (%s)",
                   conf_format_duration(hc->timeout, buf, sizeof(buf)));
    }
    path_pop(l, old);
}

static void check_discover(struct loader *l, void *base, yaml_node_t *map)
{
    const struct conf_discover *d = &((struct conf_pool *)base)->discover;
    yaml_node_pair_t *port = map_pair(l, map, "port");
    size_t old = path_push_key(l, "port");

    if (!d->srv && !port)
        error_node(l, map, "missing required key (only SRV records carry a port: srv: true)");
    else if (d->srv && port)
        error_node(l, node_get(l, port->key),
                   "not allowed with srv: true (the port comes from the SRV records)");
    path_pop(l, old);
}

/* timeouts.first_byte left out follows timeouts.backend. */
static void check_timeouts(struct loader *l, void *base, yaml_node_t *map)
{
    struct conf *c = base;

    if (!map_pair(l, map, "first_byte"))
        c->timeouts.first_byte = c->timeouts.backend;
}

/* fleet.instance left out or "": the host name, which must then be a
 * valid instance id. Filled in with or without a fleet section, so the
 * field always says who this instance is. */
static void fleet_instance_default(struct loader *l, yaml_node_t *root)
{
    struct conf *c = l->conf;
    char host[HOST_NAME_MAX + 1] = "";
    char q[QUOTE_BUF];

    if (c->fleet.instance)
        return;
    if (gethostname(host, sizeof(host)) < 0)
        host[0] = '\0';
    host[sizeof(host) - 1] = '\0';
    if (name_valid(host)) {
        c->fleet.instance = lstrdup(l, host);
        return;
    }
    if (!c->fleet.enabled)
        return;
    yaml_node_t *fleet = map_get(l, root, "fleet");
    yaml_node_t *inst = map_get(l, fleet, "instance");
    size_t old = path_push_key(l, "fleet");
    size_t old2 = path_push_key(l, "instance");
    error_node(l, inst ? inst : fleet,
               "the host name %s is not a valid instance id: set fleet.instance", quote(host, q));
    path_pop(l, old2);
    path_pop(l, old);
}

static unsigned node_line(yaml_node_t *n)
{
    return (unsigned)n->start_mark.line + 1;
}

/* The list node under <key> of <map> if it matches the <count> parsed
 * elements (it does unless the list itself was malformed). */
static yaml_node_t *parsed_list(struct loader *l, yaml_node_t *map, const char *key, size_t count)
{
    yaml_node_t *n = map_get(l, map, key);

    return n && n->type == YAML_SEQUENCE_NODE && seq_len(n) == count ? n : NULL;
}

/* Reports the element names of <list> that repeat an earlier one. <names>
 * holds <count> names (NULL for an element whose name did not parse),
 * <stride> bytes apart. */
static void check_unique_names(struct loader *l, yaml_node_t *list, const char *what,
                               const char *first_name, size_t count, size_t stride)
{
    char q[QUOTE_BUF];

    for (size_t i = 1; i < count; i++) {
        const char *ni = *(char *const *)(first_name + i * stride);
        if (!ni)
            continue;
        for (size_t j = 0; j < i; j++) {
            const char *nj = *(char *const *)(first_name + j * stride);
            if (!nj || strcmp(ni, nj) != 0)
                continue;
            yaml_node_t *item = seq_item(l, list, i);
            yaml_node_t *name = map_get(l, item, "name");
            yaml_node_t *first = map_get(l, seq_item(l, list, j), "name");
            size_t old = path_push_index(l, i);
            size_t old2 = path_push_key(l, "name");
            error_node(l, name ? name : item, "duplicate %s name %s (first at line %u)", what,
                       quote(ni, q), first ? node_line(first) : node_line(seq_item(l, list, j)));
            path_pop(l, old2);
            path_pop(l, old);
            break;
        }
    }
}

/* Rules between parts of the file: unique names, binds that do not
 * collide, listeners that name existing pools. */
static void check_references(struct loader *l, yaml_node_t *root)
{
    struct conf *c = l->conf;
    yaml_node_t *pools = parsed_list(l, root, "pools", c->num_pools);
    yaml_node_t *listeners = parsed_list(l, root, "listeners", c->num_listeners);
    bool pool_names_ok = pools != NULL;
    char q[QUOTE_BUF];
    size_t old, old2;

    if (pools && c->num_pools) {
        old = path_push_key(l, "pools");
        check_unique_names(l, pools, "pool", (const char *)&c->pools[0].name, c->num_pools,
                           sizeof(c->pools[0]));
        for (size_t i = 0; i < c->num_pools; i++) {
            struct conf_pool *p = &c->pools[i];
            yaml_node_t *backends =
                parsed_list(l, seq_item(l, pools, i), "backends", p->num_backends);
            pool_names_ok &= p->name != NULL;
            if (!backends || p->num_backends == 0)
                continue;
            old2 = path_push_index(l, i);
            size_t old3 = path_push_key(l, "backends");
            check_unique_names(l, backends, "backend", (const char *)&p->backends[0].name,
                               p->num_backends, sizeof(p->backends[0]));
            path_pop(l, old3);
            path_pop(l, old2);
        }
        path_pop(l, old);
    }

    if (!listeners || c->num_listeners == 0)
        return;
    old = path_push_key(l, "listeners");
    check_unique_names(l, listeners, "listener", (const char *)&c->listeners[0].name,
                       c->num_listeners, sizeof(c->listeners[0]));
    for (size_t i = 0; i < c->num_listeners; i++) {
        struct conf_listener *li = &c->listeners[i];
        yaml_node_t *item = seq_item(l, listeners, i);

        old2 = path_push_index(l, i);
        for (size_t j = 0; li->bind.text && j < i; j++) {
            const struct conf_listener *lj = &c->listeners[j];
            if (!lj->bind.text || !conf_address_overlap(&li->bind, &lj->bind))
                continue;
            size_t old3 = path_push_key(l, "bind");
            if (lj->name)
                error_node(l, map_get(l, item, "bind"),
                           "address %s is already used by listener \"%s\"", quote(li->bind.text, q),
                           lj->name);
            else
                error_node(l, map_get(l, item, "bind"),
                           "address %s is already used by listeners[%zu]", quote(li->bind.text, q),
                           j);
            path_pop(l, old3);
            break;
        }
        yaml_node_t *split_map = map_get(l, item, "pools");
        for (size_t s = 0; pool_names_ok && s < li->num_splits; s++) {
            struct conf_split *sp = &li->splits[s];
            const struct conf_pool *p = conf_find_pool(c, sp->pool);
            if (p) {
                sp->pool_index = (size_t)(p - c->pools);
                continue;
            }
            yaml_node_pair_t *pair = map_pair(l, split_map, sp->pool);
            size_t old3 = path_push_key(l, "pools");
            size_t old4 = path_push_key(l, sp->pool);
            error_node(l, pair ? node_get(l, pair->key) : item, "unknown pool %s",
                       quote(sp->pool, q));
            path_pop(l, old4);
            path_pop(l, old3);
        }
        path_pop(l, old2);
    }
    path_pop(l, old);

    if (c->admin.enabled && c->admin.bind.text) {
        yaml_node_t *admin = map_get(l, root, "admin");
        yaml_node_t *bind = map_get(l, admin, "bind");
        for (size_t i = 0; i < c->num_listeners; i++) {
            const struct conf_listener *li = &c->listeners[i];
            if (!li->bind.text || !conf_address_overlap(&c->admin.bind, &li->bind))
                continue;
            old = path_push_key(l, "admin");
            old2 = path_push_key(l, "bind");
            if (li->name)
                error_node(l, bind ? bind : admin, "address %s is already used by listener \"%s\"",
                           quote(c->admin.bind.text, q), li->name);
            else
                error_node(l, bind ? bind : admin, "address %s is already used by listeners[%zu]",
                           quote(c->admin.bind.text, q), i);
            path_pop(l, old2);
            path_pop(l, old);
            break;
        }
    }
}

/* ---- loading ------------------------------------------------------------ */

/* libyaml's own message at its position; a reader error (bad UTF-8) only
 * has a byte offset, turned into a line and column here. */
static void syntax_error(struct loader *l, const yaml_parser_t *p, const char *yaml, size_t len)
{
    unsigned line, column;
    const char *problem = p->problem ? p->problem : "invalid YAML";

    if (p->error == YAML_MEMORY_ERROR) {
        l->oom = true;
        return;
    }
    if (p->error == YAML_READER_ERROR) {
        line = 1;
        column = 1;
        for (size_t i = 0; i < p->problem_offset && i < len; i++) {
            if (yaml[i] == '\n') {
                line++;
                column = 1;
            } else {
                column++;
            }
        }
    } else {
        line = (unsigned)p->problem_mark.line + 1;
        column = (unsigned)p->problem_mark.column + 1;
    }
    size_t old = path_push_key(l, "syntax error");
    /* the context mark is where the construct the problem broke began (an
     * unclosed '[' lines away): the line to look at besides the problem's */
    unsigned cline = (unsigned)p->context_mark.line + 1;
    unsigned ccolumn = (unsigned)p->context_mark.column + 1;
    if (p->context && p->error != YAML_READER_ERROR && (cline != line || ccolumn != column))
        error_at(l, line, column, "%s (%s at line %u, column %u)", problem, p->context, cline,
                 ccolumn);
    else if (p->context && p->error != YAML_READER_ERROR)
        error_at(l, line, column, "%s (%s)", problem, p->context);
    else
        error_at(l, line, column, "%s", problem);
    path_pop(l, old);
}

static int compare_errors(const void *a, const void *b)
{
    const struct pending_error *x = a, *y = b;

    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->column != y->column)
        return x->column < y->column ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void errors_push(struct conf_errors *errs, char *msg)
{
    if (!msg)
        return;
    if (errs->count == errs->capacity) {
        size_t cap = errs->capacity ? errs->capacity * 2 : 8;
        char **m = realloc(errs->messages, cap * sizeof(*m));
        if (!m) {
            free(msg);
            return;
        }
        errs->messages = m;
        errs->capacity = cap;
    }
    errs->messages[errs->count++] = msg;
}

static __attribute__((format(printf, 2, 3))) void errors_printf(struct conf_errors *errs,
                                                                const char *fmt, ...)
{
    va_list ap;
    char *msg = NULL;

    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    errors_push(errs, msg);
}

static struct conf *load(const char *name, const char *base_dir, const char *yaml, size_t len,
                         struct conf_errors *errs)
{
    struct loader l = {.file = name, .base_dir = base_dir};
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    bool have_parser = false, have_doc = false;
    struct conf *c = calloc(1, sizeof(*c));
    yaml_node_t *root;

    if (!c || !(c->arena = calloc(1, sizeof(struct arena)))) {
        l.oom = true;
        goto done;
    }
    l.conf = c;
    l.arena = c->arena;
    c->path = lstrdup(&l, name);
    apply_defaults(&l, root_keys, c);

    if (!yaml_parser_initialize(&parser)) {
        l.oom = true;
        goto done;
    }
    have_parser = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        syntax_error(&l, &parser, yaml, len);
        goto done;
    }
    have_doc = true;
    l.doc = &doc;

    root = yaml_document_get_root_node(&doc);
    if (!root || is_null(root)) {
        /* an empty file (or only comments, or "---"): it lacks what every config needs */
        for (const struct key *k = root_keys; k->name; k++) {
            if (k->flags & K_REQUIRED) {
                size_t old = path_push_key(&l, k->name);
                error_at(&l, 1, 1, "missing required key");
                path_pop(&l, old);
            }
        }
    } else if (root->type != YAML_MAPPING_NODE) {
        error_node(&l, root, "expected a mapping");
    } else {
        parse_section(&l, &root_section, c, root);
        check_references(&l, root);
        fleet_instance_default(&l, root);
    }

    if (!yaml_parser_load(&parser, &extra)) {
        syntax_error(&l, &parser, yaml, len);
    } else {
        yaml_node_t *r = yaml_document_get_root_node(&extra);
        if (r)
            error_at(&l, (unsigned)extra.start_mark.line + 1, (unsigned)extra.start_mark.column + 1,
                     "only one YAML document is allowed");
        yaml_document_delete(&extra);
    }

done:
    if (have_doc)
        yaml_document_delete(&doc);
    if (have_parser)
        yaml_parser_delete(&parser);
    if (l.nerrs)
        qsort(l.errs, l.nerrs, sizeof(l.errs[0]), compare_errors);
    for (size_t i = 0; i < l.nerrs; i++)
        errors_push(errs, l.errs[i].msg);
    free(l.errs);
    if (l.oom)
        errors_printf(errs, "%s: out of memory", name);
    if (l.nerrs || l.oom) {
        conf_free(c);
        return NULL;
    }
    return c;
}

struct conf *conf_load_string(const char *name, const char *yaml, size_t len,
                              struct conf_errors *errs)
{
    return load(name, NULL, yaml, len, errs);
}

struct conf *conf_load(const char *path, struct conf_errors *errs)
{
    struct conf *c = NULL;
    char *buf = NULL, *dir = NULL, *slash;
    size_t len = 0, cap = 0;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        errors_printf(errs, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        errors_printf(errs, "%s: cannot read: %s", path, strerror(EISDIR));
        goto fail;
    }
    for (;;) {
        ssize_t n;
        if (len == cap) {
            char *b;
            if (cap >= FILE_MAX_BYTES) {
                errors_printf(errs, "%s: file too large (at most %u bytes)", path, FILE_MAX_BYTES);
                goto fail;
            }
            cap = cap ? cap * 2 : 8192;
            if (!(b = realloc(buf, cap))) {
                errors_printf(errs, "%s: out of memory", path);
                goto fail;
            }
            buf = b;
        }
        n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            errors_printf(errs, "%s: cannot read: %s", path, strerror(errno));
            goto fail;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }

    /* tls files are found next to the config, wherever usher was started */
    dir = strdup(path);
    if (!dir) {
        errors_printf(errs, "%s: out of memory", path);
        goto fail;
    }
    slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    c = load(path, slash ? dir : NULL, buf ? buf : "", len, errs);

fail:
    if (fd >= 0)
        close(fd);
    free(buf);
    free(dir);
    return c;
}

void conf_free(struct conf *c)
{
    if (!c)
        return;
    arena_free(c->arena);
    free(c->arena);
    free(c);
}

void conf_errors_clear(struct conf_errors *errs)
{
    for (size_t i = 0; i < errs->count; i++)
        free(errs->messages[i]);
    free(errs->messages);
    errs->messages = NULL;
    errs->count = 0;
    errs->capacity = 0;
}

const struct conf_pool *conf_find_pool(const struct conf *c, const char *name)
{
    for (size_t i = 0; i < c->num_pools; i++)
        if (c->pools[i].name && strcmp(c->pools[i].name, name) == 0)
            return &c->pools[i];
    return NULL;
}

const struct conf_listener *conf_find_listener(const struct conf *c, const char *name)
{
    for (size_t i = 0; i < c->num_listeners; i++)
        if (c->listeners[i].name && strcmp(c->listeners[i].name, name) == 0)
            return &c->listeners[i];
    return NULL;
}

/* ---- reload limits and names -------------------------------------------- */

static bool value_equal(const struct key *k, const void *a_base, const void *b_base)
{
    const char *a = (const char *)a_base + k->offset, *b = (const char *)b_base + k->offset;

    switch (k->type) {
    case T_SECTION:
        return k->aux == NO_OFFSET || *(const bool *)((const char *)a_base + k->aux) ==
                                          *(const bool *)((const char *)b_base + k->aux);
    case T_ADDRESS:
        return conf_address_same((const struct conf_address *)a, (const struct conf_address *)b);
    case T_BOOL:
        return *(const bool *)a == *(const bool *)b;
    case T_UINT:
    case T_WORKERS:
        return *(const unsigned *)a == *(const unsigned *)b;
    case T_DURATION:
        return *(const conf_ms *)a == *(const conf_ms *)b;
    case T_ENUM:
        return memcmp(a, b, sizeof(int)) == 0;
    default:
        return true; /* not flagged K_RESTART anywhere */
    }
}

/* True if <k> is a section both configs leave out: its settings do nothing. */
static bool section_absent(const struct key *k, const struct conf *old, const struct conf *new)
{
    return k->aux != NO_OFFSET && !*(const bool *)((const char *)old + k->aux) &&
           !*(const bool *)((const char *)new + k->aux);
}

static const char *restart_key(const struct key *keys, const struct conf *old,
                               const struct conf *new)
{
    for (const struct key *k = keys; k->name; k++) {
        if ((k->flags & K_RESTART) && !value_equal(k, old, new))
            return k->dotted;
        if (k->type == T_SECTION && !section_absent(k, old, new)) {
            const char *r = restart_key(k->sub->keys, old, new);
            if (r)
                return r;
        }
    }
    return NULL;
}

const char *conf_restart_needed(const struct conf *old, const struct conf *new)
{
    return restart_key(root_keys, old, new);
}

static const char *enum_str(const struct enum_name *names, int v)
{
    for (; names->name; names++)
        if (names->value == v)
            return names->name;
    return "?";
}

const char *conf_protocol_str(enum conf_protocol p)
{
    return enum_str(protocol_names, (int)p);
}

const char *conf_balance_str(enum conf_balance b)
{
    return enum_str(balance_names, (int)b);
}

const char *conf_log_level_str(enum conf_log_level v)
{
    return enum_str(log_level_names, (int)v);
}

const char *conf_log_format_str(enum conf_log_format f)
{
    return enum_str(log_format_names, (int)f);
}
