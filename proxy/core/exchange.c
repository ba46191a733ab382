/* The exchange: one request and its response, from the backend choice to
 * the access log line (see exchange.h). The request arrives rebuilt (the
 * mux parsed or translated it); the exchange owns its upstream side — the
 * bound upstream connection, its socket side and the response buffer —
 * its timer, retry state, counters and log. It reaches the client only
 * through x->ops, so the same code serves HTTP/1.1 and HTTP/2 clients.
 *
 * Sections: state and timer; the upstream side (bind, unbind, splice);
 * ending (counters, log); usher's own answers; backend choice, connect and
 * the failure decisions; forwarding; tunnels and WebSocket close frames;
 * the driver and the events. */
#include "exchange.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

#include "../../health/backend.h"
#include "../net/net.h"
#include "../../parser/http1.h"
#include "../base/log.h"
#include "../base/metrics.h"
#include "balance.h"
#include "clock.h"
#include "fds.h"
#include "grpc.h"
#include "upstream.h"
#include "upstream_h2.h"

/* Interim (1xx) responses relayed for one request (DESIGN "HTTP
 * behaviour"); a backend that sends more is broken or hostile: 502. */
#define MAX_INTERIM_RESPONSES 10

/* A Content-Length body with less than this left goes through the buffer:
 * one pipe's worth, below which the two splices per pipe cost about what
 * the copies they save do (the buffered path reads 64 KiB at a time). */
#define SPLICE_MIN_BODY (64u * 1024u)

static void ws_follow(struct ws_dir *wd, struct buf *b, size_t n);
static void on_upstream_event(void *owner, enum upstream_event ev, int err);
static void tunnel_deadline(struct exchange *x, ev_tstamp deadline);
static enum step grpc_close_step(struct exchange *x);
static bool grpc_end(struct exchange *x, enum grpc_code code, const char *why);

const char *exchange_state_str(enum exchange_state s)
{
    switch (s) {
    case EXCHANGE_IDLE:
        return "idle";
    case EXCHANGE_CONNECTING:
        return "connecting";
    case EXCHANGE_FORWARDING:
        return "forwarding";
    case EXCHANGE_TUNNEL:
        return "tunnel";
    case EXCHANGE_RESPONDING:
        return "responding";
    case EXCHANGE_DONE:
        return "done";
    }
    return "unknown";
}

static struct worker *worker_of(const struct exchange *x)
{
    return x->c->w;
}

static ev_tstamp now_of(const struct exchange *x)
{
    return ev_now(x->c->w->loop);
}

static bool is_tcp_mode(const struct exchange *x)
{
    return x->c->listener->protocol == CONF_PROTO_TCP;
}

/* ---- timeouts: one timer, its deadline derived from the state ------------ */

/* The request went out whole and not a byte of the answer came back. */
static bool awaiting_first_byte(const struct exchange *x)
{
    return x->req_sent_at > 0 && !x->response_started && x->interim == 0 &&
           (!x->up.buf || buf_len(x->up.buf) == 0);
}

/* When a gRPC call ends with grpc-status 14 ahead of a drain deadline
 * (NO_DEADLINE: none, or it is ending already). */
static ev_tstamp grpc_close_at(const struct exchange *x)
{
    if (!x->grpc || x->grpc->closing || x->grpc->close_at <= 0)
        return NO_DEADLINE;
    return x->grpc->close_at;
}

static ev_tstamp deadline_of(const struct exchange *x)
{
    const struct conf *conf = worker_of(x)->conf;
    switch (x->state) {
    case EXCHANGE_CONNECTING:
        return earliest(x->last_activity + ms_to_s(conf->timeouts.connect), grpc_close_at(x));
    case EXCHANGE_FORWARDING:
        if (awaiting_first_byte(x))
            return earliest(earliest(x->req_sent_at + ms_to_s(conf->timeouts.first_byte),
                                     x->last_activity + ms_to_s(conf->timeouts.backend)),
                            grpc_close_at(x));
        return earliest(x->last_activity + ms_to_s(conf->timeouts.backend), grpc_close_at(x));
    case EXCHANGE_TUNNEL:
        if (x->ws && !x->ws->closing && x->ws->close_at > 0)
            return earliest(x->ws->close_at, x->last_activity + ms_to_s(conf->timeouts.tunnel));
        return x->last_activity + ms_to_s(conf->timeouts.tunnel);
    case EXCHANGE_RESPONDING:
        return x->last_activity + ms_to_s(conf->timeouts.client_idle);
    case EXCHANGE_IDLE:
    case EXCHANGE_DONE:
        break;
    }
    return NO_DEADLINE;
}

/* Makes sure the timer fires no later than the state's deadline. A timer
 * already due earlier is left alone: its callback recomputes the deadline
 * and re-arms, so most transitions cost no timer-heap operation — and the
 * next exchange of a keep-alive connection usually finds its timer armed
 * already (libev "Be smart about timeouts", method 3). */
static void arm_timer(struct exchange *x)
{
    ev_tstamp deadline = deadline_of(x);
    if (deadline == NO_DEADLINE || (x->timer_at > 0 && x->timer_at <= deadline))
        return;
    struct ev_loop *loop = worker_of(x)->loop;
    ev_tstamp now = ev_now(loop);
    double left = deadline - now;
    if (left < 0.001)
        left = 0.001;
    ev_timer_stop(loop, &x->timer);
    ev_timer_set(&x->timer, left, 0.);
    ev_timer_start(loop, &x->timer);
    x->timer_at = now + left;
}

/* Every transition goes through here so the timer always matches the state;
 * activity in between only moves timestamps. */
static void set_state(struct exchange *x, enum exchange_state s)
{
    x->state = s;
    x->last_activity = now_of(x);
    arm_timer(x);
}

/* ---- buffers and pipes ----------------------------------------------------- */

static struct buf_pool *bufs_of(struct exchange *x, struct side *s)
{
    return s == &x->up ? &worker_of(x)->bufs_out : &worker_of(x)->bufs_in;
}

static bool ensure_buf(struct exchange *x, struct side *s)
{
    return side_ensure_buf(s, bufs_of(x, s));
}

/* A new pipe must leave the descriptors of one more client (its own and
 * its upstream's): pipes count in the process's descriptors (fds.h) like
 * connections, so a client is never accepted without the descriptor for
 * its backend. */
static bool pipe_affordable(const struct worker *w)
{
    if (w->pipes.idle_count > 0)
        return true;
    if (w->pipes.open >= PIPES_MAX)
        return false;
    return worker_fds_used(w) + FDS_PER_PIPE + FDS_PER_CLIENT <= w->max_fds;
}

/* Gives the pipe back (to the pool, or closed). */
static void pipe_release(struct exchange *x)
{
    if (x->pipe.rd < 0)
        return;
    struct worker *w = worker_of(x);
    unsigned open = w->pipes.open;
    kpipe_put(&w->pipes, &x->pipe);
    worker_fds_pipes(w, open);
}

/* ---- the exchange -------------------------------------------------------- */

