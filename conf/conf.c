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
#include "index.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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
    T_STRING,      /* any string without control characters; default def_str */
    T_HOSTS,       /* a route's hosts: DNS names or "*." names, normalised; count at aux */
    T_PATHS,       /* a route's paths: "/prefix" or "=/exact"; count at aux */
    T_HEADERS,     /* a route's headers map: field name -> exact value; count at aux */
    T_CIDRS,       /* a list of IPv4/IPv6 networks: struct conf_cidr *, count at aux */
};

#define K_REQUIRED 0x1u    /* missing key is an error */
#define K_NONEMPTY 0x2u    /* a list that must have at least one entry */
#define K_RESTART 0x4u     /* a reload cannot apply a change: see conf_restart_needed() */
#define K_OFF_BOOL 0x8u    /* T_SECTION: may be written `false` (off) or `true` (on, defaults) */
#define K_DEFAULT_ON 0x10u /* T_SECTION: on (its bool at aux true) when the key is absent */

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
/* RFC 9113 section 6.5.2 recommends no fewer than 100 concurrent streams
 * (the default, as nginx and HAProxy use). 1 still serves, one request at
 * a time; past 10000 one client's streams, each holding buffers, would
 * weigh like thousands of connections while max_connections counts one. */
#define H2_STREAMS_MAX 10000
/* A free-form string value (a gRPC service name): longer is a paste gone wrong. */
#define STRING_MAX_LEN 1024

static const struct enum_name protocol_names[] = {
    {"http", CONF_PROTO_HTTP}, {"tcp", CONF_PROTO_TCP}, {NULL, 0}};
static const struct enum_name health_protocol_names[] = {
    {"http", CONF_PROTO_HTTP}, {"tcp", CONF_PROTO_TCP}, {"grpc", CONF_PROTO_GRPC}, {NULL, 0}};
static const struct enum_name pool_protocol_names[] = {
    {"http1", CONF_POOL_HTTP1}, {"h2c", CONF_POOL_H2C}, {"h2", CONF_POOL_H2}, {NULL, 0}};
/* "false" in these tables is also what YAML's other spellings of false
 * (False, FALSE) select: see parse_enum() */
static const struct enum_name http2_names[] = {
    {"auto", CONF_HTTP2_AUTO}, {"false", CONF_HTTP2_OFF}, {NULL, 0}};
static const struct enum_name proxy_protocol_names[] = {{"false", CONF_PROXY_OFF},
                                                        {"v1", CONF_PROXY_V1},
                                                        {"v2", CONF_PROXY_V2},
                                                        {"any", CONF_PROXY_ANY},
                                                        {NULL, 0}};
/* sending, usher picks the version: "any" means nothing there */
static const struct enum_name send_proxy_names[] = {
    {"false", CONF_PROXY_OFF}, {"v1", CONF_PROXY_V1}, {"v2", CONF_PROXY_V2}, {NULL, 0}};
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
static void check_pool(struct loader *l, void *base, yaml_node_t *map);
static void check_pool_tls(struct loader *l, void *base, yaml_node_t *map);
static void check_route(struct loader *l, void *base, yaml_node_t *map);
static unsigned node_line(yaml_node_t *n);

#define KEY(T, n, ty, field, ...)                                                                  \
    {                                                                                              \
        .name = n, .type = ty, .offset = offsetof(T, field), __VA_ARGS__                           \
    }

