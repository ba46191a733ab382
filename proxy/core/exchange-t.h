/* The exchange: one request and its response, the unit the balancer,
 * retries, passive health, drains, logs and metrics see. Types only.
 *
 * An exchange arrives on a client connection through a mux (HTTP/1.1: one
 * exchange at a time on the connection; HTTP/2: one per stream) and owns
 * everything of its request from then on: its upstream side (today an
 * HTTP/1.1 connection to a backend), buffers, timer, retry state,
 * backpressure, counters and access log. It talks to the connection below
 * it only through struct exchange_ops, so it never knows which protocol
 * carried it (STYLE "A multiplexed protocol is a mux under the request"). */
#ifndef USHER_PROXY_EXCHANGE_T_H
#define USHER_PROXY_EXCHANGE_T_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "../../parser/http1-t.h"
#include "../base/buf.h"
#include "body.h"
#include "retry.h"
#include "transport.h"
#include "wsframe.h"

struct client;
struct pool;
struct server;
struct upstream;
struct exchange;

/* Retries: each backend at most once; a small bound keeps a blackholed
 * fleet from holding a client for many connect timeouts. */
#define MAX_ATTEMPTS 8

/* Longest X-Request-Id taken from a client; a longer one is replaced by
 * a generated id (the id in the log must be the one forwarded). */
#define REQUEST_ID_MAX 128

/* Longest Upgrade protocol token kept (with its NUL); allocated only for a
 * request that asks to upgrade. */
#define UPGRADE_MAX 32

/* Result of one step of a driver (a connection's or an exchange's). */
enum step {
    STEP_BLOCKED = 0, /* nothing more to do until an event */
    STEP_PROGRESS,    /* something moved: run another round */
    STEP_CLOSED,      /* the connection (HTTP/1.1) or the exchange (HTTP/2) is over:
                         stop touching it */
};

enum exchange_state {
    EXCHANGE_IDLE = 1,   /* none in progress (an HTTP/1.1 connection between requests) */
    EXCHANGE_CONNECTING, /* request taken, upstream connect in progress */
    EXCHANGE_FORWARDING, /* request and response flowing */
    EXCHANGE_TUNNEL,     /* after 101 or in TCP mode: bytes both ways */
    EXCHANGE_RESPONDING, /* writing a response usher made itself */
    EXCHANGE_DONE,       /* response complete (or abandoned): the mux lets go of it */
};

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
    struct ws_dir to_backend; /* the bytes from the client (down->buf) */
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

/* What an exchange asks of the connection it arrived on (its mux). Every
 * call is made from inside the exchange's steps; none frees the exchange
 * (a mux frees it at a safe point of its own). */
struct exchange_ops {
    /* More of the request toward the backend: HTTP/1.1 reads the client's
     * socket and frames the body (in_fwd), HTTP/2 frames the DATA its
     * stream buffered. STEP_PROGRESS if anything new is ready. */
    enum step (*request_pull)(struct exchange *x);
    /* An interim (1xx) response <res>, its head at the front of x->up.buf:
     * relay it. 0, or -1 (out of memory: the exchange aborts). */
    int (*response_interim)(struct exchange *x, const struct http1_response *res);
    /* The final response head <res> (not 101): build or submit it for the
     * client, and say in *<dechunk> whether its chunked body loses its
     * framing on the way. 0 or -1. */
    int (*response_head)(struct exchange *x, const struct http1_response *res, bool *dechunk);
    /* A response usher makes itself: <status> with a short text naming
     * <detail>; <close>: the connection cannot continue after it (HTTP/1.1).
     * 0 or -1. */
    int (*response_error)(struct exchange *x, int status, const char *detail, bool close);
    /* Moves what is ready of the response (head, framed body bytes, the
     * splice pipe) toward the client; sets *<progress> when something
     * moved. False once the exchange is over (the client went away). */
    bool (*response_push)(struct exchange *x, enum step *progress);
    /* The response is complete: what the connection does next. */
    enum step (*done)(struct exchange *x);
    /* The exchange cannot go on and its response can no longer be replaced
     * by an error: HTTP/1.1 closes the connection, HTTP/2 resets the
     * stream. Returns STEP_CLOSED. */
    enum step (*abort)(struct exchange *x);
    /* An event of the exchange's own (its upstream, its timer) was handled:
     * drive it (and, for HTTP/1.1, its connection). */
    void (*wake)(struct exchange *x);
    /* True if response bodies may be spliced kernel to kernel to the client
     * (a plain TCP socket that is the exchange's alone). */
    bool (*can_splice)(const struct exchange *x);
};

