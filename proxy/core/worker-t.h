/* The data plane's runtime objects: types only. Everything hangs off a
 * struct worker (one event loop); there is no mutable global state. */
#ifndef USHER_PROXY_WORKER_T_H
#define USHER_PROXY_WORKER_T_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "../../conf/conf-t.h"
#include "../../health/backend-t.h"
#include "../net/list.h"
#include "../../parser/http1-t.h"
#include "../base/buf.h"
#include "../base/metrics-t.h"
#include "../base/prng.h"
#include "body.h"
#include "exchange-t.h"
#include "transport.h"
#include "retry.h"

struct worker;
struct client;
struct server;

/* Responses by status class: [1]..[5] by first digit; [0] counts requests
 * that got no response at all; [STATUS_ABORTED] responses cut short after
 * their head went out (the client saw an incomplete answer). */
#define STATUS_ABORTED 6
#define STATUS_CLASSES 7

/* A pool as the data plane sees it: its servers keyed by name. It survives
 * reloads; its conf pointer follows the current generation. */
struct pool {
    char *name;
    const struct conf_pool *conf; /* NULL once removed from the config */
    struct server **servers;
    size_t num_servers;
    size_t servers_cap;
    size_t lc_next; /* least_conn tie-breaker rotation */
    size_t stagger; /* round robin: where this worker's scan starts (its id) */
    struct retry_budget retry_budget;
    uint64_t retries[RETRY_REASONS]; /* requests sent again to another backend, by reason */
    uint64_t retry_budget_refused;   /* retries the budget did not allow */
    struct pool *next;
};

/* The proxy's side of one backend: what health/ knows about it (<hb>:
 * state, address, weight) plus what only the data plane tracks — its
 * connections, its traffic counters and its balancing state. */
struct server {
    struct backend *hb; /* shared by the replicas: health runs once per backend */
    struct pool *pool;
    struct worker *w;
    /* With several workers each has its own server per backend (its own
     * connections, counters and balancing state); the first worker's is
     * the primary, which health reports to and which lists the others. */
    struct server *primary;      /* NULL in the primary itself */
    struct server *next_replica; /* the primary's list of replicas */
    bool discovered; /* made by DNS discovery: a reload's diff, which knows only the
                        config's backends, never touches it; it drains with reason dns */
    struct list idle; /* pooled idle upstreams (struct upstream.pool_link) */
    unsigned idle_count;
    struct list active; /* upstreams bound to a client (struct upstream.pool_link) */
    unsigned inflight;  /* primary: requests in flight in every worker (atomic) */
    uint64_t requests_total;
    uint64_t responses[STATUS_CLASSES];
    uint64_t connect_failures;
    uint64_t bytes_in;  /* from clients, requests it served (head and body), at their end */
    uint64_t bytes_out; /* to clients, its responses, at their end */
    struct metrics_histogram duration; /* backend chosen -> response complete */
    int64_t rr_current;                /* smooth weighted round robin state */
    bool from_startup;      /* created at process start: its first entry into rotation is no ramp */
    ev_tstamp ramp_started; /* slow start: when it (re)entered rotation (0: no ramp) */
    /* the runtime API's weight, in force over the config's while set */
    bool weight_overridden;
    unsigned weight_override;
};

/* One entry of a listener's runtime split. */
struct split_slot {
    struct pool *pool;
    unsigned weight;
    int64_t current; /* smooth weighted round robin state */
};

struct listener;

/* What a listener reports to its owner. */
struct listener_ops {
    /* A connection was accepted: <fd> is non-blocking, <sa> its peer. The
     * owner takes the socket (and may pause the listener). */
    void (*accepted)(struct listener *l, int fd, const struct sockaddr_storage *sa);
    /* accept() failed for want of descriptors or memory (<err>): the
     * listener stopped accepting; the owner decides when to resume. */
    void (*accept_failed)(struct listener *l, int err);
};

struct listener {
    const struct listener_ops *ops;
    void *owner; /* handed back through ops */
    struct ev_loop *loop;
    char *name;
    const struct conf_listener *conf; /* current generation; NULL once removed */
    enum conf_protocol protocol;      /* copied: open connections outlive a removed conf */
    bool tls;
    bool http2; /* HTTP/2 offered (ALPN h2, h2c prior knowledge): copied as protocol */
    struct ssl_ctx_st *tls_ctx; /* certificate and key of a TLS listener */
    char *bind_text;
    int fd;
    ev_io io;
    bool accepting;       /* io watcher started */
    bool closed;          /* socket closed: removed by reload, or process drain */
    unsigned connections; /* client connections accepted here and still open */
    uint64_t accepted_total;
    uint64_t responses[STATUS_CLASSES];
    uint64_t h2_responses[STATUS_CLASSES]; /* of responses[]: requests that came over HTTP/2 */
    unsigned h2_connections;               /* of connections: the HTTP/2 ones */
    uint64_t bytes_in;                 /* from clients (heads, bodies, tunnels), at request end */
    uint64_t bytes_out;                /* to clients, at request end */
    struct metrics_histogram duration; /* request head complete -> request end (not tunnels) */
    struct split_slot *slots;
    size_t num_slots;
    bool split_overridden; /* slots carry the runtime API's weights, not the config's */
    struct listener *next;
    /* The first worker's listener lists the other workers' ones on the same
     * socket (each accepts from its own descriptor of it). */
    struct listener *next_replica;
};