void exchange_reset(struct exchange *x)
{
    hbuf_free(&x->req_head);
    hbuf_free(&x->res_head);
    if (x->trailers) {
        hbuf_free(x->trailers);
        free(x->trailers);
    }
    free(x->log);
    free(x->ws);
    free(x->grpc);
    free(x->upgrade);
    buf_put(&worker_of(x)->bufs_out, x->up.buf);
    memset(&x->state, 0, sizeof(*x) - offsetof(struct exchange, state));
    x->state = EXCHANGE_IDLE;
    x->method = HTTP1_METHOD_OTHER;
    x->req_major = 1;
    x->up.fd = -1;
    x->up.tp = &transport_plain;
    x->pipe.rd = x->pipe.wr = -1;
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents);

void exchange_init(struct exchange *x, struct client *c, const struct exchange_ops *ops,
                   struct side *down)
{
    x->c = c;
    x->ops = ops;
    x->down = down;
    x->timer_at = 0;
    ev_timer_init(&x->timer, timer_cb, 0., 0.);
    x->up.buf = NULL;
    x->req_head = (struct hbuf){0};
    x->res_head = (struct hbuf){0};
    x->trailers = NULL;
    x->log = NULL;
    x->ws = NULL;
    x->grpc = NULL;
    x->upgrade = NULL;
    exchange_reset(x);
}

bool exchange_request_sent(const struct exchange *x)
{
    return x->req_body.done && x->in_fwd == 0 && !hbuf_pending(&x->req_head);
}

bool exchange_response_on_wire(const struct exchange *x)
{
    return x->head_committed || x->bytes_out > x->interim_len ||
           x->res_head.sent > x->interim_len;
}

/* ---- the upstream side ----------------------------------------------------- */

/* Where the exchange meets its backend: binding an upstream connection
 * (HTTP/1.1) or a stream of a shared one (HTTP/2: <st>, and <u> its
 * connection), letting it go, and its watcher. Either way the reads and
 * writes of on_forward() go through x->up's transport. */

static void bind_upstream(struct exchange *x, struct upstream *u, struct h2_stream *st,
                          struct pool *p, bool from_pool)
{
    x->upstream = u;
    x->h2s = st;
    x->pool = p;
    x->from_pool = from_pool;
    if (!x->budget_counted) {
        retry_budget_request(&p->retry_budget, now_of(x));
        x->budget_counted = true;
    }
    if (st) {
        side_attach(&x->up, -1, &transport_h2_stream);
        x->up.h2s = st;
    } else {
        side_attach(&x->up, u->fd, &transport_plain);
    }
    server_inflight_add(u->server, 1);
    u->requests++;
    x->upstream_at = now_of(x);
}

/* Detaches the upstream; it goes back to its pool if <reusable>. */
static void unbind_upstream(struct exchange *x, bool reusable)
{
    struct upstream *u = x->upstream;
    if (!u)
        return;
    x->upstream = NULL;
    x->up.fd = -1;
    server_inflight_add(u->server, -1);
    if (x->h2s) {
        /* the connection stays, shared: only the stream goes */
        struct h2_stream *st = x->h2s;
        x->h2s = NULL;
        x->up.h2s = NULL;
        x->up.tp = &transport_plain;
        upstream_h2_detach(st);
        return;
    }
    if (reusable)
        upstream_release(u, true);
    else
        upstream_close(u);
}

/* The upstream's side has room to read into: its buffer, or the pipe while
 * a body is spliced. */
static bool up_can_read(const struct exchange *x)
{
    if (x->pipe.rd >= 0)
        return !x->pipe.full && x->pipe.len < x->pipe.cap;
    return side_can_read(&x->up);
}

unsigned exchange_watch(struct exchange *x)
{
    unsigned ce = 0, ue = 0;
    switch (x->state) {
    case EXCHANGE_CONNECTING:
        ue |= EV_WRITE;
        break;
    case EXCHANGE_FORWARDING:
    case EXCHANGE_TUNNEL:
        if (!x->down->eof && side_can_read(x->down))
            ce |= EV_READ;
        if (hbuf_pending(&x->res_head) || x->out_fwd > 0 || x->pipe.len > 0)
            ce |= EV_WRITE;
        if (!x->up.eof && up_can_read(x) &&
            !(x->state == EXCHANGE_FORWARDING && x->res_body.done))
            ue |= EV_READ;
        if (hbuf_pending(&x->req_head) || x->in_fwd > 0)
            ue |= EV_WRITE;
        break;
    case EXCHANGE_RESPONDING:
        ce |= EV_WRITE;
        break;
    case EXCHANGE_IDLE:
    case EXCHANGE_DONE:
        break;
    }
    if (x->h2s)
        upstream_h2_want(x->h2s, ue); /* a stream is woken by its connection */
    else if (x->upstream)
        upstream_want(x->upstream, ue);
    return ce;
}

/* ---- ending: counters and the access log ----------------------------------- */

static unsigned status_class_of(const struct exchange *x)
{
    if (x->response_started && !x->res_body.done)
        return STATUS_ABORTED; /* the client saw a cut answer, whatever its status line said */
    return (x->status >= 100 && x->status < 600) ? (unsigned)x->status / 100 : 0;
}

static const char *or_dash(const char *s)
{
    return s[0] ? s : "-";
}

static const char *protocol_of(const struct exchange *x)
{
    if (is_tcp_mode(x))
        return "tcp";
    if (!x->log || !x->log->method[0])
        return "-"; /* no request line was understood */
    if (x->req_major == 2)
        return "HTTP/2.0";
    return x->req_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
}

static void log_access(struct exchange *x, struct server *s, double seconds)
{
    static const struct exchange_log no_request; /* nothing was understood */
    const struct exchange_log *xl = x->log ? x->log : &no_request;
    const struct client *c = x->c;
    bool routed = s && x->pool;
    log_kv(CONF_LOG_INFO, "access", LOG_STR("client", c->peer),
           LOG_STR("listener", c->listener->name), LOG_STR("method", or_dash(xl->method)),
           LOG_STR("path", or_dash(xl->path)), LOG_STR("protocol", protocol_of(x)),
           LOG_STR("host", or_dash(xl->host)), LOG_INT("status", x->status),
           LOG_UINT("bytes", x->bytes_out), LOG_UINT("bytes_in", x->bytes_in),
           LOG_FLOAT("ms", seconds * 1000.0, 1), LOG_STR("pool", routed ? x->pool->name : "-"),
           LOG_STR("backend", routed ? s->hb->name : "-"),
           LOG_STR("user_agent", or_dash(xl->user_agent)),
           LOG_STR("request_id", or_dash(xl->request_id)));
}

/* Tunnels (a 101, TCP mode) last as long as their users want: their
 * lifetime is no request duration, and would only fill the +Inf bucket. */
static bool timed(const struct exchange *x)
{
    return !is_tcp_mode(x) && x->status != 101;
}

/* A request ends (answered or abandoned): the one place that counts it
 * (listener, backend) and logs it. */
