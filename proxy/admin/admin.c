/* The admin listener: /live, /ready, /status (JSON), /metrics (Prometheus),
 * the status page at /, and the runtime API (api.c) on the same port.
 * The probe thread (probe.c) owns the listening socket, reads each head
 * and answers /live and /ready itself; every other request is handed to
 * the control loop here, with the bytes read so far. One request per
 * connection; answers are built at once, except those that wait (a pool
 * drain with ?wait, a reload, a state file save, a fleet write). Its own
 * connection limits, head timeout and body limit keep it from ever
 * starving the data plane. */
#include "admin.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../health/backend.h"
#include "../../parser/http1.h"
#include "../base/buf.h"
#include "../net/list.h"
#include "../net/net.h"
#include "../base/log.h"
#include "../base/metrics.h"
#include "../core/balance.h"
#include "../core/listener.h"
#include "../core/mux_h2.h"
#include "../core/fds.h"
#include "../core/upstream.h"
#include "../core/worker.h"
#include "api.h"
#include "../sources/discover.h"
#include "../control/process-t.h"
#include "probe.h"
#include "status.h"
#include "usher_commit.h"

struct admin {
    struct process *proc;
    struct worker *w;
    struct probe *probe;    /* owns the listening socket */
    ev_prepare ready_watch; /* publishes the readiness before the loop sleeps */
    const char *ready_last; /* what the probe was last told */
    struct list conns;      /* handed over by the probe */
    unsigned num_conns;
};

struct admin_conn {
    struct admin *admin;
    int fd;
    struct sockaddr_storage peer;
    socklen_t peer_len;
    ev_io io;
    ev_timer timer; /* head and body, then the write: ADMIN_TIMEOUT_S each */
    char *in;       /* head, then the body it announced */
    size_t in_len;
    size_t in_cap;
    struct hbuf out;
    struct api_wait *wait; /* a reply that waits (pool drain ?wait) */
    struct list link;
};

static void conn_free(struct admin_conn *ac)
{
    struct ev_loop *loop = ac->admin->proc->loop;
    ev_io_stop(loop, &ac->io);
    ev_timer_stop(loop, &ac->timer);
    api_wait_cancel(ac->wait);
    ac->wait = NULL;
    close(ac->fd);
    probe_conn_closed(ac->admin->probe);
    list_remove(&ac->link);
    ac->admin->num_conns--;
    hbuf_free(&ac->out);
    free(ac->in);
    free(ac);
}

/* ---- Prometheus text ----------------------------------------------------- */

static const char *const status_class[STATUS_CLASSES] = {"none", "1xx", "2xx",    "3xx",
                                                         "4xx",  "5xx", "aborted"};

/* Every label set goes through metrics_labels (values escaped); <l> is
 * reused and kept NUL-terminated for "%s". */
static const char *labels_end(struct hbuf *l)
{
    if (hbuf_append(l, "", 1) < 0)
        return "";
    l->len--;
    return l->data;
}

static const char *listener_labels(struct hbuf *l, const struct listener *li)
{
    l->len = 0;
    metrics_labels(l, "listener", li->name, NULL);
    return labels_end(l);
}

static const char *backend_labels(struct hbuf *l, const struct pool *p, const struct server *s)
{
    l->len = 0;
    metrics_labels(l, "pool", p->name, "backend", s->hb->name, NULL);
    return labels_end(l);
}

static double drain_remaining(const struct backend *b, ev_tstamp now)
{
    if (b->state != BACKEND_DRAINING || b->drain_deadline <= now)
        return 0.0;
    return b->drain_deadline - now;
}

/* One family per call: HELP, TYPE, then one sample per backend of every
 * pool (removed ones still draining included). */
#define PER_BACKEND(metric, type, help, fmt, expr)                                                 \
    do {                                                                                           \
        metrics_family(o, metric, type, help);                                                     \
        for (struct pool *p = w->pools; p; p = p->next)                                            \
            for (size_t i = 0; i < p->num_servers; i++) {                                          \
                const struct server *s = p->servers[i];                                            \
                const struct backend *b = s->hb;                                                   \
                struct server_totals t;                                                            \
                server_totals(s, &t);                                                              \
                (void)b;                                                                           \
                hbuf_printf(o, metric "{%s} " fmt "\n", backend_labels(&lb, p, s), expr);          \
            }                                                                                      \
    } while (0)

