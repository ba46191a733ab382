/* One client connection: reads request heads, picks a backend, streams the
 * request and the response with backpressure, and turns into a byte tunnel
 * after a 101 or in TCP mode. drive() holds every state transition. */
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../health/backend.h"
#include "../parser/http1.h"
#include "balance.h"
#include "headers.h"
#include "io_watch.h"
#include "list.h"
#include "log.h"
#include "tls.h"
#include "upstream.h"
#include "worker.h"

/* Bound on state-machine rounds per event, so one busy connection cannot
 * starve the others (memcached's reqs_per_event): 8 rounds of up to 64 KiB.
 * Measured on 1 MB responses to 10 clients: 16 rounds doubled p99 (20 ms vs
 * 9-12 ms) for no throughput gain, 4 rounds cost 10% throughput. */
#define MAX_DRIVE_ROUNDS 8

/* While draining, a connection that has not sent its first request yet is
 * not idle keep-alive: its client was just told "connected" and its request
 * is likely on the wire. It gets this long to send it. */
#define FIRST_REQUEST_GRACE_S 1.0

/* Result of one step of drive(). */
enum step {
    STEP_BLOCKED = 0, /* nothing more to do until an event */
    STEP_PROGRESS,    /* something moved: run another round */
    STEP_CLOSED,      /* the client was closed: stop touching it */
};

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

/* ---- timeouts: one timer, its deadline derived from the state ------------ */

static double ms_to_s(conf_ms ms)
{
    return (double)ms / 1000.0;
}