/* One request and its response. The fields up to <state> stay with the
 * connection (an HTTP/1.1 connection reuses one exchange); the rest is
 * zeroed when an exchange begins, so nothing of the previous request can
 * leak into it. */
struct exchange {
    struct client *c; /* the connection it arrived on */
    const struct exchange_ops *ops;
    struct side *down; /* where its request bytes are read from: the client's socket side
                          (HTTP/1.1), or its stream's buffered DATA (HTTP/2) */
    ev_timer timer;
    ev_tstamp timer_at; /* when the armed timer fires (0: not armed) */
    struct server *tried[MAX_ATTEMPTS]; /* read up to <attempts> only: never zeroed */

    enum exchange_state state; /* first field zeroed by exchange_reset */
    enum http1_method method;
    unsigned char req_major; /* 1 or 2: the protocol it arrived in */
    unsigned char req_minor;
    bool keep_alive;       /* HTTP/1.1: the client connection may persist after this request */
    bool close_asked;      /* HTTP/1.1: the client said it sends nothing more */
    bool upgrading;        /* the request asked for a WebSocket upgrade */
    bool res_reusable;     /* the backend allows reusing the connection */
    bool response_started; /* a response head was queued for the client */
    bool head_committed;   /* HTTP/2: the final HEADERS were submitted (no error can replace them) */
    bool from_pool;        /* the upstream was reused from the pool */
    bool budget_counted;   /* this request was counted in its pool's retry budget */
    bool connect_failed;   /* a connect failed: the next backend picked is a retry */
    bool retried;          /* it already went to another backend after a failed answer */
    unsigned interim;      /* 1xx responses relayed so far */
    int status;            /* response status sent, 0 if none */
    size_t interim_len;    /* HTTP/1.1: their bytes at the front of res_head, whole messages */
    char *upgrade;         /* the protocol the request asked to upgrade to (UPGRADE_MAX) */
    struct body_state req_body;
    struct body_state res_body;
    size_t in_fwd;  /* bytes at the front of down->buf ready to go upstream */
    size_t out_fwd; /* bytes at the front of up.buf ready for the client */
    struct hbuf req_head;  /* rebuilt request head for the upstream (and chunk framing) */
    struct hbuf res_head;  /* HTTP/1.1: rebuilt response head (or usher's own response) */
    struct hbuf *trailers; /* HTTP/2: trailer lines of a chunked response, kept for HEADERS */
    uint64_t bytes_out;    /* bytes sent to the client for this request */
    uint64_t bytes_in;     /* bytes received from the client for it: head, body, tunnel */
    ev_tstamp last_activity; /* last byte moved either way */
    ev_tstamp started_at;  /* request head complete (0: no request in progress) */
    ev_tstamp upstream_at; /* a backend was chosen for it (0: none yet) */
    ev_tstamp req_sent_at; /* the whole request went to the backend (0: not yet) */
    struct exchange_log *log; /* with log.access only (NULL otherwise) */
    struct pool *pool;        /* pool of the chosen backend */
    unsigned attempts; /* backends tried: the first <attempts> entries of tried[] */
    int fail_status;      /* retried: the answer the failure called for (502, 504) */
    const char *fail_why; /* retried: its reason (static) */
    struct ws_tunnel *ws; /* NULL unless a WebSocket tunnel is followed */
    /* The upstream side: today an HTTP/1.1 connection to a backend. An
     * HTTP/2 backend stream takes its place later: the exchange reads the
     * response from up.buf and writes the request through up's transport,
     * whatever carries them. */
    struct upstream *upstream; /* bound upstream, NULL if none */
    struct side up;            /* its socket (fd -1 when none) */
    struct kpipe pipe;         /* splices the response body (rd -1 when none is held) */
};

#endif