#define PER_LISTENER(metric, type, help, fmt, expr)                                                \
    do {                                                                                           \
        metrics_family(o, metric, type, help);                                                     \
        for (struct listener *li = w->listeners; li; li = li->next) {                              \
            struct listener_totals lt;                                                             \
            listener_totals(li, &lt);                                                              \
            (void)lt;                                                                              \
            hbuf_printf(o, metric "{%s} " fmt "\n", listener_labels(&lb, li), expr);               \
        }                                                                                          \
    } while (0)

static void build_metrics(struct hbuf *o, struct process *proc)
{
    struct worker *w = proc->w;
    ev_tstamp now = ev_now(proc->loop);
    bool draining = w->state >= WORKER_DRAIN_DELAY;
    struct hbuf lb = {0};

    metrics_family(o, "usher_up", "gauge", "1 while the process runs.");
    hbuf_append_str(o, "usher_up 1\n");
    metrics_family(o, "usher_build_info", "gauge", "The running build: always 1.");
    lb.len = 0;
    metrics_labels(&lb, "version", USHER_VERSION, "commit", USHER_COMMIT, NULL);
    hbuf_printf(o, "usher_build_info{%s} 1\n", labels_end(&lb));
    metrics_family(o, "usher_ready", "gauge", "1 while /ready answers 200.");
    hbuf_printf(o, "usher_ready %d\n", status_not_ready_reason(proc) ? 0 : 1);
    metrics_family(o, "usher_draining", "gauge", "1 while the process drains (after SIGTERM).");
    hbuf_printf(o, "usher_draining %d\n", draining ? 1 : 0);
    metrics_family(o, "usher_drain_connections_left", "gauge",
                   "Client connections still open while the process drains (0 otherwise).");
    hbuf_printf(o, "usher_drain_connections_left %u\n", draining ? worker_clients(w) : 0);
    /* the shutdown timeout runs from the end of shutdown.drain_delay */
    bool cutting = w->state == WORKER_DRAINING && proc->drain_deadline > now;
    metrics_family(o, "usher_drain_remaining_seconds", "gauge",
                   "Seconds until the shutdown timeout cuts the connections left (0 before "
                   "the drain delay ended, and when not draining).");
    hbuf_printf(o, "usher_drain_remaining_seconds %.3f\n",
                cutting ? proc->drain_deadline - now : 0.0);
    metrics_family(o, "usher_config_generation", "gauge",
                   "Config generation in force: 1 at start, +1 per successful reload.");
    hbuf_printf(o, "usher_config_generation %llu\n", (unsigned long long)w->generation);
    metrics_family(o, "usher_config_reloads_total", "counter", "Config reloads by result.");
    hbuf_printf(o,
                "usher_config_reloads_total{result=\"ok\"} %llu\n"
                "usher_config_reloads_total{result=\"error\"} %llu\n",
                (unsigned long long)proc->reloads_ok, (unsigned long long)proc->reloads_error);
    metrics_family(o, "usher_accept_paused_total", "counter",
                   "Times accepting paused (limits.max_connections reached, or out of "
                   "descriptors).");
    hbuf_printf(o, "usher_accept_paused_total %llu\n", (unsigned long long)worker_accept_paused(w));
    metrics_family(o, "usher_log_lines_dropped_total", "counter",
                   "Log lines dropped because stderr's reader did not keep up (or stderr "
                   "failed): a log write never waits for it.");
    hbuf_printf(o, "usher_log_lines_dropped_total %llu\n", log_lines_dropped());

    PER_LISTENER("usher_client_connections", "gauge", "Open client connections by listener.", "%u",
                 lt.connections);
    PER_LISTENER("usher_client_connections_accepted_total", "counter",
                 "Client connections accepted by listener.", "%llu",
                 (unsigned long long)lt.accepted);
    metrics_family(o, "usher_requests_total", "counter",
                   "Requests by listener, response status class and client protocol (http1: "
                   "HTTP/1.0 and 1.1, TCP sessions included; http2: streams, listed once a "
                   "listener served one); code=\"aborted\": the response was cut short after "
                   "its head went out.");
    for (struct listener *li = w->listeners; li; li = li->next) {
        struct listener_totals lt;
        listener_totals(li, &lt);
        const char *ll = listener_labels(&lb, li);
        uint64_t h2 = 0;
        for (int k = 1; k < STATUS_CLASSES; k++) {
            hbuf_printf(o, "usher_requests_total{%s,code=\"%s\",protocol=\"http1\"} %llu\n", ll,
                        status_class[k],
                        (unsigned long long)(lt.responses[k] - lt.h2_responses[k]));
            h2 += lt.h2_responses[k];
        }
        for (int k = 1; h2 && k < STATUS_CLASSES; k++)
            hbuf_printf(o, "usher_requests_total{%s,code=\"%s\",protocol=\"http2\"} %llu\n", ll,
                        status_class[k], (unsigned long long)lt.h2_responses[k]);
    }
    struct h2_totals h2t;
    worker_h2_totals(w, &h2t);
    metrics_family(o, "usher_http2_streams_active", "gauge",
                   "HTTP/2 client streams whose request is in progress.");
    hbuf_printf(o, "usher_http2_streams_active %u\n", h2t.streams);
    metrics_family(o, "usher_http2_goaway_sent_total", "counter",
                   "GOAWAY frames sent to HTTP/2 clients, by reason: drain and idle (the "
                   "two-step drain, counted at its first GOAWAY), enhance_your_calm (abuse), "
                   "protocol_error, internal_error.");
    for (int r = 0; r < H2_GOAWAY_REASONS; r++)
        hbuf_printf(o, "usher_http2_goaway_sent_total{reason=\"%s\"} %llu\n",
                    h2_goaway_reason_str((enum h2_goaway_reason)r),
                    (unsigned long long)h2t.goaway[r]);
    metrics_family(o, "usher_request_duration_seconds", "histogram",
                   "Request head complete to response complete, by listener (tunnels and "
                   "TCP sessions not included).");
    for (struct listener *li = w->listeners; li; li = li->next) {
        struct listener_totals lt;
        listener_totals(li, &lt);
        metrics_histogram_write(o, "usher_request_duration_seconds", listener_labels(&lb, li),
                                &lt.duration);
    }
    PER_LISTENER("usher_request_bytes_total", "counter",
                 "Bytes received from clients (request heads, bodies, tunnelled bytes), counted "
                 "when the request ends.",
                 "%llu", (unsigned long long)lt.bytes_in);
    PER_LISTENER("usher_response_bytes_total", "counter",
                 "Bytes sent to clients, counted when the request ends.", "%llu",
                 (unsigned long long)lt.bytes_out);

    static const enum backend_state states[] = {
        BACKEND_CHECKING, BACKEND_HEALTHY, BACKEND_UNHEALTHY, BACKEND_DRAINING, BACKEND_EJECTED};
    metrics_family(o, "usher_backend_state", "gauge",
                   "1 for the state a backend is in, 0 for the others.");
    for (struct pool *p = w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_servers; i++) {
            const char *bl = backend_labels(&lb, p, p->servers[i]);
            for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++)
                hbuf_printf(o, "usher_backend_state{%s,state=\"%s\"} %d\n", bl,
                            backend_state_str(states[k]), p->servers[i]->hb->state == states[k]);
        }
    PER_BACKEND("usher_backend_active_connections", "gauge",
                "Open connections to the backend (in use and pooled).", "%u", b->connections);
    PER_BACKEND("usher_backend_inflight_requests", "gauge", "Requests in flight to the backend.",
                "%u", server_inflight(s));
    PER_BACKEND("usher_backend_requests_total", "counter", "Requests the backend was given.",
                "%llu", (unsigned long long)t.requests);
    PER_BACKEND("usher_backend_connect_failures_total", "counter",
                "Connects to the backend that failed or timed out.", "%llu",
                (unsigned long long)t.connect_failures);
    PER_BACKEND("usher_backend_drain_remaining_seconds", "gauge",
                "Seconds until a draining backend's deadline closes what is left (0 when not "
                "draining).",
                "%.3f", drain_remaining(b, now));
    PER_BACKEND("usher_backend_drain_connections", "gauge",
                "Connections a draining backend still has (0 when not draining).", "%u",
                b->state == BACKEND_DRAINING ? b->connections : 0);
    PER_BACKEND("usher_backend_weight", "gauge",
                "The backend's weight in force (runtime override, else the config's).", "%u",
                server_weight(s));
    metrics_family(o, "usher_backend_responses_total", "counter",
                   "Requests by backend and response status class (code=\"aborted\": cut short "
                   "after the head went out).");
    for (struct pool *p = w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_servers; i++) {
            struct server_totals t;
            server_totals(p->servers[i], &t);
            const char *bl = backend_labels(&lb, p, p->servers[i]);
            for (int k = 1; k < STATUS_CLASSES; k++)
                hbuf_printf(o, "usher_backend_responses_total{%s,code=\"%s\"} %llu\n", bl,
                            status_class[k], (unsigned long long)t.responses[k]);
        }
    metrics_family(o, "usher_backend_response_duration_seconds", "histogram",
                   "Backend chosen (connect or pooled connection) to response complete.");
    for (struct pool *p = w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_servers; i++) {
            struct server_totals t;
            server_totals(p->servers[i], &t);
            metrics_histogram_write(o, "usher_backend_response_duration_seconds",
                                    backend_labels(&lb, p, p->servers[i]), &t.duration);
        }
    PER_BACKEND("usher_backend_request_bytes_total", "counter",
                "Bytes received from clients for requests the backend served, counted when the "
                "request ends.",
                "%llu", (unsigned long long)t.bytes_in);
    PER_BACKEND("usher_backend_response_bytes_total", "counter",
                "Bytes sent to clients for the backend's responses, counted when the request "
                "ends.",
                "%llu", (unsigned long long)t.bytes_out);
    PER_BACKEND("usher_backend_ejections_total", "counter",
                "Times passive health ejected the backend.", "%llu",
                (unsigned long long)b->ejections_total);
    PER_BACKEND("usher_backend_ejected_remaining_seconds", "gauge",
                "Seconds until an ejected backend may return (0 when not ejected).", "%.3f",
                b->state == BACKEND_EJECTED && b->ejected_until > now ? b->ejected_until - now
                                                                      : 0.0);
    metrics_family(o, "usher_retries_total", "counter",
                   "Requests sent again to another backend, by reason.");
    for (struct pool *p = w->pools; p; p = p->next) {
        struct pool_totals pt;
        worker_pool_totals(w, p->name, &pt);
        for (int r = 0; r < RETRY_REASONS; r++) {
            lb.len = 0;
            metrics_labels(&lb, "pool", p->name, "reason", retry_reason_str((enum retry_reason)r),
                           NULL);
            hbuf_printf(o, "usher_retries_total{%s} %llu\n", labels_end(&lb),
                        (unsigned long long)pt.retries[r]);
        }
    }
    metrics_family(o, "usher_retry_budget_refused_total", "counter",
                   "Retries the pool's retry budget refused.");
    for (struct pool *p = w->pools; p; p = p->next) {
        struct pool_totals pt;
        worker_pool_totals(w, p->name, &pt);
        lb.len = 0;
        metrics_labels(&lb, "pool", p->name, NULL);
        hbuf_printf(o, "usher_retry_budget_refused_total{%s} %llu\n", labels_end(&lb),
                    (unsigned long long)pt.budget_refused);
    }
    metrics_family(o, "usher_health_checks_total", "counter", "Health checks by result.");
    for (struct pool *p = w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_servers; i++) {
            const struct backend *b = p->servers[i]->hb;
            const char *bl = backend_labels(&lb, p, p->servers[i]);
            hbuf_printf(o, "usher_health_checks_total{%s,result=\"ok\"} %llu\n", bl,
                        (unsigned long long)b->checks_ok);
            hbuf_printf(o, "usher_health_checks_total{%s,result=\"fail\"} %llu\n", bl,
                        (unsigned long long)b->checks_failed);
        }
    hbuf_free(&lb);
}
#undef PER_BACKEND
#undef PER_LISTENER