/* health_check: offsets from struct conf_pool */
#define HC(n, ty, field, ...) KEY(struct conf_pool, n, ty, health_check.field, __VA_ARGS__)
static const struct key health_keys[] = {
    HC("protocol", T_ENUM, protocol, .names = health_protocol_names, .def = CONF_PROTO_HTTP),
    /* grpc only: see check_health() */
    HC("service", T_STRING, service, .def_str = ""),
    /* not with grpc: see check_health() */
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
static const struct key pool_tls_keys[] = {PO("ca", T_FILE, tls.ca),
                                           PO("verify", T_BOOL, tls.verify, .def = true),
                                           PO("sni", T_HOSTNAME, tls.sni),
                                           /* both or neither: see check_pool_tls() */
                                           PO("cert", T_FILE, tls.cert),
                                           PO("key", T_FILE, tls.key),
                                           {.name = NULL}};
static const struct section pool_tls_section = {.keys = pool_tls_keys, .check = check_pool_tls};

static const struct key pool_keys[] = {
    PO("name", T_NAME, name, .flags = K_REQUIRED),
    /* h2 needs tls, grpc health checks need h2c or h2: see check_pool() */
    PO("protocol", T_ENUM, protocol, .names = pool_protocol_names, .def = CONF_POOL_HTTP1),
    PO("tls", T_SECTION, tls, .sub = &pool_tls_section,
       .aux = offsetof(struct conf_pool, tls.enabled)),
    PO("send_proxy", T_ENUM, send_proxy, .names = send_proxy_names, .def = CONF_PROXY_OFF),
    PO("balance", T_ENUM, balance, .names = balance_names, .def = CONF_BALANCE_ROUND_ROBIN),
    PO("deregistration_delay", T_DURATION, deregistration_delay, .min = 0, .max = CONF_DURATION_MAX,
       .def = SEC(30)),
    PO("slow_start", T_DURATION, slow_start, .min = 0, .max = CONF_DURATION_MAX, .def = 0),
    /* on unless written `false`: a backend that fails every request should
     * leave rotation even where nobody thought of configuring it */
    PO("passive_health", T_SECTION, passive_health, .sub = &passive_section,
       .flags = K_OFF_BOOL | K_DEFAULT_ON,
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
                                            .pos_offset = offsetof(struct conf_pool, pos),
                                            .check = check_pool};

#define CE(n, ty, field, ...) KEY(struct conf_certificate, n, ty, field, __VA_ARGS__)
static const struct key certificate_keys[] = {CE("cert", T_FILE, cert, .flags = K_REQUIRED),
                                              CE("key", T_FILE, key, .flags = K_REQUIRED),
                                              {.name = NULL}};
static const struct section certificate_section = {.keys = certificate_keys,
                                                   .elem_size = sizeof(struct conf_certificate),
                                                   .pos_offset =
                                                       offsetof(struct conf_certificate, pos)};

#define LI(n, ty, field, ...) KEY(struct conf_listener, n, ty, field, __VA_ARGS__)
static const struct key tls_keys[] = {
    LI("cert", T_FILE, tls.cert, .flags = K_REQUIRED),
    LI("key", T_FILE, tls.key, .flags = K_REQUIRED),
    LI("certificates", T_LIST, tls.certificates, .sub = &certificate_section,
       .aux = offsetof(struct conf_listener, tls.num_certificates)),
    LI("strict_sni", T_BOOL, tls.strict_sni, .def = false),
    {.name = NULL}};
static const struct section tls_section = {.keys = tls_keys};

#define RO(n, ty, field, ...) KEY(struct conf_route, n, ty, field, __VA_ARGS__)
static const struct key route_keys[] = {
    RO("name", T_NAME, name, .flags = K_REQUIRED),
    /* omitted: any host, any path, any headers; an empty list is a mistake */
    RO("hosts", T_HOSTS, hosts, .flags = K_NONEMPTY, .aux = offsetof(struct conf_route, num_hosts)),
    RO("paths", T_PATHS, paths, .flags = K_NONEMPTY, .aux = offsetof(struct conf_route, num_paths)),
    RO("headers", T_HEADERS, headers, .aux = offsetof(struct conf_route, num_headers)),
    RO("strip_prefix", T_BOOL, strip_prefix, .def = false),
    RO("pools", T_SPLITS, splits, .flags = K_REQUIRED, .max = WEIGHT_MAX,
       .aux = offsetof(struct conf_route, num_splits)),
    {.name = NULL}};
static const struct section route_section = {.keys = route_keys,
                                             .elem_size = sizeof(struct conf_route),
                                             .pos_offset = offsetof(struct conf_route, pos),
                                             .check = check_route};

static const struct key listener_keys[] = {
    LI("name", T_NAME, name, .flags = K_REQUIRED),
    LI("bind", T_ADDRESS, bind, .flags = K_REQUIRED),
    LI("protocol", T_ENUM, protocol, .names = protocol_names, .def = CONF_PROTO_HTTP),
    LI("tls", T_SECTION, tls, .sub = &tls_section,
       .aux = offsetof(struct conf_listener, tls.enabled)),
    LI("http2", T_ENUM, http2, .names = http2_names, .def = CONF_HTTP2_AUTO),
    LI("proxy_protocol", T_ENUM, proxy_protocol, .names = proxy_protocol_names,
       .def = CONF_PROXY_OFF),
    /* required unless proxy_protocol is false: see check_listener() */
    LI("proxy_protocol_from", T_CIDRS, proxy_protocol_from,
       .aux = offsetof(struct conf_listener, num_proxy_protocol_from)),
    /* http listeners only, each route's own rules: see check_routes() */
    LI("routes", T_LIST, routes, .sub = &route_section,
       .aux = offsetof(struct conf_listener, num_routes)),
    /* with routes it may be left out: no default route, a request no route
     * matches gets 404 */
    LI("pools", T_SPLITS, splits, .flags = K_REQUIRED, .unless = "routes", .max = WEIGHT_MAX,
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
    CF("h2_max_streams", T_UINT, limits.h2_max_streams, .min = 1, .max = H2_STREAMS_MAX,
       .def = 100),
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
FITS(pool_tls_keys);
FITS(certificate_keys);
FITS(route_keys);
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
_Static_assert(sizeof(enum conf_pool_protocol) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_http2) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_proxy_protocol) == sizeof(int), "enum size");

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
    unsigned flags;       /* CONF_LOAD_* */
    yaml_document_t *doc;
    struct arena *arena;
    struct conf *conf;
    struct pending_error *errs;
    size_t nerrs, cap;
    bool oom;
    char path[PATH_BUF];
    size_t path_len;
    /* addresses left unresolved (CONF_LOAD_DEFER_RESOLVE), for conf.unresolved */
    struct conf_unresolved *unres;
    size_t nunres, unres_cap;
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

static size_t map_len(yaml_node_t *n)
{
    return (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
}

/* For each pair of <map>, in order: the index of the first pair with the
 * same scalar key (its own index when it is the first), in an array the
 * caller frees; NULL for an empty map or when out of memory (then no key
 * is a duplicate). Linear: a map can hold thousands of pools. */
static size_t *map_first_keys(struct loader *l, yaml_node_t *map)
{
    size_t n = map_len(map);
    const char **names = n ? calloc(n, sizeof(*names)) : NULL;
    size_t *first = n ? malloc(n * sizeof(*first)) : NULL;
    struct conf_index ix = {0};

    if (n && (!names || !first || conf_index_init(&ix, names, sizeof(*names), n) < 0)) {
        l->oom = true;
        free(names);
        free(first);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *k = node_get(l, map->data.mapping.pairs.start[i].key);
        if (k && k->type == YAML_SCALAR_NODE)
            names[i] = scalar_text(k);
        first[i] = conf_index_add(&ix, i);
    }
    conf_index_free(&ix);
    free(names);
    return first;
}

/* Reports pair <i> of <map> if an earlier pair has the same key (<first>
 * from map_first_keys()). */
static bool duplicate_key(struct loader *l, yaml_node_t *map, size_t i, const size_t *first)
{
    if (!first || first[i] == i)
        return false;
    yaml_node_t *kn = node_get(l, map->data.mapping.pairs.start[i].key);
    yaml_node_t *qk = node_get(l, map->data.mapping.pairs.start[first[i]].key);
    error_node(l, kn, "duplicate key (first at line %u)", (unsigned)qk->start_mark.line + 1);
    return true;
}

/* Remembers <a>, left unresolved, under the current key path. */
static void unresolved_push(struct loader *l, struct conf_address *a)
{
    if (l->nunres == l->unres_cap) {
        size_t cap = l->unres_cap ? l->unres_cap * 2 : 16;
        struct conf_unresolved *u = realloc(l->unres, cap * sizeof(*u));
        if (!u) {
            l->oom = true;
            return;
        }
        l->unres = u;
        l->unres_cap = cap;
    }
    l->unres[l->nunres++] = (struct conf_unresolved){.address = a, .key = lstrdup(l, l->path)};
}

/* Parses <text>, the value of node <n> (NULL for a default), into <dst>;
 * a host name is resolved unless CONF_LOAD_DEFER_RESOLVE. */
static int address_load(struct loader *l, yaml_node_t *n, const char *text,
                        struct conf_address *dst, const char **reason)
{
    struct conf_address tmp;
    bool resolve = !(l->flags & CONF_LOAD_DEFER_RESOLVE);

    if (conf_parse_address_ex(text, resolve, &tmp, reason) < 0)
        return -1;
    *dst = tmp;
    dst->text = lstrdup(l, tmp.text);
    dst->host = lstrdup(l, tmp.host);
    if (n)
        dst->pos =
            (struct conf_pos){(unsigned)n->start_mark.line + 1, (unsigned)n->start_mark.column + 1};
    conf_address_clear(&tmp);
    if (!conf_address_resolved(dst))
        unresolved_push(l, dst);
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
    size_t count, used = 0, errs_before = l->nerrs, *first;
    struct conf_split *splits;
    bool any_weight = false;

    if (n->type != YAML_MAPPING_NODE) {
        error_node(l, n, "expected a mapping");
        return;
    }
    count = map_len(n);
    if (count == 0) {
        error_node(l, n, "must name at least one pool");
        return;
    }
    splits = lalloc(l, count * sizeof(*splits));
    if (!splits)
        return;
    first = map_first_keys(l, n);
    for (size_t i = 0; i < count; i++) {
        yaml_node_pair_t *p = &n->data.mapping.pairs.start[i];
        yaml_node_t *kn = node_get(l, p->key), *vn = node_get(l, p->value);
        uint64_t w;
        size_t old;

        if (kn->type != YAML_SCALAR_NODE || is_null(kn)) {
            error_node(l, kn, "expected a string");
            continue;
        }
        old = path_push_key(l, scalar_text(kn));
        if (!duplicate_key(l, n, i, first) && uint_value(l, vn, k->min, k->max, &w) == 0) {
            splits[used].pool = lstrdup(l, scalar_text(kn));
            splits[used].weight = (unsigned)w;
            any_weight |= w > 0;
            used++;
        }
        path_pop(l, old);
    }
    free(first);
    if (l->nerrs == errs_before && !any_weight)
        error_node(l, n, "all weights are 0: at least one pool needs a weight above 0");
    memcpy((char *)base + k->offset, &splits, sizeof(splits));
    memcpy((char *)base + k->aux, &used, sizeof(used));
}

static void parse_enum(struct loader *l, const struct key *k, void *dst, yaml_node_t *n)
{
    char q[QUOTE_BUF], list[256];
    const char *s = want_string(l, n), *word;
    size_t o = 0;

    if (!s)
        return;
    /* False and FALSE are false wherever YAML reads a boolean */
    word = is_plain(n) && WORD_IN(s, false_words) ? "false" : s;
    for (const struct enum_name *e = k->names; e->name; e++) {
        if (strcmp(word, e->name) == 0) {
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
        if (s && address_load(l, item, s, &addrs[i], &reason) < 0)
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

static bool string_valid(const char *s)
{
    if (strlen(s) > STRING_MAX_LEN)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

/* A list node for a T_HOSTS / T_PATHS / T_CIDRS key: its length, or
 * (size_t)-1 after reporting why it is not one. */
static size_t want_list(struct loader *l, const struct key *k, yaml_node_t *n, const char *omit)
{
    if (n->type != YAML_SEQUENCE_NODE) {
        error_node(l, n, "expected a list");
        return (size_t)-1;
    }
    if (seq_len(n) == 0 && (k->flags & K_NONEMPTY)) {
        if (omit)
            error_node(l, n, "must have at least one entry (leave the key out to match %s)", omit);
        else
            error_node(l, n, "must have at least one entry");
        return (size_t)-1;
    }
    return seq_len(n);
}

/* A route host, already lowercased and without its final dot: a DNS name,
 * or "*." and one (a wildcard over one or more labels). */
static bool route_host_valid(const char *h)
{
    if (h[0] == '*' && h[1] == '.')
        h += 2;
    return *h && h[strlen(h) - 1] != '.' && hostname_valid(h);
}

/* routes[].hosts: compared without case, port or final dot, so stored
 * lowercased without the dot (what a Host header is reduced to). */
static void parse_hosts(struct loader *l, const struct key *k, void *base, yaml_node_t *n)
{
    size_t count = want_list(l, k, n, "any host"), used = 0;
    char **hosts, q[QUOTE_BUF];

    if (count == (size_t)-1 || !(hosts = lalloc(l, (count ? count : 1) * sizeof(*hosts))))
        return;
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = seq_item(l, n, i);
        size_t old = path_push_index(l, i);
        const char *s = want_string(l, item);
        char *h = s ? lstrdup(l, s) : NULL;
        if (h) {
            size_t len = strlen(h);
            for (char *c = h; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            if (len > 1 && h[len - 1] == '.')
                h[len - 1] = '\0';
            if (route_host_valid(h))
                hosts[used++] = h;
            else
                error_node(l, item,
                           "invalid host %s: expected a DNS name, or *. and a DNS name (no port)",
                           quote(s, q));
        }
        path_pop(l, old);
    }
    memcpy((char *)base + k->offset, &hosts, sizeof(hosts));
    memcpy((char *)base + k->aux, &used, sizeof(used));
}

/* routes[].paths: "/v1/" a prefix on whole segments, "=/healthz" exact.
 * Matched against the path without its query, so ? and # could never
 * match. */
static void parse_paths(struct loader *l, const struct key *k, void *base, yaml_node_t *n)
{
    size_t count = want_list(l, k, n, "any path"), used = 0;
    struct conf_route_path *paths;
    char q[QUOTE_BUF];

    if (count == (size_t)-1 || !(paths = lalloc(l, (count ? count : 1) * sizeof(*paths))))
        return;
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = seq_item(l, n, i);
        size_t old = path_push_index(l, i);
        const char *s = want_string(l, item);
        if (s) {
            bool exact = s[0] == '=';
            const char *p = s + exact;
            if (http_path_valid(p) && !strpbrk(p, "?#")) {
                paths[used].path = lstrdup(l, p);
                paths[used].exact = exact;
                used++;
            } else {
                error_node(l, item,
                           "invalid path %s: must start with / (=/ for an exact path) and "
                           "contain no spaces, control characters, ? or #",
                           quote(s, q));
            }
        }
        path_pop(l, old);
    }
    memcpy((char *)base + k->offset, &paths, sizeof(paths));
    memcpy((char *)base + k->aux, &used, sizeof(used));
}

/* A field name is a token (RFC 9110 section 5.1, tchar in section 5.6.2). */
static bool field_name_valid(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
            return false;
    return true;
}

/* A field value as a request can carry it: no control characters but tab
 * (RFC 9110 section 5.5), and no whitespace at either end, which a parser
 * strips, so a route needing it could never match. */
static bool field_value_valid(const char *s)
{
    size_t n = strlen(s);

    if (n && (s[0] == ' ' || s[0] == '\t' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        return false;
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
            return false;
    return true;
}

/* routes[].headers: field name -> exact value. Names compare without
 * case, so they are stored lowercased and must differ that way too. */
static void parse_headers(struct loader *l, const struct key *k, void *base, yaml_node_t *n)
{
    struct conf_route_header *hs;
    struct conf_index ix = {0};
    size_t count, used = 0;
    char q[QUOTE_BUF];

    if (n->type != YAML_MAPPING_NODE) {
        error_node(l, n, "expected a mapping");
        return;
    }
    count = map_len(n);
    if (!(hs = lalloc(l, (count ? count : 1) * sizeof(*hs))))
        return;
    if (conf_index_init(&ix, &hs[0].name, sizeof(*hs), count) < 0) {
        l->oom = true;
        return;
    }
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *kn = node_get(l, n->data.mapping.pairs.start[i].key);
        yaml_node_t *vn = node_get(l, n->data.mapping.pairs.start[i].value);
        const char *name, *value;
        if (kn->type != YAML_SCALAR_NODE || is_null(kn)) {
            error_node(l, kn, "expected a string");
            continue;
        }
        name = scalar_text(kn);
        size_t old = path_push_key(l, name);
        if (!field_name_valid(name)) {
            error_node(l, kn,
                       "invalid header name %s: expected letters, digits or !#$%%&'*+-.^_`|~",
                       quote(name, q));
        } else if ((value = want_string(l, vn)) && !field_value_valid(value)) {
            error_node(l, vn,
                       "invalid header value %s: no control characters, no space at either end",
                       quote(value, q));
        } else if (value) {
            char *lower = lstrdup(l, name);
            for (char *c = lower; c && *c; c++)
                *c = (char)tolower((unsigned char)*c);
            hs[used].name = lower;
            hs[used].value = lstrdup(l, value);
            size_t j = lower ? conf_index_add(&ix, used) : used;
            if (j == used) {
                used++;
            } else {
                /* the first of the two: the pair whose key lowercases alike
                 * (a scan, but only for a mistake) */
                yaml_node_t *fk = kn;
                for (size_t m = 0; m < i && fk == kn; m++) {
                    yaml_node_t *mk = node_get(l, n->data.mapping.pairs.start[m].key);
                    if (mk->type == YAML_SCALAR_NODE && strcasecmp(scalar_text(mk), lower) == 0)
                        fk = mk;
                }
                error_node(l, kn, "duplicate header name %s (first at line %u, column %u)",
                           quote(lower, q), node_line(fk), (unsigned)fk->start_mark.column + 1);
            }
        }
        path_pop(l, old);
    }
    conf_index_free(&ix);
    memcpy((char *)base + k->offset, &hs, sizeof(hs));
    memcpy((char *)base + k->aux, &used, sizeof(used));
}

/* A list of networks (listeners[].proxy_protocol_from). */
static void parse_cidrs(struct loader *l, const struct key *k, void *base, yaml_node_t *n)
{
    size_t count = want_list(l, k, n, NULL), used = 0;
    struct conf_cidr *nets;
    char q[QUOTE_BUF];

    if (count == (size_t)-1 || !(nets = lalloc(l, (count ? count : 1) * sizeof(*nets))))
        return;
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = seq_item(l, n, i);
        size_t old = path_push_index(l, i);
        const char *s = want_string(l, item), *reason;
        if (s && conf_parse_cidr(s, &nets[used], &reason) < 0)
            error_node(l, item, "invalid network %s: %s", quote(s, q), reason);
        else if (s)
            nets[used++].text = lstrdup(l, s);
        path_pop(l, old);
    }
    memcpy((char *)base + k->offset, &nets, sizeof(nets));
    memcpy((char *)base + k->aux, &used, sizeof(used));
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
        if ((k->flags & K_OFF_BOOL) && is_plain(n) &&
            (WORD_IN(scalar_text(n), true_words) || WORD_IN(scalar_text(n), false_words))) {
            /* true: on with the defaults, already in place */
            *(bool *)((char *)base + k->aux) = WORD_IN(scalar_text(n), true_words);
            return;
        }
        if (n->type != YAML_MAPPING_NODE) {
            error_node(l, n,
                       (k->flags & K_OFF_BOOL) ? "expected a mapping, true or false"
                                               : "expected a mapping");
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
        if (address_load(l, n, s, dst, &reason) < 0)
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
    case T_STRING:
        if ((s = want_string(l, n)))
            store_checked(l, n, s, dst, string_valid, "value",
                          "at most " STR(STRING_MAX_LEN) " characters, no control characters");
        return;
    case T_HOSTS:
        parse_hosts(l, k, base, n);
        return;
    case T_PATHS:
        parse_paths(l, k, base, n);
        return;
    case T_HEADERS:
        parse_headers(l, k, base, n);
        return;
    case T_CIDRS:
        parse_cidrs(l, k, base, n);
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
    size_t errs_before = l->nerrs, *first = map_first_keys(l, map);

    for (size_t i = 0; i < map_len(map); i++) {
        yaml_node_pair_t *p = &map->data.mapping.pairs.start[i];
        yaml_node_t *kn = node_get(l, p->key), *vn = node_get(l, p->value);
        const struct key *k;
        size_t old;

        if (kn->type != YAML_SCALAR_NODE || is_null(kn)) {
            error_node(l, kn, "expected a string");
            continue;
        }
        old = path_push_key(l, scalar_text(kn));
        if (duplicate_key(l, map, i, first)) {
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
    free(first);
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
            if (k->aux != NO_OFFSET)
                *(bool *)((char *)base + k->aux) = (k->flags & K_DEFAULT_ON) != 0;
            apply_defaults(l, k->sub->keys, base);
            break;
        case T_STRING:
            if (k->def_str)
                *(char **)dst = lstrdup(l, k->def_str);
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
                address_load(l, NULL, k->def_str, dst, &reason);
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
                address_load(l, NULL, k->def_str, a, &reason);
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
        case T_HOSTS:
        case T_PATHS:
        case T_HEADERS:
        case T_CIDRS:
            break;
        }
    }
}

/* ---- cross-checks ------------------------------------------------------- */

static void check_health(struct loader *l, void *base, yaml_node_t *map)
{
    const struct conf_health_check *hc = &((struct conf_pool *)base)->health_check;
    yaml_node_t *tn = map_get(l, map, "timeout"), *in = map_get(l, map, "interval");
    static const char *const http_only[] = {"path", "expect_status"};
    yaml_node_pair_t *pair;
    char buf[32];
    size_t old;

    /* a gRPC check asks Health/Check and reads its status: a path or an
     * HTTP status written for it would silently do nothing */
    for (size_t i = 0; hc->protocol == CONF_PROTO_GRPC && i < 2; i++) {
        if (!(pair = map_pair(l, map, http_only[i])))
            continue;
        old = path_push_key(l, http_only[i]);
        error_node(l, node_get(l, pair->key),
                   "not allowed with protocol grpc (it asks grpc.health.v1.Health/Check)");
        path_pop(l, old);
    }
    if (hc->protocol != CONF_PROTO_GRPC && (pair = map_pair(l, map, "service"))) {
        old = path_push_key(l, "service");
        error_node(l, node_get(l, pair->key), "only for protocol grpc");
        path_pop(l, old);
    }

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

/* Rules between a pool's protocol, its tls and its health check. */
static void check_pool(struct loader *l, void *base, yaml_node_t *map)
{
    const struct conf_pool *p = base;
    yaml_node_pair_t *tls = map_pair(l, map, "tls");
    size_t old, old2;

    if (p->protocol == CONF_POOL_H2 && !p->tls.enabled) {
        old = path_push_key(l, "protocol");
        error_node(l, map_get(l, map, "protocol"),
                   "h2 needs a tls block (HTTP/2 over TLS; h2c is HTTP/2 without it)");
        path_pop(l, old);
    }
    if (p->protocol == CONF_POOL_H2C && tls) {
        old = path_push_key(l, "tls");
        error_node(l, node_get(l, tls->key),
                   "not allowed with protocol h2c (HTTP/2 without TLS): use protocol h2");
        path_pop(l, old);
    }
    if (p->health_check.enabled && p->health_check.protocol == CONF_PROTO_GRPC &&
        p->protocol == CONF_POOL_HTTP1) {
        yaml_node_t *hc = map_get(l, map, "health_check");
        old = path_push_key(l, "health_check");
        old2 = path_push_key(l, "protocol");
        error_node(l, map_get(l, hc, "protocol"),
                   "grpc needs the pool's protocol h2c or h2 (gRPC runs over HTTP/2)");
        path_pop(l, old2);
        path_pop(l, old);
    }
}

/* A client certificate is its cert and its key. */
static void check_pool_tls(struct loader *l, void *base, yaml_node_t *map)
{
    const struct conf_pool_tls *t = &((struct conf_pool *)base)->tls;

    if (!t->cert == !t->key)
        return;
    size_t old = path_push_key(l, t->cert ? "key" : "cert");
    error_node(l, map, "missing required key (cert and key go together)");
    path_pop(l, old);
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts <n> strings, drops repeats, appends them to <out> at <o> each
 * followed by <sep>. Returns the new length. */
static size_t append_set(char **v, size_t n, char sep, char *out, size_t o)
{
    qsort(v, n, sizeof(*v), compare_strings);
    for (size_t i = 0; i < n; i++) {
        if (i && strcmp(v[i], v[i - 1]) == 0)
            continue;
        size_t len = strlen(v[i]);
        memcpy(out + o, v[i], len);
        o += len;
        out[o++] = sep;
    }
    return o;
}

/* A route's match_key: what it matches, as sets. A prefix /v1/ matches what
 * /v1 does (whole segments), so it is keyed without its final slash. The
 * separators are control characters, which no host, path or header value
 * may contain. */
static void check_route(struct loader *l, void *base, yaml_node_t *map)
{
    struct conf_route *r = base;
    yaml_node_t *name = map_get(l, map, "name");
    size_t total = 4, n = r->num_hosts + r->num_paths + r->num_headers, o = 0, vi = 0;
    char **v = malloc((n ? n : 1) * sizeof(*v)), *key = NULL;

    if (name)
        r->name_pos = (struct conf_pos){node_line(name), (unsigned)name->start_mark.column + 1};
    for (size_t i = 0; i < r->num_hosts; i++)
        total += strlen(r->hosts[i]) + 1;
    for (size_t i = 0; i < r->num_paths; i++)
        total += strlen(r->paths[i].path) + 2;
    for (size_t i = 0; i < r->num_headers; i++)
        total += strlen(r->headers[i].name) + strlen(r->headers[i].value) + 2;
    if (!v || !(key = malloc(total)))
        goto fail;
    /* copies: the route keeps its lists in the order written */
    for (size_t i = 0; i < r->num_hosts; i++) {
        if (!(v[vi] = strdup(r->hosts[i])))
            goto fail;
        vi++;
    }
    for (size_t i = 0; i < r->num_paths; i++) {
        const struct conf_route_path *p = &r->paths[i];
        size_t len = strlen(p->path);
        if (!p->exact && len > 1 && p->path[len - 1] == '/')
            len--;
        if (asprintf(&v[vi], "%c%.*s", p->exact ? '=' : '/', (int)len, p->path) < 0)
            goto fail;
        vi++;
    }
    for (size_t i = 0; i < r->num_headers; i++) {
        if (asprintf(&v[vi], "%s\x01%s", r->headers[i].name, r->headers[i].value) < 0)
            goto fail;
        vi++;
    }
    o = append_set(v, r->num_hosts, '\x02', key, o);
    key[o++] = '\x03';
    o = append_set(v + r->num_hosts, r->num_paths, '\x02', key, o);
    key[o++] = '\x03';
    o = append_set(v + r->num_hosts + r->num_paths, r->num_headers, '\x02', key, o);
    key[o] = '\0';
    r->match_key = lstrdup(l, key);
    goto done;
fail:
    l->oom = true;
done:
    for (size_t i = 0; i < vi; i++)
        free(v[i]);
    free(v);
    free(key);
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
 * <stride> bytes apart. <with_column>: the message names the first one's
 * column too. */
static void check_unique_names(struct loader *l, yaml_node_t *list, const char *what,
                               const char *first_name, size_t count, size_t stride,
                               bool with_column)
{
    struct conf_index ix;
    char q[QUOTE_BUF];

    if (conf_index_init(&ix, first_name, stride, count) < 0) {
        l->oom = true;
        return;
    }
    for (size_t i = 0; i < count; i++) {
        size_t j = conf_index_add(&ix, i);
        if (j == i)
            continue;
        const char *ni = *(char *const *)(first_name + i * stride);
        yaml_node_t *item = seq_item(l, list, i);
        yaml_node_t *name = map_get(l, item, "name");
        yaml_node_t *first = map_get(l, seq_item(l, list, j), "name");
        if (!first)
            first = seq_item(l, list, j);
        size_t old = path_push_index(l, i);
        size_t old2 = path_push_key(l, "name");
        if (with_column)
            error_node(l, name ? name : item, "duplicate %s name %s (first at line %u, column %u)",
                       what, quote(ni, q), node_line(first),
                       (unsigned)first->start_mark.column + 1);
        else
            error_node(l, name ? name : item, "duplicate %s name %s (first at line %u)", what,
                       quote(ni, q), node_line(first));
        path_pop(l, old2);
        path_pop(l, old);
    }
    conf_index_free(&ix);
}

/* ---- binds: no two sockets on one address -------------------------------- */

/* What a collision says about the earlier socket. */
static void bind_error(struct loader *l, const struct conf_address *a, const char *key,
                       size_t key_index, const struct conf_listener *other, size_t other_index)
{
    char q[QUOTE_BUF], k[64];
    size_t old;

    if (key_index == (size_t)-1)
        snprintf(k, sizeof(k), "%s", key);
    else
        snprintf(k, sizeof(k), "%s[%zu].bind", key, key_index);
    old = path_push_key(l, k);
    if (other->name)
        error_at(l, a->pos.line, a->pos.column, "address %s is already used by listener \"%s\"",
                 quote(a->text, q), other->name);
    else
        error_at(l, a->pos.line, a->pos.column, "address %s is already used by listeners[%zu]",
                 quote(a->text, q), other_index);
    path_pop(l, old);
}

/* Orders listener indexes by the family and port of their binds (then by
 * index), so the binds that may collide sit side by side. */
static int compare_binds(const void *a, const void *b, void *listeners)
{
    const struct conf_listener *ls = listeners;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    const struct conf_address *x = &ls[i].bind, *y = &ls[j].bind;

    if (x->sa.ss_family != y->sa.ss_family)
        return x->sa.ss_family < y->sa.ss_family ? -1 : 1;
    if (x->port != y->port)
        return x->port < y->port ? -1 : 1;
    return i < j ? -1 : i > j;
}

/* Each listener whose bind collides with an earlier listener's, and
 * admin.bind against every listener. Binds can collide only with the
 * same family and port: sorted by them, only neighbours are compared.
 * Works from the addresses and their positions alone, so it runs again
 * once deferred names are resolved (conf_check_resolved()). */
static void check_binds(struct loader *l)
{
    const struct conf *c = l->conf;
    size_t n = c->num_listeners, *order = n ? malloc(n * sizeof(*order)) : NULL;

    if (n && !order) {
        l->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    if (n)
        qsort_r(order, n, sizeof(*order), compare_binds, c->listeners);
    for (size_t g = 0; g < n;) {
        size_t e = g + 1;
        const struct conf_address *ga = &c->listeners[order[g]].bind;
        while (e < n && c->listeners[order[e]].bind.sa.ss_family == ga->sa.ss_family &&
               c->listeners[order[e]].bind.port == ga->port)
            e++;
        /* order[g..e) is one family and port, by index: each against the earlier */
        for (size_t x = g + 1; x < e; x++) {
            const struct conf_listener *li = &c->listeners[order[x]];
            for (size_t y = g; li->bind.text && y < x; y++) {
                const struct conf_listener *lj = &c->listeners[order[y]];
                if (!lj->bind.text || !conf_address_overlap(&li->bind, &lj->bind))
                    continue;
                bind_error(l, &li->bind, "listeners", order[x], lj, order[y]);
                break;
            }
        }
        g = e;
    }
    free(order);

    if (!c->admin.enabled || !c->admin.bind.text)
        return;
    for (size_t i = 0; i < n; i++) {
        const struct conf_listener *li = &c->listeners[i];
        if (!li->bind.text || !conf_address_overlap(&c->admin.bind, &li->bind))
            continue;
        bind_error(l, &c->admin.bind, "admin.bind", (size_t)-1, li, i);
        break;
    }
}

/* ---- listeners and their routes ------------------------------------------ */

/* The index of the pool named <name> (via <pools>, an index of
 * conf.pools), or an error at the key <name> of <split_map> naming it. */
static void resolve_splits(struct loader *l, const struct conf_index *pools,
                           struct conf_split *splits, size_t count, yaml_node_t *item,
                           yaml_node_t *split_map)
{
    char q[QUOTE_BUF];

    for (size_t s = 0; s < count; s++) {
        struct conf_split *sp = &splits[s];
        size_t p = conf_index_find(pools, sp->pool);
        if (p != CONF_INDEX_NONE) {
            sp->pool_index = p;
            continue;
        }
        yaml_node_pair_t *pair = map_pair(l, split_map, sp->pool);
        size_t old3 = path_push_key(l, "pools");
        size_t old4 = path_push_key(l, sp->pool);
        error_node(l, pair ? node_get(l, pair->key) : item, "unknown pool %s", quote(sp->pool, q));
        path_pop(l, old4);
        path_pop(l, old3);
    }
}

/* A listener's routes: names unique, no route shadowed by an earlier one
 * with the same hosts, paths and headers, pools that exist. */
static void check_routes(struct loader *l, struct conf_listener *li, yaml_node_t *list,
                         const struct conf_index *pools)
{
    struct conf_index ix;
    char q[QUOTE_BUF];
    size_t n = li->num_routes, old = path_push_key(l, "routes");

    check_unique_names(l, list, "route", (const char *)&li->routes[0].name, n,
                       sizeof(li->routes[0]), true);
    if (conf_index_init(&ix, &li->routes[0].match_key, sizeof(li->routes[0]), n) < 0) {
        l->oom = true;
        path_pop(l, old);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const struct conf_route *r = &li->routes[i];
        size_t j = conf_index_add(&ix, i), old2 = path_push_index(l, i);
        if (j != i) {
            const struct conf_route *first = &li->routes[j];
            if (first->name)
                error_at(l, r->pos.line, r->pos.column,
                         "same hosts, paths and headers as route %s (line %u, column %u): it "
                         "could never match",
                         quote(first->name, q), first->pos.line, first->pos.column);
            else
                error_at(l, r->pos.line, r->pos.column,
                         "same hosts, paths and headers as routes[%zu] (line %u, column %u): it "
                         "could never match",
                         j, first->pos.line, first->pos.column);
        }
        if (pools) {
            yaml_node_t *item = seq_item(l, list, i);
            resolve_splits(l, pools, li->routes[i].splits, li->routes[i].num_splits, item,
                           map_get(l, item, "pools"));
        }
        path_pop(l, old2);
    }
    conf_index_free(&ix);
    path_pop(l, old);
}

/* What a listener's keys require of each other. */
static void check_listener(struct loader *l, struct conf_listener *li, yaml_node_t *item,
                           const struct conf_index *pools)
{
    yaml_node_pair_t *routes = map_pair(l, item, "routes");
    yaml_node_t *from = map_get(l, item, "proxy_protocol_from");
    yaml_node_t *rn = routes ? node_get(l, routes->value) : NULL;
    size_t old;

    if (li->proxy_protocol != CONF_PROXY_OFF && li->num_proxy_protocol_from == 0) {
        const char *v = conf_proxy_protocol_str(li->proxy_protocol);
        old = path_push_key(l, "proxy_protocol_from");
        /* an unlisted peer could forge any client address */
        if (!from)
            error_node(l, item,
                       "missing required key (proxy_protocol is %s: the networks allowed to "
                       "connect)",
                       v);
        else if (from->type == YAML_SEQUENCE_NODE && seq_len(from) == 0)
            error_node(l, from, "must have at least one entry with proxy_protocol %s", v);
        path_pop(l, old);
    }
    if (routes && li->protocol == CONF_PROTO_TCP) {
        old = path_push_key(l, "routes");
        error_node(l, node_get(l, routes->key), "allowed on http listeners only");
        path_pop(l, old);
    }
    if (rn && rn->type == YAML_SEQUENCE_NODE && seq_len(rn) == 0 && !map_pair(l, item, "pools")) {
        old = path_push_key(l, "pools");
        error_node(l, item, "missing required key (the listener has no routes)");
        path_pop(l, old);
    }
    if (pools)
        resolve_splits(l, pools, li->splits, li->num_splits, item, map_get(l, item, "pools"));
    if (rn && rn->type == YAML_SEQUENCE_NODE && seq_len(rn) == li->num_routes && li->num_routes)
        check_routes(l, li, rn, pools);
}

/* Rules between parts of the file: unique names, binds that do not
 * collide, listeners and routes that name existing pools. */
static void check_references(struct loader *l, yaml_node_t *root)
{
    struct conf *c = l->conf;
    yaml_node_t *pools = parsed_list(l, root, "pools", c->num_pools);
    yaml_node_t *listeners = parsed_list(l, root, "listeners", c->num_listeners);
    bool pool_names_ok = pools != NULL;
    struct conf_index pix = {0};
    size_t old, old2;

    if (pools && c->num_pools) {
        old = path_push_key(l, "pools");
        check_unique_names(l, pools, "pool", (const char *)&c->pools[0].name, c->num_pools,
                           sizeof(c->pools[0]), false);
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
                               p->num_backends, sizeof(p->backends[0]), false);
            path_pop(l, old3);
            path_pop(l, old2);
        }
        path_pop(l, old);
    }
    /* a pool name that did not parse would make every reference to it an
     * "unknown pool": those are checked once the pools are right */
    if (pool_names_ok && c->num_pools &&
        conf_index_build(&pix, &c->pools[0].name, sizeof(c->pools[0]), c->num_pools) < 0) {
        l->oom = true;
        pool_names_ok = false;
    }

    check_binds(l);
    if (listeners && c->num_listeners) {
        old = path_push_key(l, "listeners");
        check_unique_names(l, listeners, "listener", (const char *)&c->listeners[0].name,
                           c->num_listeners, sizeof(c->listeners[0]), false);
        for (size_t i = 0; i < c->num_listeners; i++) {
            old2 = path_push_index(l, i);
            check_listener(l, &c->listeners[i], seq_item(l, listeners, i),
                           pool_names_ok ? &pix : NULL);
            path_pop(l, old2);
        }
        path_pop(l, old);
    }
    conf_index_free(&pix);
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

/* Hands the errors <l> collected to <errs>, in file order. Returns true if
 * there was any (or memory ran out). */
static bool errors_finish(struct loader *l, struct conf_errors *errs)
{
    if (l->nerrs)
        qsort(l->errs, l->nerrs, sizeof(l->errs[0]), compare_errors);
    for (size_t i = 0; i < l->nerrs; i++)
        errors_push(errs, l->errs[i].msg);
    free(l->errs);
    l->errs = NULL;
    if (l->oom)
        errors_printf(errs, "%s: out of memory", l->file);
    return l->nerrs || l->oom;
}

/* admin.bind left at its default is where the admin section is, for a
 * collision reported later (conf_check_resolved() has no document). */
static void admin_bind_position(struct loader *l, yaml_node_t *root)
{
    yaml_node_t *admin = map_get(l, root, "admin");
    struct conf_address *a = &l->conf->admin.bind;

    if (admin && a->pos.line == 0)
        a->pos = (struct conf_pos){node_line(admin), (unsigned)admin->start_mark.column + 1};
}

/* conf.unresolved from what the loader collected. */
static void unresolved_finish(struct loader *l)
{
    struct conf *c = l->conf;

    if (l->nunres && (c->unresolved = lalloc(l, l->nunres * sizeof(*c->unresolved)))) {
        memcpy(c->unresolved, l->unres, l->nunres * sizeof(*c->unresolved));
        c->num_unresolved = l->nunres;
    }
    free(l->unres);
    l->unres = NULL;
}

static struct conf *load(const char *name, const char *base_dir, const char *yaml, size_t len,
                         unsigned flags, struct conf_errors *errs)
{
    struct loader l = {.file = name, .base_dir = base_dir, .flags = flags};
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
        admin_bind_position(&l, root);
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
    if (c)
        unresolved_finish(&l);
    free(l.unres);
    if (errors_finish(&l, errs)) {
        conf_free(c);
        return NULL;
    }
    return c;
}

struct conf *conf_load_string(const char *name, const char *yaml, size_t len,
                              struct conf_errors *errs)
{
    return load(name, NULL, yaml, len, 0, errs);
}

struct conf *conf_load_string_flags(const char *name, const char *yaml, size_t len, unsigned flags,
                                    struct conf_errors *errs)
{
    return load(name, NULL, yaml, len, flags, errs);
}

struct conf *conf_load(const char *path, struct conf_errors *errs)
{
    return conf_load_flags(path, 0, errs);
}

struct conf *conf_load_flags(const char *path, unsigned flags, struct conf_errors *errs)
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
    c = load(path, slash ? dir : NULL, buf ? buf : "", len, flags, errs);

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

const struct conf_route *conf_find_route(const struct conf_listener *l, const char *name)
{
    for (size_t i = 0; i < l->num_routes; i++)
        if (l->routes[i].name && strcmp(l->routes[i].name, name) == 0)
            return &l->routes[i];
    return NULL;
}

/* ---- deferred resolution -------------------------------------------------- */

static void unresolved_report(struct loader *l, const struct conf_unresolved *u, const char *reason)
{
    char q[QUOTE_BUF];
    size_t old = path_push_key(l, u->key);

    error_at(l, u->address->pos.line, u->address->pos.column, "invalid address %s: %s",
             quote(u->address->text, q), reason);
    path_pop(l, old);
}

void conf_unresolved_error(const struct conf *c, const struct conf_unresolved *u,
                           const char *reason, struct conf_errors *errs)
{
    struct loader l = {.file = c->path};

    unresolved_report(&l, u, reason);
    errors_finish(&l, errs);
}

int conf_check_resolved(const struct conf *c, struct conf_errors *errs)
{
    /* check_binds() only reads the conf */
    struct loader l = {.file = c->path, .conf = (struct conf *)c};

    for (size_t i = 0; i < c->num_unresolved; i++)
        if (!conf_address_resolved(c->unresolved[i].address))
            unresolved_report(&l, &c->unresolved[i], "cannot resolve host");
    check_binds(&l);
    return errors_finish(&l, errs) ? -1 : 0;
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
    return enum_str(health_protocol_names, (int)p);
}

const char *conf_pool_protocol_str(enum conf_pool_protocol p)
{
    return enum_str(pool_protocol_names, (int)p);
}

const char *conf_http2_str(enum conf_http2 h)
{
    return enum_str(http2_names, (int)h);
}

const char *conf_proxy_protocol_str(enum conf_proxy_protocol p)
{
    return enum_str(proxy_protocol_names, (int)p);
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
