/* One client connection: reads request heads, picks a backend, streams the
 * request and the response with backpressure, and turns into a byte tunnel
 * after a 101 or in TCP mode. The connection (struct client) carries one
 * exchange at a time (struct exchange, zeroed as each one begins) and two
 * sides: down (the client) and up (the bound upstream). Only the step
 * functions of drive() change c->state, through set_state(). */
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "../../health/backend.h"
#include "../net/io.h"
#include "../net/net.h"
#include "../../parser/http1.h"
#include "../base/log.h"
#include "../base/metrics.h"
#include "fds.h"
#include "balance.h"
#include "headers.h"
#include "tls.h"
#include "upstream.h"

/* Bound on state-machine rounds per event, so one busy connection cannot
 * starve the others (memcached's reqs_per_event): 8 rounds of up to 64 KiB.
 * Measured on 1 MB responses to 10 clients: 16 rounds doubled p99 (20 ms vs
 * 9-12 ms) for no throughput gain, 4 rounds cost 10% throughput. */
#define MAX_DRIVE_ROUNDS 8

/* While draining, a connection that has not sent its first request yet is
 * not idle keep-alive: its client was just told "connected" and its request
 * is likely on the wire. It gets this long to send it. */
#define FIRST_REQUEST_GRACE_S 1.0

/* Interim (1xx) responses relayed for one request (DESIGN "HTTP
 * behaviour"); a backend that sends more is broken or hostile: 502. */
#define MAX_INTERIM_RESPONSES 10

/* After usher shut its write side, what the client still sends is read and
 * dropped this long (or until it closes), so the close sends no RST that
 * would destroy a response still in flight (nginx lingering_timeout). */
#define LINGER_S 1.0

/* ... and at most this many bytes: 256 KiB covers what a client pipelined
 * or had in flight of a body (a few socket buffers) when the response went
 * out; a client still uploading past it gets the close (and its RST) after
 * the response had that much time to arrive. Apache's lingering close reads
 * for 2 s per 512 bytes; nginx bounds time only. */
#define LINGER_MAX_BYTES (256u * 1024u)

/* A Content-Length body with less than this left goes through the buffer:
 * one pipe's worth, below which the two splices per pipe cost about what
 * the copies they save do (the buffered path reads 64 KiB at a time). */
#define SPLICE_MIN_BODY (64u * 1024u)

/* Result of one step of drive(). */
enum step {
    STEP_BLOCKED = 0, /* nothing more to do until an event */
    STEP_PROGRESS,    /* something moved: run another round */
    STEP_CLOSED,      /* the client was closed: stop touching it */
};

static void drive(struct client *c);
static void ws_follow(struct ws_dir *wd, struct buf *b, size_t n);
static void tunnel_deadline(struct client *c, ev_tstamp deadline);

const char *client_state_str(enum client_state s)
{
    switch (s) {
    case CLIENT_TLS_HANDSHAKE:
        return "tls_handshake";
    case CLIENT_IDLE:
        return "idle";
    case CLIENT_READING_HEAD:
        return "reading_head";
    case CLIENT_CONNECTING:
        return "connecting";
    case CLIENT_FORWARDING:
        return "forwarding";
    case CLIENT_TUNNEL:
        return "tunnel";
    case CLIENT_RESPONDING:
        return "responding";
    case CLIENT_LINGERING:
        return "lingering";
    case CLIENT_CLOSED:
        return "closed";
    }
    return "unknown";
}

static bool is_tcp_mode(const struct client *c)
{
    return c->listener->protocol == CONF_PROTO_TCP;
}

static ev_tstamp now_of(const struct client *c)
{
    return ev_now(c->w->loop);
}

/* The process drains, or this connection's listener was removed by a
 * reload: answer what is asked, with Connection: close. */
static bool conn_closing(const struct client *c)
{
    return c->w->state >= WORKER_DRAIN_DELAY || c->listener->closed ||
           __atomic_load_n(&worker_first(c->w)->stop_signalled, __ATOMIC_RELAXED);
}

/* ---- timeouts: one timer, its deadline derived from the state ------------ */

static double ms_to_s(conf_ms ms)
{
    return (double)ms / 1000.0;
}

static ev_tstamp earliest(ev_tstamp a, ev_tstamp b)
{
    return a < b ? a : b;
}

/* The request went out whole and not a byte of the answer came back. */
static bool awaiting_first_byte(const struct client *c)
{
    return c->x.req_sent_at > 0 && !c->x.response_started && c->x.interim == 0 &&
           (!c->up.buf || buf_len(c->up.buf) == 0);
}

static ev_tstamp deadline_of(const struct client *c)
{
    const struct conf *conf = c->w->conf;
    switch (c->state) {
    case CLIENT_IDLE:
        if (c->requests == 0) {
            /* the first request's head is due client_header after accept,
             * so silent sockets cannot hold usher for client_idle */
            ev_tstamp head = c->head_started_at + ms_to_s(conf->timeouts.client_header);
            if (c->w->state >= WORKER_DRAINING)
                head = earliest(head, c->last_activity + FIRST_REQUEST_GRACE_S);
            return head;
        }
        if (c->idle_close_at > 0)
            return earliest(c->idle_close_at,
                            c->last_activity + ms_to_s(conf->timeouts.client_idle));
        return c->last_activity + ms_to_s(conf->timeouts.client_idle);
    case CLIENT_READING_HEAD:
        return c->head_started_at + ms_to_s(conf->timeouts.client_header);
    case CLIENT_TLS_HANDSHAKE:
        return c->last_activity + ms_to_s(conf->timeouts.client_header);
    case CLIENT_CONNECTING:
        return c->last_activity + ms_to_s(conf->timeouts.connect);
    case CLIENT_FORWARDING:
        if (awaiting_first_byte(c))
            return earliest(c->x.req_sent_at + ms_to_s(conf->timeouts.first_byte),
                            c->last_activity + ms_to_s(conf->timeouts.backend));
        return c->last_activity + ms_to_s(conf->timeouts.backend);
    case CLIENT_TUNNEL:
        if (c->x.ws && !c->x.ws->closing && c->x.ws->close_at > 0)
            return earliest(c->x.ws->close_at, c->last_activity + ms_to_s(conf->timeouts.tunnel));
        return c->last_activity + ms_to_s(conf->timeouts.tunnel);
    case CLIENT_RESPONDING:
        return c->last_activity + ms_to_s(conf->timeouts.client_idle);
    case CLIENT_LINGERING:
        return c->linger_until;
    case CLIENT_CLOSED:
        break;
    }
    return 0;
}

/* Makes sure the timer fires no later than the state's deadline. A timer
 * already due earlier is left alone: its callback recomputes the deadline
 * and re-arms, so most transitions cost no timer-heap operation. */
static void arm_timer(struct client *c)
{
    if (c->state == CLIENT_CLOSED)
        return;
    ev_tstamp deadline = deadline_of(c);
    if (c->timer_at > 0 && c->timer_at <= deadline)
        return;
    ev_tstamp now = now_of(c);
    double left = deadline - now;
    if (left < 0.001)
        left = 0.001;
    ev_timer_stop(c->w->loop, &c->timer);
    ev_timer_set(&c->timer, left, 0.);
    ev_timer_start(c->w->loop, &c->timer);
    c->timer_at = now + left;
}

/* Every transition goes through here so the timer always matches the state;
 * activity in between only moves timestamps (libev "method 3"). */
static void set_state(struct client *c, enum client_state s)
{
    c->state = s;
    c->last_activity = now_of(c);
    arm_timer(c);
}

/* ---- sides and buffers --------------------------------------------------- */

static void client_want(struct client *c, unsigned events)
{
    io_watch(c->w->loop, &c->io, c->down.fd, &c->io_events, events);
}

static bool head_pending(const struct hbuf *h)
{
    return h->sent < h->len;
}

