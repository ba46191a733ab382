/* The HTTP/1.1 mux (see mux_h1.h): the connection reads a request head,
 * hands the request to its one exchange (c->x), and when the exchange is
 * done decides what the connection does next — the next (maybe already
 * pipelined) request, a plain close, or the lingering close. Only the step
 * functions of h1_drive() change c->state; the exchange's steps run as
 * rounds of the same loop. The exchange reaches the client through
 * h1_exchange_ops: heads rebuilt as HTTP/1.1 text and bytes written on the
 * client's socket (or spliced to it). */
#include "mux_h1.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>

#include <openssl/ssl.h>

#include "../net/net.h"
#include "../../parser/http1.h"
#include "conn.h"
#include "exchange.h"
#include "headers.h"
#include "mux_h2.h"

/* Bound on state-machine rounds per event, so one busy connection cannot
 * starve the others (memcached's reqs_per_event): 8 rounds of up to 64 KiB.
 * Measured on 1 MB responses to 10 clients: 16 rounds doubled p99 (20 ms vs
 * 9-12 ms) for no throughput gain, 4 rounds cost 10% throughput. */
#define MAX_DRIVE_ROUNDS 8

/* The HTTP/2 client connection preface (RFC 9113 3.4), which the HTTP/1.1
 * parser would answer 505. */
#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN (sizeof(H2_PREFACE) - 1)

/* While draining, a connection that has not sent its first request yet is
 * not idle keep-alive: its client was just told "connected" and its request
 * is likely on the wire. It gets this long to send it. */
#define FIRST_REQUEST_GRACE_S 1.0

static void h1_drive(struct client *c);
static const struct mux_ops h1_mux;

static ev_tstamp now_of(const struct client *c)
{
    return ev_now(c->w->loop);
}

/* ---- buffers --------------------------------------------------------------- */

/* Gives back a request buffer holding nothing, so an idle connection costs
 * no buffer (the exchange gives its response buffer back when it ends). */
static void release_empty_buf(struct client *c)
{
    if (c->down.buf && buf_len(c->down.buf) == 0) {
        buf_put(&c->w->bufs_in, c->down.buf);
        c->down.buf = NULL;
    }
}

/* Bytes waiting in the client's receive buffer (0 if none or unknown). */
static int bytes_waiting(const struct client *c)
{
    int n = 0;
    if (ioctl(c->down.fd, FIONREAD, &n) < 0)
        return 0;
    return n;
}

/* ---- closing --------------------------------------------------------------- */

/* The connection is done: the exchange lets go (counted, logged if it was
 * in progress), then the lingering close. */
