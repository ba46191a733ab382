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
#include "../core/worker.h"
#include "discover.h"
#include "process-t.h"

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

static void status_backend(struct hbuf *o, struct worker *w, const struct server *s)
{
    const struct backend *b = s->hb;
    ev_tstamp now = ev_now(w->loop);
    hbuf_append_str(o, "{\"name\":");
    log_json_str(o, b->name);
    hbuf_append_str(o, ",\"address\":");
    log_json_str(o, b->address_text);
    hbuf_printf(o,
                ",\"state\":\"%s\",\"weight\":%u,\"in_config\":%s,\"active_connections\":%u,"
                "\"inflight_requests\":%u,\"requests_total\":%llu,\"connect_failures\":%llu,"
                "\"success_streak\":%u,\"failure_streak\":%u,\"last_result\":",
                backend_state_str(b->state), b->weight, backend_removed(b) ? "false" : "true",
                b->connections, s->inflight, (unsigned long long)s->requests_total,
                (unsigned long long)s->connect_failures, b->success_streak, b->failure_streak);
    if (b->last_result)
        log_json_str(o, b->last_result);
    else
        hbuf_append_str(o, "null");
    hbuf_printf(o, ",\"last_status\":%d,\"last_check_age_ms\":", b->last_status);
    if (b->last_check_at > 0)
        hbuf_printf(o, "%.0f", (now - b->last_check_at) * 1000.0);
    else
        hbuf_append_str(o, "null");
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
                worker_state_str(w->state), worker_ready(w) ? "true" : "false",
                (unsigned long long)w->generation, (int)getpid(), now - w->started_at,
                w->num_clients);
    log_json_str(o, w->conf->path);
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

static void build_metrics(struct hbuf *o, struct process *proc)
{
    struct worker *w = proc->w;
    hbuf_printf(o,
                "# HELP usher_up 1 while the process runs.\n# TYPE usher_up gauge\nusher_up 1\n");
    hbuf_printf(o, "# TYPE usher_ready gauge\nusher_ready %d\n", worker_ready(w) ? 1 : 0);
    hbuf_printf(o, "# TYPE usher_draining gauge\nusher_draining %d\n",
                w->state >= WORKER_DRAIN_DELAY ? 1 : 0);
    hbuf_printf(o, "# TYPE usher_drain_connections_left gauge\nusher_drain_connections_left %u\n",
                w->state >= WORKER_DRAIN_DELAY ? w->num_clients : 0);
    hbuf_printf(o, "# TYPE usher_config_generation gauge\nusher_config_generation %llu\n",
                (unsigned long long)w->generation);
    hbuf_printf(o,
                "# HELP usher_config_reloads_total Config reloads by result.\n"
                "# TYPE usher_config_reloads_total counter\n"
                "usher_config_reloads_total{result=\"ok\"} %llu\n"
                "usher_config_reloads_total{result=\"error\"} %llu\n",
                (unsigned long long)proc->reloads_ok, (unsigned long long)proc->reloads_error);
    hbuf_printf(o, "# TYPE usher_accept_paused_total counter\nusher_accept_paused_total %llu\n",
                (unsigned long long)w->accept_paused);

    hbuf_append_str(o, "# TYPE usher_client_connections gauge\n");
    for (struct listener *l = w->listeners; l; l = l->next)
        hbuf_printf(o, "usher_client_connections{listener=\"%s\"} %u\n", l->name, l->connections);
    hbuf_append_str(o, "# TYPE usher_client_connections_accepted_total counter\n");
    for (struct listener *l = w->listeners; l; l = l->next)
        hbuf_printf(o, "usher_client_connections_accepted_total{listener=\"%s\"} %llu\n", l->name,
                    (unsigned long long)l->accepted_total);
    hbuf_append_str(o, "# HELP usher_requests_total Responses by listener and status class.\n"
                       "# TYPE usher_requests_total counter\n");
    for (struct listener *l = w->listeners; l; l = l->next)
        for (int k = 1; k < STATUS_CLASSES; k++)
            hbuf_printf(o, "usher_requests_total{listener=\"%s\",code=\"%s\"} %llu\n", l->name,
                        status_class[k], (unsigned long long)l->responses[k]);

    static const enum backend_state states[] = {BACKEND_CHECKING, BACKEND_HEALTHY,
                                                BACKEND_UNHEALTHY, BACKEND_DRAINING};
    hbuf_append_str(o, "# TYPE usher_backend_state gauge\n");
    for (struct pool *p = w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_servers; i++)
            for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++)
                hbuf_printf(o, "usher_backend_state{pool=\"%s\",backend=\"%s\",state=\"%s\"} %d\n",
                            p->name, p->servers[i]->hb->name, backend_state_str(states[s]),
                            p->servers[i]->hb->state == states[s]);
