/* The data plane's runtime objects: types only. Everything hangs off a
 * struct worker (one event loop); there is no mutable global state. */
#ifndef USHER_PROXY_WORKER_T_H
#define USHER_PROXY_WORKER_T_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "../conf/conf-t.h"
#include "../health/backend-t.h"
#include "../parser/http1-t.h"
#include "buf.h"

struct worker;
struct client;

/* Intrusive doubly linked list (Linux-style), so a connection can leave any
 * list in O(1) when it closes. */
struct list {
    struct list *prev, *next;
};

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Responses by status class; index 0 counts requests that got no response. */
#define STATUS_CLASSES 6

/* A pool as the data plane sees it: runtime backends keyed by name. It
 * survives reloads; its conf pointer follows the current generation. */
struct pool {
    char *name;
    const struct conf_pool *conf; /* NULL once removed from the config */
    struct backend **backends;
    size_t num_backends;
    size_t backends_cap;
    size_t lc_next; /* least_conn tie-breaker rotation */
    struct pool *next;
};

/* Proxy-owned state attached to a backend (backend->proxy_data). */
struct backend_conns {
    struct list idle; /* pooled idle upstreams (struct upstream.pool_link) */
    unsigned idle_count;
    struct list active; /* upstreams bound to a client (struct upstream.pool_link) */
    struct pool *pool;
};

/* One entry of a listener's runtime split. */
struct split_slot {
    struct pool *pool;
    unsigned weight;
    int64_t current; /* smooth weighted round robin state */
};

struct listener {
    struct worker *w;
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
    struct split_slot *slots;
    size_t num_slots;
    struct listener *next;
};

enum client_state {
    CLIENT_TLS_HANDSHAKE = 1, /* TLS listener: handshake in progress */
    CLIENT_IDLE,              /* keep-alive, no byte of the next request yet */
    CLIENT_READING_HEAD,      /* part of a request head received */
    CLIENT_CONNECTING,        /* request parsed, upstream connect in progress */
    CLIENT_FORWARDING,        /* request and response flowing */
    CLIENT_TUNNEL,            /* after 101 or in TCP mode: bytes both ways */
    CLIENT_RESPONDING,        /* writing a response usher made itself */
    CLIENT_CLOSED,            /* closed, waiting to be freed at a safe point */
};

/* Where the current request's body stands (request side) or the response's. */
struct body_state {
    enum http1_framing framing;
    uint64_t left;                /* HTTP1_BODY_LENGTH: bytes still to come */
    struct http1_chunked chunked; /* HTTP1_BODY_CHUNKED scanner */
    bool done;                    /* every body byte has been framed (maybe not yet sent) */
    bool dechunk;                 /* strip the chunked framing (for an HTTP/1.0 client) */
};

/* Retries: each backend at most once; a small bound keeps a blackholed
 * fleet from holding a client for many connect timeouts. */
#define MAX_ATTEMPTS 8

struct client {
    struct worker *w;
    struct listener *listener;
    int fd;
    struct ssl_st *ssl;     /* TLS state on a TLS listener, else NULL */
    unsigned tls_read_want; /* events a TLS read waits for (EV_WRITE during a key update) */
    ev_io io;
    ev_timer timer;
    ev_tstamp timer_at; /* when the armed timer fires (0: not armed) */
    enum client_state state;
    unsigned io_events; /* events the io watcher is started with (0 = stopped) */
    char peer[48];      /* client IP, for X-Forwarded-For and logs */
    struct list link;   /* worker->clients */

    struct buf *in;       /* bytes read from the client */
    struct buf *out;      /* bytes read from the upstream, toward the client */
    size_t in_fwd;        /* bytes at the front of `in` ready to go upstream */
    size_t out_fwd;       /* bytes at the front of `out` ready to go to the client */
    struct hbuf req_head; /* rebuilt request head for the upstream */
    struct hbuf res_head; /* rebuilt response head (or usher's own response) */