static enum step finish_connection(struct client *c)
{
    exchange_abort(&c->x);
    return conn_finish(c);
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

/* ---- the exchange's view of the connection (struct exchange_ops) ---------- */

/* More of the request body, a pipelined request, or the client's EOF. */
static enum step h1x_request_pull(struct exchange *x)
{
    struct client *c = x->c;
    struct side *d = &c->down;
    if (!d->readable || d->eof)
        return STEP_BLOCKED;
    if (!side_ensure_buf(d, &c->w->bufs_in))
        return x->ops->abort(x);
    if (!side_can_read(d))
        return STEP_BLOCKED;
    ssize_t n = side_recv(d);
    if (n == NET_AGAIN) {
        d->readable = false;
        return STEP_BLOCKED;
    }
    if (n <= 0) {
        d->eof = true;
        if (!x->req_body.done || n < 0)
            return x->ops->abort(x); /* the client gave up on its request */
        return STEP_BLOCKED;
    }
    x->last_activity = now_of(c);
    size_t framed = x->in_fwd;
    if (body_frame(&x->req_body, d->buf, &x->in_fwd) < 0)
        return exchange_respond_error(x, 400, x->req_body.chunked.error_reason, true);
    x->bytes_in += x->in_fwd - framed;
    return STEP_PROGRESS;
}

/* 100 Continue, 103 Early Hints: relayed to HTTP/1.1 clients as they came
 * (whole messages kept at the front of res_head: an error may follow). */
static int h1x_response_interim(struct exchange *x, const struct http1_response *res)
{
    if (x->req_minor >= 1 &&
        hbuf_append(&x->res_head, buf_head(x->up.buf), res->msg.head_len) < 0)
        return -1;
    x->interim_len = x->res_head.len;
    return 0;
}

static enum response_conn response_conn_for(const struct exchange *x)
{
    if (!x->keep_alive || conn_closing(x->c))
        return RESPONSE_CONN_CLOSE;
    return x->req_minor == 0 ? RESPONSE_CONN_KEEP_ALIVE_10 : RESPONSE_CONN_KEEP_ALIVE;
}

static int h1x_response_head(struct exchange *x, const struct http1_response *res, bool *dechunk)
{
    enum response_conn conn = RESPONSE_CONN_UPGRADE;
    if (res->status != 101) {
        /* an answer before the whole request went up ends the connection:
         * the rest of the request body cannot be told from the next request;
         * a body without length (until close, or de-chunked for HTTP/1.0)
         * can only end with the connection */
        *dechunk = res->msg.framing == HTTP1_BODY_CHUNKED && x->req_minor == 0;
        if (!x->req_body.done || res->msg.framing == HTTP1_BODY_UNTIL_CLOSE || *dechunk)
            x->keep_alive = false;
        conn = response_conn_for(x);
    }
    return headers_build_response(&x->res_head, res, conn, *dechunk);
}

/* The connection stays open only if the request was read completely and
 * <close> is false. */
static int h1x_response_error(struct exchange *x, int status, const char *detail, bool close)
{
    struct client *c = x->c;
    if (!x->req_body.done || conn_closing(c))
        close = true;
    if (!close && c->down.buf) {
        buf_consume(c->down.buf, x->in_fwd); /* the unsent body of this request */
        x->in_fwd = 0;
    }
    if (close)
        x->keep_alive = false;
    if (x->interim_len == 0)
        hbuf_reset(&x->res_head);
    else
        x->res_head.len = x->interim_len; /* the relayed interim responses stay */
    return headers_build_error(&x->res_head, status, detail, !x->keep_alive,
                               x->method == HTTP1_METHOD_HEAD);
}

static bool h1x_response_push(struct exchange *x, enum step *progress)
{
    struct side *d = &x->c->down;
    if ((hbuf_pending(&x->res_head) || x->out_fwd > 0) &&
        !exchange_response_sent(x, side_send(d, &x->res_head, x->up.buf, &x->out_fwd),
                                progress))
        return false;
    if (x->pipe.len > 0 && !exchange_response_sent(x, d->tp->splice_out(d, &x->pipe), progress))
        return false;
    return true;
}

/* The response is complete: the next request, or the end of the
 * connection. */
static enum step h1x_done(struct exchange *x)
{
    struct client *c = x->c;
    bool req_done = exchange_request_sent(x);
    if (req_done && x->close_asked && quiet_close(c)) {
        conn_close(c);
        return STEP_CLOSED;
    }
    if (!req_done || !x->keep_alive)
        return finish_connection(c);
    exchange_reset(x);
    release_empty_buf(c);
    conn_set_state(c, CLIENT_IDLE);
    /* a drain began after this response said keep-alive: the connection is
     * idle now and gets the drain's idle close (a pipelined request already
     * here is served first, with Connection: close) */
    if (c->idle_close_at > 0 && c->idle_close_at <= now_of(c) &&
        (!c->down.buf || buf_len(c->down.buf) == 0))
        return finish_connection(c);
    return STEP_PROGRESS; /* a pipelined request may already be buffered */
}

static enum step h1x_abort(struct exchange *x)
{
    conn_close(x->c);
    return STEP_CLOSED;
}

static void h1x_wake(struct exchange *x)
{
    h1_drive(x->c);
}

static bool h1x_can_splice(const struct exchange *x)
{
    return x->c->down.tp->splice_out != NULL;
}

static const struct exchange_ops h1_exchange_ops = {
    .request_pull = h1x_request_pull,
    .response_interim = h1x_response_interim,
    .response_head = h1x_response_head,
    .response_error = h1x_response_error,
    .response_push = h1x_response_push,
    .done = h1x_done,
    .abort = h1x_abort,
    .wake = h1x_wake,
    .can_splice = h1x_can_splice,
};

/* ---- request heads --------------------------------------------------------- */

/* An exchange takes over the connection. */
static void enter_exchange(struct client *c)
{
    c->state = CLIENT_EXCHANGE; /* no deadline of the connection's own: the exchange has its own */
}

/* Answers with an error before any exchange started (a head that did not
 * parse, or timed out). */
static enum step respond(struct client *c, int status, const char *reason, bool close)
{
    enter_exchange(c);
    return exchange_respond_error(&c->x, status, reason, close);
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

/* Only a WebSocket upgrade reaches a backend: an h2c upgrade passed
 * through a proxy is a known smuggling path, and usher takes none up
 * itself (DESIGN "HTTP/2 and gRPC"); any other Upgrade is dropped like the
 * hop-by-hop field it is. */
static void take_upgrade(struct exchange *x, const struct http1_message *m)
{
    if (m->minor_version != 1 || !(m->flags & HTTP1_F_HAS_UPGRADE) ||
        !(m->flags & HTTP1_F_CONN_UPGRADE))
        return;
    char proto[UPGRADE_MAX];
    upgrade_protocol(proto, sizeof(proto), m->upgrade);
    if (strcasecmp(proto, "websocket") != 0)
        return;
    x->upgrading = true;
    if ((x->upgrade = malloc(UPGRADE_MAX)))
        memcpy(x->upgrade, proto, sizeof(proto));
}

static enum step start_request(struct client *c, struct http1_request *req)
{
    struct exchange *x = &c->x;
    const struct http1_message *m = &req->msg;
    struct buf *in = c->down.buf;
    c->requests++;
    enter_exchange(c);
    x->started_at = now_of(c);
    x->method = req->method_id;
    x->req_minor = (unsigned char)m->minor_version;
    x->keep_alive = (m->flags & HTTP1_F_KEEP_ALIVE) && !conn_closing(c);
    x->close_asked = !(m->flags & HTTP1_F_KEEP_ALIVE);
    take_upgrade(x, m);
    x->bytes_in = m->head_len;
    if (c->w->conf->log.access && (x->log = calloc(1, sizeof(*x->log)))) {
        struct exchange_log *xl = x->log;
        copy_for_log(xl->method, sizeof(xl->method), req->method);
        copy_for_log(xl->path, sizeof(xl->path), req->target);
        copy_for_log(xl->host, sizeof(xl->host), req->host);
        const struct http1_header *ua = header_named(m, "user-agent");
        if (ua)
            copy_for_log(xl->user_agent, sizeof(xl->user_agent), ua->value);
    }
    body_start(&x->req_body, m, false);

