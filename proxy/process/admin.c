/* The admin listener: /live, /ready, /status (JSON), /metrics (Prometheus).
 * One request per connection; answers are small and built at once. */
#include "admin.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../health/backend.h"
#include "../../parser/http1.h"
#include "../base/buf.h"
#include "../../health/loop/list.h"
#include "../../health/loop/net.h"
#include "../base/log.h"
#include "../base/metrics.h"
#include "../core/balance.h"
#include "../core/worker.h"
#include "discover.h"
#include "process-t.h"
#include "sysd.h"
#include "upgrade.h"
#include "usher_commit.h"

/* An admin request head must fit here; anything larger is not ours. */
#define ADMIN_HEAD_MAX 8192
#define ADMIN_HEADERS_MAX 64
/* A stuck admin client is dropped after this long. */
#define ADMIN_TIMEOUT_S 5.0

struct admin {
    struct process *proc;
    struct worker *w;
    int fd;
    ev_io io;
    struct list conns;
};

struct admin_conn {
    struct admin *admin;
    int fd;
    ev_io io;
    ev_timer timer;
    char in[ADMIN_HEAD_MAX];
    size_t in_len;
    struct hbuf out;
    struct list link;
};

static void conn_free(struct admin_conn *ac)
{
    struct ev_loop *loop = ac->admin->proc->loop;
    ev_io_stop(loop, &ac->io);
    ev_timer_stop(loop, &ac->timer);
    close(ac->fd);
    list_remove(&ac->link);
    hbuf_free(&ac->out);
    free(ac);
}

/* ---- readiness ----------------------------------------------------------- */

/* Why /ready answers 503, or NULL when it answers 200: not running yet (or
 * draining), or, with admin.ready_requires_backends, a listener that still
 * accepts but could route a new request nowhere. A static string. */
static const char *not_ready_reason(const struct process *proc)
{
    const struct worker *w = proc->w;
    if (!worker_ready(w))
        return worker_state_str(w->state);
    if (!w->conf->admin.ready_requires_backends)
        return NULL;
    for (const struct listener *l = w->listeners; l; l = l->next)
        if (!l->closed && !balance_has_backend(l))
            return "no backend in rotation";
    return NULL;
}

static void status_backend(struct hbuf *o, struct worker *w, const struct server *s)
{
    const struct backend *b = s->hb;
    ev_tstamp now = ev_now(w->loop);
    hbuf_append_str(o, "{\"name\":");
    log_json_str(o, b->name);
    hbuf_append_str(o, ",\"address\":");
    log_json_str(o, b->address_text);
    hbuf_printf(o,
                ",\"state\":\"%s\",\"weight\":%g,\"weight_configured\":%u,\"in_config\":%s,"
                "\"active_connections\":%u,"
                "\"inflight_requests\":%u,\"requests_total\":%llu,\"connect_failures\":%llu,"
                "\"success_streak\":%u,\"failure_streak\":%u,\"last_result\":",
                backend_state_str(b->state), (double)balance_weight(s) / 1000.0, b->weight,
                backend_removed(b) ? "false" : "true", b->connections, s->inflight,
                (unsigned long long)s->requests_total, (unsigned long long)s->connect_failures,
                b->success_streak, b->failure_streak);
    if (b->last_result)
        log_json_str(o, b->last_result);
    else
        hbuf_append_str(o, "null");
    hbuf_printf(o, ",\"last_status\":%d,\"last_check_age_ms\":", b->last_status);
    if (b->last_check_at > 0)
        hbuf_printf(o, "%.0f", (now - b->last_check_at) * 1000.0);
    else
        hbuf_append_str(o, "null");
    hbuf_append_str(o, ",\"slow_start_remaining_ms\":");
    if (backend_in_rotation(b) && balance_ramp_left_ms(s) > 0)
        hbuf_printf(o, "%llu", (unsigned long long)balance_ramp_left_ms(s));
    else
        hbuf_append_str(o, "null");
    hbuf_printf(o, ",\"ejections_total\":%llu,\"ejected_remaining_ms\":",
                (unsigned long long)b->ejections_total);
    if (b->state == BACKEND_EJECTED && b->ejected_until > 0) {
        double left = (b->ejected_until - now) * 1000.0;
        hbuf_printf(o, "%.0f", left > 0 ? left : 0);
    } else {
        hbuf_append_str(o, "null");
    }
    hbuf_append_str(o, ",\"drain_deadline_ms\":");
    if (b->state == BACKEND_DRAINING && b->drain_deadline > 0) {
        double left = (b->drain_deadline - now) * 1000.0;
        hbuf_printf(o, "%.0f", left > 0 ? left : 0);
    } else {
        hbuf_append_str(o, "null");
    }
    hbuf_append_str(o, "}");
}

