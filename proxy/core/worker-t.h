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
#include "transport.h"
#include "retry.h"
#include "wsframe.h"

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
    struct ssl_ctx_st *tls_ctx; /* certificate and key of a TLS listener */
    char *bind_text;
    int fd;
    ev_io io;
    bool accepting;       /* io watcher started */
    bool closed;          /* socket closed: removed by reload, or process drain */
    unsigned connections; /* client connections accepted here and still open */
    uint64_t accepted_total;
    uint64_t responses[STATUS_CLASSES];
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
    CLIENT_IDLE,              /* keep-alive, no byte of the next request yet */
    CLIENT_READING_HEAD,      /* part of a request head received */
    CLIENT_CONNECTING,        /* request parsed, upstream connect in progress */
    CLIENT_FORWARDING,        /* request and response flowing */
    CLIENT_TUNNEL,            /* after 101 or in TCP mode: bytes both ways */
    CLIENT_RESPONDING,        /* writing a response usher made itself */
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

/* Retries: each backend at most once; a small bound keeps a blackholed
 * fleet from holding a client for many connect timeouts. */
#define MAX_ATTEMPTS 8

/* Longest X-Request-Id taken from a client; a longer one is replaced by
 * a generated id (the id in the log must be the one forwarded). */
#define REQUEST_ID_MAX 128
/* One direction of a WebSocket tunnel, followed frame by frame. */
struct ws_dir {
    struct ws_tracker t;
    size_t boundary;     /* bytes at the front of the source side's buffer up to a frame end */
    bool boundary_known; /* false: the front of the buffer is inside a frame */
    bool close_sent;     /* a close frame went this way: what follows is dropped */
};

/* A tunnel after a 101 to Upgrade: websocket, whose frames are followed
 * (allocated when it starts: most connections never carry one). */
struct ws_tunnel {
    bool closing;             /* usher closes it: a close frame each way at the next boundary */
    ev_tstamp close_at;       /* when to start closing (0: no deadline known) */
    struct ws_dir to_backend; /* the bytes from the client (down.buf) */
    struct ws_dir to_client;  /* the bytes from the backend (up.buf) */
};

/* What the access log says of an exchange, copied at its start. Allocated
 * only with log.access, so that a connection costs less than 1 KB. */
struct exchange_log {
    char request_id[REQUEST_ID_MAX + 1]; /* the client's X-Request-Id, or the one generated */
    char method[16];
    char path[128];
    char host[128];
    char user_agent[128];
};

/* Longest Upgrade protocol token kept (with its NUL); allocated only for a
 * request that asks to upgrade. */
#define UPGRADE_MAX 32

/* One request and its response on a client connection. It is zeroed when
 * the exchange begins, so nothing of the previous one can leak into it. */
struct exchange {
    enum http1_method method;
    int req_minor;
    bool keep_alive;       /* the client connection may persist after this request */
    bool close_asked;      /* the client said it sends nothing more (Connection: close, 1.0) */
    bool upgrading;        /* the request asked for a WebSocket upgrade */
    bool res_reusable;     /* the backend allows reusing the connection */
    bool response_started; /* a response head was queued for the client */
    bool from_pool;        /* the upstream was reused from the pool */
    unsigned interim;      /* 1xx responses relayed so far */
    int status;            /* response status sent, 0 if none */
    size_t interim_len;    /* their bytes at the front of res_head: whole messages */
    char *upgrade;         /* the protocol the request asked to upgrade to (UPGRADE_MAX) */
    struct body_state req_body;
    struct body_state res_body;
    size_t in_fwd;  /* bytes at the front of the client side's buffer ready to go upstream */
    size_t out_fwd; /* bytes at the front of the upstream side's buffer ready for the client */
    struct hbuf req_head;  /* rebuilt request head for the upstream */
    struct hbuf res_head;  /* rebuilt response head (or usher's own response) */
    uint64_t bytes_out;    /* bytes sent to the client for this request */
    uint64_t bytes_in;     /* bytes received from the client for it: head, body, tunnel */
    ev_tstamp started_at;  /* request head complete (0: no request in progress) */
    ev_tstamp upstream_at; /* a backend was chosen for it (0: none yet) */
    struct exchange_log *log; /* with log.access only (NULL otherwise) */
    struct pool *pool;        /* pool of the chosen backend */
    struct server *tried[MAX_ATTEMPTS];
    unsigned attempts;
    bool budget_counted;   /* this request was counted in its pool's retry budget */
    bool connect_failed;   /* a connect failed: the next backend picked is a retry */
    bool retried;          /* it already went to another backend after a failed answer */
    int fail_status;       /* retried: the answer the failure called for (502, 504) */
    const char *fail_why;  /* retried: its reason (static) */
    ev_tstamp req_sent_at; /* the whole request went to the backend (0: not yet) */
    struct ws_tunnel *ws; /* NULL unless a WebSocket tunnel is followed */
};

struct client {
    struct worker *w;
    struct listener *listener;
    struct side down; /* the client's socket */
    struct side up;   /* the bound upstream's socket (fd -1 when none) */
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

    struct upstream *upstream; /* bound upstream, NULL if none */
    struct kpipe pipe;         /* splices the response body (rd -1 when none is held) */
    struct exchange x;
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
    /* the first worker: a stop signal arrived (atomic, set by the signal
     * handler): every worker answers Connection: close from then on, also
     * before the control thread got to begin the drain */
    int stop_signalled;
};

#endif