/* ---- request handling ---------------------------------------------------- */

static void respond(struct admin_conn *ac, int status, const char *type, const char *allow,
                    struct hbuf *body, bool head_only)
{
    probe_format_response(&ac->out, status, type, allow, body->data, body->len, head_only);
}

static void start_writing(struct admin_conn *ac)
{
    struct ev_loop *loop = ac->admin->proc->loop;
    ev_io_stop(loop, &ac->io);
    ev_io_set(&ac->io, ac->fd, EV_WRITE);
    ev_io_start(loop, &ac->io);
    /* a reader that never reads is dropped too */
    ev_timer_stop(loop, &ac->timer);
    ev_timer_set(&ac->timer, ADMIN_TIMEOUT_S, 0.);
    ev_timer_start(loop, &ac->timer);
}

/* A waited-for API answer (pool drain ?wait) is ready. */
static void api_later(void *ctx, struct api_reply *r)
{
    struct admin_conn *ac = ctx;
    ac->wait = NULL;
    respond(ac, r->status, "application/json", r->allow, &r->body, false);
    hbuf_free(&r->body);
    start_writing(ac);
}

static const struct http1_header *find_header(const struct http1_request *req, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < req->msg.num_headers; i++) {
        const struct http1_header *h = &req->msg.headers[i];
        if (h->name.len == nl && strncasecmp(h->name.ptr, name, nl) == 0)
            return h;
    }
    return NULL;
}

