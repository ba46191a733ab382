/* Validated configuration: types only. A struct conf is immutable once
 * conf_load() returns it; a reload builds a new one. */
#ifndef USHER_CONF_CONF_T_H
#define USHER_CONF_CONF_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Durations are kept in milliseconds. */
typedef uint64_t conf_ms;

/* The longest duration any key accepts: 720h (30 days). Anything longer is
 * far more likely a typo (ms vs s vs h) than intent. */
#define CONF_DURATION_MAX ((conf_ms)30 * 24 * 3600 * 1000)

/* Where a value came from in the YAML file (1-based line and column). */
struct conf_pos {
    unsigned line;
    unsigned column;
};

/* A host:port. `text` is what the user wrote. An IP literal is always
 * parsed into `sa`; a host name is resolved by conf_load() unless it was
 * asked not to (CONF_LOAD_DEFER_RESOLVE): then `sa` stays AF_UNSPEC and
 * `sa_len` 0 until the caller fills it in (conf_address_fill(), see
 * struct conf_unresolved). */
struct conf_address {
    char *text; /* "127.0.0.1:9001", "[::1]:80", "backend.local:80" */
    char *host; /* "127.0.0.1", "::1", "backend.local" (no brackets) */
    uint16_t port;
    bool named;          /* host is a DNS name, not an IP literal: what it resolves to may change */
    struct conf_pos pos; /* where conf_load() read it (0, 0 for a default) */
    struct sockaddr_storage sa; /* port set; ss_family AF_UNSPEC while unresolved */
    socklen_t sa_len;           /* 0 while unresolved */
};

/* An address conf_load() left for its caller to resolve
 * (CONF_LOAD_DEFER_RESOLVE). The keys that may hold a host name, so appear
 * here: listeners[].bind, admin.bind, pools[].backends[].address,
 * resolver.nameservers[] and fleet.etcd[] (defaults are IP literals;
 * discover.dns is a name by design, resolved at run time, never here). */
struct conf_unresolved {
    struct conf_address *address; /* inside the conf (its pos: where it is written);
                                     fill it in with conf_address_fill() */
    const char *key;              /* its dotted key, "pools[0].backends[1].address" */
};

enum conf_log_level { CONF_LOG_DEBUG = 1, CONF_LOG_INFO, CONF_LOG_WARN, CONF_LOG_ERROR };
enum conf_log_format { CONF_LOG_TEXT = 1, CONF_LOG_JSON };
/* A listener's protocol (http | tcp) and a health check's (http | tcp |
 * grpc: CONF_PROTO_GRPC is never a listener's). */
enum conf_protocol { CONF_PROTO_HTTP = 1, CONF_PROTO_TCP, CONF_PROTO_GRPC };
/* How usher speaks to a pool's backends (pools[].protocol). */
enum conf_pool_protocol { CONF_POOL_HTTP1 = 1, CONF_POOL_H2C, CONF_POOL_H2 };
/* listeners[].http2: auto = h2 by ALPN on TLS, h2c with prior knowledge on plain. */
enum conf_http2 { CONF_HTTP2_AUTO = 1, CONF_HTTP2_OFF };
/* HAProxy's PROXY protocol: listeners[].proxy_protocol (any version, or
 * ANY: whichever the header is) and pools[].send_proxy (OFF, V1 or V2). */
enum conf_proxy_protocol {
    CONF_PROXY_OFF = 1,
    CONF_PROXY_V1,
    CONF_PROXY_V2,
    CONF_PROXY_ANY,
};
enum conf_balance { CONF_BALANCE_ROUND_ROBIN = 1, CONF_BALANCE_LEAST_CONN };
enum conf_idle_close { CONF_IDLE_CLOSE_NOW = 1, CONF_IDLE_CLOSE_AFTER_REQUEST };