    struct http1_slice rid = {NULL, 0};
    if (req->method_id == HTTP1_METHOD_CONNECT) {
        /* no head is rebuilt for an answer of usher's own */
        if (x->log) { /* the id is for the access log only */
            if (headers_request_id(m, &rid) && rid.len <= REQUEST_ID_MAX)
                copy_for_log(x->log->request_id, sizeof(x->log->request_id), rid);
            else
                exchange_new_request_id(x);
        }
        buf_consume(in, m->head_len);
        return exchange_respond_error(x, 501, "CONNECT is not supported", true);
    }

    struct forward_info fi = {
        .client_addr = c->peer,
        .proto = c->listener->tls ? "https" : "http",
        .upgrade = x->upgrading,
        .request_id_max = REQUEST_ID_MAX,
        .request_id_out = &rid,
        .new_request_id = exchange_new_request_id,
        .ctx = x,
    };
    if (headers_build_request(&x->req_head, req, &fi) < 0) {
        conn_close(c);
        return STEP_CLOSED;
    }
    if (rid.len && x->log && rid.ptr != x->log->request_id)
        copy_for_log(x->log->request_id, sizeof(x->log->request_id), rid);
    /* the head was rebuilt: its bytes in the buffer are no longer needed */
    buf_consume(in, m->head_len);
    x->in_fwd = 0;
    if (body_frame(&x->req_body, in, &x->in_fwd) < 0)
        return exchange_respond_error(x, 400, x->req_body.chunked.error_reason, true);
    x->bytes_in += x->in_fwd;
    return exchange_start(x);
}

/* Part of a head is here: its deadline (client_header) runs from its first
 * byte. A head that arrives whole in one read never gets here, and costs no
 * timer update. */
static void head_pending_more(struct client *c)
{
    if (c->state != CLIENT_IDLE)
        return;
    if (c->requests > 0)
        c->head_started_at = now_of(c);
    conn_set_state(c, CLIENT_READING_HEAD);
}

static enum step on_head(struct client *c)
{
    enum step progress = STEP_BLOCKED;
    bool new_line = c->state == CLIENT_IDLE; /* pipelined bytes: parse them */
    struct side *d = &c->down;
    if (d->readable && !d->eof) {
        if (!side_ensure_buf(d, &c->w->bufs_in)) {
            conn_close(c);
            return STEP_CLOSED;
        }
        ssize_t n = side_can_read(d) ? side_recv(d) : NET_AGAIN;
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
            conn_close(c);
            return STEP_CLOSED;
        } else {
            c->last_activity = now_of(c);
            progress = STEP_PROGRESS;
        }
    }
    if (!d->buf || buf_len(d->buf) == 0) {
        release_empty_buf(c);
        if (d->eof) {
            conn_close(c); /* half-closed and every request answered */
            return STEP_CLOSED;
        }
        return progress;
    }