static void route(struct admin_conn *ac, const struct http1_request *req, const char *body,
                  size_t body_len)
{
    struct process *proc = ac->admin->proc;
    struct hbuf out = {0};
    int status = 200;
    const char *type = "text/plain; charset=utf-8";
    const char *allow = NULL;
    struct http1_slice path = req->target;
    const char *q = memchr(path.ptr, '?', path.len);
    if (q)
        path.len = (size_t)(q - path.ptr);

    if (api_owns_path(path.ptr, path.len)) {
        const struct http1_header *authz = find_header(req, "Authorization");
        struct api_request rq = {
            .method = req->method_id,
            .path = path.ptr,
            .path_len = path.len,
            .query = q ? q + 1 : NULL,
            .query_len = q ? req->target.len - path.len - 1 : 0,
            .body = body,
            .body_len = body_len,
            .authz = authz ? authz->value.ptr : NULL,
            .authz_len = authz ? authz->value.len : 0,
            .peer = (const struct sockaddr *)&ac->peer,
            .peer_len = ac->peer_len,
        };
        struct api_reply r = {0};
        enum api_result res = api_handle(proc, &rq, &r, api_later, ac, &ac->wait);
        if (res == API_LATER) {
            /* the answer comes from a timer; the head timeout must not cut it */
            ev_io_stop(proc->loop, &ac->io);
            ev_timer_stop(proc->loop, &ac->timer);
            return;
        }
        respond(ac, r.status, "application/json", r.allow, &r.body, false);
        hbuf_free(&r.body);
        start_writing(ac);
        return;
    }

    bool get = req->method_id == HTTP1_METHOD_GET || req->method_id == HTTP1_METHOD_HEAD;
    bool known = http1_slice_eq(path, "/live") || http1_slice_eq(path, "/ready") ||
                 http1_slice_eq(path, "/status") || http1_slice_eq(path, "/metrics") ||
                 http1_slice_eq(path, "/");
    if (known && !get) {
        status = 405;
        allow = "GET, HEAD";
        hbuf_append_str(&out, "405 Method Not Allowed\n");
    } else if (http1_slice_eq(path, "/live")) {
        hbuf_append_str(&out, "live\n");
    } else if (http1_slice_eq(path, "/ready")) {
        const char *why = status_not_ready_reason(proc);
        status = why ? 503 : 200;
        hbuf_printf(&out, "%s\n", why ? why : "ready");
    } else if (http1_slice_eq(path, "/status")) {
        type = "application/json";
        status_json(&out, proc);
    } else if (http1_slice_eq(path, "/metrics")) {
        type = "text/plain; version=0.0.4; charset=utf-8";
        build_metrics(&out, proc);
    } else if (http1_slice_eq(path, "/")) {
        type = "text/html; charset=utf-8";
        status_page_html(&out, proc);
    } else {
        status = 404;
        hbuf_append_str(&out, "404 Not Found\n");
    }
    respond(ac, status, type, allow, &out, req->method_id == HTTP1_METHOD_HEAD);
    hbuf_free(&out);
    start_writing(ac);
}