static struct buf_pool *bufs_of(struct client *c, struct side *s)
{
    return s == &c->up ? &c->w->bufs_out : &c->w->bufs_in;
}

static bool ensure_buf(struct client *c, struct side *s)
{
    if (!s->buf)
        s->buf = buf_get(bufs_of(c, s));
    return s->buf != NULL;
}

/* Room to read into (maybe after compacting). */
static bool can_read(const struct side *s)
{
    return !s->buf || buf_space(s->buf) > 0 || s->buf->start > 0;
}

/* Gives back buffers holding nothing, so idle connections cost no buffer. */
static void release_empty_bufs(struct client *c)
{
    if (c->down.buf && buf_len(c->down.buf) == 0) {
        buf_put(&c->w->bufs_in, c->down.buf);
        c->down.buf = NULL;
    }
    if (c->up.buf && buf_len(c->up.buf) == 0) {
        buf_put(&c->w->bufs_out, c->up.buf);
        c->up.buf = NULL;
    }
}

static ssize_t side_recv(struct side *s)
{
    return s->tp->recv(s);
}

static ssize_t side_send(struct side *s, struct hbuf *head, struct buf *b, size_t *fwd)
{
    return s->tp->send(s, head, b, fwd);
}

/* ---- splice pipes -------------------------------------------------------- */

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
static void pipe_release(struct client *c)
{
    if (c->pipe.rd < 0)
        return;
    unsigned open = c->w->pipes.open;
    kpipe_put(&c->w->pipes, &c->pipe);
    worker_fds_pipes(c->w, open);
}

/* ---- the exchange -------------------------------------------------------- */

/* The one place an exchange is reset: its heads are freed and every field
 * starts from zero, so nothing of the previous request can leak in. */
static void exchange_reset(struct client *c)
{
    hbuf_free(&c->x.req_head);
    hbuf_free(&c->x.res_head);
    free(c->x.log);
    free(c->x.ws);
    free(c->x.upgrade);
    memset(&c->x, 0, sizeof(c->x));
    c->x.method = HTTP1_METHOD_OTHER;
}

static bool request_sent(const struct client *c)
{
    return c->x.req_body.done && c->x.in_fwd == 0 && !head_pending(&c->x.req_head);
}

/* Some byte of the final response went to the client: it can no longer be
 * replaced by an error of usher's own (interim responses before it are
 * whole messages: an error can still follow them). */
static bool response_on_wire(const struct client *c)
{
    return c->x.bytes_out > c->x.interim_len || c->x.res_head.sent > c->x.interim_len;
}

/* ---- upstream binding ---------------------------------------------------- */

static void on_upstream_event(void *owner, enum upstream_event ev, int err);

static void bind_upstream(struct client *c, struct upstream *u, struct pool *p, bool from_pool)
{
    c->upstream = u;
    c->x.pool = p;
    c->x.from_pool = from_pool;
    if (!c->x.budget_counted) {
        retry_budget_request(&p->retry_budget, now_of(c));
        c->x.budget_counted = true;
    }
    side_attach(&c->up, u->fd, &transport_plain);
    server_inflight_add(u->server, 1);
    u->requests++;
    c->x.upstream_at = now_of(c);
}

/* Detaches the upstream; it goes back to its pool if <reusable>. */
static void unbind_upstream(struct client *c, bool reusable)
{
    struct upstream *u = c->upstream;
    if (!u)
        return;
    c->upstream = NULL;
    c->up.fd = -1;
    server_inflight_add(u->server, -1);
    if (reusable)
        upstream_release(u, true);
    else
        upstream_close(u);
}

/* ---- closing ------------------------------------------------------------- */

static unsigned status_class_of(const struct client *c)
{
    if (c->x.response_started && !c->x.res_body.done)
        return STATUS_ABORTED; /* the client saw a cut answer, whatever its status line said */
    return (c->x.status >= 100 && c->x.status < 600) ? (unsigned)c->x.status / 100 : 0;
}

static const char *or_dash(const char *s)
{
    return s[0] ? s : "-";
}

static const char *protocol_of(const struct client *c)
{
    if (is_tcp_mode(c))
        return "tcp";
    if (!c->x.log || !c->x.log->method[0])
        return "-"; /* no request line was understood */
    return c->x.req_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
}

static void log_access(struct client *c, struct server *s, double seconds)
{
    if (!c->w->conf->log.access)
        return;
    static const struct exchange_log no_request; /* nothing was understood */
    const struct exchange_log *xl = c->x.log ? c->x.log : &no_request;
    bool routed = s && c->x.pool;
    log_kv(CONF_LOG_INFO, "access", LOG_STR("client", c->peer),
           LOG_STR("listener", c->listener->name), LOG_STR("method", or_dash(xl->method)),
           LOG_STR("path", or_dash(xl->path)), LOG_STR("protocol", protocol_of(c)),
           LOG_STR("host", or_dash(xl->host)), LOG_INT("status", c->x.status),
           LOG_UINT("bytes", c->x.bytes_out), LOG_UINT("bytes_in", c->x.bytes_in),
           LOG_FLOAT("ms", seconds * 1000.0, 1), LOG_STR("pool", routed ? c->x.pool->name : "-"),
           LOG_STR("backend", routed ? s->hb->name : "-"),
           LOG_STR("user_agent", or_dash(xl->user_agent)),
           LOG_STR("request_id", or_dash(xl->request_id)));
}

/* Tunnels (a 101, TCP mode) last as long as their users want: their
 * lifetime is no request duration, and would only fill the +Inf bucket. */
static bool timed(const struct client *c)
{
    return !is_tcp_mode(c) && c->x.status != 101;
}

/* A request ends (answered or abandoned): counters and the access log. */
static void end_request(struct client *c)
{
    if (c->x.started_at == 0)
        return;
    struct server *s = c->upstream ? c->upstream->server : NULL;
    struct listener *l = c->listener;
    ev_tstamp now = now_of(c);
    unsigned cls = status_class_of(c);
    l->responses[cls]++;
    l->bytes_in += c->x.bytes_in;
    l->bytes_out += c->x.bytes_out;
    if (timed(c))
        metrics_histogram_observe(&l->duration, now - c->x.started_at);
    if (s) {
        s->requests_total++;
        s->responses[cls]++;
        s->bytes_in += c->x.bytes_in;
        s->bytes_out += c->x.bytes_out;
        if (timed(c))
            metrics_histogram_observe(&s->duration, now - c->x.upstream_at);
    }
    log_access(c, s, now - c->x.started_at);
    c->x.started_at = 0;
}

void client_close(struct client *c)
{
    if (c->state == CLIENT_CLOSED)
        return;
    struct worker *w = c->w;
    end_request(c);
    unbind_upstream(c, false);
    client_want(c, 0);
    ev_timer_stop(w->loop, &c->timer);
    c->down.tp->release(&c->down);
    close(c->down.fd);
    c->down.fd = -1;
    buf_put(&w->bufs_in, c->down.buf);
    buf_put(&w->bufs_out, c->up.buf);
    c->down.buf = c->up.buf = NULL;
    pipe_release(c);
    exchange_reset(c);
    if (c->state == CLIENT_LINGERING)
        w->num_lingering--;
    c->state = CLIENT_CLOSED;
    /* the worker frees it and looks at the counts at its next safe point */
    w->num_clients--;
    worker_fds_add(w, -1);
    c->listener->connections--;
    list_remove(&c->link);
    list_append(&w->closed, &c->link);
    ev_prepare_start(w->loop, &w->reaper);
}

void client_free(struct client *c)
{
    free(c);
}

/* The connection is done. If the client may still be sending (a pipelined
 * request, an unread body, a request that crossed our decision to close),
 * a plain close() with unread bytes would answer with an RST that can
 * destroy the response still in flight: shut the write side instead and
 * discard input for a while (lingering close). */