static void build_status(struct hbuf *o, struct process *proc)
{
    struct worker *w = proc->w;
    ev_tstamp now = ev_now(w->loop);
    hbuf_printf(o,
                "{\"state\":\"%s\",\"ready\":%s,\"generation\":%llu,\"pid\":%d,"
                "\"uptime_s\":%.1f,\"connections\":%u,\"config\":",
                worker_state_str(w->state), not_ready_reason(proc) ? "false" : "true",
                (unsigned long long)w->generation, (int)getpid(), now - w->started_at,
                w->num_clients);
    log_json_str(o, w->conf->path);
    if (proc->upgrade.role == UPGRADE_NONE)
        hbuf_append_str(o, ",\"upgrade\":null");
    else
        hbuf_printf(o, ",\"upgrade\":{\"role\":\"%s\",\"peer_pid\":%d}",
                    upgrade_role_str(proc->upgrade.role), proc->upgrade.peer_pid);
    if (w->state == WORKER_DRAINING)
        hbuf_printf(o, ",\"shutdown_remaining_ms\":%.0f", (proc->drain_deadline - now) * 1000.0);
    hbuf_printf(o, ",\"reloads\":{\"ok\":%llu,\"error\":%llu},\"listeners\":[",
                (unsigned long long)proc->reloads_ok, (unsigned long long)proc->reloads_error);
    bool first = true;
    for (struct listener *l = w->listeners; l; l = l->next) {
        hbuf_append_str(o, first ? "{\"name\":" : ",{\"name\":");
        first = false;
        log_json_str(o, l->name);
        hbuf_append_str(o, ",\"bind\":");
        log_json_str(o, l->bind_text);
        hbuf_printf(o, ",\"protocol\":\"%s\",\"open\":%s,\"connections\":%u,\"pools\":{",
                    l->protocol == CONF_PROTO_TCP ? "tcp" : "http", l->closed ? "false" : "true",
                    l->connections);
        for (size_t i = 0; i < l->num_slots; i++) {
            if (i)
                hbuf_append_str(o, ",");
            log_json_str(o, l->slots[i].pool ? l->slots[i].pool->name : "?");
            hbuf_printf(o, ":%u", l->slots[i].weight);
        }
        hbuf_append_str(o, "}}");
    }
    hbuf_append_str(o, "],\"pools\":[");
    first = true;
    for (struct pool *p = w->pools; p; p = p->next) {
        if (!p->conf && p->num_servers == 0)
            continue; /* removed by a reload and fully drained */
        hbuf_append_str(o, first ? "{\"name\":" : ",{\"name\":");
        first = false;
        log_json_str(o, p->name);
        if (p->conf)
            hbuf_printf(o, ",\"balance\":\"%s\",\"deregistration_delay_ms\":%llu",
                        p->conf->balance == CONF_BALANCE_LEAST_CONN ? "least_conn" : "round_robin",
                        (unsigned long long)p->conf->deregistration_delay);
        hbuf_printf(o, ",\"in_config\":%s,", p->conf ? "true" : "false");
        if (p->conf && p->conf->discover.enabled) {
            hbuf_append_str(o, "\"discover\":");
            if (!discover_status_json(proc->discover, p->name, o))
                hbuf_append_str(o, "null");
            hbuf_append_str(o, ",");
        }
        hbuf_append_str(o, "\"backends\":[");
        for (size_t i = 0; i < p->num_servers; i++) {
            if (i)
                hbuf_append_str(o, ",");
            status_backend(o, w, p->servers[i]);
        }
        hbuf_append_str(o, "]}");
    }
    hbuf_append_str(o, "]}\n");
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
                (void)b;                                                                           \
                hbuf_printf(o, metric "{%s} " fmt "\n", backend_labels(&lb, p, s), expr);          \
            }                                                                                      \
    } while (0)