static void reply_error(struct admin_conn *ac, int status)
{
    struct hbuf body = {0};
    hbuf_printf(&body, "{\"error\":\"%s\"}\n", http1_status_text(status));
    respond(ac, status, "application/json", NULL, &body, false);
    hbuf_free(&body);
    start_writing(ac);
}

/* Parses what arrived; routes once the head and the body it announced are
 * in. */
static void parse_and_route(struct admin_conn *ac)
{
    struct http1_header headers[ADMIN_HEADERS_MAX];
    struct http1_limits lim = {ADMIN_HEAD_MAX, ADMIN_HEADERS_MAX, ADMIN_HEAD_MAX};
    struct http1_request req;
    memset(&req, 0, sizeof(req));
    req.msg.headers = headers;
    int rc = http1_parse_request(ac->in, ac->in_len, &lim, &req);
    if (rc == HTTP1_AGAIN) {
        if (ac->in_len >= ADMIN_HEAD_MAX)
            reply_error(ac, 431);
        return;
    }
    if (rc != HTTP1_OK) {
        reply_error(ac, req.msg.error_status ? req.msg.error_status : 400);
        return;
    }
    size_t body_len = 0;
    if (req.msg.framing == HTTP1_BODY_CHUNKED) {
        reply_error(ac, 411); /* usher ctl and curl -d send Content-Length */
        return;
    }
    if (req.msg.framing == HTTP1_BODY_LENGTH) {
        if (req.msg.content_length > API_BODY_MAX) {
            reply_error(ac, 413);
            return;
        }
        body_len = (size_t)req.msg.content_length;
    }
    size_t need = req.msg.head_len + body_len;
    if (need > ac->in_cap) {
        char *bigger = realloc(ac->in, need);
        if (!bigger) {
            reply_error(ac, 500);
            return;
        }
        ac->in = bigger;
        ac->in_cap = need;
        parse_and_route(ac); /* the slices pointed into the old buffer */
        return;
    }
    if (ac->in_len < need)
        return;
    route(ac, &req, ac->in + req.msg.head_len, body_len);
}