static enum step finish_connection(struct client *c)
{
    end_request(c);
    unbind_upstream(c, false);
    c->down.tp->shutdown_write(&c->down);
    c->linger_bytes = 0;
    if (c->down.eof || side_discard(&c->down, LINGER_MAX_BYTES, &c->linger_bytes)) {
        client_close(c);
        return STEP_CLOSED;
    }
    c->linger_until = now_of(c) + LINGER_S;
    c->w->num_lingering++;
    set_state(c, CLIENT_LINGERING);
    /* a drain waits for no lingering connection: let it look again */
    ev_prepare_start(c->w->loop, &c->w->reaper);
    return STEP_BLOCKED;
}

static enum step on_lingering(struct client *c)
{
    if (side_discard(&c->down, LINGER_MAX_BYTES, &c->linger_bytes)) {
        client_close(c);
        return STEP_CLOSED;
    }
    return STEP_BLOCKED;
}

/* ---- responses usher makes itself ---------------------------------------- */

/* Answers the current request with <status>. The connection stays open only
 * if the request was read completely and <close> is false. */
static enum step respond_error(struct client *c, int status, const char *detail, bool close)
{
    if (is_tcp_mode(c) || response_on_wire(c)) {
        client_close(c);
        return STEP_CLOSED;
    }
    unbind_upstream(c, false);
    hbuf_reset(&c->x.req_head); /* the request goes no further */
    if (!c->x.req_body.done || conn_closing(c))
        close = true;
    if (!close && c->down.buf) {
        buf_consume(c->down.buf, c->x.in_fwd); /* the unsent body of this request */
        c->x.in_fwd = 0;
    }
    if (close)
        c->x.keep_alive = false;
    if (c->x.started_at == 0)
        c->x.started_at = now_of(c);
    c->x.status = status;
    c->x.response_started = true;
    c->x.res_body.done = true;
    if (c->x.interim_len == 0)
        hbuf_reset(&c->x.res_head);
    else
        c->x.res_head.len = c->x.interim_len; /* the relayed interim responses stay */
    if (c->up.buf)
        buf_consume(c->up.buf, buf_len(c->up.buf));
    c->x.out_fwd = 0;
    if (headers_build_error(&c->x.res_head, status, detail, !c->x.keep_alive,
                            c->x.method == HTTP1_METHOD_HEAD) < 0) {
        client_close(c);
        return STEP_CLOSED;
    }
    log_debug("http error", "client=%s listener=%s status=%d reason=\"%s\"", c->peer,
              c->listener->name, status, detail ? detail : "");
    set_state(c, CLIENT_RESPONDING);
    return STEP_PROGRESS;
}

/* ---- request start, backend choice, connect and retry -------------------- */

static void remember_tried(struct client *c, struct server *s)
{
    if (c->x.attempts < MAX_ATTEMPTS)
        c->x.tried[c->x.attempts++] = s;
}

