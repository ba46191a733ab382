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

/* A host:port resolved at load time. `text` is what the user wrote. */
struct conf_address {
    char *text; /* "127.0.0.1:9001", "[::1]:80", "backend.local:80" */
    char *host; /* "127.0.0.1", "::1", "backend.local" (no brackets) */
    uint16_t port;
    struct sockaddr_storage sa;
    socklen_t sa_len;
};

enum conf_log_level { CONF_LOG_DEBUG = 1, CONF_LOG_INFO, CONF_LOG_WARN, CONF_LOG_ERROR };
enum conf_log_format { CONF_LOG_TEXT = 1, CONF_LOG_JSON };
enum conf_protocol { CONF_PROTO_HTTP = 1, CONF_PROTO_TCP };
enum conf_balance { CONF_BALANCE_ROUND_ROBIN = 1, CONF_BALANCE_LEAST_CONN };
enum conf_idle_close { CONF_IDLE_CLOSE_NOW = 1, CONF_IDLE_CLOSE_AFTER_REQUEST };

struct conf_health_check {
    bool enabled;                 /* false when the pool has no health_check key */
    enum conf_protocol protocol;  /* http | tcp (default http) */
    char *path;                   /* default "/healthz" */
    conf_ms interval;             /* default 2s */
    conf_ms timeout;              /* default 1s */
    unsigned healthy_threshold;   /* default 2 */
    unsigned unhealthy_threshold; /* default 3 */
    unsigned expect_min;          /* expect_status "200-399" -> 200, 399; "200" -> 200, 200 */
    unsigned expect_max;
};

struct conf_backend {
    char *name;
    struct conf_address address;
    unsigned weight; /* default 1, 0..1000000 */
    struct conf_pos pos;
};

/* pools[].passive_health: ejection on real traffic. */
struct conf_passive_health {
    bool enabled;                  /* false when the key is absent */
    unsigned consecutive_failures; /* default 5 */
    conf_ms ejection_time;         /* default 30s */
    unsigned max_ejected_percent;  /* default 50 */
};

/* pools[].discover: backends from DNS. */
struct conf_discover {
    bool enabled; /* false when the key is absent */
    char *dns;    /* the name to resolve */
    uint16_t port; /* required unless srv */
    bool srv;      /* SRV records (port from the record); default false */
    conf_ms interval; /* default 5s */
};

struct conf_pool {
    char *name;
    enum conf_balance balance;    /* default round_robin */
    conf_ms deregistration_delay; /* default 30s */
    conf_ms slow_start;           /* default 0s (off) */
    struct conf_passive_health passive_health;
    struct conf_discover discover;
    struct conf_health_check health_check;
    struct conf_backend *backends;
    size_t num_backends;
    struct conf_pos pos;
};

/* One entry of a listener's `pools` map: pool name -> weight. */
struct conf_split {
    char *pool;
    size_t pool_index; /* index into conf.pools */
    unsigned weight;
};

struct conf_tls {
    bool enabled;
    char *cert; /* PEM files; conf_load() resolves a relative path */
    char *key;  /* against the config file's directory */
};

struct conf_listener {
    char *name;
    struct conf_address bind;
    enum conf_protocol protocol; /* default http */
    struct conf_tls tls;
    struct conf_split *splits;
    size_t num_splits;
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
        conf_ms drain_delay;        /* default 0s */
        conf_ms timeout;            /* default 30s */
        conf_ms close_spread;       /* default 0s */
        enum conf_idle_close idle_close; /* default now */
        conf_ms tunnel_close_grace; /* default 2s */
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
    } limits;

    struct {
        enum conf_log_level level;   /* default info */
        enum conf_log_format format; /* default text */
        bool access;                 /* default false */
    } log;

    struct {
        bool enabled;                    /* false when the key is absent */
        struct conf_address *nameservers; /* empty: /etc/resolv.conf */
        size_t num_nameservers;
        conf_ms hold; /* default 30s */
    } resolver;

    struct {
        bool enabled;                /* false when the key is absent */
        struct conf_address *etcd;   /* endpoints, default [127.0.0.1:2379] */
        size_t num_etcd;
        char *prefix;   /* default "/usher/" */
        char *instance; /* default (absent or ""): the host name; NULL only when that is
                           not a valid name and fleet is off (with fleet on: an error) */
    } fleet;

    struct conf_listener *listeners;
    size_t num_listeners;
    struct conf_pool *pools;
    size_t num_pools;

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
 * LISTENER_REMOVED first (so a socket is released before a new listener may
 * want its address), then LISTENER_ADDED / LISTENER_SPLIT in new order. */
enum conf_change_kind {
    CONF_BACKEND_ADDED = 1, /* new_pool/new_backend set */
    CONF_BACKEND_REMOVED,   /* old_pool/old_backend set (address change = removed + added) */
    CONF_BACKEND_WEIGHT,    /* both set; only the weight differs */
    CONF_POOL_ADDED,        /* new_pool set */
    CONF_POOL_REMOVED,      /* old_pool set */
    CONF_POOL_CHANGED,      /* both set; balance, deregistration_delay, slow_start,
                               health_check, passive_health or discover differ */
    CONF_LISTENER_ADDED,    /* new_listener set */
    CONF_LISTENER_REMOVED,  /* old_listener set (a changed bind = removed + added) */
    CONF_LISTENER_SPLIT,    /* both set; the pools map or protocol/tls differ, socket kept */
};

struct conf_change {
    enum conf_change_kind kind;
    const struct conf_pool *old_pool, *new_pool;
    const struct conf_backend *old_backend, *new_backend;
    const struct conf_listener *old_listener, *new_listener;
};

struct conf_diff {
    struct conf_change *changes;
    size_t count;
};

#endif