struct conf_health_check {
    bool enabled;                 /* false when the pool has no health_check key */
    enum conf_protocol protocol;  /* http | tcp | grpc (default http); grpc needs the pool's
                                     protocol h2c or h2 */
    char *service;                /* grpc: the service asked about; default "" (the whole
                                     server). Written with another protocol: a config error */
    char *path;                   /* default "/healthz"; not used by grpc (written: an error) */
    conf_ms interval;             /* default 2s */
    conf_ms timeout;              /* default 1s */
    unsigned healthy_threshold;   /* default 2 */
    unsigned unhealthy_threshold; /* default 3 */
    unsigned expect_min;          /* expect_status "200-399" -> 200, 399; "200" -> 200, 200;
                                     not used by grpc (written: an error) */
    unsigned expect_max;
};

struct conf_backend {
    char *name;
    struct conf_address address;
    unsigned weight; /* default 1, 0..1000000 */
    struct conf_pos pos;
};

/* pools[].passive_health: ejection on real traffic. On by default: the key
 * absent or `true` = on with the defaults, a mapping = on with its values,
 * `false` = off. */
struct conf_passive_health {
    bool enabled;                  /* false only for `passive_health: false` */
    unsigned consecutive_failures; /* default 5 */
    conf_ms ejection_time;         /* default 30s */
    unsigned max_ejected_percent;  /* default 50 */
};

/* pools[].discover: backends from DNS. */
struct conf_discover {
    bool enabled;     /* false when the key is absent */
    char *dns;        /* the name to resolve */
    uint16_t port;    /* required unless srv */
    bool srv;         /* SRV records (port from the record); default false */
    conf_ms interval; /* default 5s */
};

/* pools[].tls: TLS to the backends (and their health checks). */
struct conf_pool_tls {
    bool enabled; /* false when the key is absent */
    char *ca;     /* PEM trust anchors; NULL: the system's. Paths like conf_tls's */
    bool verify;  /* default true: the chain, and the name (sni, else the backend's host) */
    char *sni;    /* server name sent; NULL: the backend's host name (none for an IP) */
    char *cert;   /* client certificate and key for mutual TLS: both or neither (NULL) */
    char *key;
};

struct conf_pool {
    char *name;
    enum conf_pool_protocol protocol; /* default http1; h2 needs tls */
    struct conf_pool_tls tls;
    enum conf_proxy_protocol send_proxy; /* default off; v1 | v2 (never any) */
    enum conf_balance balance;           /* default round_robin */
    conf_ms deregistration_delay;        /* default 30s */
    conf_ms slow_start;                  /* default 0s (off) */
    struct conf_passive_health passive_health;
    struct conf_discover discover;
    struct conf_health_check health_check;
    struct conf_backend *backends;
    size_t num_backends;
    struct conf_pos pos;
};

/* One entry of a listener's or a route's `pools` map: pool name -> weight. */
struct conf_split {
    char *pool;
    size_t pool_index; /* index into conf.pools */
    unsigned weight;
};

/* listeners[].tls.certificates[]: one more certificate, picked by SNI. */
struct conf_certificate {
    char *cert; /* PEM files, paths as in conf_tls */
    char *key;
    struct conf_pos pos;
};

struct conf_tls {
    bool enabled;
    char *cert;                            /* PEM files; conf_load() resolves a relative path */
    char *key;                             /* against the config file's directory */
    struct conf_certificate *certificates; /* more, picked by the SNI name; may be none */
    size_t num_certificates;
    bool strict_sni; /* default false: an SNI name no certificate covers gets `cert` */
};

/* listeners[].proxy_protocol_from[]: an IPv4 or IPv6 network. */
struct conf_cidr {
    char *text;         /* as written: "10.0.0.0/8", "::1" (no prefix: one address) */
    sa_family_t family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];   /* network byte order (AF_INET: the first 4 bytes); no bits set
                           beyond the prefix */
    unsigned prefix;    /* 0..32 or 0..128 */
};