static void end_request(struct exchange *x)
{
    if (x->started_at == 0)
        return;
    struct server *s = x->upstream ? x->upstream->server : NULL;
    struct listener *l = x->c->listener;
    ev_tstamp now = now_of(x);
    unsigned cls = status_class_of(x);
    l->responses[cls]++;
    if (x->req_major == 2)
        l->h2_responses[cls]++;
    l->bytes_in += x->bytes_in;
    l->bytes_out += x->bytes_out;
    if (timed(x))
        metrics_histogram_observe(&l->duration, now - x->started_at);
    if (s) {
        s->requests_total++;
        s->responses[cls]++;
        s->bytes_in += x->bytes_in;
        s->bytes_out += x->bytes_out;
        if (timed(x))
            metrics_histogram_observe(&s->duration, now - x->upstream_at);
    }
    if (worker_of(x)->conf->log.access)
        log_access(x, s, now - x->started_at);
    x->started_at = 0;
}

void exchange_abort(struct exchange *x)
{
    end_request(x);
    unbind_upstream(x, false);
    pipe_release(x);
    if (x->state != EXCHANGE_IDLE)
        x->state = EXCHANGE_DONE;
    ev_timer_stop(worker_of(x)->loop, &x->timer);
    x->timer_at = 0;
}

/* ---- responses usher makes itself ---------------------------------------- */

enum step exchange_respond_error(struct exchange *x, int status, const char *detail, bool close)
{
    if (is_tcp_mode(x) || exchange_response_on_wire(x))
        return x->ops->abort(x);
    unbind_upstream(x, false);
    hbuf_reset(&x->req_head); /* the request goes no further */
    if (x->started_at == 0)
        x->started_at = now_of(x);
    x->status = status;
    x->response_started = true;
    x->res_body.done = true;
    if (x->up.buf)
        buf_consume(x->up.buf, buf_len(x->up.buf));
    x->out_fwd = 0;
    if (x->ops->response_error(x, status, detail, close) < 0)
        return x->ops->abort(x);
    log_debug("http error", "client=%s listener=%s status=%d reason=\"%s\"", x->c->peer,
              x->c->listener->name, status, detail ? detail : "");
    set_state(x, EXCHANGE_RESPONDING);
    return STEP_PROGRESS;
}

/* ---- backend choice, connect and retry -------------------------------------- */

static void remember_tried(struct exchange *x, struct server *s)
{
    if (x->attempts < MAX_ATTEMPTS)
        x->tried[x->attempts++] = s;
}