    if (c->requests == 0 && c->listener->http2 && !c->down.ssl && buf_head(d->buf)[0] == 'P') {
        /* h2c with prior knowledge (RFC 9113 3.3): the preface decides */
        size_t n = buf_len(d->buf) < H2_PREFACE_LEN ? buf_len(d->buf) : H2_PREFACE_LEN;
        if (memcmp(buf_head(d->buf), H2_PREFACE, n) == 0) {
            if (n == H2_PREFACE_LEN) {
                mux_h2_start(c);
                return STEP_CLOSED; /* no longer this mux's */
            }
            if (!d->eof) {
                head_pending_more(c);
                return progress;
            }
        }
    }
    if (!new_line && buf_len(d->buf) < d->buf->cap && !d->eof) {
        head_pending_more(c);
        return progress;
    }

    struct http1_request req;
    memset(&req, 0, sizeof(req));
    req.msg.headers = c->w->headers;
    int rc = http1_parse_request(buf_head(d->buf), buf_len(d->buf), &c->w->limits, &req);
    if (rc == HTTP1_OK)
        return start_request(c, &req);
    if (rc == HTTP1_ERROR)
        return respond(c, req.msg.error_status, req.msg.error_reason, true);
    if (buf_len(d->buf) >= d->buf->cap)
        return respond(c, 431, "request head too large", true);
    if (d->eof) {
        conn_close(c);
        return STEP_CLOSED;
    }
    head_pending_more(c);
    return progress;
}

/* ---- the driver ---------------------------------------------------------- */

static void update_watchers(struct client *c)
{
    unsigned ce = 0;
    switch (c->state) {
    case CLIENT_IDLE:
    case CLIENT_READING_HEAD:
        if (side_can_read(&c->down))
            ce |= EV_READ;
        /* h1_drive() hit MAX_DRIVE_ROUNDS right as an exchange ended, with
         * the next (pipelined) request already buffered: no read event will
         * come for it, so a write event (the socket takes writes) brings
         * the connection back next iteration, after the others */
        if (c->state == CLIENT_IDLE && c->down.buf && buf_len(c->down.buf) > 0)
            ce |= EV_WRITE;
        break;
    case CLIENT_EXCHANGE:
        ce = exchange_watch(&c->x);
        break;
    case CLIENT_LINGERING:
        ce |= EV_READ;
        break;
    default:
        return;
    }
    if (c->down.ssl && (ce & EV_READ) && c->down.tls_want == EV_WRITE)
        ce |= EV_WRITE; /* a TLS read waits for the socket to take a write */
    conn_want(c, ce);
}

static void h1_drive(struct client *c)
{
    for (int round = 0; round < MAX_DRIVE_ROUNDS; round++) {
        enum step s = STEP_BLOCKED;
        switch (c->state) {
        case CLIENT_IDLE:
        case CLIENT_READING_HEAD:
            s = on_head(c);
            break;
        case CLIENT_EXCHANGE:
            s = exchange_step(&c->x);
            break;
        case CLIENT_LINGERING:
            s = conn_on_lingering(c);
            break;
        default:
            return; /* closed, or no longer HTTP/1.1 */
        }
        if (s == STEP_CLOSED)
            return;
        if (s == STEP_BLOCKED)
            break;
    }
    update_watchers(c);
}

/* ---- the connection's deadline and the drain ----------------------------- */

static ev_tstamp h1_deadline(const struct client *c)
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
    default:
        return NO_DEADLINE; /* an exchange in progress keeps its own */
    }
}