#define PER_BACKEND(metric, type, fmt, expr)                                                       \
    do {                                                                                           \
        hbuf_append_str(o, "# TYPE " metric " " type "\n");                                        \
        for (struct pool *p = w->pools; p; p = p->next)                                            \
            for (size_t i = 0; i < p->num_servers; i++) {                                          \
                const struct server *s = p->servers[i];                                            \
                const struct backend *b = s->hb;                                                   \
                hbuf_printf(o, metric "{pool=\"%s\",backend=\"%s\"} " fmt "\n", p->name, b->name,  \
                            expr);                                                                 \
            }                                                                                      \
    } while (0)
    PER_BACKEND("usher_backend_active_connections", "gauge", "%u", b->connections);
    PER_BACKEND("usher_backend_inflight_requests", "gauge", "%u", s->inflight);
    PER_BACKEND("usher_backend_requests_total", "counter", "%llu",
                (unsigned long long)s->requests_total);
    PER_BACKEND("usher_backend_connect_failures_total", "counter", "%llu",
                (unsigned long long)s->connect_failures);
    PER_BACKEND("usher_backend_drain_remaining_seconds", "gauge", "%.3f",
                b->state == BACKEND_DRAINING && b->drain_deadline > ev_now(w->loop)
                    ? b->drain_deadline - ev_now(w->loop)
                    : 0.0);
#undef PER_BACKEND
    hbuf_append_str(o, "# TYPE usher_backend_responses_total counter\n");
    for (struct pool *p = w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_servers; i++)
            for (int k = 1; k < STATUS_CLASSES; k++)
                hbuf_printf(
                    o,
                    "usher_backend_responses_total{pool=\"%s\",backend=\"%s\",code=\"%s\"} %llu\n",
                    p->name, p->servers[i]->hb->name, status_class[k],
                    (unsigned long long)p->servers[i]->responses[k]);
    hbuf_append_str(o, "# TYPE usher_health_checks_total counter\n");
    for (struct pool *p = w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_servers; i++) {
            const struct backend *b = p->servers[i]->hb;
            hbuf_printf(
                o, "usher_health_checks_total{pool=\"%s\",backend=\"%s\",result=\"ok\"} %llu\n",
                p->name, b->name, (unsigned long long)b->checks_ok);
            hbuf_printf(
                o, "usher_health_checks_total{pool=\"%s\",backend=\"%s\",result=\"fail\"} %llu\n",
                p->name, b->name, (unsigned long long)b->checks_failed);
        }
}

/* ---- request handling ---------------------------------------------------- */

static void respond(struct admin_conn *ac, int status, const char *type, struct hbuf *body,
                    bool head_only)
{
    hbuf_printf(&ac->out,
                "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                status, http1_status_text(status), type, body->len);
    if (!head_only)
        hbuf_append(&ac->out, body->data, body->len);
}

static void route(struct admin_conn *ac, const struct http1_request *req)
{
    struct worker *w = ac->admin->w;
    struct hbuf body = {0};
    int status = 200;
    const char *type = "text/plain; charset=utf-8";
    struct http1_slice path = req->target;
    const char *q = memchr(path.ptr, '?', path.len);
    if (q)
        path.len = (size_t)(q - path.ptr);

    bool get = req->method_id == HTTP1_METHOD_GET || req->method_id == HTTP1_METHOD_HEAD;
    if (!get) {
        status = 405;
        hbuf_append_str(&body, "405 Method Not Allowed\n");
    } else if (http1_slice_eq(path, "/live")) {
        hbuf_append_str(&body, "live\n");
    } else if (http1_slice_eq(path, "/ready")) {
        bool ready = worker_ready(w);
        status = ready ? 200 : 503;
        hbuf_printf(&body, "%s\n", ready ? "ready" : worker_state_str(w->state));
    } else if (http1_slice_eq(path, "/status")) {
        type = "application/json";
        build_status(&body, ac->admin->proc);
    } else if (http1_slice_eq(path, "/metrics")) {
        type = "text/plain; version=0.0.4";
        build_metrics(&body, ac->admin->proc);
    } else {
        status = 404;
        hbuf_append_str(&body, "404 Not Found\n");
    }
    respond(ac, status, type, &body, req->method_id == HTTP1_METHOD_HEAD);
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
            respond(ac, status, "text/plain", &body, false);
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
    a->fd = net_listen((const struct sockaddr *)&addr->sa, addr->sa_len, &why);
    if (a->fd < 0) {
        log_error("admin failed", "bind=%s reason=\"%s: %s\"", addr->text, why, strerror(errno));
        free(a);
        return -1;
    }
    ev_io_init(&a->io, accept_cb, a->fd, EV_READ);
    ev_io_start(w->loop, &a->io);
    proc->admin = a;
    log_info("admin started", "bind=%s", addr->text);
    return 0;
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
    close(a->fd);
    free(a);
    proc->admin = NULL;
}