enum client_state {
    CLIENT_TLS_HANDSHAKE = 1, /* TLS listener: handshake in progress */
    CLIENT_IDLE,              /* HTTP/1.1: keep-alive, no byte of the next request yet */
    CLIENT_READING_HEAD,      /* HTTP/1.1: part of a request head received */
    CLIENT_EXCHANGE,          /* HTTP/1.1 (and TCP mode): an exchange in progress; its own
                                 state says where */
    CLIENT_H2,                /* HTTP/2: the h2 mux drives it (struct h2c has its state) */
    CLIENT_LINGERING,         /* done; write side shut, discarding what the client still sends */
    CLIENT_CLOSED,            /* closed, waiting to be freed at a safe point */
};

/* Descriptors a new client may need: its own and its upstream's. */
#define FDS_PER_CLIENT 2

/* Descriptors of one splice pipe (its two ends). */
#define FDS_PER_PIPE 2

/* Pipes a worker holds at most: 256 x 64 KiB bounds the kernel memory
 * spliced bodies can pin at 16 MiB per worker; past it, bodies go through
 * the buffers (HAProxy's maxpipes defaults to maxconn/4 for the same
 * reason). */
#define PIPES_MAX 256

/* The protocol a client connection speaks once chosen (ALPN, the
 * connection preface): a mux below the exchanges. Every function gets the
 * connection; none is called once it is closed. */
struct mux_ops {
    /* A socket event (or a wake-up of the connection's own). */
    void (*drive)(struct client *c);
    /* The connection's deadline in its state (CONN_NO_DEADLINE: none). */
    ev_tstamp (*deadline)(const struct client *c);
    /* The connection's timer reached that deadline. */
    void (*timeout)(struct client *c);
    /* Drain: see client_shutdown_idle. */
    void (*shutdown_idle)(struct client *c, ev_tstamp close_at);
    /* Drain deadline for tunnels: see client_tunnel_deadline. */
    void (*tunnel_deadline)(struct client *c, ev_tstamp deadline);
    /* True if nothing is in progress: a drain may close it, cutting nothing. */
    bool (*is_idle)(const struct client *c);
    /* The connection closes: every exchange on it ends (counted, logged,
     * its upstream closed); nothing is freed that a caller may still use. */
    void (*release)(struct client *c);
    /* Frees what release left (called from the worker's reaper). */
    void (*free)(struct client *c);
};

struct h2c;

/* One client connection: its socket and transport (TLS), timer, watchers
 * and lifecycle (drain, lingering close). Its protocol is a mux below the
 * exchanges: HTTP/1.1 (and TCP mode) carries one exchange at a time, the
 * embedded <x>; HTTP/2 carries many, one per stream (<h2>). */
struct client {
    struct worker *w;
    struct listener *listener;
    const struct mux_ops *mux;
    struct side down; /* the client's socket */
    ev_io io;
    ev_timer timer;
    ev_tstamp timer_at; /* when the armed timer fires (0: not armed) */
    unsigned io_events; /* what io watches now (0: stopped) */
    enum client_state state;
    char peer[48];    /* client IP, for X-Forwarded-For and logs */
    struct list link; /* worker->clients, then worker->closed */

    ev_tstamp last_activity;   /* last byte moved either way */
    ev_tstamp head_started_at; /* first byte of the current head (accept for the first) */
    ev_tstamp linger_until;    /* CLIENT_LINGERING: when to give up discarding */
    size_t linger_bytes;       /* CLIENT_LINGERING: bytes discarded so far */
    ev_tstamp idle_close_at;   /* drain: when this idle keep-alive connection closes (0: no
                                * spread slot, DBL_MAX: kept until its next request) */
    unsigned requests;         /* served on this connection */

    struct h2c *h2;   /* HTTP/2: the mux's state (NULL on an HTTP/1.1 connection) */
    struct exchange x; /* HTTP/1.1 and TCP mode: the exchange in progress */
};

enum upstream_state {
    UPSTREAM_CONNECTING = 1, /* non-blocking connect in progress */
    UPSTREAM_ACTIVE,         /* bound to a client */
    UPSTREAM_IDLE,           /* in its server's pool, waiting for reuse */
};