/* usher's own shortage rather than the backend's fault. */
static bool local_shortage(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/* Counts and logs a failed connect to <s> (<err> 0: it timed out) and
 * rules <s> out for this request. */
static void connect_failure(struct exchange *x, struct server *s, int err)
{
    s->connect_failures++;
    /* a backend that just said GOAWAY is stopping (maybe restarting): its
     * refusals are no sign of sickness, and ejecting it would leave its
     * peers alone when they restart in turn */
    if (!(err == ECONNREFUSED && upstream_h2_stopping(s, now_of(x))))
        server_passive_report(s, true, err ? "connect failed" : "connect timeout");
    x->connect_failed = true;
    log_warn("backend connect failed", "pool=%s backend=%s address=%s error=\"%s\"",
             s->hb->pool_name, s->hb->name, s->hb->address_text,
             err ? strerror(err) : "connect timeout");
    remember_tried(x, s);
}

/* True if the pool speaks HTTP/2 to its backends (h2c, h2); TCP mode
 * tunnels bytes whatever the pool says. */
static bool pool_h2(const struct exchange *x, const struct pool *p)
{
    return !is_tcp_mode(x) && p->conf && p->conf->protocol != CONF_POOL_HTTP1;
}

/* The response is on its way from now on: a gRPC call learns the drain
 * deadlines that stand (a process drain, its backend's) before it. */
static void forwarding_begins(struct exchange *x)
{
    set_state(x, EXCHANGE_FORWARDING);
    if (!x->grpc)
        return;
    if (x->upstream->server->hb->drain_deadline > 0)
        tunnel_deadline(x, x->upstream->server->hb->drain_deadline);
    if (worker_of(x)->drain_deadline > 0 && x->state == EXCHANGE_FORWARDING)
        tunnel_deadline(x, worker_of(x)->drain_deadline);
}

/* HTTP/2 backends: a stream on a connection to <s> with room, or on a new
 * one (descriptors short: idle pooled connections are given up first). */
static bool open_stream(struct exchange *x, struct server *s, struct pool *p, int *err)
{
    bool reused = false, te = x->te_trailers || x->grpc;
    struct h2_stream *st = upstream_h2_attach(s, on_upstream_event, x, te, &reused, err);
    if (!st && local_shortage(*err) && upstream_reclaim_idle(worker_of(x), 1) > 0)
        st = upstream_h2_attach(s, on_upstream_event, x, te, &reused, err);
    if (!st)
        return false;
    bind_upstream(x, upstream_h2_conn(st), st, p, reused);
    if (upstream_h2_ready(st))
        forwarding_begins(x);
    else
        set_state(x, EXCHANGE_CONNECTING);
    return true;
}

/* Starts a new connection to <s> of pool <p> for the request. Short of
 * descriptors, idle pooled connections are given up first: a client never
 * fails for a connection nobody uses. Returns false if the connect failed
 * at once (*<err> set). */
static bool open_upstream(struct exchange *x, struct server *s, struct pool *p, int *err)
{
    if (pool_h2(x, p))
        return open_stream(x, s, p, err);
    struct upstream *u = upstream_connect(s, on_upstream_event, x, err);
    if (!u && local_shortage(*err) && upstream_reclaim_idle(worker_of(x), 1) > 0)
        u = upstream_connect(s, on_upstream_event, x, err);
    if (!u)
        return false;
    bind_upstream(x, u, NULL, p, false);
    set_state(x, EXCHANGE_CONNECTING);
    return true;
}

static enum step no_backend(struct exchange *x)
{
    if (is_tcp_mode(x)) {
        log_warn("tcp no backend", "client=%s listener=%s attempts=%u", x->c->peer,
                 x->c->listener->name, x->attempts);
        return x->ops->abort(x);
    }
    if (x->attempts == 0)
        return exchange_respond_error(x, 503, "no backend available", false);
    if (x->retried) /* no other backend to retry on: the first failure stands */
        return exchange_respond_error(x, x->fail_status, x->fail_why, false);
    return exchange_respond_error(x, 502, "backend connection failed", false);
}

/* A request needs no body replay if it has none: then a pooled connection
 * that turned out dead can be replaced without the client noticing. */
static bool request_replayable(const struct exchange *x)
{
    return x->req_body.framing == HTTP1_BODY_NONE && !x->upgrading;
}

static enum step connect_upstream(struct exchange *x)
{
    for (;;) {
        struct pool *p = NULL;
        if (x->attempts >= MAX_ATTEMPTS)
            return no_backend(x);
        struct server *s = balance_pick(x->c->listener, x->tried, x->attempts, &p);
        if (!s)
            return no_backend(x);
        if (x->connect_failed) {
            p->retries[RETRY_CONNECT]++; /* nothing was sent: always safe, never budgeted */
            x->connect_failed = false;
        }
        struct upstream *u =
            is_tcp_mode(x) || pool_h2(x, p)
                ? NULL /* a stream finds its connection in open_stream */
                : upstream_take_idle(s, request_replayable(x), on_upstream_event, x);
        if (u) {
            bind_upstream(x, u, NULL, p, true);
            forwarding_begins(x);
            return STEP_PROGRESS;
        }
        int err = 0;
        if (open_upstream(x, s, p, &err))
            return STEP_PROGRESS;
        if (local_shortage(err)) {
            /* no point trying other backends, and closing this client
             * gives a descriptor back */
            log_warn("backend connect failed", "reason=\"%s\" connections=%u", strerror(err),
                     worker_of(x)->num_clients);
            return exchange_respond_error(x, 503, "proxy out of resources", true);
        }
        connect_failure(x, s, err);
    }
}

/* The connect of the bound upstream failed (<err>) or timed out (0). */
static enum step connect_failed(struct exchange *x, int err)
{
    connect_failure(x, x->upstream->server, err);
    unbind_upstream(x, false);
    if (err == 0 && x->attempts >= MAX_ATTEMPTS && !is_tcp_mode(x))
        return exchange_respond_error(x, 504, "backend connect timeout", false);
    return connect_upstream(x);
}

const char *exchange_new_request_id(void *ctx)
{
    struct exchange *x = ctx;
    char *id = x->log ? x->log->request_id : worker_of(x)->request_id;
    prng_hex128(&worker_of(x)->rng, id);
    return id;
}

enum step exchange_start(struct exchange *x)
{
    return connect_upstream(x);
}

enum step exchange_start_tunnel(struct exchange *x)
{
    x->started_at = now_of(x);
    x->req_body.done = true;
    x->res_body.done = true;
    return connect_upstream(x);
}

/* Idempotent methods (RFC 9110 9.2.2) may be sent again to another backend
 * when the first one failed without answering. */
static bool request_idempotent(const struct exchange *x)
{
    switch (x->method) {
    case HTTP1_METHOD_GET:
    case HTTP1_METHOD_HEAD:
    case HTTP1_METHOD_OPTIONS:
    case HTTP1_METHOD_TRACE:
    case HTTP1_METHOD_PUT:
    case HTTP1_METHOD_DELETE:
        return true;
    default:
        return false;
    }
}

/* Sends the request again on a fresh connection to <s>, or, if <s> was
 * already tried, to another backend. */
static enum step resend(struct exchange *x, struct server *s)
{
    struct pool *p = x->pool;
    unbind_upstream(x, false);
    x->req_head.sent = 0;
    x->interim = 0;
    x->req_sent_at = 0;
    if (x->up.buf)
        buf_consume(x->up.buf, buf_len(x->up.buf)); /* what the failed backend answered */
    x->up.eof = false;
    int err = 0;
    if (s && open_upstream(x, s, p, &err))
        return STEP_PROGRESS;
    if (s)
        remember_tried(x, s);
    return connect_upstream(x);
}

/* No byte of an answer reached the client, nor any interim response. */
static bool answer_untouched(const struct exchange *x)
{
    return !exchange_response_on_wire(x) && !x->response_started && x->interim == 0;
}

static bool was_tried(const struct exchange *x, const struct server *s)
{
    for (unsigned i = 0; i < x->attempts; i++)
        if (x->tried[i] == s)
            return true;
    return false;
}

/* An HTTP/2 backend never processed the stream: above the last-stream-id
 * of its GOAWAY, refused (REFUSED_STREAM), or it never left usher (RFC
 * 9113 8.7, 6.8). It goes again whatever its method — nothing of it was
 * acted on — with the request bytes the stream kept: to another backend
 * (the one that refused is likely stopping: a connection it still accepts
 * as it stops would hold the stream until its grace ends), or, alone in
 * rotation, once more to the same backend on another connection (one
 * that only renews its connections keeps serving). Like a connect retry,
 * it is never budgeted. */
static enum step stream_refused(struct exchange *x)
{
    struct server *s = x->upstream->server;
    struct pool *p = x->pool;
    ssize_t kept = answer_untouched(x) ? upstream_h2_replay(x->h2s, &x->req_head) : -1;
    if (kept < 0) {
        log_kv(CONF_LOG_WARN, "backend failed", LOG_STR("pool", p->name),
               LOG_STR("backend", s->hb->name),
               LOG_STR("reason", "stream refused after more than it keeps to send again"));
        return exchange_respond_error(x, 502, "backend refused the stream", false);
    }
    p->retries[RETRY_REFUSED]++;
    log_kv(CONF_LOG_DEBUG, "backend refused stream, sending again", LOG_STR("pool", p->name),
           LOG_STR("backend", s->hb->name), LOG_UINT("bytes", (uint64_t)kept));
    bool first = !was_tried(x, s);
    remember_tried(x, s);
    struct pool *op = NULL;
    struct server *other = x->attempts < MAX_ATTEMPTS
                               ? balance_pick(x->c->listener, x->tried, x->attempts, &op)
                               : NULL;
    if (other) {
        x->pool = op;
        return resend(x, other);
    }
    return resend(x, first && server_in_rotation(s) ? s : NULL);
}

/* The upstream failed (<why>, of kind <reason>) before the response was
 * complete. An idempotent body-less request that got no byte of answer to
 * its client goes once to another backend, if the pool's budget allows. */
static enum step upstream_failed(struct exchange *x, const char *why, enum retry_reason reason)
{
    if (x->h2s && upstream_h2_refused(x->h2s))
        return stream_refused(x); /* not a failure: it was never processed */
    struct server *s = x->upstream->server;
    struct pool *p = x->pool;
    bool nothing_received = answer_untouched(x) && (!x->up.buf || buf_len(x->up.buf) == 0);
    if (nothing_received && request_replayable(x) && x->from_pool && reason == RETRY_RESET) {
        /* the backend closed a pooled connection as we reused it (its own
         * keep-alive timeout): RFC 9112 9.3.1 allows a new one */
        log_debug("pooled connection closed, retrying", "pool=%s backend=%s", p->name, s->hb->name);
        return resend(x, s);
    }
    server_passive_report(s, true, why);
    if (answer_untouched(x) && request_replayable(x) && request_idempotent(x) && !x->retried &&
        x->attempts + 1 < MAX_ATTEMPTS) {
        if (retry_budget_take(&p->retry_budget, now_of(x))) {
            log_kv(CONF_LOG_WARN, "backend failed, retrying", LOG_STR("pool", p->name),
                   LOG_STR("backend", s->hb->name), LOG_STR("reason", why),
                   LOG_STR("retry", retry_reason_str(reason)));
            p->retries[reason]++;
            x->retried = true;
            x->fail_status = reason == RETRY_FIRST_BYTE ? 504 : 502;
            x->fail_why = why;
            remember_tried(x, s);
            return resend(x, NULL);
        }
        p->retry_budget_refused++;
        log_kv(CONF_LOG_WARN, "retry refused", LOG_STR("pool", p->name),
               LOG_STR("backend", s->hb->name), LOG_STR("reason", "retry budget spent"));
    }
    log_warn("backend failed", "pool=%s backend=%s reason=\"%s\" response_started=%d",
             p ? p->name : "-", s->hb->name, why, exchange_response_on_wire(x));
    if (!exchange_response_on_wire(x)) {
        x->response_started = false;
        return exchange_respond_error(x, reason == RETRY_FIRST_BYTE ? 504 : 502, why, false);
    }
    /* a gRPC call whose answer is under way: status 14 after its last
     * whole message, not a reset its client would read as INTERNAL */
    if (x->grpc && x->response_started && !x->res_body.done && grpc_end(x, GRPC_UNAVAILABLE, why))
        return STEP_PROGRESS;
    return x->ops->abort(x);
}

/* ---- the end of an exchange -------------------------------------------------- */

/* The response is complete; the request may or may not be. The exchange
 * lets go of its upstream (pooled when both sides left it reusable) and
 * the connection decides what comes next. */
static enum step finish_exchange(struct exchange *x)
{
    bool reusable = x->res_reusable && exchange_request_sent(x) && x->out_fwd == 0 &&
                    (!x->up.buf || buf_len(x->up.buf) == 0);
    end_request(x);
    unbind_upstream(x, reusable);
    pipe_release(x); /* drained: the response is complete */
    x->state = EXCHANGE_DONE;
    return x->ops->done(x);
}

/* A 101 switches to the protocol the client asked for, and says which
 * (RFC 9110 15.2.2): one without Upgrade, or with another protocol, is an
 * invalid response. */
static bool upgrade_matches(const struct exchange *x, const struct http1_response *res)
{
    if (!(res->msg.flags & HTTP1_F_HAS_UPGRADE) || res->msg.upgrade.len == 0 || !x->upgrade)
        return false;
    const char *p = res->msg.upgrade.ptr;
    size_t n = 0, want = strlen(x->upgrade);
    while (n < res->msg.upgrade.len && p[n] != ',' && p[n] != '/' && p[n] != ' ')
        n++;
    return n == want && strncasecmp(p, x->upgrade, n) == 0;
}

/* After a 101 to Upgrade: websocket, frames are followed both ways from
 * the first byte after the heads. */
static void ws_tunnel_start(struct exchange *x)
{
    if (!x->upgrade || strcasecmp(x->upgrade, "websocket") != 0)
        return;
    struct ws_tunnel *ws = calloc(1, sizeof(*ws));
    if (!ws)
        return; /* out of memory: a plain tunnel, without close frames at a drain */
    x->ws = ws;
    ws->to_backend.boundary_known = ws->to_client.boundary_known = true;
    if (x->down->buf && buf_len(x->down->buf) > 0)
        ws_follow(&ws->to_backend, x->down->buf, buf_len(x->down->buf));
    if (x->up.buf && buf_len(x->up.buf) > 0)
        ws_follow(&ws->to_client, x->up.buf, buf_len(x->up.buf));
}

/* Parses the response head in x->up.buf. */
static enum step on_response_head(struct exchange *x)
{
    struct worker *w = worker_of(x);
    struct buf *out = x->up.buf;
    struct http1_response res;
    memset(&res, 0, sizeof(res));
    res.msg.headers = w->headers;
    int rc = http1_parse_response(buf_head(out), buf_len(out), &w->limits, x->method, &res);
    if (rc == HTTP1_AGAIN) {
        if (buf_len(out) >= out->cap)
            return upstream_failed(x, "response head too large", RETRY_INVALID_HEAD);
        if (x->up.eof)
            return upstream_failed(x, "backend closed the connection", RETRY_RESET);
        return STEP_BLOCKED;
    }
    if (rc == HTTP1_ERROR)
        return upstream_failed(x, res.msg.error_reason, RETRY_INVALID_HEAD);

    if (res.status >= 100 && res.status < 200 && res.status != 101) {
        /* interim response (100 Continue, 103 Early Hints): relay it and
         * wait for the final one */
        if (++x->interim > MAX_INTERIM_RESPONSES)
            return upstream_failed(x, "too many interim responses", RETRY_INVALID_HEAD);
        if (x->ops->response_interim(x, &res) < 0)
            return x->ops->abort(x);
        buf_consume(out, res.msg.head_len);
        return STEP_PROGRESS;
    }

    if (res.status == 101) {
        if (!x->upgrading)
            return upstream_failed(x, "unexpected 101 response", RETRY_INVALID_HEAD);
        if (!upgrade_matches(x, &res))
            return upstream_failed(x, "101 response without the requested Upgrade",
                                   RETRY_INVALID_HEAD);
    } else {
        x->upgrading = false;
    }
    x->status = res.status;
    server_passive_report(x->upstream->server,
                          res.status == 502 || res.status == 503 || res.status == 504,
                          "5xx answer");
    x->res_reusable = (res.msg.flags & HTTP1_F_KEEP_ALIVE) && res.status != 101;
    bool dechunk = false;
    if (x->ops->response_head(x, &res, &dechunk) < 0)
        return x->ops->abort(x);
    x->response_started = true;
    body_start(&x->res_body, &res.msg, dechunk);
    x->res_body.trailers = x->trailers;
    buf_consume(out, res.msg.head_len);
    x->out_fwd = 0;

    if (res.status == 101) {
        x->res_body.done = true; /* what follows is the tunnel, not a body */
        log_debug("tunnel started", "client=%s pool=%s backend=%s", x->c->peer, x->pool->name,
                  x->upstream->server->hb->name);
        ws_tunnel_start(x);
        set_state(x, EXCHANGE_TUNNEL);
        if (x->upstream->server->hb->drain_deadline > 0)
            tunnel_deadline(x, x->upstream->server->hb->drain_deadline);
        if (w->drain_deadline > 0)
            tunnel_deadline(x, w->drain_deadline);
        return STEP_PROGRESS;
    }
    if (body_frame(&x->res_body, out, &x->out_fwd) < 0)
        return upstream_failed(x, x->res_body.chunked.error_reason, RETRY_RESET);
    if (x->grpc)
        grpc_follow(x->grpc, (const uint8_t *)buf_head(out), x->out_fwd);
    return STEP_PROGRESS;
}

/* ---- splicing a response body (kernel to kernel) -------------------------- */

/* The rest of the response body may go through a pipe: one test per
 * reason it may not. */
static bool splice_fits(const struct exchange *x)
{
    const struct body_state *bs = &x->res_body;
    if (!x->response_started || bs->done)
        return false; /* no body under way */
    if (!x->up.tp->splice_in || !x->ops->can_splice(x))
        return false; /* TLS on a side, or a client connection of many streams */
    if (bs->framing != HTTP1_BODY_LENGTH && bs->framing != HTTP1_BODY_UNTIL_CLOSE)
        return false; /* chunked: trailers are filtered (or the framing stripped) */
    if (bs->framing == HTTP1_BODY_LENGTH && bs->left < SPLICE_MIN_BODY)
        return false; /* too little left to pay for the pipe */
    if (hbuf_pending(&x->res_head) || x->out_fwd > 0 || (x->up.buf && buf_len(x->up.buf) > 0))
        return false; /* bytes already read go first, through the buffer */
    if (!pipe_affordable(worker_of(x)))
        return false; /* descriptors are for clients first */
    return true;
}

/* Takes a pipe for the rest of the body; without one the body stays on
 * the buffered path. The emptied response buffer goes back. */
static void splice_begin(struct exchange *x)
{
    struct worker *w = worker_of(x);
    unsigned open = w->pipes.open;
    int rc = kpipe_get(&w->pipes, &x->pipe);
    worker_fds_pipes(w, open);
    if (rc < 0)
        return;
    buf_put(&w->bufs_out, x->up.buf);
    x->up.buf = NULL;
}

/* Moves body bytes from the backend into the pipe, no more than it has
 * room for (backpressure) and never past the body's end. */
static enum step splice_body_in(struct exchange *x)
{
    struct side *u = &x->up;
    struct body_state *bs = &x->res_body;
    if (!u->readable || u->eof || bs->done || x->pipe.full)
        return STEP_BLOCKED;
    size_t max = SIZE_MAX;
    if (bs->framing == HTTP1_BODY_LENGTH && bs->left < max)
        max = (size_t)bs->left;
    ssize_t n = u->tp->splice_in(u, &x->pipe, max);
    if (n == NET_AGAIN)
        return STEP_BLOCKED;
    if (n < 0)
        return upstream_failed(x, "backend connection reset", RETRY_RESET);
    if (n == 0) {
        u->eof = true;
        if (bs->framing != HTTP1_BODY_UNTIL_CLOSE)
            return upstream_failed(x, "backend closed mid-body", RETRY_RESET);
        bs->done = true;
        return STEP_PROGRESS;
    }
    body_took(bs, (size_t)n);
    x->last_activity = now_of(x);
    return STEP_PROGRESS;
}

bool exchange_response_sent(struct exchange *x, ssize_t n, enum step *progress)
{
    if (n < 0) {
        x->ops->abort(x);
        return false;
    }
    if (n > 0) {
        x->bytes_out += (uint64_t)n;
        x->last_activity = now_of(x);
        *progress = STEP_PROGRESS;
    }
    return true;
}

/* ---- the exchange: request up, response down ----------------------------- */

static enum step on_forward(struct exchange *x)
{
    enum step progress = STEP_BLOCKED;
    struct side *u = &x->up;

    /* request bytes toward the backend */
    if (hbuf_pending(&x->req_head) || x->in_fwd > 0) {
        ssize_t n = side_send(u, &x->req_head, x->down->buf, &x->in_fwd);
        if (n < 0)
            return upstream_failed(x, "backend write failed", RETRY_RESET);
        if (n > 0) {
            x->last_activity = now_of(x);
            progress = STEP_PROGRESS;
        }
    }
    if (x->req_sent_at == 0 && exchange_request_sent(x)) {
        x->req_sent_at = now_of(x);
        arm_timer(x); /* timeouts.first_byte counts from here */
    }

    /* more of the request body (HTTP/1.1: a pipelined request, or the
     * client's EOF, too) */
    enum step s = x->ops->request_pull(x);
    if (s == STEP_CLOSED || x->state != EXCHANGE_FORWARDING)
        return s;
    if (s == STEP_PROGRESS)
        progress = s;

    /* response bytes from the backend: kernel to kernel once they can be */
    if (x->pipe.rd < 0 && splice_fits(x))
        splice_begin(x);
    if (x->pipe.rd >= 0) {
        s = splice_body_in(x);
        if (s == STEP_CLOSED || x->state != EXCHANGE_FORWARDING)
            return s;
        if (s == STEP_PROGRESS)
            progress = s;
    } else if (u->readable && !u->eof && !x->res_body.done) {
        if (!ensure_buf(x, u))
            return x->ops->abort(x);
        if (side_can_read(u)) {
            ssize_t n = side_recv(u);
            if (n == NET_AGAIN) {
                u->readable = false;
            } else if (n < 0) {
                return upstream_failed(x, "backend connection reset", RETRY_RESET);
            } else if (n == 0) {
                u->eof = true;
                progress = STEP_PROGRESS;
                if (x->response_started && x->res_body.framing == HTTP1_BODY_UNTIL_CLOSE)
                    x->res_body.done = true;
                else if (x->response_started && !x->res_body.done)
                    return upstream_failed(x, "backend closed mid-body", RETRY_RESET);
            } else {
                x->last_activity = now_of(x);
                progress = STEP_PROGRESS;
                size_t framed = x->out_fwd;
                if (x->response_started && body_frame(&x->res_body, u->buf, &x->out_fwd) < 0)
                    return upstream_failed(x, x->res_body.chunked.error_reason, RETRY_RESET);
                if (x->grpc && x->out_fwd > framed)
                    grpc_follow(x->grpc, (const uint8_t *)buf_head(u->buf) + framed,
                                x->out_fwd - framed);
            }
        }
    }
    if (!x->response_started && ((u->buf && buf_len(u->buf) > 0) || u->eof)) {
        s = on_response_head(x);
        if (s != STEP_BLOCKED)
            return s;
    }

    if (x->grpc && x->grpc->closing) {
        s = grpc_close_step(x);
        if (s == STEP_CLOSED || x->state != EXCHANGE_FORWARDING)
            return s;
        if (s == STEP_PROGRESS)
            progress = s;
    }

    /* response bytes toward the client */
    if ((hbuf_pending(&x->res_head) || x->out_fwd > 0 || x->pipe.len > 0) &&
        !x->ops->response_push(x, &progress))
        return STEP_CLOSED;

    if (x->response_started && x->res_body.done && !hbuf_pending(&x->res_head) &&
        x->out_fwd == 0 && x->pipe.len == 0)
        return finish_exchange(x);
    return progress;
}

/* ---- WebSocket close frames (RFC 6455 5.5.1, 7.1.2) ---------------------- */

/* <n> new bytes at the end of <from>'s buffer: follow their frames. */
static void ws_follow(struct ws_dir *wd, struct buf *b, size_t n)
{
    size_t before = buf_len(b) - n;
    size_t end = ws_track(&wd->t, (const uint8_t *)buf_head(b) + before, n);
    if (end) {
        wd->boundary = before + end;
        wd->boundary_known = true;
    }
}

/* <n> bytes of <from>'s buffer went out. */
static void ws_sent(struct ws_dir *wd, size_t n)
{
    if (!wd->boundary_known)
        return;
    if (n <= wd->boundary) {
        wd->boundary -= n;
        return;
    }
    wd->boundary = 0;
    wd->boundary_known = false; /* past the last frame end known */
}

/* Usher closes this tunnel: where the stream stands at a frame boundary,
 * with everything before it sent, a close frame goes into <head>. One that
 * already went that way (the peer's own close) is enough. Returns true once
 * this direction is closed. */
static bool ws_insert_close(struct ws_dir *wd, struct side *from, struct hbuf *head, bool masked)
{
    if (wd->close_sent)
        return true;
    bool empty = !from->buf || buf_len(from->buf) == 0;
    bool at_boundary =
        (wd->boundary_known && wd->boundary == 0) || (empty && ws_at_boundary(&wd->t));
    if (wd->t.broken || !at_boundary || hbuf_pending(head))
        return false;
    wd->close_sent = true;
    if (from->buf)
        buf_consume(from->buf, buf_len(from->buf)); /* nothing may follow a close frame */
    if (wd->t.close_seen)
        return true;
    uint8_t frame[WS_CLOSE_FRAME_MAX];
    uint32_t key = 0;
    if (masked && RAND_bytes((unsigned char *)&key, sizeof(key)) != 1)
        key = (uint32_t)rand();
    size_t n = ws_close_frame(frame, WS_CLOSE_GOING_AWAY, masked, key);
    hbuf_reset(head);
    if (hbuf_append(head, (const char *)frame, n) < 0)
        wd->t.broken = true;
    return true;
}

static void ws_begin_close(struct exchange *x, const char *why)
{
    if (!x->ws || x->ws->closing)
        return;
    x->ws->closing = true;
    log_debug("websocket closing", "client=%s reason=%s", x->c->peer, why);
    arm_timer(x);
}

/* ---- gRPC calls at a drain deadline: grpc-status 14, as a WebSocket's 1001 ---- */

/* The call ends with grpc-status 14 (UNAVAILABLE: its client retries
 * elsewhere): before any response head, as an answer of usher's own
 * (trailers-only); after it, at the next message boundary (grpc_close_step). */
static void grpc_begin_close(struct exchange *x)
{
    log_debug("grpc call closing", "client=%s reason=\"drain deadline\"", x->c->peer);
    if (x->state != EXCHANGE_FORWARDING || !x->response_started) {
        exchange_respond_error(x, 503, "drain deadline", false);
        return;
    }
    x->grpc->closing = true;
}

/* Closing: the bytes framed so far reach a message boundary past what the
 * client already has: the body ends there, the backend's rest is dropped,
 * and the trailers say 14. Until then the call flows on (a message half
 * sent is finished first, as a WebSocket frame is). */
static enum step grpc_close_step(struct exchange *x)
{
    struct grpc_call *g = x->grpc;
    if (x->res_body.done) {
        g->closing = false; /* its own end came first */
        return STEP_BLOCKED;
    }
    if (!grpc_end(x, GRPC_UNAVAILABLE, "drain deadline"))
        return STEP_BLOCKED; /* a message half sent: finished first */
    g->closing = false;
    g->close_at = 0;
    return STEP_PROGRESS;
}

/* Ends a gRPC call whose response is under way with trailers saying
 * <code> (<why> their grpc-message) after the last whole message: what
 * the backend sent past it, and whatever it still sends, is dropped. The
 * response goes on to its end as any other (HTTP/2 clients: trailing
 * HEADERS). False if a message is half sent (only a reset can end it
 * then) or the client is not an HTTP/2 one. */
static bool grpc_end(struct exchange *x, enum grpc_code code, const char *why)
{
    struct grpc_call *g = x->grpc;
    uint64_t cut, sent = g->framed - x->out_fwd;
    if (x->req_major != 2 || !grpc_cut(g, sent, &cut))
        return false;
    if (!x->trailers && !(x->trailers = calloc(1, sizeof(*x->trailers))))
        return false;
    hbuf_reset(x->trailers);
    if (grpc_trailer_lines(x->trailers, code, why) < 0)
        return false;
    x->out_fwd = (size_t)(cut - sent);
    if (x->up.buf)
        x->up.buf->end = x->up.buf->start + x->out_fwd; /* the rest is not the client's */
    x->res_body.done = true;
    x->res_reusable = false; /* what the backend still sends is unread */
    return true;
}

/* Schedules a gRPC call's end for <deadline> - <grace>, or begins it now
 * if less is left. */
static void grpc_deadline(struct exchange *x, ev_tstamp deadline, conf_ms grace)
{
    struct grpc_call *g = x->grpc;
    ev_tstamp at = deadline - ms_to_s(grace);
    if (g->closing || (g->close_at > 0 && g->close_at <= at))
        return;
    g->close_at = at;
    if (at > now_of(x))
        arm_timer(x);
    else
        grpc_begin_close(x);
}

/* Schedules the close frames for <deadline>; starts closing now if the
 * grace is longer than what is left (a gRPC call: its grpc-status 14).
 * No drive: callers inside a step let the driver's next round pump the
 * frames. */
static void tunnel_deadline(struct exchange *x, ev_tstamp deadline)
{
    conf_ms grace = worker_of(x)->conf->shutdown.tunnel_close_grace;
    if (x->grpc && grace > 0 &&
        (x->state == EXCHANGE_CONNECTING || x->state == EXCHANGE_FORWARDING)) {
        grpc_deadline(x, deadline, grace);
        return;
    }
    if (x->state != EXCHANGE_TUNNEL || !x->ws || x->ws->closing || grace == 0)
        return; /* a grace of 0 turns close frames off: the tunnel runs to the deadline */
    ev_tstamp at = deadline - ms_to_s(grace);
    if (x->ws->close_at > 0 && x->ws->close_at <= at)
        return;
    x->ws->close_at = at;
    if (at > now_of(x))
        arm_timer(x);
    else
        ws_begin_close(x, "drain deadline");
}

bool exchange_tunnel_deadline(struct exchange *x, ev_tstamp deadline)
{
    if (x->grpc) {
        enum exchange_state before = x->state;
        bool was_closing = x->grpc->closing;
        tunnel_deadline(x, deadline);
        return x->state != before || (!was_closing && x->grpc && x->grpc->closing);
    }
    bool was_closing = x->ws && x->ws->closing;
    tunnel_deadline(x, deadline);
    return !was_closing && x->ws && x->ws->closing;
}

/* ---- tunnels (after a 101, and TCP mode) --------------------------------- */

/* Moves bytes one way, <from> -> <to>: reads what <from> has (if its
 * buffer has room), writes the head still owed to <to> and the bytes read,
 * and passes <from>'s half-close on once everything went out. A WebSocket
 * direction (<wd>) is followed frame by frame: while closing, bytes go out
 * up to a frame end only, then the close frame, then nothing more. Only an
 * HTTP/1.1 connection tunnels: x->down is then the client's socket. */
static enum step pump(struct exchange *x, struct side *from, struct side *to, struct hbuf *head,
                      size_t *fwd, struct ws_dir *wd)
{
    enum step progress = STEP_BLOCKED;
    if (from->readable && !from->eof) {
        if (!ensure_buf(x, from))
            return x->ops->abort(x);
        if (side_can_read(from)) {
            ssize_t n = side_recv(from);
            if (n == NET_AGAIN) {
                from->readable = false;
            } else if (n < 0) {
                return x->ops->abort(x);
            } else {
                from->eof = n == 0;
                if (from == x->down)
                    x->bytes_in += (uint64_t)n;
                x->last_activity = now_of(x);
                progress = STEP_PROGRESS;
                if (wd && n > 0)
                    ws_follow(wd, from->buf, (size_t)n);
            }
        }
    }
    if (wd && x->ws->closing)
        ws_insert_close(wd, from, head, to == &x->up);
    if (wd && wd->close_sent && from->buf)
        buf_consume(from->buf, buf_len(from->buf));
    *fwd = from->buf ? buf_len(from->buf) : 0;
    if (wd && x->ws->closing && !wd->close_sent)
        *fwd = wd->boundary_known && wd->boundary < *fwd ? wd->boundary : *fwd;
    if (hbuf_pending(head) || *fwd) {
        size_t before = from->buf ? buf_len(from->buf) : 0;
        ssize_t n = side_send(to, head, from->buf, fwd);
        if (n < 0)
            return x->ops->abort(x);
        if (wd)
            ws_sent(wd, before - (from->buf ? buf_len(from->buf) : 0));
        if (n > 0) {
            if (to == x->down)
                x->bytes_out += (uint64_t)n;
            progress = STEP_PROGRESS;
        }
        if (wd && x->ws->closing && !wd->close_sent &&
            ws_insert_close(wd, from, head, to == &x->up))
            progress = STEP_PROGRESS; /* the close frame goes out next round */
    }
    if (from->eof && *fwd == 0 && !hbuf_pending(head) && !to->shut) {
        to->tp->shutdown_write(to);
        to->shut = true;
    }
    return progress;
}

/* Both close frames went and the client answered with its own: the close
 * handshake is over, and the server closes TCP first (RFC 6455 7.1.1). */
static bool ws_close_done(const struct exchange *x)
{
    const struct ws_tunnel *ws = x->ws;
    return ws && ws->closing && ws->to_client.close_sent && ws->to_backend.close_sent &&
           ws->to_backend.t.close_seen && !hbuf_pending(&x->res_head) &&
           !hbuf_pending(&x->req_head);
}

static enum step on_tunnel(struct exchange *x)
{
    struct ws_tunnel *ws = x->ws;
    enum step s1 =
        pump(x, x->down, &x->up, &x->req_head, &x->in_fwd, ws ? &ws->to_backend : NULL);
    if (s1 == STEP_CLOSED)
        return s1;
    enum step s2 = pump(x, &x->up, x->down, &x->res_head, &x->out_fwd, ws ? &ws->to_client : NULL);
    if (s2 == STEP_CLOSED)
        return s2;
    if ((x->up.shut && x->down->shut) || ws_close_done(x))
        return x->ops->abort(x);
    return s1 == STEP_PROGRESS || s2 == STEP_PROGRESS ? STEP_PROGRESS : STEP_BLOCKED;
}

static enum step on_responding(struct exchange *x)
{
    enum step progress = STEP_BLOCKED;
    if (!x->ops->response_push(x, &progress))
        return STEP_CLOSED;
    if (hbuf_pending(&x->res_head))
        return progress;
    return finish_exchange(x);
}

/* The bound upstream's connect completed (its state tells). */
static enum step on_connecting(struct exchange *x)
{
    if (x->h2s ? !upstream_h2_ready(x->h2s) : x->upstream->state != UPSTREAM_ACTIVE)
        return STEP_BLOCKED;
    if (is_tcp_mode(x))
        set_state(x, EXCHANGE_TUNNEL);
    else
        forwarding_begins(x);
    return STEP_PROGRESS;
}

/* ---- the driver and the events ------------------------------------------- */

enum step exchange_step(struct exchange *x)
{
    switch (x->state) {
    case EXCHANGE_CONNECTING:
        return on_connecting(x);
    case EXCHANGE_FORWARDING:
        return on_forward(x);
    case EXCHANGE_TUNNEL:
        return on_tunnel(x);
    case EXCHANGE_RESPONDING:
        return on_responding(x);
    case EXCHANGE_IDLE:
    case EXCHANGE_DONE:
        break;
    }
    return STEP_BLOCKED;
}

/* Every event of the exchange's own ends in a wake-up of its mux, also
 * after an abort: the connection is closed then (HTTP/1.1: the wake-up
 * finds it so) or has a reset to send (HTTP/2). Neither frees memory the
 * wake-up would touch: both free at a safe point of their own. */
static void on_upstream_event(void *owner, enum upstream_event ev, int err)
{
    struct exchange *x = owner;
    switch (ev) {
    case UPSTREAM_CONNECTED:
    case UPSTREAM_WRITABLE:
        break;
    case UPSTREAM_CONNECT_FAILED:
        connect_failed(x, err);
        break;
    case UPSTREAM_READABLE:
        x->up.readable = true;
        break;
    case UPSTREAM_DRAIN_EXPIRED:
        x->ops->abort(x);
        break;
    case UPSTREAM_DRAIN_STARTED:
        if (!exchange_tunnel_deadline(x, x->upstream->server->hb->drain_deadline))
            return;
        break;
    case UPSTREAM_REFUSED:
        stream_refused(x);
        break;
    case UPSTREAM_CLOSED: /* a mux connection's owner's only */
        return;
    }
    x->ops->wake(x);
}

/* A drain deadline still ahead: the process drains, or the backend does. */
static bool tunnel_deadline_stands(const struct exchange *x)
{
    return worker_of(x)->state >= WORKER_DRAINING ||
           (x->upstream && x->upstream->server->hb->drain_deadline > 0);
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct exchange *x = container_of(t, struct exchange, timer);
    x->timer_at = 0;
    ev_tstamp deadline = deadline_of(x);
    if (deadline == NO_DEADLINE)
        return; /* armed for an exchange that ended */
    if (ev_now(loop) < deadline) {
        arm_timer(x);
        return;
    }
    if ((x->state == EXCHANGE_CONNECTING || x->state == EXCHANGE_FORWARDING) &&
        grpc_close_at(x) <= ev_now(loop)) {
        if (!tunnel_deadline_stands(x)) {
            x->grpc->close_at = 0; /* its backend came back: no goodbye */
            arm_timer(x);
            return;
        }
        grpc_begin_close(x);
        x->ops->wake(x);
        return;
    }
    switch (x->state) {
    case EXCHANGE_TUNNEL:
        if (x->ws && !x->ws->closing && x->ws->close_at > 0) {
            if (!tunnel_deadline_stands(x)) {
                /* its backend came back (healthy again, re-added): no goodbye */
                x->ws->close_at = 0;
                arm_timer(x);
                return;
            }
            ws_begin_close(x, "drain deadline");
            break;
        }
        x->ops->abort(x);
        break;
    case EXCHANGE_RESPONDING:
        x->ops->abort(x);
        break;
    case EXCHANGE_CONNECTING:
        connect_failed(x, 0);
        break;
    case EXCHANGE_FORWARDING:
        if (exchange_response_on_wire(x)) {
            /* a gRPC call: DEADLINE_EXCEEDED after its last whole message */
            if (!(x->grpc && x->response_started && !x->res_body.done &&
                  grpc_end(x, GRPC_DEADLINE_EXCEEDED, "backend timeout")))
                x->ops->abort(x);
            break;
        }
        if (x->upstream && awaiting_first_byte(x)) {
            upstream_failed(x, "no response within first_byte", RETRY_FIRST_BYTE);
            break;
        }
        if (x->upstream)
            server_passive_report(x->upstream->server, true, "timeout");
        exchange_respond_error(x, 504, "backend timeout", false);
        break;
    case EXCHANGE_IDLE:
    case EXCHANGE_DONE:
        return;
    }
    x->ops->wake(x); /* see on_upstream_event */
}