/* usher's own shortage rather than the backend's fault. */
static bool local_shortage(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/* Counts and logs a failed connect to <s> (<err> 0: it timed out) and
 * rules <s> out for this request. */
static void connect_failure(struct client *c, struct server *s, int err)
{
    s->connect_failures++;
    server_passive_report(s, true, err ? "connect failed" : "connect timeout");
    c->x.connect_failed = true;
    log_warn("backend connect failed", "pool=%s backend=%s address=%s error=\"%s\"",
             s->hb->pool_name, s->hb->name, s->hb->address_text,
             err ? strerror(err) : "connect timeout");
    remember_tried(c, s);
}

/* Starts a new connection to <s> of pool <p> for the request. Short of
 * descriptors, idle pooled connections are given up first: a client never
 * fails for a connection nobody uses. Returns false if the connect failed
 * at once (*<err> set). */
static bool open_upstream(struct client *c, struct server *s, struct pool *p, int *err)
{
    struct upstream *u = upstream_connect(s, on_upstream_event, c, err);
    if (!u && local_shortage(*err) && upstream_reclaim_idle(c->w, 1) > 0)
        u = upstream_connect(s, on_upstream_event, c, err);
    if (!u)
        return false;
    bind_upstream(c, u, p, false);
    set_state(c, CLIENT_CONNECTING);
    return true;
}

static enum step no_backend(struct client *c)
{
    if (is_tcp_mode(c)) {
        log_warn("tcp no backend", "client=%s listener=%s attempts=%u", c->peer, c->listener->name,
                 c->x.attempts);
        client_close(c);
        return STEP_CLOSED;
    }
    if (c->x.attempts == 0)
        return respond_error(c, 503, "no backend available", false);
    if (c->x.retried) /* no other backend to retry on: the first failure stands */
        return respond_error(c, c->x.fail_status, c->x.fail_why, false);
    return respond_error(c, 502, "backend connection failed", false);
}

/* A request needs no body replay if it has none: then a pooled connection
 * that turned out dead can be replaced without the client noticing. */
static bool request_replayable(const struct client *c)
{
    return c->x.req_body.framing == HTTP1_BODY_NONE && !c->x.upgrading;
}

static enum step connect_upstream(struct client *c)
{
    for (;;) {
        struct pool *p = NULL;
        if (c->x.attempts >= MAX_ATTEMPTS)
            return no_backend(c);
        struct server *s = balance_pick(c->listener, c->x.tried, c->x.attempts, &p);
        if (!s)
            return no_backend(c);
        if (c->x.connect_failed) {
            p->retries[RETRY_CONNECT]++; /* nothing was sent: always safe, never budgeted */
            c->x.connect_failed = false;
        }
        struct upstream *u =
            is_tcp_mode(c) ? NULL
                           : upstream_take_idle(s, request_replayable(c), on_upstream_event, c);
        if (u) {
            bind_upstream(c, u, p, true);
            set_state(c, CLIENT_FORWARDING);
            return STEP_PROGRESS;
        }
        int err = 0;
        if (open_upstream(c, s, p, &err))
            return STEP_PROGRESS;
        if (local_shortage(err)) {
            /* no point trying other backends, and closing this client
             * gives a descriptor back */
            log_warn("backend connect failed", "reason=\"%s\" connections=%u", strerror(err),
                     c->w->num_clients);
            return respond_error(c, 503, "proxy out of resources", true);
        }
        connect_failure(c, s, err);
    }
}

/* The connect of the bound upstream failed (<err>) or timed out (0). */
static enum step connect_failed(struct client *c, int err)
{
    connect_failure(c, c->upstream->server, err);
    unbind_upstream(c, false);
    if (err == 0 && c->x.attempts >= MAX_ATTEMPTS && !is_tcp_mode(c))
        return respond_error(c, 504, "backend connect timeout", false);
    return connect_upstream(c);
}

/* The log escapes what it writes: the bytes are kept as they came. */
static void copy_for_log(char *dst, size_t cap, struct http1_slice s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

/* The first field of <m> named <name> (lowercase), or NULL. */
static const struct http1_header *header_named(const struct http1_message *m, const char *name)
{
    for (size_t i = 0; i < m->num_headers; i++)
        if (http1_slice_eq(m->headers[i].name, name))
            return &m->headers[i];
    return NULL;
}

/* The first token of an Upgrade field value (RFC 9110 7.8). */
static void upgrade_protocol(char *dst, size_t cap, struct http1_slice v)
{
    size_t n = 0;
    while (n < v.len && v.ptr[n] != ',' && v.ptr[n] != '/' && v.ptr[n] != ' ' && n < cap - 1)
        n++;
    memcpy(dst, v.ptr, n);
    dst[n] = '\0';
}

/* A new X-Request-Id for the exchange (random, 128 bits, hex). */
static const char *new_request_id(void *ctx)
{
    struct client *c = ctx;
    char *id = c->x.log ? c->x.log->request_id : c->w->request_id;
    prng_hex128(&c->w->rng, id);
    return id;
}

static enum step start_request(struct client *c, struct http1_request *req)
{
    const struct http1_message *m = &req->msg;
    struct buf *in = c->down.buf;
    c->requests++;
    c->x.started_at = now_of(c);
    c->x.method = req->method_id;
    c->x.req_minor = m->minor_version;
    c->x.keep_alive = (m->flags & HTTP1_F_KEEP_ALIVE) && !conn_closing(c);
    c->x.close_asked = !(m->flags & HTTP1_F_KEEP_ALIVE);
    c->x.upgrading = m->minor_version == 1 && (m->flags & HTTP1_F_HAS_UPGRADE) &&
                     (m->flags & HTTP1_F_CONN_UPGRADE);
    if (c->x.upgrading)
        if ((c->x.upgrade = malloc(UPGRADE_MAX)))
            upgrade_protocol(c->x.upgrade, UPGRADE_MAX, m->upgrade);
    c->x.bytes_in = m->head_len;
    if (c->w->conf->log.access && (c->x.log = calloc(1, sizeof(*c->x.log)))) {
        struct exchange_log *xl = c->x.log;
        copy_for_log(xl->method, sizeof(xl->method), req->method);
        copy_for_log(xl->path, sizeof(xl->path), req->target);
        copy_for_log(xl->host, sizeof(xl->host), req->host);
        const struct http1_header *ua = header_named(m, "user-agent");
        if (ua)
            copy_for_log(xl->user_agent, sizeof(xl->user_agent), ua->value);
    }
    body_start(&c->x.req_body, m, false);

    struct http1_slice rid = {NULL, 0};
    if (req->method_id == HTTP1_METHOD_CONNECT) {
        /* no head is rebuilt for an answer of usher's own */
        if (c->x.log) { /* the id is for the access log only */
            if (headers_request_id(m, &rid) && rid.len <= REQUEST_ID_MAX)
                copy_for_log(c->x.log->request_id, sizeof(c->x.log->request_id), rid);
            else
                new_request_id(c);
        }
        buf_consume(in, m->head_len);
        return respond_error(c, 501, "CONNECT is not supported", true);
    }

    struct forward_info fi = {
        .client_addr = c->peer,
        .proto = c->listener->tls ? "https" : "http",
        .upgrade = c->x.upgrading,
        .request_id_max = REQUEST_ID_MAX,
        .request_id_out = &rid,
        .new_request_id = new_request_id,
        .ctx = c,
    };
    if (headers_build_request(&c->x.req_head, req, &fi) < 0) {
        client_close(c);
        return STEP_CLOSED;
    }
    if (rid.len && c->x.log && rid.ptr != c->x.log->request_id)
        copy_for_log(c->x.log->request_id, sizeof(c->x.log->request_id), rid);
    /* the head was rebuilt: its bytes in the buffer are no longer needed */
    buf_consume(in, m->head_len);
    c->x.in_fwd = 0;
    if (body_frame(&c->x.req_body, in, &c->x.in_fwd) < 0)
        return respond_error(c, 400, c->x.req_body.chunked.error_reason, true);
    c->x.bytes_in += c->x.in_fwd;
    return connect_upstream(c);
}

/* ---- reading request heads ----------------------------------------------- */

static enum step on_head(struct client *c)
{
    enum step progress = STEP_BLOCKED;
    bool new_line = c->state == CLIENT_IDLE; /* pipelined bytes: parse them */
    struct side *d = &c->down;
    if (d->readable && !d->eof) {
        if (!ensure_buf(c, d)) {
            client_close(c);
            return STEP_CLOSED;
        }
        ssize_t n = can_read(d) ? side_recv(d) : NET_AGAIN;
        if (n > 0) {
            /* a head can only complete (or fail) at an LF: a slowloris
             * client sending a byte at a time costs no re-parse per byte;
             * an error found later than it could be is still found */
            new_line = new_line || memchr(d->buf->data + d->buf->end - n, '\n', (size_t)n);
        }
        if (n == NET_AGAIN) {
            d->readable = false;
        } else if (n <= 0) {
            /* EOF or error between requests is a normal close; in the middle
             * of a head there is nobody left to answer */
            client_close(c);
            return STEP_CLOSED;
        } else {
            c->last_activity = now_of(c);
            progress = STEP_PROGRESS;
        }
    }
    if (!d->buf || buf_len(d->buf) == 0) {
        release_empty_bufs(c);
        if (d->eof) {
            client_close(c); /* half-closed and every request answered */
            return STEP_CLOSED;
        }
        return progress;
    }
    if (c->state == CLIENT_IDLE) {
        if (c->requests > 0)
            c->head_started_at = now_of(c);
        set_state(c, CLIENT_READING_HEAD);
    }

    if (!new_line && buf_len(d->buf) < d->buf->cap && !d->eof)
        return progress;

    struct http1_request req;
    memset(&req, 0, sizeof(req));
    req.msg.headers = c->w->headers;
    int rc = http1_parse_request(buf_head(d->buf), buf_len(d->buf), &c->w->limits, &req);
    if (rc == HTTP1_OK)
        return start_request(c, &req);
    if (rc == HTTP1_ERROR)
        return respond_error(c, req.msg.error_status, req.msg.error_reason, true);
    if (buf_len(d->buf) >= d->buf->cap)
        return respond_error(c, 431, "request head too large", true);
    if (d->eof) {
        client_close(c);
        return STEP_CLOSED;
    }
    return progress;
}

/* ---- the exchange: request up, response down ----------------------------- */

/* Idempotent methods (RFC 9110 9.2.2) may be sent again to another backend
 * when the first one failed without answering. */
static bool request_idempotent(const struct client *c)
{
    switch (c->x.method) {
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
static enum step resend(struct client *c, struct server *s)
{
    struct pool *p = c->x.pool;
    unbind_upstream(c, false);
    c->x.req_head.sent = 0;
    c->x.interim = 0;
    c->x.req_sent_at = 0;
    if (c->up.buf)
        buf_consume(c->up.buf, buf_len(c->up.buf)); /* what the failed backend answered */
    c->up.eof = false;
    int err = 0;
    if (s && open_upstream(c, s, p, &err))
        return STEP_PROGRESS;
    if (s)
        remember_tried(c, s);
    return connect_upstream(c);
}

/* No byte of an answer reached the client, nor any interim response. */
static bool answer_untouched(const struct client *c)
{
    return !response_on_wire(c) && !c->x.response_started && c->x.interim == 0;
}

/* The upstream failed (<why>, of kind <reason>) before the response was
 * complete. An idempotent body-less request that got no byte of answer to
 * its client goes once to another backend, if the pool's budget allows. */
static enum step upstream_failed(struct client *c, const char *why, enum retry_reason reason)
{
    struct server *s = c->upstream->server;
    struct pool *p = c->x.pool;
    bool nothing_received = answer_untouched(c) && (!c->up.buf || buf_len(c->up.buf) == 0);
    if (nothing_received && request_replayable(c) && c->x.from_pool && reason == RETRY_RESET) {
        /* the backend closed a pooled connection as we reused it (its own
         * keep-alive timeout): RFC 9112 9.3.1 allows a new one */
        log_debug("pooled connection closed, retrying", "pool=%s backend=%s", p->name, s->hb->name);
        return resend(c, s);
    }
    server_passive_report(s, true, why);
    if (answer_untouched(c) && request_replayable(c) && request_idempotent(c) && !c->x.retried &&
        c->x.attempts + 1 < MAX_ATTEMPTS) {
        if (retry_budget_take(&p->retry_budget, now_of(c))) {
            log_kv(CONF_LOG_WARN, "backend failed, retrying", LOG_STR("pool", p->name),
                   LOG_STR("backend", s->hb->name), LOG_STR("reason", why),
                   LOG_STR("retry", retry_reason_str(reason)));
            p->retries[reason]++;
            c->x.retried = true;
            c->x.fail_status = reason == RETRY_FIRST_BYTE ? 504 : 502;
            c->x.fail_why = why;
            remember_tried(c, s);
            return resend(c, NULL);
        }
        p->retry_budget_refused++;
        log_kv(CONF_LOG_WARN, "retry refused", LOG_STR("pool", p->name),
               LOG_STR("backend", s->hb->name), LOG_STR("reason", "retry budget spent"));
    }
    log_warn("backend failed", "pool=%s backend=%s reason=\"%s\" response_started=%d",
             p ? p->name : "-", s->hb->name, why, response_on_wire(c));
    if (!response_on_wire(c)) {
        c->x.response_started = false;
        return respond_error(c, reason == RETRY_FIRST_BYTE ? 504 : 502, why, false);
    }
    client_close(c);
    return STEP_CLOSED;
}

/* Bytes waiting in the client's receive buffer (0 if none or unknown). */
static int bytes_waiting(const struct client *c)
{
    int n = 0;
    if (ioctl(c->down.fd, FIONREAD, &n) < 0)
        return 0;
    return n;
}

/* A client that said it sends nothing more, whose request was read whole
 * with nothing after it, gets a plain close (as nginx does): no RST can
 * come of it, and the lingering close's shutdown, wake-up and reads are
 * saved. TLS keeps its close_notify; a drain or a removed listener keeps
 * the lingering close (usher, not the client, decided). */
static bool quiet_close(const struct client *c)
{
    return c->down.tp == &transport_plain && !conn_closing(c) &&
           (!c->down.buf || buf_len(c->down.buf) == 0) && bytes_waiting(c) == 0;
}

/* The response is complete; the request may or may not be. */
static enum step finish_exchange(struct client *c)
{
    bool req_done = request_sent(c);
    bool reusable = c->x.res_reusable && req_done && c->x.out_fwd == 0 &&
                    (!c->up.buf || buf_len(c->up.buf) == 0);
    end_request(c);
    unbind_upstream(c, reusable);
    pipe_release(c); /* drained: the response is complete */
    if (req_done && c->x.close_asked && quiet_close(c)) {
        client_close(c);
        return STEP_CLOSED;
    }
    if (!req_done || !c->x.keep_alive)
        return finish_connection(c);
    exchange_reset(c);
    if (c->up.buf)
        buf_consume(c->up.buf, buf_len(c->up.buf));
    release_empty_bufs(c);
    set_state(c, CLIENT_IDLE);
    /* a drain began after this response said keep-alive: the connection is
     * idle now and gets the drain's idle close (a pipelined request already
     * here is served first, with Connection: close) */
    if (c->idle_close_at > 0 && c->idle_close_at <= now_of(c) &&
        (!c->down.buf || buf_len(c->down.buf) == 0))
        return finish_connection(c);
    return STEP_PROGRESS; /* a pipelined request may already be buffered */
}

static enum response_conn response_conn_for(struct client *c)
{
    if (!c->x.keep_alive || conn_closing(c))
        return RESPONSE_CONN_CLOSE;
    return c->x.req_minor == 0 ? RESPONSE_CONN_KEEP_ALIVE_10 : RESPONSE_CONN_KEEP_ALIVE;
}

/* A 101 switches to the protocol the client asked for, and says which
 * (RFC 9110 15.2.2): one without Upgrade, or with another protocol, is an
 * invalid response. */
static bool upgrade_matches(const struct client *c, const struct http1_response *res)
{
    if (!(res->msg.flags & HTTP1_F_HAS_UPGRADE) || res->msg.upgrade.len == 0 || !c->x.upgrade)
        return false;
    char got[UPGRADE_MAX];
    upgrade_protocol(got, sizeof(got), res->msg.upgrade);
    return strcasecmp(got, c->x.upgrade) == 0;
}

/* After a 101 to Upgrade: websocket, frames are followed both ways from
 * the first byte after the heads. */
static void ws_tunnel_start(struct client *c)
{
    if (!c->x.upgrade || strcasecmp(c->x.upgrade, "websocket") != 0)
        return;
    struct ws_tunnel *ws = calloc(1, sizeof(*ws));
    if (!ws)
        return; /* out of memory: a plain tunnel, without close frames at a drain */
    c->x.ws = ws;
    ws->to_backend.boundary_known = ws->to_client.boundary_known = true;
    if (c->down.buf && buf_len(c->down.buf) > 0)
        ws_follow(&ws->to_backend, c->down.buf, buf_len(c->down.buf));
    if (c->up.buf && buf_len(c->up.buf) > 0)
        ws_follow(&ws->to_client, c->up.buf, buf_len(c->up.buf));
}

/* Parses the response head in c->up.buf. */
static enum step on_response_head(struct client *c)
{
    struct buf *out = c->up.buf;
    struct http1_response res;
    memset(&res, 0, sizeof(res));
    res.msg.headers = c->w->headers;
    int rc = http1_parse_response(buf_head(out), buf_len(out), &c->w->limits, c->x.method, &res);
    if (rc == HTTP1_AGAIN) {
        if (buf_len(out) >= out->cap)
            return upstream_failed(c, "response head too large", RETRY_INVALID_HEAD);
        if (c->up.eof)
            return upstream_failed(c, "backend closed the connection", RETRY_RESET);
        return STEP_BLOCKED;
    }
    if (rc == HTTP1_ERROR)
        return upstream_failed(c, res.msg.error_reason, RETRY_INVALID_HEAD);

    if (res.status >= 100 && res.status < 200 && res.status != 101) {
        /* interim response (100 Continue, 103 Early Hints): relay it to
         * HTTP/1.1 clients and wait for the final one */
        if (++c->x.interim > MAX_INTERIM_RESPONSES)
            return upstream_failed(c, "too many interim responses", RETRY_INVALID_HEAD);
        if (c->x.req_minor >= 1 &&
            hbuf_append(&c->x.res_head, buf_head(out), res.msg.head_len) < 0) {
            client_close(c);
            return STEP_CLOSED;
        }
        c->x.interim_len = c->x.res_head.len;
        buf_consume(out, res.msg.head_len);
        return STEP_PROGRESS;
    }

    enum response_conn conn;
    bool dechunk_body = false;
    if (res.status == 101) {
        if (!c->x.upgrading)
            return upstream_failed(c, "unexpected 101 response", RETRY_INVALID_HEAD);
        if (!upgrade_matches(c, &res))
            return upstream_failed(c, "101 response without the requested Upgrade",
                                   RETRY_INVALID_HEAD);
        conn = RESPONSE_CONN_UPGRADE;
    } else {
        c->x.upgrading = false;
        /* an answer before the whole request went up ends the connection:
         * the rest of the request body cannot be told from the next request;
         * a body without length (until close, or de-chunked for HTTP/1.0)
         * can only end with the connection */
        dechunk_body = res.msg.framing == HTTP1_BODY_CHUNKED && c->x.req_minor == 0;
        if (!c->x.req_body.done || res.msg.framing == HTTP1_BODY_UNTIL_CLOSE || dechunk_body)
            c->x.keep_alive = false;
        conn = response_conn_for(c);
    }
    c->x.status = res.status;
    server_passive_report(c->upstream->server,
                          res.status == 502 || res.status == 503 || res.status == 504,
                          "5xx answer");
    c->x.res_reusable = (res.msg.flags & HTTP1_F_KEEP_ALIVE) && res.status != 101;
    if (headers_build_response(&c->x.res_head, &res, conn, dechunk_body) < 0) {
        client_close(c);
        return STEP_CLOSED;
    }
    c->x.response_started = true;
    body_start(&c->x.res_body, &res.msg, dechunk_body);
    buf_consume(out, res.msg.head_len);
    c->x.out_fwd = 0;

    if (res.status == 101) {
        c->x.res_body.done = true; /* what follows is the tunnel, not a body */
        log_debug("tunnel started", "client=%s pool=%s backend=%s", c->peer, c->x.pool->name,
                  c->upstream->server->hb->name);
        ws_tunnel_start(c);
        set_state(c, CLIENT_TUNNEL);
        if (c->upstream->server->hb->drain_deadline > 0)
            tunnel_deadline(c, c->upstream->server->hb->drain_deadline);
        if (c->w->drain_deadline > 0)
            tunnel_deadline(c, c->w->drain_deadline);
        return STEP_PROGRESS;
    }
    if (body_frame(&c->x.res_body, out, &c->x.out_fwd) < 0)
        return upstream_failed(c, c->x.res_body.chunked.error_reason, RETRY_RESET);
    return STEP_PROGRESS;
}

/* ---- splicing a response body (kernel to kernel) -------------------------- */

/* The rest of the response body may go through a pipe: one test per
 * reason it may not. */
static bool splice_fits(const struct client *c)
{
    const struct exchange *x = &c->x;
    const struct body_state *bs = &x->res_body;
    if (!x->response_started || bs->done)
        return false; /* no body under way */
    if (!c->up.tp->splice_in || !c->down.tp->splice_out)
        return false; /* TLS on a side: its bytes pass through user space */
    if (bs->framing != HTTP1_BODY_LENGTH && bs->framing != HTTP1_BODY_UNTIL_CLOSE)
        return false; /* chunked: trailers are filtered (or the framing stripped) */
    if (bs->framing == HTTP1_BODY_LENGTH && bs->left < SPLICE_MIN_BODY)
        return false; /* too little left to pay for the pipe */
    if (head_pending(&x->res_head) || x->out_fwd > 0 || (c->up.buf && buf_len(c->up.buf) > 0))
        return false; /* bytes already read go first, through the buffer */
    if (!pipe_affordable(c->w))
        return false; /* descriptors are for clients first */
    return true;
}

/* Takes a pipe for the rest of the body; without one the body stays on
 * the buffered path. The emptied response buffer goes back. */
static void splice_begin(struct client *c)
{
    unsigned open = c->w->pipes.open;
    int rc = kpipe_get(&c->w->pipes, &c->pipe);
    worker_fds_pipes(c->w, open);
    if (rc < 0)
        return;
    buf_put(&c->w->bufs_out, c->up.buf);
    c->up.buf = NULL;
}

/* Moves body bytes from the backend into the pipe, no more than it has
 * room for (backpressure) and never past the body's end. */
static enum step splice_body_in(struct client *c)
{
    struct side *u = &c->up;
    struct body_state *bs = &c->x.res_body;
    if (!u->readable || u->eof || bs->done || c->pipe.full)
        return STEP_BLOCKED;
    size_t max = SIZE_MAX;
    if (bs->framing == HTTP1_BODY_LENGTH && bs->left < max)
        max = (size_t)bs->left;
    ssize_t n = u->tp->splice_in(u, &c->pipe, max);
    if (n == NET_AGAIN)
        return STEP_BLOCKED;
    if (n < 0)
        return upstream_failed(c, "backend connection reset", RETRY_RESET);
    if (n == 0) {
        u->eof = true;
        if (bs->framing != HTTP1_BODY_UNTIL_CLOSE)
            return upstream_failed(c, "backend closed mid-body", RETRY_RESET);
        bs->done = true;
        return STEP_PROGRESS;
    }
    body_took(bs, (size_t)n);
    c->last_activity = now_of(c);
    return STEP_PROGRESS;
}

/* The bound upstream's side has room to read into: its buffer, or the pipe
 * while a body is spliced. */
static bool up_can_read(const struct client *c)
{
    if (c->pipe.rd >= 0)
        return !c->pipe.full && c->pipe.len < c->pipe.cap;
    return can_read(&c->up);
}

/* Counts <n> response bytes that went to the client, buffered or spliced;
 * false when the client went away mid-response (the connection is closed). */
static bool response_sent(struct client *c, ssize_t n, enum step *progress)
{
    if (n < 0) {
        client_close(c);
        return false;
    }
    if (n > 0) {
        c->x.bytes_out += (uint64_t)n;
        c->last_activity = now_of(c);
        *progress = STEP_PROGRESS;
    }
    return true;
}

static enum step on_forward(struct client *c)
{
    enum step progress = STEP_BLOCKED;
    struct side *d = &c->down, *u = &c->up;
    struct exchange *x = &c->x;

    /* request bytes toward the backend */
    if (head_pending(&x->req_head) || x->in_fwd > 0) {
        ssize_t n = side_send(u, &x->req_head, d->buf, &x->in_fwd);
        if (n < 0)
            return upstream_failed(c, "backend write failed", RETRY_RESET);
        if (n > 0) {
            c->last_activity = now_of(c);
            progress = STEP_PROGRESS;
        }
    }
    if (x->req_sent_at == 0 && request_sent(c)) {
        x->req_sent_at = now_of(c);
        arm_timer(c); /* timeouts.first_byte counts from here */
    }

    /* more of the request body, a pipelined request, or the client's EOF */
    if (d->readable && !d->eof) {
        if (!ensure_buf(c, d)) {
            client_close(c);
            return STEP_CLOSED;
        }
        if (can_read(d)) {
            ssize_t n = side_recv(d);
            if (n == NET_AGAIN) {
                d->readable = false;
            } else if (n <= 0) {
                d->eof = true;
                if (!x->req_body.done || n < 0) {
                    client_close(c); /* the client gave up on its request */
                    return STEP_CLOSED;
                }
            } else {
                c->last_activity = now_of(c);
                progress = STEP_PROGRESS;
                size_t framed = x->in_fwd;
                if (body_frame(&x->req_body, d->buf, &x->in_fwd) < 0)
                    return respond_error(c, 400, x->req_body.chunked.error_reason, true);
                x->bytes_in += x->in_fwd - framed;
            }
        }
    }

    /* response bytes from the backend: kernel to kernel once they can be */
    if (c->pipe.rd < 0 && splice_fits(c))
        splice_begin(c);
    if (c->pipe.rd >= 0) {
        enum step s = splice_body_in(c);
        if (s == STEP_CLOSED)
            return s;
        if (s == STEP_PROGRESS)
            progress = s;
    } else if (u->readable && !u->eof && !x->res_body.done) {
        if (!ensure_buf(c, u)) {
            client_close(c);
            return STEP_CLOSED;
        }
        if (can_read(u)) {
            ssize_t n = side_recv(u);
            if (n == NET_AGAIN) {
                u->readable = false;
            } else if (n < 0) {
                return upstream_failed(c, "backend connection reset", RETRY_RESET);
            } else if (n == 0) {
                u->eof = true;
                progress = STEP_PROGRESS;
                if (x->response_started && x->res_body.framing == HTTP1_BODY_UNTIL_CLOSE)
                    x->res_body.done = true;
                else if (x->response_started && !x->res_body.done)
                    return upstream_failed(c, "backend closed mid-body", RETRY_RESET);
            } else {
                c->last_activity = now_of(c);
                progress = STEP_PROGRESS;
                if (x->response_started && body_frame(&x->res_body, u->buf, &x->out_fwd) < 0)
                    return upstream_failed(c, x->res_body.chunked.error_reason, RETRY_RESET);
            }
        }
    }
    if (!x->response_started && ((u->buf && buf_len(u->buf) > 0) || u->eof)) {
        enum step s = on_response_head(c);
        if (s != STEP_BLOCKED)
            return s;
    }

    /* response bytes toward the client */
    if ((head_pending(&x->res_head) || x->out_fwd > 0) &&
        !response_sent(c, side_send(d, &x->res_head, u->buf, &x->out_fwd), &progress))
        return STEP_CLOSED;
    if (c->pipe.len > 0 && !response_sent(c, d->tp->splice_out(d, &c->pipe), &progress))
        return STEP_CLOSED;

    if (x->response_started && x->res_body.done && !head_pending(&x->res_head) && x->out_fwd == 0 &&
        c->pipe.len == 0)
        return finish_exchange(c);
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
    if (wd->t.broken || !at_boundary || head_pending(head))
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

static void ws_begin_close(struct client *c, const char *why)
{
    if (!c->x.ws || c->x.ws->closing)
        return;
    c->x.ws->closing = true;
    log_debug("websocket closing", "client=%s reason=%s", c->peer, why);
    arm_timer(c);
}

/* Schedules the close frames for <deadline>; starts closing now if the
 * grace is longer than what is left. No drive(): callers inside a step let
 * the driver's next round pump the frames. */
static void tunnel_deadline(struct client *c, ev_tstamp deadline)
{
    conf_ms grace = c->w->conf->shutdown.tunnel_close_grace;
    if (c->state != CLIENT_TUNNEL || !c->x.ws || c->x.ws->closing || grace == 0)
        return; /* a grace of 0 turns close frames off: the tunnel runs to the deadline */
    ev_tstamp at = deadline - ms_to_s(grace);
    if (c->x.ws->close_at > 0 && c->x.ws->close_at <= at)
        return;
    c->x.ws->close_at = at;
    if (at > now_of(c))
        arm_timer(c);
    else
        ws_begin_close(c, "drain deadline");
}

void client_tunnel_deadline(struct client *c, ev_tstamp deadline)
{
    bool was_closing = c->x.ws && c->x.ws->closing;
    tunnel_deadline(c, deadline);
    if (!was_closing && c->x.ws && c->x.ws->closing)
        drive(c);
}

/* ---- tunnels (after a 101, and TCP mode) --------------------------------- */

/* Moves bytes one way, <from> -> <to>: reads what <from> has (if its
 * buffer has room), writes the head still owed to <to> and the bytes read,
 * and passes <from>'s half-close on once everything went out. A WebSocket
 * direction (<wd>) is followed frame by frame: while closing, bytes go out
 * up to a frame end only, then the close frame, then nothing more. */
static enum step pump(struct client *c, struct side *from, struct side *to, struct hbuf *head,
                      size_t *fwd, struct ws_dir *wd)
{
    enum step progress = STEP_BLOCKED;
    if (from->readable && !from->eof) {
        if (!ensure_buf(c, from)) {
            client_close(c);
            return STEP_CLOSED;
        }
        if (can_read(from)) {
            ssize_t n = side_recv(from);
            if (n == NET_AGAIN) {
                from->readable = false;
            } else if (n < 0) {
                client_close(c);
                return STEP_CLOSED;
            } else {
                from->eof = n == 0;
                if (from == &c->down)
                    c->x.bytes_in += (uint64_t)n;
                c->last_activity = now_of(c);
                progress = STEP_PROGRESS;
                if (wd && n > 0)
                    ws_follow(wd, from->buf, (size_t)n);
            }
        }
    }
    if (wd && c->x.ws->closing)
        ws_insert_close(wd, from, head, to == &c->up);
    if (wd && wd->close_sent && from->buf)
        buf_consume(from->buf, buf_len(from->buf));
    *fwd = from->buf ? buf_len(from->buf) : 0;
    if (wd && c->x.ws->closing && !wd->close_sent)
        *fwd = wd->boundary_known && wd->boundary < *fwd ? wd->boundary : *fwd;
    if (head_pending(head) || *fwd) {
        size_t before = from->buf ? buf_len(from->buf) : 0;
        ssize_t n = side_send(to, head, from->buf, fwd);
        if (n < 0) {
            client_close(c);
            return STEP_CLOSED;
        }
        if (wd)
            ws_sent(wd, before - (from->buf ? buf_len(from->buf) : 0));
        if (n > 0) {
            if (to == &c->down)
                c->x.bytes_out += (uint64_t)n;
            progress = STEP_PROGRESS;
        }
        if (wd && c->x.ws->closing && !wd->close_sent &&
            ws_insert_close(wd, from, head, to == &c->up))
            progress = STEP_PROGRESS; /* the close frame goes out next round */
    }
    if (from->eof && *fwd == 0 && !head_pending(head) && !to->shut) {
        to->tp->shutdown_write(to);
        to->shut = true;
    }
    return progress;
}

/* Both close frames went and the client answered with its own: the close
 * handshake is over, and the server closes TCP first (RFC 6455 7.1.1). */
static bool ws_close_done(const struct client *c)
{
    const struct ws_tunnel *ws = c->x.ws;
    return ws && ws->closing && ws->to_client.close_sent && ws->to_backend.close_sent &&
           ws->to_backend.t.close_seen && !head_pending(&c->x.res_head) &&
           !head_pending(&c->x.req_head);
}

static enum step on_tunnel(struct client *c)
{
    struct ws_tunnel *ws = c->x.ws;
    enum step s1 =
        pump(c, &c->down, &c->up, &c->x.req_head, &c->x.in_fwd, ws ? &ws->to_backend : NULL);
    if (s1 == STEP_CLOSED)
        return s1;
    enum step s2 =
        pump(c, &c->up, &c->down, &c->x.res_head, &c->x.out_fwd, ws ? &ws->to_client : NULL);
    if (s2 == STEP_CLOSED)
        return s2;
    if ((c->up.shut && c->down.shut) || ws_close_done(c)) {
        client_close(c);
        return STEP_CLOSED;
    }
    return s1 == STEP_PROGRESS || s2 == STEP_PROGRESS ? STEP_PROGRESS : STEP_BLOCKED;
}

static enum step on_responding(struct client *c)
{
    ssize_t n = side_send(&c->down, &c->x.res_head, NULL, NULL);
    if (n < 0) {
        client_close(c);
        return STEP_CLOSED;
    }
    c->x.bytes_out += (uint64_t)n;
    if (head_pending(&c->x.res_head))
        return n > 0 ? STEP_PROGRESS : STEP_BLOCKED;
    return finish_exchange(c);
}

/* TCP mode: the whole connection is one exchange, tunnelled to a backend. */
static enum step start_tcp_session(struct client *c)
{
    c->x.started_at = now_of(c);
    c->x.req_body.done = true;
    c->x.res_body.done = true;
    return connect_upstream(c);
}

/* The bound upstream's connect completed (its state tells). */
static enum step on_connecting(struct client *c)
{
    if (c->upstream->state != UPSTREAM_ACTIVE)
        return STEP_BLOCKED;
    set_state(c, is_tcp_mode(c) ? CLIENT_TUNNEL : CLIENT_FORWARDING);
    return STEP_PROGRESS;
}

/* ---- TLS handshake ------------------------------------------------------- */

static enum step on_handshake(struct client *c)
{
    int rc = tls_handshake(c->down.ssl, &c->down.tls_want);
    if (rc == NET_AGAIN)
        return STEP_BLOCKED;
    if (rc < 0) {
        log_debug("tls handshake failed", "client=%s listener=%s", c->peer, c->listener->name);
        client_close(c);
        return STEP_CLOSED;
    }
    c->down.tls_want = 0;
    c->down.readable = true; /* the first request may already sit decrypted in TLS */
    if (is_tcp_mode(c))
        return start_tcp_session(c);
    set_state(c, CLIENT_IDLE);
    return STEP_PROGRESS;
}

/* ---- the driver ---------------------------------------------------------- */

static void update_watchers(struct client *c)
{
    unsigned ce = 0, ue = 0;
    switch (c->state) {
    case CLIENT_TLS_HANDSHAKE:
        ce = c->down.tls_want ? c->down.tls_want : EV_READ;
        break;
    case CLIENT_IDLE:
    case CLIENT_READING_HEAD:
        if (can_read(&c->down))
            ce |= EV_READ;
        /* drive() hit MAX_DRIVE_ROUNDS right as an exchange ended, with the
         * next (pipelined) request already buffered: no read event will
         * come for it, so a write event (the socket takes writes) brings
         * the connection back next iteration, after the others */
        if (c->state == CLIENT_IDLE && c->down.buf && buf_len(c->down.buf) > 0)
            ce |= EV_WRITE;
        break;
    case CLIENT_CONNECTING:
        ue |= EV_WRITE;
        break;
    case CLIENT_FORWARDING:
    case CLIENT_TUNNEL:
        if (!c->down.eof && can_read(&c->down))
            ce |= EV_READ;
        if (head_pending(&c->x.res_head) || c->x.out_fwd > 0 || c->pipe.len > 0)
            ce |= EV_WRITE;
        if (!c->up.eof && up_can_read(c) && !(c->state == CLIENT_FORWARDING && c->x.res_body.done))
            ue |= EV_READ;
        if (head_pending(&c->x.req_head) || c->x.in_fwd > 0)
            ue |= EV_WRITE;
        break;
    case CLIENT_RESPONDING:
        ce |= EV_WRITE;
        break;
    case CLIENT_LINGERING:
        ce |= EV_READ;
        break;
    case CLIENT_CLOSED:
        return;
    }
    if (c->down.ssl && (ce & EV_READ) && c->down.tls_want == EV_WRITE)
        ce |= EV_WRITE; /* a TLS read waits for the socket to take a write */
    client_want(c, ce);
    if (c->upstream)
        upstream_want(c->upstream, ue);
}

static void drive(struct client *c)
{
    for (int round = 0; round < MAX_DRIVE_ROUNDS; round++) {
        enum step s = STEP_BLOCKED;
        switch (c->state) {
        case CLIENT_TLS_HANDSHAKE:
            s = on_handshake(c);
            break;
        case CLIENT_IDLE:
        case CLIENT_READING_HEAD:
            s = on_head(c);
            break;
        case CLIENT_CONNECTING:
            s = on_connecting(c);
            break;
        case CLIENT_FORWARDING:
            s = on_forward(c);
            break;
        case CLIENT_TUNNEL:
            s = on_tunnel(c);
            break;
        case CLIENT_RESPONDING:
            s = on_responding(c);
            break;
        case CLIENT_LINGERING:
            s = on_lingering(c);
            break;
        case CLIENT_CLOSED:
            return;
        }
        if (s == STEP_CLOSED)
            return;
        if (s == STEP_BLOCKED)
            break;
    }
    update_watchers(c);
}

static void client_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct client *c = container_of(io, struct client, io);
    if ((revents & EV_READ) ||
        (c->down.ssl && (revents & EV_WRITE) && c->down.tls_want == EV_WRITE))
        c->down.readable = true;
    drive(c);
}

static void on_upstream_event(void *owner, enum upstream_event ev, int err)
{
    struct client *c = owner;
    switch (ev) {
    case UPSTREAM_CONNECTED:
    case UPSTREAM_WRITABLE:
        break;
    case UPSTREAM_CONNECT_FAILED:
        if (connect_failed(c, err) == STEP_CLOSED)
            return;
        break;
    case UPSTREAM_READABLE:
        c->up.readable = true;
        break;
    case UPSTREAM_DRAIN_EXPIRED:
        client_close(c);
        return;
    case UPSTREAM_DRAIN_STARTED:
        client_tunnel_deadline(c, c->upstream->server->hb->drain_deadline);
        return;
    }
    drive(c);
}

/* A drain deadline still ahead: the process drains, or the backend does. */
static bool tunnel_deadline_stands(const struct client *c)
{
    return c->w->state >= WORKER_DRAINING ||
           (c->upstream && c->upstream->server->hb->drain_deadline > 0);
}

static void client_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct client *c = container_of(t, struct client, timer);
    c->timer_at = 0;
    if (ev_now(loop) < deadline_of(c)) {
        arm_timer(c);
        return;
    }
    enum step s = STEP_PROGRESS;
    switch (c->state) {
    case CLIENT_TUNNEL:
        if (c->x.ws && !c->x.ws->closing && c->x.ws->close_at > 0) {
            if (!tunnel_deadline_stands(c)) {
                /* its backend came back (healthy again, re-added): no goodbye */
                c->x.ws->close_at = 0;
                arm_timer(c);
                return;
            }
            ws_begin_close(c, "drain deadline");
            break;
        }
        client_close(c);
        return;
    case CLIENT_TLS_HANDSHAKE:
    case CLIENT_RESPONDING:
    case CLIENT_LINGERING:
        client_close(c);
        return;
    case CLIENT_IDLE:
        s = finish_connection(c);
        break;
    case CLIENT_READING_HEAD:
        s = respond_error(c, 408, "request head timeout", true);
        break;
    case CLIENT_CONNECTING:
        s = connect_failed(c, 0);
        break;
    case CLIENT_FORWARDING:
        if (response_on_wire(c)) {
            client_close(c);
            return;
        }
        if (c->upstream && awaiting_first_byte(c)) {
            s = upstream_failed(c, "no response within first_byte", RETRY_FIRST_BYTE);
            break;
        }
        if (c->upstream)
            server_passive_report(c->upstream->server, true, "timeout");
        s = respond_error(c, 504, "backend timeout", false);
        break;
    case CLIENT_CLOSED:
        return;
    }
    if (s != STEP_CLOSED)
        drive(c);
}

/* ---- accept and drain ---------------------------------------------------- */

static void format_peer(char *out, size_t cap, const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)cap);
    else if (sa->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
    else
        snprintf(out, cap, "unix");
}

struct client *client_accept(struct worker *w, struct listener *l, int fd,
                             const struct sockaddr_storage *sa)
{
    struct client *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return NULL;
    }
    c->w = w;
    c->listener = l;
    side_attach(&c->down, fd, &transport_plain);
    side_attach(&c->up, -1, &transport_plain);
    c->pipe.rd = c->pipe.wr = -1;
    exchange_reset(c);
    format_peer(c->peer, sizeof(c->peer), sa);
    ev_io_init(&c->io, client_io_cb, fd, 0);
    ev_timer_init(&c->timer, client_timeout_cb, 0., 0.);
    list_append(&w->clients, &c->link);
    w->num_clients++;
    worker_fds_add(w, 1);
    l->connections++;
    c->head_started_at = now_of(c);

    if (l->tls_ctx) {
        c->down.ssl = tls_accept_new(l->tls_ctx, fd);
        if (!c->down.ssl) {
            client_close(c);
            return c;
        }
        c->down.tp = &transport_tls;
        set_state(c, CLIENT_TLS_HANDSHAKE);
        drive(c);
        return c;
    }
    if (is_tcp_mode(c)) {
        if (start_tcp_session(c) != STEP_CLOSED)
            update_watchers(c);
        return c;
    }
    /* the request often arrives right behind the handshake: read before
     * paying for a wait */
    c->down.readable = true;
    set_state(c, CLIENT_IDLE);
    drive(c);
    return c;
}

bool client_is_idle(const struct client *c)
{
    return c->state == CLIENT_IDLE || c->state == CLIENT_LINGERING;
}

void client_shutdown_idle(struct client *c, ev_tstamp close_at)
{
    if (c->state != CLIENT_IDLE) {
        if (!c->x.response_started) {
            c->x.keep_alive =
                false; /* the request in progress is answered with Connection: close */
            return;
        }
        /* its response already told the client the connection stays: closing
         * after it would fail the client's next request. It is handled as an
         * idle one once the exchange ends. */
        c->idle_close_at = close_at > 0 ? close_at : now_of(c);
        return;
    }
    if (c->requests == 0) {
        arm_timer(c); /* its deadline just became the first-request grace */
        return;
    }
    /* a request that already arrived is served (with Connection: close, as
     * conn_closing now says); only a connection with nothing to read goes */
    if (bytes_waiting(c) > 0 || (c->down.ssl && SSL_pending(c->down.ssl) > 0)) {
        c->down.readable = true;
        drive(c);
        return;
    }
    if (close_at > now_of(c)) {
        /* closed by its timer at <close_at> (close spreading), or by its
         * next response (after_request); a request meanwhile is served */
        c->idle_close_at = close_at;
        arm_timer(c);
        return;
    }
    if (finish_connection(c) != STEP_CLOSED)
        update_watchers(c);
}
