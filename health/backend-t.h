/* What usher knows about one backend: types only. A struct backend lives as
 * long as its identity (pool name, backend name, address) is in the config
 * or still has connections; it survives reloads. */
#ifndef USHER_HEALTH_BACKEND_T_H
#define USHER_HEALTH_BACKEND_T_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "../conf/conf-t.h"
#include "../parser/proxyproto-t.h"
#include "../proxy/net/tlsclient-t.h"

enum backend_state {
    BACKEND_CHECKING = 1, /* added with a health check, no result yet: no traffic */
    BACKEND_HEALTHY,      /* in rotation */
    BACKEND_UNHEALTHY,    /* failed unhealthy_threshold checks in a row: no new traffic */
    BACKEND_DRAINING,     /* 503 from its check, or removed from the config: no new traffic */
    BACKEND_EJECTED,      /* passive health: consecutive failures on real traffic, for a time */
};

/* Why a backend drains: decides whether it may come back. */
enum backend_drain_reason {
    BACKEND_DRAIN_NONE = 0,
    BACKEND_DRAIN_DNS, /* its address vanished from a DNS answer (discovery): gone once drained */
    BACKEND_DRAIN_503, /* its health check answered 503: back after healthy_threshold successes */
    BACKEND_DRAIN_REMOVED,     /* removed from the config by a reload: gone once drained */
    BACKEND_DRAIN_ADMIN,       /* drained through the runtime API: stays, whatever checks say,
                                * until backend_admin_ready() */
    BACKEND_DRAIN_NOT_SERVING, /* its gRPC health check answered NOT_SERVING: back after
                                  healthy_threshold successes, as a 503 */
};

struct backend;

/* How health tells the proxy about a backend, without knowing its
 * connections. Every hook is called from the event loop at a safe point
 * (never from inside a proxy call into health). */
struct backend_hooks {
    /* The state changed; <reason> is a static string ("ok", "503",
     * "refused", "timeout", "removed", "re-added"...). The proxy logs the
     * transition and closes idle pooled connections of a backend that entered
     * BACKEND_DRAINING. health/ itself never logs. */
    void (*state_changed)(struct backend *b, enum backend_state from, const char *reason,
                          void *ctx);
    /* The deregistration delay passed with connections left: the proxy closes
     * every remaining connection of <b> (tunnels, in-flight requests). */
    void (*drain_expired)(struct backend *b, void *ctx);
    /* <b> was removed from the config and has no connection left: the proxy
     * unlinks it from its pool and calls backend_free(). */
    void (*gone)(struct backend *b, void *ctx);
    /* passive_health.consecutive_failures real requests in a row failed
     * (<why>: the last one's static reason): the proxy checks its pool's
     * cap and calls backend_eject(). Called on the backend's loop. */
    void (*eject_wanted)(struct backend *b, const char *why, void *ctx);
};

/* What one attempt said about the backend. */
enum hc_outcome {
    HC_SUCCESS = 1, /* status within expect_status (http), connected (tcp) */
    HC_FAILURE,     /* refused, timeout, reset, closed, bad status, ... */
    HC_DRAINING,    /* HTTP 503 (gRPC: NOT_SERVING): the backend asks to be deregistered */
};

/* Where one check attempt stands (added by health/). */
enum backend_check_phase {
    BACKEND_CHECK_IDLE = 0,   /* no attempt in progress; timer = next attempt */
    BACKEND_CHECK_CONNECTING, /* non-blocking connect pending (EV_WRITE) */
    BACKEND_CHECK_PROXY,      /* send_proxy: writing the PROXY header (before TLS) */
    BACKEND_CHECK_HANDSHAKE,  /* pools[].tls: the TLS handshake */
    BACKEND_CHECK_SENDING,    /* HTTP: writing the request; buf/buf_len = request */
    BACKEND_CHECK_READING,    /* HTTP: reading the response head into buf */
    BACKEND_CHECK_GRPC,       /* gRPC: the HTTP/2 exchange of Health/Check (check.grpc) */
};

struct ssl_st;       /* OpenSSL's SSL */
struct hc_transport; /* health/check.c: plain or TLS reads and writes */
struct hc_grpc;      /* health/check.c: a gRPC check's HTTP/2 session */

/* Active health check of one backend: its own socket and timers. */
struct backend_check {
    int fd; /* -1 when no check is in progress */
    ev_io io;
    unsigned io_events; /* what io watches now (0: stopped) */
    ev_timer timer;     /* next check (idle) or check timeout (in progress) */
    bool in_progress;
    char *buf; /* response bytes of an HTTP check (malloc'd while in progress) */
    size_t buf_len;
    size_t sent;                    /* request bytes written so far */
    enum backend_check_phase phase; /* drives the io callback */
    /* the state machine's result callback (health/check.h hc_done_cb) */
    void (*done)(struct backend *b, enum hc_outcome outcome, const char *reason, int status);
    /* added: the PROXY header that starts the connection (send_proxy) */
    char pre[PROXYPROTO_WRITE_MAX];
    size_t pre_len, pre_sent;
    /* added: the check's TLS connection (pools[].tls), NULL when plain,
     * and the transport every read and write goes through */
    struct ssl_st *ssl;
    const struct hc_transport *io_ops;
    /* the last TLS failure in OpenSSL's words ("certificate verify failed:
     * hostname mismatch"), for the proxy's log; "" when the last attempt
     * had none. last_result says "tls" then. */
    char tls_error[192];
    /* a gRPC check in progress: its HTTP/2 session and answer (NULL otherwise) */
    struct hc_grpc *grpc;
};