static void h1_timeout(struct client *c)
{
    enum step s;
    switch (c->state) {
    case CLIENT_IDLE:
        s = finish_connection(c);
        break;
    case CLIENT_READING_HEAD:
        s = respond(c, 408, "request head timeout", true);
        break;
    default:
        return;
    }
    if (s != STEP_CLOSED)
        h1_drive(c);
}

static void h1_shutdown_idle(struct client *c, ev_tstamp close_at)
{
    if (c->state != CLIENT_IDLE) {
        if (!c->x.response_started) {
            c->x.keep_alive = false; /* the request in progress is answered with Connection: close */
            return;
        }
        /* its response already told the client the connection stays: closing
         * after it would fail the client's next request. It is handled as an
         * idle one once the exchange ends. */
        c->idle_close_at = close_at > 0 ? close_at : now_of(c);
        return;
    }
    if (c->requests == 0) {
        conn_arm_timer(c); /* its deadline just became the first-request grace */
        return;
    }
    /* a request that already arrived is served (with Connection: close, as
     * conn_closing now says); only a connection with nothing to read goes */
    if (bytes_waiting(c) > 0 || (c->down.ssl && SSL_pending(c->down.ssl) > 0)) {
        c->down.readable = true;
        h1_drive(c);
        return;
    }
    if (close_at > now_of(c)) {
        /* closed by its timer at <close_at> (close spreading), or by its
         * next response (after_request); a request meanwhile is served */
        c->idle_close_at = close_at;
        conn_arm_timer(c);
        return;
    }
    if (finish_connection(c) != STEP_CLOSED)
        update_watchers(c);
}

static void h1_tunnel_deadline(struct client *c, ev_tstamp deadline)
{
    if (c->state == CLIENT_EXCHANGE && exchange_tunnel_deadline(&c->x, deadline))
        h1_drive(c);
}

static bool h1_is_idle(const struct client *c)
{
    return c->state == CLIENT_IDLE;
}

static void h1_release(struct client *c)
{
    exchange_abort(&c->x);
    exchange_reset(&c->x);
}

static void h1_free(struct client *c)
{
}

static const struct mux_ops h1_mux = {
    .drive = h1_drive,
    .deadline = h1_deadline,
    .timeout = h1_timeout,
    .shutdown_idle = h1_shutdown_idle,
    .tunnel_deadline = h1_tunnel_deadline,
    .is_idle = h1_is_idle,
    .release = h1_release,
    .free = h1_free,
};

void mux_h1_start(struct client *c)
{
    c->mux = &h1_mux;
    exchange_init(&c->x, c, &h1_exchange_ops, &c->down);
    /* the request often arrives right behind the handshake: read before
     * paying for a wait */
    c->down.readable = true;
    conn_set_state(c, CLIENT_IDLE);
    h1_drive(c);
}

void mux_h1_start_tcp(struct client *c)
{
    c->mux = &h1_mux;
    exchange_init(&c->x, c, &h1_exchange_ops, &c->down);
    enter_exchange(c);
    if (exchange_start_tunnel(&c->x) != STEP_CLOSED)
        update_watchers(c);
}

bool mux_h1_between_requests(const struct client *c)
{
    return c->mux == &h1_mux && c->state == CLIENT_IDLE && c->requests > 0;
}