/* routes[].paths[]: a prefix on whole segments, or with "=" the exact path. */
struct conf_route_path {
    char *path; /* as written, without the "=": starts with / */
    bool exact; /* written "=/healthz" */
};

/* routes[].headers: a field that must be present with exactly this value. */
struct conf_route_header {
    char *name;  /* lowercased */
    char *value; /* as written (compared exactly) */
};

/* listeners[].routes[] (http listeners only). Matched by (listener name,
 * route name) across reloads. */
struct conf_route {
    char *name;       /* unique within the listener */
    char **hosts;     /* lowercased, no trailing dot; "*.example.com" for a wildcard; */
    size_t num_hosts; /* none: any host */
    struct conf_route_path *paths; /* none: any path */
    size_t num_paths;
    struct conf_route_header *headers; /* none: any request */
    size_t num_headers;
    bool strip_prefix;         /* default false: the matched prefix is removed from the path sent */
    struct conf_split *splits; /* its pools map: at least one weight > 0 */
    size_t num_splits;
    struct conf_pos pos;      /* the route's mapping */
    struct conf_pos name_pos; /* its name */
    /* hosts, paths (a prefix without its final /) and headers, each sorted and
     * deduplicated, in one string: two routes of a listener with the same key
     * match the same requests (conf_load() refuses that) */
    char *match_key;
};

struct conf_listener {
    char *name;
    struct conf_address bind;
    enum conf_protocol protocol; /* default http */
    struct conf_tls tls;
    enum conf_http2 http2;                   /* default auto (http listeners) */
    enum conf_proxy_protocol proxy_protocol; /* default off */
    struct conf_cidr *proxy_protocol_from;   /* at least one unless proxy_protocol is off */
    size_t num_proxy_protocol_from;
    struct conf_route *routes; /* may be none */
    size_t num_routes;
    struct conf_split *splits; /* the default route; none only when the listener has routes */
    size_t num_splits;         /* (then a request no route matches gets 404) */
    struct conf_pos pos;
};

struct conf {
    char *path; /* the file it was loaded from */

    unsigned workers; /* default 0 = auto (CPUs usher may run on); 1..256 */

    struct {
        bool enabled; /* false when the admin key is absent */
        struct conf_address bind;
        char *token_file; /* NULL if unset or ""; resolved against the config's directory;
                             a readable file, not blank, at load (re-read it at reload) */
        char *state_file; /* NULL if unset or ""; resolved against the config's directory;
                             need not exist, its directory does (at load) */
        bool ready_requires_backends; /* default false */
    } admin;

    struct {
        conf_ms timeout; /* default 30s */
    } upgrade;

    struct {
        conf_ms drain_delay;             /* default 0s */
        conf_ms timeout;                 /* default 30s */
        conf_ms close_spread;            /* default 0s */
        enum conf_idle_close idle_close; /* default now */
        conf_ms tunnel_close_grace;      /* default 2s */
    } shutdown;

    struct {
        conf_ms client_header; /* default 10s */
        conf_ms client_idle;   /* default 60s */
        conf_ms connect;       /* default 3s */
        conf_ms backend;       /* default 60s */
        conf_ms first_byte;    /* default: = backend */
        conf_ms tunnel;        /* default 1h */
        conf_ms backend_idle;  /* default 4s: pooled idle upstream connection (extension) */
    } timeouts;

    struct {
        unsigned max_connections;          /* default 10000 */
        unsigned max_head_bytes;           /* default 16384 */
        unsigned max_headers;              /* default 100 */
        unsigned max_uri_bytes;            /* default 8192 (extension) */
        unsigned backend_idle_connections; /* default 64 pooled per backend (extension) */
        unsigned h2_max_streams;           /* default 100 concurrent streams per HTTP/2
                                              client connection; 1..10000 */
    } limits;

    struct {
        enum conf_log_level level;   /* default info */
        enum conf_log_format format; /* default text */
        bool access;                 /* default false */
    } log;