/* What a binary upgrade hands over about one backend, so the new process
 * starts where the old one was instead of a cold first health round. */
struct backend_snapshot {
    enum backend_state state;
    enum backend_drain_reason drain_reason;
    unsigned success_streak;
    unsigned failure_streak;
    bool checked_once;
};

struct backend {
    /* identity, from the config */
    char *pool_name;
    char *name;
    char *address_text;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    unsigned weight;
    struct conf_health_check hc; /* copy; hc.path owned by the backend */

    /* health */
    enum backend_state state;
    enum backend_drain_reason drain_reason;
    unsigned success_streak; /* consecutive successful checks */
    unsigned failure_streak; /* consecutive failed checks */
    bool checked_once;       /* at least one check round completed (readiness) */
    const char
        *last_result; /* static: "ok", "503", "refused", "timeout", "reset", "bad status"... */
    int last_status;  /* HTTP status of the last check, 0 if none */
    ev_tstamp last_check_at;           /* ev_now() when the last check finished, 0 if never */
    uint64_t checks_ok, checks_failed; /* totals, for /metrics */
    struct backend_check check;

    /* deregistration */
    ev_tstamp drain_deadline; /* 0 when not draining */
    /* the drain record of /status: kept for the whole draining state, also
     * once the episode completed (drain_deadline back to 0) */
    ev_tstamp drain_started_at; /* ev_now() when draining began, 0 when not draining */
    ev_tstamp drain_until;      /* the deadline that episode was given */
    ev_timer drain_timer;
    ev_timer gone_timer;          /* defers the gone hook to a safe point */
    conf_ms deregistration_delay; /* added: the pool's delay, for 503 drains */

    /* added: a state change made inside a proxy call (remove, reconfigure),
     * reported by gone_timer at a safe point; notify_reason NULL if none */
    const char *notify_reason;
    enum backend_state notify_from;
    enum backend_drain_reason notify_drain_reason;

    unsigned rand_state; /* added: per-backend rand_r() state for check jitter */

    /* passive health (pools[].passive_health): outcomes of real requests */
    struct conf_passive_health ph;
    unsigned passive_streak; /* consecutive failures reported by the proxy */
    unsigned eject_level;    /* ejections in a row: the time doubles with each, up to 10x */
    conf_ms eject_ms;        /* the current (or last) ejection's length */
    ev_tstamp ejected_until; /* BACKEND_EJECTED: when it may come back */
    ev_tstamp returned_at;   /* when the last ejection ended (0: never ejected) */
    uint64_t ejections_total;
    ev_timer eject_timer;

    /* open upstream connections (in use, pooled or tunnels), maintained by
     * the proxy through backend_conn_acquire/release from any thread
     * (atomic): a drain completes when the last one closes */
    unsigned connections;

    /* when (ms of a worker's clock) an HTTP/2 connection of the proxy last
     * got this backend's GOAWAY NO_ERROR — its graceful stop, maybe a
     * restart — and no connection to it was made since (0: none); set and
     * read by the proxy's workers (atomic), never by health */
    uint64_t goaway_ms;

    /* The proxy's worker threads report to a backend owned by another
     * thread's loop: <wake> brings what they reported (a last connection
     * released, an ejection wanted) to <loop>'s thread. */
    ev_async wake;
    pthread_t thread;         /* the thread that runs <loop> (created the backend) */
    const char *eject_why;    /* atomic: an ejection asked from another thread, or NULL */

    struct ev_loop *loop;
    const struct backend_hooks *hooks;
    void *hooks_ctx;

    /* added: how usher connects to the backend, for its checks (and, once
     * the data plane takes them from here, its upstream connections) */
    char *host;                          /* the address's host: a DNS name or an IP literal
                                            (SNI and the certificate's name check) */
    enum conf_pool_protocol protocol;    /* the pool's */
    enum conf_proxy_protocol send_proxy; /* CONF_PROXY_OFF, V1 or V2 */
    struct conf_pool_tls tls_conf;       /* copy, strings owned; enabled false: plain */
    struct tlsc_ctx *tls;                /* referenced; NULL until attached or built */
    bool tls_attached;                   /* tls came from backend_tls_set() */
    struct tlsc_session tls_session;     /* the last session, offered on the next connect */
};

#endif