#define PER_LISTENER(metric, type, help, fmt, expr)                                                \
    do {                                                                                           \
        metrics_family(o, metric, type, help);                                                     \
        for (struct listener *li = w->listeners; li; li = li->next)                                \
            hbuf_printf(o, metric "{%s} " fmt "\n", listener_labels(&lb, li), expr);               \
    } while (0)

static void build_metrics(struct hbuf *o, struct process *proc)
{
    struct worker *w = proc->w;
    ev_tstamp now = ev_now(w->loop);
    bool draining = w->state >= WORKER_DRAIN_DELAY;
    struct hbuf lb = {0};

    metrics_family(o, "usher_up", "gauge", "1 while the process runs.");
    hbuf_append_str(o, "usher_up 1\n");
    metrics_family(o, "usher_build_info", "gauge", "The running build: always 1.");
    lb.len = 0;
    metrics_labels(&lb, "version", USHER_VERSION, "commit", USHER_COMMIT, NULL);
    hbuf_printf(o, "usher_build_info{%s} 1\n", labels_end(&lb));
    metrics_family(o, "usher_ready", "gauge", "1 while /ready answers 200.");
    hbuf_printf(o, "usher_ready %d\n", not_ready_reason(proc) ? 0 : 1);
    metrics_family(o, "usher_draining", "gauge", "1 while the process drains (after SIGTERM).");
    hbuf_printf(o, "usher_draining %d\n", draining ? 1 : 0);
    metrics_family(o, "usher_drain_connections_left", "gauge",
                   "Client connections still open while the process drains (0 otherwise).");
    hbuf_printf(o, "usher_drain_connections_left %u\n", draining ? w->num_clients : 0);
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
    hbuf_printf(o, "usher_accept_paused_total %llu\n", (unsigned long long)w->accept_paused);

    PER_LISTENER("usher_client_connections", "gauge", "Open client connections by listener.", "%u",
                 li->connections);
    PER_LISTENER("usher_client_connections_accepted_total", "counter",
                 "Client connections accepted by listener.", "%llu",
                 (unsigned long long)li->accepted_total);
    metrics_family(o, "usher_requests_total", "counter",
                   "Requests by listener and response status class; code=\"aborted\": the "
                   "response was cut short after its head went out.");
    for (struct listener *li = w->listeners; li; li = li->next) {
        const char *ll = listener_labels(&lb, li);
        for (int k = 1; k < STATUS_CLASSES; k++)
            hbuf_printf(o, "usher_requests_total{%s,code=\"%s\"} %llu\n", ll, status_class[k],
                        (unsigned long long)li->responses[k]);
    }
    metrics_family(o, "usher_request_duration_seconds", "histogram",
                   "Request head complete to response complete, by listener (tunnels and "
                   "TCP sessions not included).");
    for (struct listener *li = w->listeners; li; li = li->next)
        metrics_histogram_write(o, "usher_request_duration_seconds", listener_labels(&lb, li),
                                &li->duration);
    PER_LISTENER("usher_request_bytes_total", "counter",
                 "Bytes received from clients (request heads, bodies, tunnelled bytes), counted "
                 "when the request ends.",
                 "%llu", (unsigned long long)li->bytes_in);
    PER_LISTENER("usher_response_bytes_total", "counter",
                 "Bytes sent to clients, counted when the request ends.", "%llu",
                 (unsigned long long)li->bytes_out);

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
                "%u", s->inflight);
    PER_BACKEND("usher_backend_requests_total", "counter", "Requests the backend was given.",
                "%llu", (unsigned long long)s->requests_total);
    PER_BACKEND("usher_backend_connect_failures_total", "counter",
                "Connects to the backend that failed or timed out.", "%llu",
                (unsigned long long)s->connect_failures);
    PER_BACKEND("usher_backend_drain_remaining_seconds", "gauge",
                "Seconds until a draining backend's deadline closes what is left (0 when not "
                "draining).",
                "%.3f", drain_remaining(b, now));
    PER_BACKEND("usher_backend_drain_connections", "gauge",
                "Connections a draining backend still has (0 when not draining).", "%u",
                b->state == BACKEND_DRAINING ? b->connections : 0);
    metrics_family(o, "usher_backend_responses_total", "counter",
                   "Requests by backend and response status class (code=\"aborted\": cut short "
                   "after the head went out).");
    for (struct pool *p = w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_servers; i++) {
            const char *bl = backend_labels(&lb, p, p->servers[i]);
            for (int k = 1; k < STATUS_CLASSES; k++)
                hbuf_printf(o, "usher_backend_responses_total{%s,code=\"%s\"} %llu\n", bl,
                            status_class[k], (unsigned long long)p->servers[i]->responses[k]);
        }
    metrics_family(o, "usher_backend_response_duration_seconds", "histogram",
                   "Backend chosen (connect or pooled connection) to response complete.");
    for (struct pool *p = w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_servers; i++)
            metrics_histogram_write(o, "usher_backend_response_duration_seconds",
                                    backend_labels(&lb, p, p->servers[i]),
                                    &p->servers[i]->duration);
    PER_BACKEND("usher_backend_request_bytes_total", "counter",
                "Bytes received from clients for requests the backend served, counted when the "
                "request ends.",
                "%llu", (unsigned long long)s->bytes_in);
    PER_BACKEND("usher_backend_response_bytes_total", "counter",
                "Bytes sent to clients for the backend's responses, counted when the request "
                "ends.",
                "%llu", (unsigned long long)s->bytes_out);
    PER_BACKEND("usher_backend_ejections_total", "counter",
                "Times passive health ejected the backend.", "%llu",
                (unsigned long long)b->ejections_total);
    PER_BACKEND("usher_backend_ejected_remaining_seconds", "gauge",
                "Seconds until an ejected backend may return (0 when not ejected).", "%.3f",
                b->state == BACKEND_EJECTED && b->ejected_until > now ? b->ejected_until - now
                                                                       : 0.0);
    metrics_family(o, "usher_retries_total", "counter",
                   "Requests sent again to another backend, by reason.");
    for (struct pool *p = w->pools; p; p = p->next)
        for (int r = 0; r < RETRY_REASONS; r++) {
            lb.len = 0;
            metrics_labels(&lb, "pool", p->name, "reason", retry_reason_str((enum retry_reason)r),
                           NULL);
            hbuf_printf(o, "usher_retries_total{%s} %llu\n", labels_end(&lb),
                        (unsigned long long)p->retries[r]);
        }
    metrics_family(o, "usher_retry_budget_refused_total", "counter",
                   "Retries the pool's retry budget refused.");
    for (struct pool *p = w->pools; p; p = p->next) {
        lb.len = 0;
        metrics_labels(&lb, "pool", p->name, NULL);
        hbuf_printf(o, "usher_retry_budget_refused_total{%s} %llu\n", labels_end(&lb),
                    (unsigned long long)p->retry_budget_refused);
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

/* <allow>: the Allow field of a 405 (RFC 9110 15.5.6), else NULL. A HEAD
 * answer carries the head a GET would get, Content-Length included. */
static void respond(struct admin_conn *ac, int status, const char *type, struct hbuf *body,
                    bool head_only, const char *allow)
{
    hbuf_printf(&ac->out,
                "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n",
                status, http1_status_text(status), type, body->len);
    if (allow)
        hbuf_printf(&ac->out, "Allow: %s\r\n", allow);
    hbuf_append_str(&ac->out, "\r\n");
    if (!head_only)
        hbuf_append(&ac->out, body->data, body->len);
}

/* The read-only endpoints: GET, and HEAD wherever GET works. */
#define ADMIN_ALLOW_GET "GET, HEAD"

static bool is_get_endpoint(struct http1_slice path)
{
    return http1_slice_eq(path, "/live") || http1_slice_eq(path, "/ready") ||
           http1_slice_eq(path, "/status") || http1_slice_eq(path, "/metrics");
}

static void route(struct admin_conn *ac, const struct http1_request *req)
{
    struct hbuf body = {0};
    int status = 200;
    const char *type = "text/plain; charset=utf-8";
    const char *allow = NULL;
    struct http1_slice path = req->target;
    const char *q = memchr(path.ptr, '?', path.len);
    if (q)
        path.len = (size_t)(q - path.ptr);

    bool get = req->method_id == HTTP1_METHOD_GET || req->method_id == HTTP1_METHOD_HEAD;
    if (!get && is_get_endpoint(path)) {
        status = 405;
        allow = ADMIN_ALLOW_GET;
        hbuf_append_str(&body, "405 Method Not Allowed\n");
    } else if (!get) {
        status = 404;
        hbuf_append_str(&body, "404 Not Found\n");
    } else if (http1_slice_eq(path, "/live")) {
        hbuf_append_str(&body, "live\n");
    } else if (http1_slice_eq(path, "/ready")) {
        const char *why = not_ready_reason(ac->admin->proc);
        status = why ? 503 : 200;
        hbuf_printf(&body, "%s\n", why ? why : "ready");
    } else if (http1_slice_eq(path, "/status")) {
        type = "application/json";
        build_status(&body, ac->admin->proc);
    } else if (http1_slice_eq(path, "/metrics")) {
        type = "text/plain; version=0.0.4; charset=utf-8";
        build_metrics(&body, ac->admin->proc);
    } else {
        status = 404;
        hbuf_append_str(&body, "404 Not Found\n");
    }
    respond(ac, status, type, &body, req->method_id == HTTP1_METHOD_HEAD, allow);
    hbuf_free(&body);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct admin_conn *ac = container_of(io, struct admin_conn, io);
    if (ac->out.len == 0) {
        ssize_t n = read(ac->fd, ac->in + ac->in_len, sizeof(ac->in) - ac->in_len);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            conn_free(ac);
            return;
        }
        ac->in_len += (size_t)n;
        struct http1_header headers[ADMIN_HEADERS_MAX];
        struct http1_limits lim = {ADMIN_HEAD_MAX, ADMIN_HEADERS_MAX, ADMIN_HEAD_MAX};
        struct http1_request req;
        memset(&req, 0, sizeof(req));
        req.msg.headers = headers;
        int rc = http1_parse_request(ac->in, ac->in_len, &lim, &req);
        if (rc == HTTP1_AGAIN && ac->in_len < sizeof(ac->in))
            return;
        if (rc == HTTP1_OK) {
            route(ac, &req);
        } else {
            struct hbuf body = {0};
            int status = rc == HTTP1_ERROR ? req.msg.error_status : 431;
            hbuf_printf(&body, "%d %s\n", status, http1_status_text(status));
            respond(ac, status, "text/plain", &body, false, NULL);
            hbuf_free(&body);
        }
        ev_io_stop(loop, io);
        ev_io_set(io, ac->fd, EV_WRITE);
        ev_io_start(loop, io);
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

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct admin *a = container_of(io, struct admin, io);
    for (;;) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        struct admin_conn *ac = calloc(1, sizeof(*ac));
        if (!ac) {
            close(fd);
            return;
        }
        ac->admin = a;
        ac->fd = fd;
        list_append(&a->conns, &ac->link);
        ev_io_init(&ac->io, conn_io_cb, fd, EV_READ);
        ev_io_start(loop, &ac->io);
        ev_timer_init(&ac->timer, conn_timeout_cb, ADMIN_TIMEOUT_S, 0.);
        ev_timer_start(loop, &ac->timer);
    }
}