    struct {
        bool enabled;                     /* false when the key is absent */
        struct conf_address *nameservers; /* empty: /etc/resolv.conf */
        size_t num_nameservers;
        conf_ms hold; /* default 30s */
    } resolver;

    struct {
        bool enabled;              /* false when the key is absent */
        struct conf_address *etcd; /* endpoints, default [127.0.0.1:2379] */
        size_t num_etcd;
        char *prefix;   /* default "/usher/" */
        char *instance; /* default (absent or ""): the host name; NULL only when that is
                           not a valid name and fleet is off (with fleet on: an error) */
    } fleet;

    struct conf_listener *listeners;
    size_t num_listeners;
    struct conf_pool *pools;
    size_t num_pools;

    /* The addresses with a host name that conf_load() did not resolve
     * (CONF_LOAD_DEFER_RESOLVE; none otherwise), in file order. An entry
     * stays listed once filled in: conf_address_resolved() tells. */
    struct conf_unresolved *unresolved;
    size_t num_unresolved;

    void *arena; /* internal: every allocation of this conf */
};

/* Errors collected while loading: each one "file:line:column: key: reason". */
struct conf_errors {
    char **messages;
    size_t count;
    size_t capacity;
};

/* What changed between two configs, for an in-place reload. Pointers refer
 * into the old or new config as named; they live as long as those do. */
/* Order of the changes: for each pool that disappeared, its backends
 * (BACKEND_REMOVED) then the pool (POOL_REMOVED); then, per pool of the new
 * config in order, POOL_ADDED or POOL_CHANGED, then its BACKEND_REMOVED,
 * BACKEND_ADDED and BACKEND_WEIGHT changes; last the listeners: every
 * LISTENER_REMOVED first, in old order (so a socket is released before a new
 * listener may want its address) — a listener whose name is gone has its
 * ROUTE_REMOVED changes just before — then, per listener of the new config
 * in order, LISTENER_ADDED or LISTENER_SPLIT, then its ROUTE_REMOVED (old
 * order), ROUTE_ADDED and ROUTE_CHANGED (new order). Routes are matched by
 * (listener name, route name), whatever the binds: a listener that moved
 * keeps its unchanged routes. */
enum conf_change_kind {
    CONF_BACKEND_ADDED = 1, /* new_pool/new_backend set */
    CONF_BACKEND_REMOVED,   /* old_pool/old_backend set (address change = removed + added) */
    CONF_BACKEND_WEIGHT,    /* both set; only the weight differs */
    CONF_POOL_ADDED,        /* new_pool set */
    CONF_POOL_REMOVED,      /* old_pool set */
    CONF_POOL_CHANGED,      /* both set; protocol, tls, send_proxy, balance,
                               deregistration_delay, slow_start, health_check,
                               passive_health or discover differ */
    CONF_LISTENER_ADDED,    /* new_listener set */
    CONF_LISTENER_REMOVED,  /* old_listener set (a changed bind = removed + added) */
    CONF_LISTENER_SPLIT,    /* both set; the listener's own settings or its default split
                               (pools map) differ, socket kept: protocol, tls (files,
                               certificates, strict_sni), http2, proxy_protocol,
                               proxy_protocol_from. Routes are not its settings: they
                               change with ROUTE_* */
    CONF_ROUTE_ADDED,       /* new_listener/new_route set */
    CONF_ROUTE_REMOVED,     /* old_listener/old_route set */
    CONF_ROUTE_CHANGED,     /* all four set; hosts, paths, headers, strip_prefix or the
                               pools map differ (the next request follows the new route) */
};

struct conf_change {
    enum conf_change_kind kind;
    const struct conf_pool *old_pool, *new_pool;
    const struct conf_backend *old_backend, *new_backend;
    const struct conf_listener *old_listener, *new_listener;
    const struct conf_route *old_route, *new_route;
};

struct conf_diff {
    struct conf_change *changes;
    size_t count;
};

#endif