static void on_readable(struct admin_conn *ac)
{
    if (ac->in_len == ac->in_cap) {
        reply_error(ac, 431);
        return;
    }
    ssize_t n = read(ac->fd, ac->in + ac->in_len, ac->in_cap - ac->in_len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_free(ac);
        return;
    }
    ac->in_len += (size_t)n;
    parse_and_route(ac);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct admin_conn *ac = container_of(io, struct admin_conn, io);
    if (ac->out.len == 0) {
        on_readable(ac);
        return;
    }
    while (ac->out.sent < ac->out.len) {
        ssize_t n =
            send(ac->fd, ac->out.data + ac->out.sent, ac->out.len - ac->out.sent, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0)
            break;
        ac->out.sent += (size_t)n;
    }
    conn_free(ac);
}

static void conn_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    conn_free(container_of(t, struct admin_conn, timer));
}

/* The probe handed a request over: the head (and maybe some of the body)
 * is in <in>. */
static void handoff(void *ctx, int fd, const struct sockaddr *peer, socklen_t peer_len, char *in,
                    size_t len, size_t cap)
{
    struct admin *a = ctx;
    struct ev_loop *loop = a->proc->loop;
    struct admin_conn *ac = calloc(1, sizeof(*ac));
    if (!ac) {
        free(in);
        close(fd);
        probe_conn_closed(a->probe);
        return;
    }
    ac->admin = a;
    ac->fd = fd;
    if (peer_len > sizeof(ac->peer))
        peer_len = sizeof(ac->peer);
    memcpy(&ac->peer, peer, peer_len);
    ac->peer_len = peer_len;
    ac->in = in;
    ac->in_len = len;
    ac->in_cap = cap;
    a->num_conns++;
    list_append(&a->conns, &ac->link);
    ev_io_init(&ac->io, conn_io_cb, fd, EV_READ);
    ev_io_start(loop, &ac->io);
    ev_timer_init(&ac->timer, conn_timeout_cb, ADMIN_TIMEOUT_S, 0.);
    ev_timer_start(loop, &ac->timer);
    parse_and_route(ac);
}