int admin_start(struct process *proc)
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
    int inherited = sysd_claim(&proc->inherited, "admin");
    if (inherited >= 0)
        a->fd = net_adopt_listener(inherited, &why) == 0 ? inherited : -1;
    else
        a->fd = net_listen((const struct sockaddr *)&addr->sa, addr->sa_len, &why);
    if (a->fd < 0) {
        log_kv(CONF_LOG_ERROR, "admin failed", LOG_STR("bind", addr->text), LOG_STR("reason", why),
               LOG_STR("error", strerror(errno)));
        if (inherited >= 0)
            close(inherited);
        free(a);
        return -1;
    }
    ev_io_init(&a->io, accept_cb, a->fd, EV_READ);
    ev_io_start(w->loop, &a->io);
    proc->admin = a;
    proc->admin_fd = a->fd;
    log_info("admin started", "bind=%s", addr->text);
    return 0;
}

void admin_release_listener(struct process *proc)
{
    struct admin *a = proc->admin;
    if (!a || a->fd < 0)
        return;
    ev_io_stop(proc->loop, &a->io);
    close(a->fd);
    a->fd = proc->admin_fd = -1;
}

void admin_stop(struct process *proc)
{
    struct admin *a = proc->admin;
    if (!a)
        return;
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &a->conns) {
        conn_free(container_of(pos, struct admin_conn, link));
    }
    ev_io_stop(proc->loop, &a->io);
    if (a->fd >= 0)
        close(a->fd);
    free(a);
    proc->admin = NULL;
    proc->admin_fd = -1;
}