/* What an upstream connection reports to the client it is bound to. */
enum upstream_event {
    UPSTREAM_CONNECTED = 1,  /* the connect completed */
    UPSTREAM_CONNECT_FAILED, /* the connect failed; the error is passed along */
    UPSTREAM_READABLE,
    UPSTREAM_WRITABLE,
    UPSTREAM_DRAIN_EXPIRED, /* its backend's drain deadline passed: the owner must let go */
    UPSTREAM_DRAIN_STARTED, /* its backend drains until server->hb->drain_deadline */
};

typedef void (*upstream_cb)(void *owner, enum upstream_event ev, int err);

struct upstream {
    struct worker *w;
    struct server *server;
    int fd;
    ev_io io;
    ev_timer idle_timer;  /* pooled: backend_idle timeout */
    ev_tstamp idle_since; /* when it entered the pool */
    ev_tstamp opened_at;  /* connect started: the age a drain record shows */
    enum upstream_state state;
    unsigned io_events;
    struct list pool_link; /* server idle or active list */
    upstream_cb cb;        /* when ACTIVE or CONNECTING */
    void *owner;
    unsigned requests; /* requests sent over this connection */
};

/* Why usher sent an HTTP/2 connection a GOAWAY (metrics): the two-step
 * drain (counted at its first GOAWAY), an idle connection closed the same
 * way, or an error code: abuse (ENHANCE_YOUR_CALM), the client breaking
 * the protocol, or usher's own failure. */
enum h2_goaway_reason {
    H2_GOAWAY_DRAIN = 0,
    H2_GOAWAY_IDLE,
    H2_GOAWAY_ENHANCE_YOUR_CALM,
    H2_GOAWAY_PROTOCOL_ERROR,
    H2_GOAWAY_INTERNAL_ERROR,
    H2_GOAWAY_REASONS,
};

enum worker_state {
    WORKER_STARTING = 1, /* health checks have not completed a round */
    WORKER_RUNNING,
    WORKER_DRAIN_DELAY, /* shutdown: still accepting, /ready 503 */
    WORKER_DRAINING,    /* shutdown: listeners closed, waiting for connections */
    WORKER_STOPPED,
};

/* What the data plane reports to the layer that runs it. */
struct worker_hooks {
    /* Client connections closed since the last call (called at a safe
     * point, after the loop iteration's callbacks): the process drain
     * checks whether it is done. */
    void (*clients_closed)(struct worker *w, void *ctx);
    void *ctx;
};

struct worker {
    struct ev_loop *loop;
    struct ev_loop *health_loop; /* the control thread's: health checks run there, once */
    struct worker *primary;      /* the first worker; NULL in the first itself */
    unsigned id;                 /* 0 for the first */
    unsigned replicas;           /* the first: how many replicas were made */
    struct worker *next_replica; /* the first lists the others, in id order */
    struct conf *conf; /* current generation, immutable */
    uint64_t generation;
    enum worker_state state;      /* written by the process lifecycle only */
    struct buf_pool bufs_in;      /* client -> backend: request heads and bodies */
    struct buf_pool bufs_out;     /* backend -> client: larger, responses are the bulk */
    struct kpipe_pool pipes;      /* splice pipes: idle ones, and the count of all */
    struct http1_header *headers; /* parse scratch: limits.max_headers entries */
    size_t headers_cap;
    struct http1_limits limits;
    struct worker_hooks hooks;

    struct listener *listeners;
    struct pool *pools;
    struct list clients; /* every open client connection */
    unsigned num_clients;
    unsigned num_upstreams; /* open upstream connections, pooled ones included */
    /* the first worker: descriptors of client and upstream connections of
     * every worker (atomic; descriptors are the process's, so is pressure) */
    unsigned fds_used;
    unsigned reclaim_wanted; /* atomic: idle upstreams another worker asks this one to close */
    ev_async reclaim;        /* ... woken by it */
    unsigned num_lingering; /* clients done and only discarding input: no drain waits for them */
    struct list closed;     /* clients closed, freed at a safe point */
    ev_prepare reaper;      /* frees closed clients before the loop blocks */
    ev_timer accept_retry;  /* resumes accepting after EMFILE */
    bool accept_limited;    /* paused because of max_connections */
    unsigned max_clients;   /* limits.max_connections, capped by the fd limit */
    unsigned max_fds;       /* descriptors client and upstream connections may use */
    uint64_t accept_paused; /* times accepting paused (limit or EMFILE) */
    ev_tstamp started_at;
    struct prng rng; /* request ids: per worker, seeded from getrandom() */
    char request_id[REQUEST_ID_MAX + 1]; /* a new id while a head is rebuilt (no access log) */
    ev_tstamp drain_deadline; /* the process drain's deadline (0: not draining) */
    unsigned h2_streams;      /* HTTP/2 streams whose exchange is in progress */
    uint64_t h2_goaway[H2_GOAWAY_REASONS]; /* GOAWAYs sent to HTTP/2 clients, by reason */
    /* the first worker: a stop signal arrived (atomic, set by the signal
     * handler): every worker answers Connection: close from then on, also
     * before the control thread got to begin the drain */
    int stop_signalled;
};

#endif