/* Before the control loop sleeps, after every callback that may have
 * changed the readiness: the probe answers /ready from this. */
static void ready_watch_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct admin *a = container_of(w, struct admin, ready_watch);
    const char *why = status_not_ready_reason(a->proc);
    if (why != a->ready_last) {
        a->ready_last = why;
        probe_set_ready(a->probe, why);
    }
}

int admin_start(struct process *proc, int inherited)
{
    struct worker *w = proc->w;
    const struct conf_address *addr = &w->conf->admin.bind;
    struct admin *a = calloc(1, sizeof(*a));
    if (!a)
        return -1;
    a->proc = proc;
    a->w = w;
    list_init(&a->conns);
    const char *why = NULL;
    int fd;
    if (inherited >= 0)
        fd = net_adopt_listener(inherited, &why) == 0 ? inherited : -1;
    else
        fd = net_listen((const struct sockaddr *)&addr->sa, addr->sa_len, &why);
    a->ready_last = status_not_ready_reason(proc);
    if (fd >= 0) {
        a->probe = probe_start(fd, proc->loop, handoff, a, a->ready_last);
        if (!a->probe) {
            why = "cannot start the probe thread";
            close(fd);
            fd = -1;
            inherited = -1;
        }
    }
    if (fd < 0) {
        log_kv(CONF_LOG_ERROR, "admin failed", LOG_STR("bind", addr->text), LOG_STR("reason", why),
               LOG_STR("error", strerror(errno)));
        if (inherited >= 0)
            close(inherited);
        free(a);
        return -1;
    }
    ev_prepare_init(&a->ready_watch, ready_watch_cb);
    ev_prepare_start(proc->loop, &a->ready_watch);
    proc->admin = a;
    proc->admin_fd = fd;
    log_info("admin started", "bind=%s", addr->text);
    return 0;
}

void admin_release_listener(struct process *proc)
{
    struct admin *a = proc->admin;
    if (!a || proc->admin_fd < 0)
        return;
    probe_release(a->probe); /* the probe's thread closes it */
    proc->admin_fd = -1;
}

void admin_stop(struct process *proc)
{
    struct admin *a = proc->admin;
    if (!a)
        return;
    ev_prepare_stop(proc->loop, &a->ready_watch);
    struct probe *pr = a->probe;
    probe_stop(pr); /* nothing is handed over any more */
    a->probe = NULL;
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &a->conns) {
        struct admin_conn *ac = container_of(pos, struct admin_conn, link);
        /* an answer made at exit (a reload that will never run) goes out
         * if the socket takes it at once; nothing waits for it */
        if (ac->out.sent < ac->out.len)
            (void)!send(ac->fd, ac->out.data + ac->out.sent, ac->out.len - ac->out.sent,
                        MSG_NOSIGNAL | MSG_DONTWAIT);
        conn_free(ac);
    }
    free(a);
    proc->admin = NULL;
    proc->admin_fd = -1;
}