    /* the request in progress */
    enum http1_method method;
    int req_minor;
    bool keep_alive;   /* the client connection may persist after this request */
    bool upgrading;    /* the request asked for a WebSocket upgrade */
    bool client_eof;   /* the client half-closed */
    bool c_readable;   /* the client socket may have bytes (cleared on EAGAIN or a short read) */
    bool u_readable;   /* the upstream socket may have bytes */
    bool up_eof;       /* the upstream half-closed */
    bool up_shut;      /* tunnel: SHUT_WR sent to the upstream */
    bool client_shut;  /* tunnel: SHUT_WR sent to the client */
    bool res_reusable; /* the backend allows reusing the connection */
    bool response_started; /* a response head was queued for the client */
    bool from_pool;        /* the upstream was reused from the pool */
    struct body_state req_body;
    struct body_state res_body;
    int status;                /* response status sent, 0 if none */
    uint64_t bytes_out;        /* bytes sent to the client for this request */
    ev_tstamp started_at;      /* request head complete */
    ev_tstamp last_activity;   /* last byte moved either way */
    ev_tstamp head_started_at; /* first byte of the current head */
    char log_method[16];
    char log_path[128];

    struct upstream *up; /* bound upstream, NULL if none */
    struct pool *pool;   /* pool of the chosen backend */
    struct backend *tried[MAX_ATTEMPTS];
    unsigned attempts;
    unsigned requests; /* served on this connection */
};

enum upstream_state {
    UPSTREAM_CONNECTING = 1, /* non-blocking connect in progress */
    UPSTREAM_ACTIVE,         /* bound to a client */
    UPSTREAM_IDLE,           /* in its backend's pool, waiting for reuse */
};

struct upstream {
    struct worker *w;
    struct backend *backend;
    int fd;
    ev_io io;
    ev_timer idle_timer; /* pooled: backend_idle timeout */
    enum upstream_state state;
    unsigned io_events;
    struct list pool_link; /* backend_conns idle or active list */
    struct client *client; /* when ACTIVE or CONNECTING */
    unsigned requests;     /* requests sent over this connection */
};

enum worker_state {
    WORKER_STARTING = 1, /* health checks have not completed a round */
    WORKER_RUNNING,
    WORKER_DRAIN_DELAY, /* shutdown: still accepting, /ready 503 */
    WORKER_DRAINING,    /* shutdown: listeners closed, waiting for connections */
    WORKER_STOPPED,
};

struct worker_stats {
    uint64_t reloads_ok;
    uint64_t reloads_error;
    uint64_t accept_paused; /* times accepting paused (limit or EMFILE) */
};

struct worker {
    struct ev_loop *loop;
    struct conf *conf; /* current generation, immutable */
    uint64_t generation;
    enum worker_state state;
    struct buf_pool bufs_in;      /* client -> backend: request heads and bodies */
    struct buf_pool bufs_out;     /* backend -> client: larger, responses are the bulk */
    struct http1_header *headers; /* parse scratch: limits.max_headers entries */
    size_t headers_cap;
    struct http1_limits limits;

    struct listener *listeners;
    struct pool *pools;
    struct list clients; /* every open client connection */
    unsigned num_clients;
    struct list closed;    /* clients closed, freed at a safe point */
    ev_idle reaper;        /* frees closed clients */
    ev_timer accept_retry; /* resumes accepting after EMFILE */
    bool accept_limited;   /* paused because of max_connections */
    unsigned max_clients;  /* limits.max_connections, capped by the fd limit */

    struct admin *admin;
    struct worker_stats stats;
    ev_tstamp started_at;

    /* process lifecycle */
    ev_signal sig_term, sig_int, sig_hup;
    ev_timer drain_timer;     /* drain_delay, then one-second progress ticks */
    ev_tstamp drain_deadline; /* when the shutdown timeout cuts the rest */
    ev_timer ready_timer;     /* polls for the first health round */
    int exit_code;
};

#endif