static ev_tstamp deadline_of(const struct client *c)
{
    const struct conf *conf = c->w->conf;
    switch (c->state) {
    case CLIENT_IDLE:
        if (c->requests == 0 && c->w->state >= WORKER_DRAINING) {
            ev_tstamp grace = c->last_activity + FIRST_REQUEST_GRACE_S;
            ev_tstamp idle = c->last_activity + ms_to_s(conf->timeouts.client_idle);
            return grace < idle ? grace : idle;
        }
        return c->last_activity + ms_to_s(conf->timeouts.client_idle);
    case CLIENT_READING_HEAD:
        return c->head_started_at + ms_to_s(conf->timeouts.client_header);
    case CLIENT_TLS_HANDSHAKE:
        return c->last_activity + ms_to_s(conf->timeouts.client_header);
    case CLIENT_CONNECTING:
        return c->last_activity + ms_to_s(conf->timeouts.connect);
    case CLIENT_FORWARDING:
        return c->last_activity + ms_to_s(conf->timeouts.backend);
    case CLIENT_TUNNEL:
        return c->last_activity + ms_to_s(conf->timeouts.tunnel);
    case CLIENT_RESPONDING:
        return c->last_activity + ms_to_s(conf->timeouts.client_idle);
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

/* ---- socket helpers ------------------------------------------------------ */

static void client_want(struct client *c, unsigned events)
{
    io_watch(c->w->loop, &c->io, c->fd, &c->io_events, events);
}

/* Reads into <b>. Returns bytes read (> 0), 0 on EOF, HTTP1_AGAIN when the
 * socket is empty, or HTTP1_ERROR (errno set). A short read emptied the
 * socket: *<readable> is cleared so the next read waits for the event
 * instead of costing a syscall that returns EAGAIN. */
static ssize_t sock_read(int fd, struct buf *b, bool *readable)
{
    if (buf_space(b) == 0)
        buf_compact(b);
    for (;;) {
        size_t want = buf_space(b);
        ssize_t n = read(fd, b->data + b->end, want);
        if (n > 0) {
            b->end += (size_t)n;
            if ((size_t)n < want)
                *readable = false;
            return n;
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? HTTP1_AGAIN : HTTP1_ERROR;
    }
}

/* Writes the unsent part of <head>, then up to *<fwd> bytes of <b> (NULL
 * is fine), with one writev per round. Returns bytes written (>= 0; a short
 * count means the socket is full) or HTTP1_ERROR. */
static ssize_t sock_send(int fd, struct hbuf *head, struct buf *b, size_t *fwd)
{
    ssize_t total = 0;
    for (;;) {
        struct iovec iov[2];
        int cnt = 0;
        if (head->sent < head->len) {
            iov[cnt].iov_base = head->data + head->sent;
            iov[cnt++].iov_len = head->len - head->sent;
        }
        if (b && *fwd > 0) {
            iov[cnt].iov_base = buf_head(b);
            iov[cnt++].iov_len = *fwd;
        }
        if (cnt == 0)
            return total;
        ssize_t n = writev(fd, iov, cnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return total;
            return HTTP1_ERROR;
        }
        total += n;
        size_t left = (size_t)n;
        size_t from_head = head->len - head->sent;
        if (from_head > left)
            from_head = left;
        head->sent += from_head;
        left -= from_head;
        if (left) {
            buf_consume(b, left);
            *fwd -= left;
        }
    }
}

/* Reads from the client: through TLS on a TLS listener. */
static ssize_t client_recv(struct client *c, struct buf *b)
{
    if (!c->ssl)
        return sock_read(c->fd, b, &c->c_readable);
    if (buf_space(b) == 0)
        buf_compact(b);
    ssize_t n = tls_recv(c->ssl, b->data + b->end, buf_space(b), &c->tls_read_want);
    if (n > 0)
        b->end += (size_t)n;
    return n;
}

/* Writes to the client: sock_send, or the same through TLS (one record per
 * piece; TLS has no writev). */
static ssize_t client_send(struct client *c, struct hbuf *head, struct buf *b, size_t *fwd)
{
    if (!c->ssl)
        return sock_send(c->fd, head, b, fwd);
    ssize_t total = 0;
    unsigned want;
    while (head->sent < head->len) {
        ssize_t n = tls_send(c->ssl, head->data + head->sent, head->len - head->sent, &want);
        if (n <= 0)
            return n < 0 ? HTTP1_ERROR : total;
        head->sent += (size_t)n;
        total += n;
    }
    while (b && *fwd > 0) {
        ssize_t n = tls_send(c->ssl, buf_head(b), *fwd, &want);
        if (n <= 0)
            return n < 0 ? HTTP1_ERROR : total;
        buf_consume(b, (size_t)n);
        *fwd -= (size_t)n;
        total += n;
    }
    return total;
}

/* Half-closes toward the client (tunnels): close_notify first on TLS. */
static void client_shutdown_write(struct client *c)
{
    if (c->ssl)
        SSL_shutdown(c->ssl);
    shutdown(c->fd, SHUT_WR);
}

static bool head_pending(const struct hbuf *h)
{
    return h->sent < h->len;
}

static struct buf_pool *pool_for(struct client *c, struct buf **b)
{
    return b == &c->out ? &c->w->bufs_out : &c->w->bufs_in;
}

static bool ensure_buf(struct client *c, struct buf **b)
{
    if (!*b)
        *b = buf_get(pool_for(c, b));
    return *b != NULL;
}

/* Gives back buffers holding nothing, so idle connections cost no buffer. */
static void release_empty_bufs(struct client *c)
{
    if (c->in && buf_len(c->in) == 0) {
        buf_put(&c->w->bufs_in, c->in);
        c->in = NULL;
    }
    if (c->out && buf_len(c->out) == 0) {
        buf_put(&c->w->bufs_out, c->out);
        c->out = NULL;
    }
}

/* ---- body framing -------------------------------------------------------- */

/* De-chunks in place for a client that cannot read chunked (HTTP/1.0): the
 * payload of the raw bytes after *<fwd> moves down to join the bytes ready
 * to send, the framing is dropped. Returns 0 or HTTP1_ERROR. */
static int dechunk(struct body_state *bs, struct buf *b, size_t *fwd)
{
    char *raw = buf_head(b) + *fwd;
    size_t raw_len = buf_len(b) - *fwd, rd = 0;
    char *wr = raw;
    while (rd < raw_len && !bs->done) {
        size_t used, off, len;
        int rc = http1_chunked_decode(&bs->chunked, raw + rd, raw_len - rd, &used, &off, &len);
        if (rc == HTTP1_ERROR)
            return HTTP1_ERROR;
        memmove(wr, raw + rd + off, len);
        wr += len;
        rd += used;
        bs->done = rc == HTTP1_OK;
    }
    size_t rest = raw_len - rd; /* after the body: never forwarded */
    memmove(wr, raw + rd, rest);
    *fwd = (size_t)(wr - buf_head(b));
    b->end = b->start + *fwd + rest;
    return 0;
}

/* Extends *<fwd> over the bytes of <b> that belong to the body described by
 * <bs>. Returns 0, or HTTP1_ERROR on invalid chunked framing. */
static int frame_body(struct body_state *bs, struct buf *b, size_t *fwd)
{
    if (bs->done || !b)
        return 0;
    if (bs->dechunk)
        return dechunk(bs, b, fwd);
    size_t avail = buf_len(b) - *fwd;
    switch (bs->framing) {
    case HTTP1_BODY_NONE:
        bs->done = true;
        break;
    case HTTP1_BODY_LENGTH: {
        size_t take = bs->left < avail ? (size_t)bs->left : avail;
        *fwd += take;
        bs->left -= take;
        bs->done = bs->left == 0;
        break;
    }
    case HTTP1_BODY_CHUNKED: {
        if (avail == 0)
            break;
        size_t used = 0, kept = avail;
        int rc = http1_chunked_filter(&bs->chunked, buf_head(b) + *fwd, &kept, &used,
                                      headers_trailer_dropped);
        b->end -= avail - kept;
        *fwd += used;
        if (rc == HTTP1_ERROR)
            return HTTP1_ERROR;
        bs->done = rc == HTTP1_OK;
        break;
    }
    case HTTP1_BODY_UNTIL_CLOSE:
        *fwd += avail;
        break;
    }
    return 0;
}

static void body_start(struct body_state *bs, const struct http1_message *m)
{
    bs->framing = m->framing;
    bs->dechunk = false;
    bs->left = m->content_length;
    http1_chunked_init(&bs->chunked);
    bs->done = m->framing == HTTP1_BODY_NONE ||
               (m->framing == HTTP1_BODY_LENGTH && m->content_length == 0);
}

static bool request_sent(const struct client *c)
{
    return c->req_body.done && c->in_fwd == 0 && !head_pending(&c->req_head);
}

/* The process drains, or this connection's listener was removed by a
 * reload: answer what is asked, with Connection: close. */
static bool conn_closing(const struct client *c)
{
    return c->w->state >= WORKER_DRAIN_DELAY || c->listener->closed;
}

/* ---- upstream binding ---------------------------------------------------- */

static void bind_upstream(struct client *c, struct upstream *u, struct pool *p)
{
    c->up = u;
    c->pool = p;
    c->u_readable = false;
    c->up_eof = false;
    u->backend->inflight++;
    u->requests++;
}

/* Detaches the upstream; it goes back to its pool if <reusable>. */
static void unbind_upstream(struct client *c, bool reusable)
{
    struct upstream *u = c->up;
    if (!u)
        return;
    c->up = NULL;
    u->backend->inflight--;
    if (reusable)
        upstream_release(u, true);
    else
        upstream_close(u);
}

/* ---- closing ------------------------------------------------------------- */

static void count_response(struct client *c, struct backend *b)
{
    unsigned cls = (c->status >= 100 && c->status < 600) ? (unsigned)c->status / 100 : 0;
    c->listener->responses[cls]++;
    if (b) {
        b->requests_total++;
        b->responses[cls]++;
    }
}

static void log_access(struct client *c, struct backend *b)
{
    if (!c->w->conf->log.access)
        return;
    log_info("access",
             "client=%s listener=%s method=%s path=\"%s\" status=%d bytes=%llu ms=%.1f pool=%s "
             "backend=%s",
             c->peer, c->listener->name, c->log_method[0] ? c->log_method : "-",
             c->log_path[0] ? c->log_path : "-", c->status, (unsigned long long)c->bytes_out,
             (now_of(c) - c->started_at) * 1000.0, (b && c->pool) ? c->pool->name : "-",
             b ? b->name : "-");
}

/* A request ends (answered or abandoned): counters and the access log. */
static void end_request(struct client *c)
{
    if (c->started_at == 0)
        return;
    struct backend *b = c->up ? c->up->backend : NULL;
    count_response(c, b);
    log_access(c, b);
    c->started_at = 0;
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
    tls_close(c->ssl);
    c->ssl = NULL;
    close(c->fd);
    c->fd = -1;
    buf_put(&w->bufs_in, c->in);
    buf_put(&w->bufs_out, c->out);
    c->in = c->out = NULL;
    hbuf_free(&c->req_head);
    hbuf_free(&c->res_head);
    c->state = CLIENT_CLOSED;
    list_remove(&c->link);
    worker_client_closed(w, c);
}

void client_free(struct client *c)
{
    free(c);
}

/* ---- responses usher makes itself ---------------------------------------- */

/* Answers the current request with <status>. The connection stays open only
 * if the request was read completely and <close> is false. */
static enum step respond_error(struct client *c, int status, const char *detail, bool close)
{
    if (is_tcp_mode(c) || c->response_started) {
        client_close(c);
        return STEP_CLOSED;
    }
    unbind_upstream(c, false);
    hbuf_reset(&c->req_head); /* the request goes no further */
    if (!c->req_body.done || conn_closing(c))
        close = true;
    if (!close && c->in) {
        buf_consume(c->in, c->in_fwd); /* the unsent body of this request */
        c->in_fwd = 0;
    }
    if (close)
        c->keep_alive = false;
    if (c->started_at == 0)
        c->started_at = now_of(c);
    c->status = status;
    c->response_started = true;
    hbuf_reset(&c->res_head);
    if (c->out)
        buf_consume(c->out, buf_len(c->out));
    c->out_fwd = 0;
    if (headers_build_error(&c->res_head, status, detail, !c->keep_alive,
                            c->method == HTTP1_METHOD_HEAD) < 0) {
        client_close(c);
        return STEP_CLOSED;
    }
    log_debug("http error", "client=%s listener=%s status=%d reason=\"%s\"", c->peer,
              c->listener->name, status, detail ? detail : "");
    set_state(c, CLIENT_RESPONDING);
    return STEP_PROGRESS;
}

/* ---- request start, backend choice, connect and retry -------------------- */

static enum step connect_upstream(struct client *c);

static void remember_tried(struct client *c, struct backend *b)
{
    if (c->attempts < MAX_ATTEMPTS)
        c->tried[c->attempts++] = b;
}

/* usher's own shortage rather than the backend's fault. */
static bool local_shortage(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/* Counts and logs a failed connect to <b> (<err> 0: it timed out) and
 * rules <b> out for this request. */
static void connect_failure(struct client *c, struct backend *b, int err)
{
    b->connect_failures++;
    log_warn("backend connect failed", "pool=%s backend=%s address=%s error=\"%s\"", b->pool_name,
             b->name, b->address_text, err ? strerror(err) : "connect timeout");
    remember_tried(c, b);
}

/* Starts a new connection to <b> of pool <p> for the request. Returns
 * false if the connect failed at once (*<err> set). */
static bool open_upstream(struct client *c, struct backend *b, struct pool *p, int *err)
{
    struct upstream *u = upstream_connect(c->w, b, c, err);
    if (!u)
        return false;
    c->from_pool = false;
    bind_upstream(c, u, p);
    set_state(c, CLIENT_CONNECTING);
    return true;
}

static enum step no_backend(struct client *c)
{
    if (is_tcp_mode(c)) {
        log_warn("tcp no backend", "client=%s listener=%s attempts=%u", c->peer, c->listener->name,
                 c->attempts);
        client_close(c);
        return STEP_CLOSED;
    }
    if (c->attempts == 0)
        return respond_error(c, 503, "no backend available", false);
    return respond_error(c, 502, "backend connection failed", false);
}

static enum step connect_upstream(struct client *c)
{
    for (;;) {
        struct pool *p = NULL;
        if (c->attempts >= MAX_ATTEMPTS)
            return no_backend(c);
        struct backend *b = balance_pick(c->listener, c->tried, c->attempts, &p);
        if (!b)
            return no_backend(c);
        struct upstream *u = is_tcp_mode(c) ? NULL : upstream_take_idle(b, c);
        if (u) {
            c->from_pool = true;
            bind_upstream(c, u, p);
            set_state(c, CLIENT_FORWARDING);
            return STEP_PROGRESS;
        }
        int err = 0;
        if (open_upstream(c, b, p, &err))
            return STEP_PROGRESS;
        if (local_shortage(err)) {
            /* no point trying other backends, and closing this client
             * gives a descriptor back */
            log_warn("upstream connect failed", "reason=\"%s\" connections=%u", strerror(err),
                     c->w->num_clients);
            return respond_error(c, 503, "proxy out of resources", true);
        }
        connect_failure(c, b, err);
    }
}

/* The connect of the bound upstream failed (<err>) or timed out (0). */
static enum step connect_failed(struct client *c, int err)
{
    connect_failure(c, c->up->backend, err);
    unbind_upstream(c, false);
    if (err == 0 && c->attempts >= MAX_ATTEMPTS && !is_tcp_mode(c))
        return respond_error(c, 504, "backend connect timeout", false);
    return connect_upstream(c);
}

static void copy_for_log(char *dst, size_t cap, struct http1_slice s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    for (size_t i = 0; i < n; i++)
        dst[i] = (s.ptr[i] == '"' || s.ptr[i] == '\\') ? '_' : s.ptr[i];
    dst[n] = '\0';
}

static enum step start_request(struct client *c, struct http1_request *req)
{
    const struct http1_message *m = &req->msg;
    c->requests++;
    c->started_at = now_of(c);
    c->method = req->method_id;
    c->req_minor = m->minor_version;
    c->keep_alive = (m->flags & HTTP1_F_KEEP_ALIVE) && !conn_closing(c);
    c->upgrading = m->minor_version == 1 && (m->flags & HTTP1_F_HAS_UPGRADE) &&
                   (m->flags & HTTP1_F_CONN_UPGRADE);
    if (c->w->conf->log.access) {
        copy_for_log(c->log_method, sizeof(c->log_method), req->method);
        copy_for_log(c->log_path, sizeof(c->log_path), req->target);
    }
    body_start(&c->req_body, m);

    if (req->method_id == HTTP1_METHOD_CONNECT) {
        buf_consume(c->in, m->head_len);
        return respond_error(c, 501, "CONNECT is not supported", true);
    }

    struct forward_info fi = {
        .client_addr = c->peer,
        .proto = c->listener->tls ? "https" : "http",
        .upgrade = c->upgrading,
    };
    hbuf_reset(&c->req_head);
    hbuf_reset(&c->res_head);
    if (headers_build_request(&c->req_head, req, &fi) < 0) {
        client_close(c);
        return STEP_CLOSED;
    }
    /* the head was rebuilt: its bytes in the buffer are no longer needed */
    buf_consume(c->in, m->head_len);
    c->in_fwd = 0;
    if (frame_body(&c->req_body, c->in, &c->in_fwd) < 0)
        return respond_error(c, 400, c->req_body.chunked.error_reason, true);
    return connect_upstream(c);
}

/* ---- reading request heads ----------------------------------------------- */

static enum step on_head(struct client *c)
{
    enum step progress = STEP_BLOCKED;
    bool new_line = c->state == CLIENT_IDLE; /* pipelined bytes: parse them */
    if (c->c_readable && !c->client_eof) {
        if (!ensure_buf(c, &c->in)) {
            client_close(c);
            return STEP_CLOSED;
        }
        ssize_t n = buf_space(c->in) || c->in->start ? client_recv(c, c->in) : HTTP1_AGAIN;
        if (n > 0) {
            /* a head can only complete (or fail) at an LF: a slowloris
             * client sending a byte at a time costs no re-parse per byte;
             * an error found later than it could be is still found */
            new_line = new_line || memchr(c->in->data + c->in->end - n, '\n', (size_t)n);
        }
        if (n == HTTP1_AGAIN) {
            c->c_readable = false;
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
    if (!c->in || buf_len(c->in) == 0) {
        release_empty_bufs(c);
        if (c->client_eof) {
            client_close(c); /* half-closed and every request answered */
            return STEP_CLOSED;
        }
        return progress;
    }
    if (c->state == CLIENT_IDLE) {
        c->head_started_at = now_of(c);
        set_state(c, CLIENT_READING_HEAD);
    }

    if (!new_line && buf_len(c->in) < c->in->cap && !c->client_eof)
        return progress;

    struct http1_request req;
    memset(&req, 0, sizeof(req));
    req.msg.headers = c->w->headers;
    int rc = http1_parse_request(buf_head(c->in), buf_len(c->in), &c->w->limits, &req);
    if (rc == HTTP1_OK)
        return start_request(c, &req);
    if (rc == HTTP1_ERROR)
        return respond_error(c, req.msg.error_status, req.msg.error_reason, true);
    if (buf_len(c->in) >= c->in->cap)
        return respond_error(c, 431, "request head too large", true);
    if (c->client_eof) {
        client_close(c);
        return STEP_CLOSED;
    }
    return progress;
}

/* ---- the exchange: request up, response down ----------------------------- */

/* A request needs no body replay if it has none: then a pooled connection
 * that turned out dead can be replaced without the client noticing. */
static bool request_replayable(const struct client *c)
{
    return c->req_body.framing == HTTP1_BODY_NONE && !c->upgrading;
}

/* Idempotent methods (RFC 9110 9.2.2) may be sent again to another backend
 * when the first one failed without answering. */
static bool request_idempotent(const struct client *c)
{
    switch (c->method) {
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

/* Sends the request again on a fresh connection to <b>, or, if <b> was
 * already tried, to another backend. */
static enum step resend(struct client *c, struct backend *b)
{
    struct pool *p = c->pool;
    unbind_upstream(c, false);
    c->req_head.sent = 0;
    int err = 0;
    if (b && open_upstream(c, b, p, &err))
        return STEP_PROGRESS;
    if (b)
        remember_tried(c, b);
    return connect_upstream(c);
}

/* The upstream failed (<why>) before the response was complete. */
static enum step upstream_failed(struct client *c, const char *why)
{
    struct backend *b = c->up->backend;
    bool nothing_received = !c->response_started && (!c->out || buf_len(c->out) == 0);
    if (nothing_received && request_replayable(c)) {
        if (c->from_pool) {
            /* the backend closed a pooled connection as we reused it (its
             * own keep-alive timeout): RFC 9112 9.3.1 allows a new one */
            log_debug("pooled connection closed, retrying", "pool=%s backend=%s", c->pool->name,
                      b->name);
            return resend(c, b);
        }
        if (request_idempotent(c) && c->attempts + 1 < MAX_ATTEMPTS) {
            /* a fresh connection failed without a byte of answer: the
             * backend died under the request; another one can take it */
            log_warn("backend failed, retrying", "pool=%s backend=%s reason=\"%s\"", c->pool->name,
                     b->name, why);
            remember_tried(c, b);
            return resend(c, NULL);
        }
    }
    log_warn("backend failed", "pool=%s backend=%s reason=\"%s\" response_started=%d",
             c->pool ? c->pool->name : "-", b->name, why, c->response_started);
    if (!c->response_started)
        return respond_error(c, 502, why, false);
    client_close(c);
    return STEP_CLOSED;
}

/* The response is complete; the request may or may not be. */
static enum step finish_exchange(struct client *c)
{
    bool req_done = request_sent(c);
    bool reusable =
        c->res_reusable && req_done && c->out_fwd == 0 && (!c->out || buf_len(c->out) == 0);
    end_request(c);
    unbind_upstream(c, reusable);
    if (!req_done || !c->keep_alive) {
        client_close(c);
        return STEP_CLOSED;
    }
    /* an idle keep-alive connection holds no memory but its struct */
    hbuf_free(&c->req_head);
    hbuf_free(&c->res_head);
    /* the next exchange starts from nothing: an error answered before its
     * head parses must not inherit this one's method or progress */
    c->in_fwd = 0;
    c->out_fwd = 0;
    c->response_started = false;
    c->upgrading = false;
    c->status = 0;
    c->method = HTTP1_METHOD_OTHER;
    c->bytes_out = 0;
    c->attempts = 0;
    c->res_reusable = false;
    memset(&c->res_body, 0, sizeof(c->res_body));
    if (c->out)
        buf_consume(c->out, buf_len(c->out));
    release_empty_bufs(c);
    set_state(c, CLIENT_IDLE);
    return STEP_PROGRESS; /* a pipelined request may already be buffered */
}

static enum response_conn response_conn_for(struct client *c)
{
    if (!c->keep_alive || conn_closing(c))
        return RESPONSE_CONN_CLOSE;
    return c->req_minor == 0 ? RESPONSE_CONN_KEEP_ALIVE_10 : RESPONSE_CONN_KEEP_ALIVE;
}

/* Parses the response head in c->out. */
static enum step on_response_head(struct client *c)
{
    struct http1_response res;
    memset(&res, 0, sizeof(res));
    res.msg.headers = c->w->headers;
    int rc =
        http1_parse_response(buf_head(c->out), buf_len(c->out), &c->w->limits, c->method, &res);
    if (rc == HTTP1_AGAIN) {
        if (buf_len(c->out) >= c->out->cap)
            return upstream_failed(c, "response head too large");
        if (c->up_eof)
            return upstream_failed(c, "backend closed the connection");
        return STEP_BLOCKED;
    }
    if (rc == HTTP1_ERROR)
        return upstream_failed(c, res.msg.error_reason);

    if (res.status >= 100 && res.status < 200 && res.status != 101) {
        /* interim response (100 Continue, 103 Early Hints): relay it to
         * HTTP/1.1 clients and wait for the final one */
        if (c->req_minor >= 1 &&
            hbuf_append(&c->res_head, buf_head(c->out), res.msg.head_len) < 0) {
            client_close(c);
            return STEP_CLOSED;
        }
        buf_consume(c->out, res.msg.head_len);
        return STEP_PROGRESS;
    }

    enum response_conn conn;
    bool dechunk_body = false;
    if (res.status == 101) {
        if (!c->upgrading)
            return upstream_failed(c, "unexpected 101 response");
        conn = RESPONSE_CONN_UPGRADE;
    } else {
        c->upgrading = false;
        /* an answer before the whole request went up ends the connection:
         * the rest of the request body cannot be told from the next request;
         * a body without length (until close, or de-chunked for HTTP/1.0)
         * can only end with the connection */
        dechunk_body = res.msg.framing == HTTP1_BODY_CHUNKED && c->req_minor == 0;
        if (!c->req_body.done || res.msg.framing == HTTP1_BODY_UNTIL_CLOSE || dechunk_body)
            c->keep_alive = false;
        conn = response_conn_for(c);
    }
    c->status = res.status;
    c->res_reusable = (res.msg.flags & HTTP1_F_KEEP_ALIVE) && res.status != 101;
    if (headers_build_response(&c->res_head, &res, conn, dechunk_body) < 0) {
        client_close(c);
        return STEP_CLOSED;
    }
    c->response_started = true;
    body_start(&c->res_body, &res.msg);
    c->res_body.dechunk = dechunk_body;
    buf_consume(c->out, res.msg.head_len);
    c->out_fwd = 0;

    if (res.status == 101) {
        log_debug("tunnel started", "client=%s pool=%s backend=%s", c->peer, c->pool->name,
                  c->up->backend->name);
        set_state(c, CLIENT_TUNNEL);
        return STEP_PROGRESS;
    }
    if (frame_body(&c->res_body, c->out, &c->out_fwd) < 0)
        return upstream_failed(c, c->res_body.chunked.error_reason);
    return STEP_PROGRESS;
}

static enum step on_forward(struct client *c)
{
    enum step progress = STEP_BLOCKED;
    struct upstream *u = c->up;

    /* request bytes toward the backend */
    if (head_pending(&c->req_head) || c->in_fwd > 0) {
        ssize_t n = sock_send(u->fd, &c->req_head, c->in, &c->in_fwd);
        if (n < 0)
            return upstream_failed(c, "backend write failed");
        if (n > 0) {
            c->last_activity = now_of(c);
            progress = STEP_PROGRESS;
        }
    }

    /* more of the request body, a pipelined request, or the client's EOF */
    if (c->c_readable && !c->client_eof) {
        if (!ensure_buf(c, &c->in)) {
            client_close(c);
            return STEP_CLOSED;
        }
        if (buf_space(c->in) > 0 || c->in->start > 0) {
            ssize_t n = client_recv(c, c->in);
            if (n == HTTP1_AGAIN) {
                c->c_readable = false;
            } else if (n <= 0) {
                c->client_eof = true;
                if (!c->req_body.done || n < 0) {
                    client_close(c); /* the client gave up on its request */
                    return STEP_CLOSED;
                }
            } else {
                c->last_activity = now_of(c);
                progress = STEP_PROGRESS;
                if (frame_body(&c->req_body, c->in, &c->in_fwd) < 0)
                    return respond_error(c, 400, c->req_body.chunked.error_reason, true);
            }
        }
    }

    /* response bytes from the backend */
    if (c->u_readable && !c->up_eof && !c->res_body.done) {
        if (!ensure_buf(c, &c->out)) {
            client_close(c);
            return STEP_CLOSED;
        }
        if (buf_space(c->out) > 0 || c->out->start > 0) {
            ssize_t n = sock_read(u->fd, c->out, &c->u_readable);
            if (n == HTTP1_AGAIN) {
                c->u_readable = false;
            } else if (n < 0) {
                return upstream_failed(c, "backend connection reset");
            } else if (n == 0) {
                c->up_eof = true;
                progress = STEP_PROGRESS;
                if (c->response_started && c->res_body.framing == HTTP1_BODY_UNTIL_CLOSE)
                    c->res_body.done = true;
                else if (c->response_started && !c->res_body.done)
                    return upstream_failed(c, "backend closed mid-body");
            } else {
                c->last_activity = now_of(c);
                progress = STEP_PROGRESS;
                if (c->response_started && frame_body(&c->res_body, c->out, &c->out_fwd) < 0)
                    return upstream_failed(c, c->res_body.chunked.error_reason);
            }
        }
    }
    if (!c->response_started && ((c->out && buf_len(c->out) > 0) || c->up_eof)) {
        enum step s = on_response_head(c);
        if (s != STEP_BLOCKED)
            return s;
    }

    /* response bytes toward the client */
    if (head_pending(&c->res_head) || c->out_fwd > 0) {
        ssize_t n = client_send(c, &c->res_head, c->out, &c->out_fwd);
        if (n < 0) {
            client_close(c); /* the client went away mid-response */
            return STEP_CLOSED;
        }
        if (n > 0) {
            c->bytes_out += (uint64_t)n;
            c->last_activity = now_of(c);
            progress = STEP_PROGRESS;
        }
    }

    if (c->response_started && c->res_body.done && !head_pending(&c->res_head) && c->out_fwd == 0)
        return finish_exchange(c);
    return progress;
}

/* ---- tunnels (after a 101, and TCP mode) --------------------------------- */

/* Reads one side of a tunnel: the client's (<from_client>) or the
 * upstream's. */
static enum step tunnel_read(struct client *c, bool from_client, struct buf **b, bool *readable,
                             bool *eof)
{
    if (!*readable || *eof)
        return STEP_BLOCKED;
    if (!ensure_buf(c, b)) {
        client_close(c);
        return STEP_CLOSED;
    }
    if (buf_space(*b) == 0 && (*b)->start == 0)
        return STEP_BLOCKED;
    ssize_t n = from_client ? client_recv(c, *b) : sock_read(c->up->fd, *b, readable);
    if (n == HTTP1_AGAIN) {
        *readable = false;
        return STEP_BLOCKED;
    }
    if (n < 0) {
        client_close(c);
        return STEP_CLOSED;
    }
    if (n == 0)
        *eof = true;
    c->last_activity = now_of(c);
    return STEP_PROGRESS;
}

static enum step on_tunnel(struct client *c)
{
    struct upstream *u = c->up;
    enum step progress = STEP_BLOCKED, s;

    s = tunnel_read(c, true, &c->in, &c->c_readable, &c->client_eof);
    if (s == STEP_CLOSED)
        return s;
    progress |= s;
    s = tunnel_read(c, false, &c->out, &c->u_readable, &c->up_eof);
    if (s == STEP_CLOSED)
        return s;
    progress |= s;

    c->in_fwd = c->in ? buf_len(c->in) : 0;
    c->out_fwd = c->out ? buf_len(c->out) : 0;
    if (head_pending(&c->req_head) || c->in_fwd) {
        ssize_t n = sock_send(u->fd, &c->req_head, c->in, &c->in_fwd);
        if (n < 0) {
            client_close(c);
            return STEP_CLOSED;
        }
        if (n > 0)
            progress = STEP_PROGRESS;
    }
    if (head_pending(&c->res_head) || c->out_fwd) {
        ssize_t n = client_send(c, &c->res_head, c->out, &c->out_fwd);
        if (n < 0) {
            client_close(c);
            return STEP_CLOSED;
        }
        if (n > 0) {
            c->bytes_out += (uint64_t)n;
            progress = STEP_PROGRESS;
        }
    }
    /* pass each half-close on once its side is flushed */
    if (c->client_eof && c->in_fwd == 0 && !c->up_shut) {
        shutdown(u->fd, SHUT_WR);
        c->up_shut = true;
    }
    if (c->up_eof && c->out_fwd == 0 && !head_pending(&c->res_head) && !c->client_shut) {
        client_shutdown_write(c);
        c->client_shut = true;
    }
    if (c->up_shut && c->client_shut) {
        client_close(c);
        return STEP_CLOSED;
    }
    return progress;
}

static enum step on_responding(struct client *c)
{
    ssize_t n = client_send(c, &c->res_head, NULL, NULL);
    if (n < 0) {
        client_close(c);
        return STEP_CLOSED;
    }
    if (head_pending(&c->res_head))
        return n > 0 ? STEP_PROGRESS : STEP_BLOCKED;
    c->bytes_out += c->res_head.len;
    return finish_exchange(c);
}

/* TCP mode: the whole connection is one exchange, tunnelled to a backend. */
static enum step start_tcp_session(struct client *c)
{
    c->started_at = now_of(c);
    c->req_body.done = true;
    return connect_upstream(c);
}

/* ---- TLS handshake ------------------------------------------------------- */

static enum step on_handshake(struct client *c)
{
    int rc = tls_handshake(c->ssl, &c->tls_read_want);
    if (rc == HTTP1_AGAIN)
        return STEP_BLOCKED;
    if (rc < 0) {
        log_debug("tls handshake failed", "client=%s listener=%s", c->peer, c->listener->name);
        client_close(c);
        return STEP_CLOSED;
    }
    c->tls_read_want = 0;
    c->c_readable = true; /* the first request may already sit decrypted in TLS */
    if (is_tcp_mode(c))
        return start_tcp_session(c);
    set_state(c, CLIENT_IDLE);
    return STEP_PROGRESS;
}

/* ---- the driver ---------------------------------------------------------- */

static void update_watchers(struct client *c)
{
    unsigned ce = 0, ue = 0;
    bool can_read_in = !c->in || buf_space(c->in) > 0 || c->in->start > 0;
    bool can_read_out = !c->out || buf_space(c->out) > 0 || c->out->start > 0;
    switch (c->state) {
    case CLIENT_TLS_HANDSHAKE:
        ce = c->tls_read_want ? c->tls_read_want : EV_READ;
        break;
    case CLIENT_IDLE:
    case CLIENT_READING_HEAD:
        if (can_read_in)
            ce |= EV_READ;
        break;
    case CLIENT_CONNECTING:
        ue |= EV_WRITE;
        break;
    case CLIENT_FORWARDING:
    case CLIENT_TUNNEL:
        if (!c->client_eof && can_read_in)
            ce |= EV_READ;
        if (head_pending(&c->res_head) || c->out_fwd > 0)
            ce |= EV_WRITE;
        if (!c->up_eof && can_read_out && !(c->state == CLIENT_FORWARDING && c->res_body.done))
            ue |= EV_READ;
        if (head_pending(&c->req_head) || c->in_fwd > 0)
            ue |= EV_WRITE;
        break;
    case CLIENT_RESPONDING:
        ce |= EV_WRITE;
        break;
    case CLIENT_CLOSED:
        return;
    }
    if (c->ssl && (ce & EV_READ) && c->tls_read_want == EV_WRITE)
        ce |= EV_WRITE; /* a TLS read waits for the socket to take a write */
    client_want(c, ce);
    if (c->up)
        upstream_want(c->up, ue);
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
    if ((revents & EV_READ) || (c->ssl && (revents & EV_WRITE) && c->tls_read_want == EV_WRITE))
        c->c_readable = true;
    drive(c);
}

/* The connect finished: check how, then start the exchange or the tunnel. */
static enum step on_connected(struct client *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->up->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err == EINPROGRESS || err == EALREADY)
        return STEP_BLOCKED;
    if (err != 0)
        return connect_failed(c, err);
    c->up->state = UPSTREAM_ACTIVE;
    set_state(c, is_tcp_mode(c) ? CLIENT_TUNNEL : CLIENT_FORWARDING);
    return STEP_PROGRESS;
}

void client_upstream_event(struct client *c, unsigned revents)
{
    if (c->state == CLIENT_CONNECTING) {
        if (on_connected(c) == STEP_CLOSED)
            return;
    } else if (revents & EV_READ) {
        c->u_readable = true;
    }
    drive(c);
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
    case CLIENT_TLS_HANDSHAKE:
    case CLIENT_IDLE:
    case CLIENT_TUNNEL:
    case CLIENT_RESPONDING:
        client_close(c);
        return;
    case CLIENT_READING_HEAD:
        s = respond_error(c, 408, "request head timeout", true);
        break;
    case CLIENT_CONNECTING:
        s = connect_failed(c, 0);
        break;
    case CLIENT_FORWARDING:
        if (c->response_started) {
            client_close(c);
            return;
        }
        s = respond_error(c, 504, "backend timeout", false);
        break;
    case CLIENT_CLOSED:
        return;
    }
    if (s != STEP_CLOSED)
        drive(c);
}

/* ---- accept and process drain -------------------------------------------- */

static void format_peer(char *out, size_t cap, const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)cap);
    else if (sa->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
    else
        snprintf(out, cap, "unix");
}

void client_accept(struct listener *l, int fd, const struct sockaddr_storage *sa)
{
    struct worker *w = l->w;
    struct client *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return;
    }
    c->w = w;
    c->listener = l;
    c->fd = fd;
    format_peer(c->peer, sizeof(c->peer), sa);
    ev_io_init(&c->io, client_io_cb, fd, 0);
    ev_timer_init(&c->timer, client_timeout_cb, 0., 0.);
    list_append(&w->clients, &c->link);
    worker_client_opened(w, c);

    if (l->tls_ctx) {
        c->ssl = tls_accept_new(l->tls_ctx, fd);
        if (!c->ssl) {
            client_close(c);
            return;
        }
        set_state(c, CLIENT_TLS_HANDSHAKE);
        drive(c);
        return;
    }
    if (is_tcp_mode(c)) {
        if (start_tcp_session(c) != STEP_CLOSED)
            update_watchers(c);
        return;
    }
    /* the request often arrives right behind the handshake: read before
     * paying for a wait */
    c->c_readable = true;
    set_state(c, CLIENT_IDLE);
    drive(c);
}

void client_shutdown_idle(struct client *c)
{
    if (c->state == CLIENT_IDLE && c->requests > 0) {
        client_close(c);
        return;
    }
    c->keep_alive = false;
    if (c->state == CLIENT_IDLE)
        arm_timer(c); /* its deadline just became the first-request grace */
}
