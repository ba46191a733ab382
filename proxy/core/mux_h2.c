/* The HTTP/2 mux (see mux_h2.h), on nghttp2 driven through its memory
 * API, as nghttpx drives it on libev: bytes read from the client's socket
 * go to nghttp2_session_mem_recv, frames nghttp2_session_mem_send gives
 * back are gathered in one output buffer and written (one TLS record for
 * many frames). Each stream is a struct h2s holding one exchange; the
 * exchange reaches its client through h2_exchange_ops: its response head
 * becomes HEADERS, its body DATA pulled by nghttp2 as the stream's window
 * allows, its trailers trailing HEADERS.
 *
 * nghttp2 calls back only from inside mem_recv and mem_send. Those
 * callbacks change stream flags and queue streams; exchanges are started,
 * driven and finished only at the connection's safe point (pump), after
 * the nghttp2 call returned, so no exchange ever runs inside nghttp2 and
 * a HEADERS reset in the same read never reaches a backend.
 *
 * Flow control is the backpressure: a stream's receive window is opened
 * only as its backend takes the bytes (no automatic WINDOW_UPDATE), and
 * its response DATA is pulled only when the client's window and usher's
 * output buffer have room, so memory per connection is bounded by the
 * windows and buffers, never by a body. */
#include "mux_h2.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "../net/net.h"
#include "../../parser/http1.h"
#include "../base/log.h"
#include "../base/prng.h"
#include "conn.h"
#include "exchange.h"
#include "grpc.h"
#include "h2conf.h"
#include "headers.h"

/* Reads per socket event, 16 KiB each: bounded so one busy connection
 * cannot starve the others (as MAX_DRIVE_ROUNDS for HTTP/1.1). */
#define H2_READ_ROUNDS 4

/* Rounds of one stream's exchange per turn, as MAX_DRIVE_ROUNDS for an
 * HTTP/1.1 connection (mux_h1.c), so one stream cannot starve the others. */
#define MAX_STREAM_ROUNDS 8

/* Rounds of "drive the queued streams, write" per event: a stream driven
 * may queue more output, and written output may let more streams go. */
#define H2_PUMP_ROUNDS 4

/* Frames are serialized while less than this waits to be written: 64 KiB
 * (what HTTP/1.1 holds per response buffer); a client that does not read
 * stops its streams' DATA, and then its own input is not read either (its
 * PINGs and SETTINGS would only queue more acknowledgements). */
#define H2_OUT_SOFT_LIMIT (64u * 1024u)

/* Each stream's receive window: RFC 9113's initial 65,535, which a client
 * may use before it has seen usher's SETTINGS anyway. A stream's request
 * body is read into a response-side buffer (BUF_OUT_SIZE_MIN, 64 KiB), so
 * a client can never send a stream more than its buffer holds; the
 * connection's window covers every stream at once. */
#define H2_STREAM_WINDOW 65535

/* RFC 9113 6.8: the final GOAWAY follows at least one round trip after
 * the first; usher waits for the PING's acknowledgement, or this long
 * (h2o's fixed 1 s). */
#define H2_DRAIN_PING_TIMEOUT_S 1.0

/* The first GOAWAY of a drain names the largest stream id (RFC 9113 6.8). */
#define H2_MAX_STREAM_ID 0x7fffffff

/* Frames that cost usher work and carry no request — PING, SETTINGS,
 * PRIORITY, empty DATA without END_STREAM (CVE-2019-9512, -9515, -9518) —
 * take a token each from a bucket of this many, refilled at this rate per
 * second; an empty bucket is a flood: GOAWAY ENHANCE_YOUR_CALM. A browser
 * sends a handful (SETTINGS, a PING or two); gRPC keepalive one PING per
 * ten seconds or more. */
#define H2_FLOOD_BURST 200.0
#define H2_FLOOD_RATE 50.0

/* Streams the client resets before their response ended (CVE-2023-44487,
 * rapid reset) take a token each from a bucket of this many times
 * h2_max_streams, refilled at h2_max_streams per second: a client that
 * cancels every stream it may have open, twice over, at once, is cut. */
#define H2_RESET_BURST_STREAMS 2.0

/* nghttp2 answers a stream beyond its own concurrency limit with a
 * connection error (PROTOCOL_ERROR) once its SETTINGS were acknowledged;
 * DESIGN wants REFUSED_STREAM. So nghttp2 is given this many more streams
 * than h2_max_streams, the client is told h2_max_streams (see
 * patch_settings), and usher refuses the streams past it itself. A client
 * that opens this many more than it was allowed within one read gets
 * nghttp2's GOAWAY. */
#define H2_STREAMS_SLACK 256

/* A gRPC request whose header block goes past max_head_bytes is answered
 * RESOURCE_EXHAUSTED (DESIGN "gRPC"), its fields no longer kept, up to
 * this many times the limit; beyond it the block is an HPACK bomb, and the
 * connection is cut as for any other request. */
#define H2_GRPC_OVERSIZE_FACTOR 4

enum h2c_state {
    H2C_OPEN = 1,     /* serving streams */
    H2C_DRAIN_NOTICE, /* GOAWAY(2^31-1) and a PING sent: the final GOAWAY at the ack or after 1 s */
    H2C_DRAIN_FINAL,  /* the final GOAWAY sent (the last stream usher accepted): closes after the
                         last stream */
    H2C_FAILED,       /* a GOAWAY for an error queued: closes once it went out */
};

enum h2s_state {
    H2S_HEADERS = 1, /* its header block is arriving */
    H2S_READY,       /* headers complete: its exchange starts at the next safe point */
    H2S_EXCHANGE,    /* its exchange runs */
    H2S_ANSWERED,    /* its exchange ended: the response is nghttp2's to finish sending */
};

/* A token bucket (flood and reset limits). */
struct h2_bucket {
    double tokens;
    ev_tstamp at;
};

struct h2c;

/* One stream: its exchange, and what the stream needs around it. */
struct h2s {
    struct exchange x; /* first: exchange_ops get back to the stream from it */
    struct h2c *h;
    int32_t id;
    enum h2s_state state;
    struct side in;        /* the request body: DATA waiting for the backend (fd -1), in a
                              buffer of worker->bufs_out (H2_STREAM_WINDOW) */
    size_t in_accounted;   /* bytes of in.buf the window was not given back for yet */
    bool end_stream;       /* the client's END_STREAM arrived */
    bool no_body;          /* ... on its request HEADERS: a request without a body */
    bool chunked;          /* the body goes up chunked (no content-length) */
    bool chunk_open;       /* a chunk went up: its CRLF comes before the next */
    bool discard;          /* the request body is no longer wanted: consumed as it comes */
    bool deferred;         /* the data provider waits for bytes (resume it) */
    bool body_from_head;   /* the response body is usher's own, in x.res_head */
    bool closed;           /* nghttp2 closed the stream */
    bool queued;           /* on h->pending */
    bool too_many_fields;  /* more than max_headers fields: 431 */
    bool too_large;        /* a gRPC request's block past max_head_bytes: 431 */
    bool grpc;             /* its content-type is gRPC's (seen among its fields) */
    size_t head_bytes;     /* RFC 9113 6.5.2 size of its header blocks so far */
    unsigned nfields;
    struct hbuf fields;    /* the request's header block, "name\0value\0" pairs */
    struct hbuf *req_trailers; /* chunked upload: trailer lines for the last chunk */
    struct list link;      /* h->streams, then h->dead */
    struct list pending;   /* h->pending */
};

struct h2c {
    struct client *c;
    nghttp2_session *session;
    enum h2c_state state;
    enum h2_goaway_reason drain_reason; /* the drain's first GOAWAY counts as this */
    struct hbuf out;        /* frames serialized, not yet written */
    bool settings_patched;  /* the first SETTINGS went out with h2_max_streams */
    unsigned max_streams;   /* h2_max_streams when the connection started */
    unsigned open;          /* streams usher holds (not closed by nghttp2) */
    unsigned active;        /* streams whose exchange runs */
    ev_tstamp notice_at;    /* H2C_DRAIN_NOTICE: when the first GOAWAY went */
    ev_tstamp gone_at;      /* DRAIN_FINAL, FAILED: since when */
    ev_tstamp drain_at;     /* a close_spread slot for the first GOAWAY (0: none) */
    ev_tstamp head_started_at; /* a header block in progress since (0: none) */
    uint8_t ping[8];        /* the drain's PING payload */
    bool goaway_counted;    /* fail() counted the GOAWAY it queued */
    struct h2_bucket flood, resets;
    struct list streams;
    struct list pending; /* streams to start or drive at the next safe point */
    struct list dead;    /* streams nghttp2 closed, freed at the end of the safe point */
};

static const struct mux_ops h2_mux;
static const struct exchange_ops h2_exchange_ops;
static void pump(struct h2c *h);

const char *h2_goaway_reason_str(enum h2_goaway_reason r)
{
    switch (r) {
    case H2_GOAWAY_DRAIN:
        return "drain";
    case H2_GOAWAY_IDLE:
        return "idle";
    case H2_GOAWAY_ENHANCE_YOUR_CALM:
        return "enhance_your_calm";
    case H2_GOAWAY_PROTOCOL_ERROR:
        return "protocol_error";
    case H2_GOAWAY_INTERNAL_ERROR:
        return "internal_error";
    case H2_GOAWAY_REASONS:
        break;
    }
    return "unknown";
}

static const char *h2c_state_str(enum h2c_state s)
{
    switch (s) {
    case H2C_OPEN:
        return "open";
    case H2C_DRAIN_NOTICE:
        return "drain_notice";
    case H2C_DRAIN_FINAL:
        return "drain_final";
    case H2C_FAILED:
        return "failed";
    }
    return "unknown";
}

static ev_tstamp now_of(const struct h2c *h)
{
    return ev_now(h->c->w->loop);
}

static struct h2s *stream_of(const struct exchange *x)
{
    return container_of(x, struct h2s, x);
}

static void queue(struct h2s *s)
{
    if (s->queued)
        return;
    s->queued = true;
    list_append(&s->h->pending, &s->pending);
}

/* Takes a token; false when the bucket is empty. */
static bool bucket_take(struct h2_bucket *b, double burst, double rate, ev_tstamp now)
{
    b->tokens += (now - b->at) * rate;
    if (b->tokens > burst)
        b->tokens = burst;
    b->at = now;
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

static enum h2_goaway_reason reason_of_code(uint32_t code)
{
    switch (code) {
    case NGHTTP2_NO_ERROR:
        return H2_GOAWAY_DRAIN;
    case NGHTTP2_ENHANCE_YOUR_CALM:
        return H2_GOAWAY_ENHANCE_YOUR_CALM;
    case NGHTTP2_INTERNAL_ERROR:
        return H2_GOAWAY_INTERNAL_ERROR;
    default:
        return H2_GOAWAY_PROTOCOL_ERROR;
    }
}

/* ---- the connection's end: drain in two steps, or fail ------------------- */

/* The first step of the drain (RFC 9113 6.8): GOAWAY with the largest
 * stream id, so the client opens no new stream but every one it already
 * sent is served, then a PING whose acknowledgement proves it has seen it.
 * nghttp2 sends a PING ahead of everything else, so the PING is submitted
 * only once the GOAWAY went out (on_frame_send): an acknowledgement that
 * could come from a client yet to read the GOAWAY would prove nothing. */
static void drain_begin(struct h2c *h, enum h2_goaway_reason why)
{
    if (h->state != H2C_OPEN)
        return;
    if (nghttp2_submit_shutdown_notice(h->session) != 0) {
        nghttp2_session_terminate_session(h->session, NGHTTP2_INTERNAL_ERROR);
        h->state = H2C_FAILED;
        h->gone_at = now_of(h);
        return;
    }
    h->drain_reason = why;
    h->state = H2C_DRAIN_NOTICE;
    h->notice_at = now_of(h);
    h->drain_at = 0;
    conn_arm_timer(h->c);
    log_debug("h2 drain notice", "client=%s listener=%s reason=%s streams=%u", h->c->peer,
              h->c->listener->name, h2_goaway_reason_str(why), h->open);
}

/* Where HTTP/1.1 decides its Connection: close — a request taken, a
 * response head built — an HTTP/2 connection of a draining process (or of
 * a listener a reload removed) begins its drain. */
static void drain_if_closing(struct h2c *h)
{
    if (h->state == H2C_OPEN && conn_closing(h->c))
        drain_begin(h, H2_GOAWAY_DRAIN);
}

/* The second step: the last stream usher accepted; every stream up to it
 * is answered, the connection closes after the last one (pump). */
static void drain_final(struct h2c *h)
{
    if (h->state != H2C_DRAIN_NOTICE)
        return;
    int32_t last = nghttp2_session_get_last_proc_stream_id(h->session);
    if (nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0) !=
        0) {
        nghttp2_session_terminate_session(h->session, NGHTTP2_INTERNAL_ERROR);
        h->state = H2C_FAILED;
        h->gone_at = now_of(h);
        return;
    }
    h->state = H2C_DRAIN_FINAL;
    h->gone_at = now_of(h);
    log_debug("h2 drain final", "client=%s last_stream_id=%d streams=%u", h->c->peer, (int)last,
              h->open);
}

/* A protocol error or abuse: GOAWAY with <code> (nghttp2 stops reading
 * new frames), then the connection closes once it went out. */
static void fail(struct h2c *h, uint32_t code, const char *why)
{
    if (h->state == H2C_FAILED)
        return;
    /* a connection that never asked anything is closed quietly, as an
     * HTTP/1.1 one would be */
    log_kv(code == NGHTTP2_NO_ERROR ? CONF_LOG_DEBUG : CONF_LOG_WARN, "h2 connection closed",
           LOG_STR("client", h->c->peer), LOG_STR("listener", h->c->listener->name),
           LOG_STR("reason", why), LOG_STR("error", nghttp2_http2_strerror(code)));
    nghttp2_session_terminate_session(h->session, code);
    h->c->w->h2_goaway[code == NGHTTP2_NO_ERROR ? H2_GOAWAY_IDLE : reason_of_code(code)]++;
    h->goaway_counted = true;
    h->state = H2C_FAILED;
    h->gone_at = now_of(h);
}

/* nghttp2 failed for good (a flood it detected, too many CONTINUATION
 * frames, memory): the session is unusable, so the GOAWAY is written by
 * hand behind what was already queued (best effort), and the connection
 * closes. */
static void fail_fatal(struct h2c *h, int lib_error)
{
    uint32_t code = lib_error == NGHTTP2_ERR_FLOODED || lib_error == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS
                        ? NGHTTP2_ENHANCE_YOUR_CALM
                    : lib_error == NGHTTP2_ERR_NOMEM || lib_error == NGHTTP2_ERR_CALLBACK_FAILURE
                        ? NGHTTP2_INTERNAL_ERROR
                        : NGHTTP2_PROTOCOL_ERROR;
    struct client *c = h->c;
    log_kv(CONF_LOG_WARN, "h2 connection closed", LOG_STR("client", c->peer),
           LOG_STR("listener", c->listener->name), LOG_STR("reason", nghttp2_strerror(lib_error)),
           LOG_STR("error", nghttp2_http2_strerror(code)));
    if (lib_error != NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
        int32_t last = nghttp2_session_get_last_proc_stream_id(h->session);
        uint8_t f[17] = {0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0};
        for (int i = 0; i < 4; i++) {
            f[9 + i] = (uint8_t)((uint32_t)last >> (24 - 8 * i));
            f[13 + i] = (uint8_t)(code >> (24 - 8 * i));
        }
        hbuf_append(&h->out, (const char *)f, sizeof(f));
        c->w->h2_goaway[reason_of_code(code)]++;
        side_send(&c->down, &h->out, NULL, NULL);
    }
    h->state = H2C_FAILED;
    if (conn_finish(c) != STEP_CLOSED)
        conn_want(c, EV_READ);
}

/* ---- streams ------------------------------------------------------------- */

static struct h2s *stream_new(struct h2c *h, int32_t id)
{
    struct h2s *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->h = h;
    s->id = id;
    s->state = H2S_HEADERS;
    side_attach(&s->in, -1, &transport_plain);
    exchange_init(&s->x, h->c, &h2_exchange_ops, &s->in);
    list_append(&h->streams, &s->link);
    list_init(&s->pending);
    h->open++;
    return s;
}

/* Gives the window back for the request bytes the backend took since the
 * last call (they left in.buf). */
static void window_give_back(struct h2s *s)
{
    size_t len = s->in.buf ? buf_len(s->in.buf) : 0;
    if (s->in_accounted <= len)
        return;
    if (!s->closed)
        nghttp2_session_consume(s->h->session, s->id, s->in_accounted - len);
    s->in_accounted = len;
}

/* The request body is no longer wanted (answered, reset): what is buffered
 * goes, its window back to the client, and what comes is dropped. */
static void discard_body(struct h2s *s)
{
    s->discard = true;
    if (s->in.buf)
        buf_consume(s->in.buf, buf_len(s->in.buf));
    window_give_back(s);
    buf_put(&s->h->c->w->bufs_out, s->in.buf);
    s->in.buf = NULL;
    s->x.in_fwd = 0;
}

/* The exchange of <s> is over (answered, or cut): the stream's counts. */
static void exchange_ended(struct h2s *s)
{
    if (s->state != H2S_EXCHANGE)
        return;
    s->state = H2S_ANSWERED;
    s->h->active--;
    s->h->c->w->h2_streams--;
}

static void stream_free(struct h2s *s)
{
    exchange_abort(&s->x);
    exchange_reset(&s->x);
    buf_put(&s->h->c->w->bufs_out, s->in.buf);
    hbuf_free(&s->fields);
    if (s->req_trailers) {
        hbuf_free(s->req_trailers);
        free(s->req_trailers);
    }
    list_remove(&s->link);
    list_remove(&s->pending);
    free(s);
}

/* The log escapes what it writes: the bytes are kept as they came. */
static void copy_for_log(char *dst, size_t cap, struct http1_slice s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    if (n)
        memcpy(dst, s.ptr, n);
    dst[n] = '\0';
}

/* The header block is complete: the request becomes an exchange. Its
 * fields become the HTTP/1.1 head its backend gets (headers_h2_request);
 * a request that cannot be translated gets an error of usher's own. */
static void stream_start(struct h2s *s)
{
    struct h2c *h = s->h;
    struct client *c = h->c;
    struct exchange *x = &s->x;
    s->state = H2S_EXCHANGE;
    h->active++;
    c->w->h2_streams++;
    c->requests++;
    drain_if_closing(h);

    x->started_at = now_of(h);
    x->req_major = 2;
    x->keep_alive = true;
    x->bytes_in += s->head_bytes;
    x->req_body.framing = HTTP1_BODY_NONE;
    x->req_body.done = true;

    struct h2_field *f = calloc(s->nfields ? s->nfields : 1, sizeof(*f));
    if (!f) {
        exchange_respond_error(x, 503, "proxy out of memory", false);
        return;
    }
    size_t pos = 0;
    for (unsigned i = 0; i < s->nfields; i++) {
        size_t nl = strlen(s->fields.data + pos);
        f[i].name = (struct http1_slice){s->fields.data + pos, nl};
        pos += nl + 1;
        size_t vl = strlen(s->fields.data + pos);
        f[i].value = (struct http1_slice){s->fields.data + pos, vl};
        pos += vl + 1;
    }
    /* gRPC (grpc.h): its errors become gRPC statuses, its call ends with
     * grpc-status 14 ahead of a drain deadline; te: trailers goes on to an
     * HTTP/2 backend */
    if (s->grpc && !(x->grpc = calloc(1, sizeof(*x->grpc)))) {
        free(f);
        exchange_respond_error(x, 503, "proxy out of memory", false);
        return;
    }
    for (unsigned i = 0; i < s->nfields; i++)
        if (http1_slice_eq(f[i].name, "te") && http1_slice_eq(f[i].value, "trailers"))
            x->te_trailers = true;
    struct http1_slice rid = {NULL, 0};
    struct forward_info fi = {
        .client_addr = c->peer,
        .proto = c->listener->tls ? "https" : "http",
        .request_id_max = REQUEST_ID_MAX,
        .request_id_out = &rid,
        .new_request_id = exchange_new_request_id,
        .ctx = x,
    };
    if (c->w->conf->log.access)
        x->log = calloc(1, sizeof(*x->log));
    struct h2_request req;
    bool oversize = s->too_many_fields || s->too_large;
    int rc = oversize ? -1
                      : headers_h2_request(&x->req_head, f, s->nfields, s->no_body, &c->w->limits,
                                           &fi, &req);
    if (oversize) {
        memset(&req, 0, sizeof(req));
        req.error_status = 431;
        req.error_reason = s->too_large ? "request head too large" : "too many header fields";
    }
    x->method = req.method_id ? req.method_id : HTTP1_METHOD_OTHER;
    if (x->log) {
        struct exchange_log *xl = x->log;
        copy_for_log(xl->method, sizeof(xl->method), req.method);
        copy_for_log(xl->path, sizeof(xl->path), req.path);
        copy_for_log(xl->host, sizeof(xl->host), req.authority);
        copy_for_log(xl->user_agent, sizeof(xl->user_agent), req.user_agent);
        if (rid.len)
            copy_for_log(xl->request_id, sizeof(xl->request_id), rid);
        else if (rc < 0)
            exchange_new_request_id(x);
    }
    free(f);
    hbuf_free(&s->fields); /* translated: the head is in x->req_head */
    if (rc < 0) {
        hbuf_reset(&x->req_head);
        if (req.error_status == 0) {
            exchange_respond_error(x, 503, "proxy out of memory", false);
            return;
        }
        exchange_respond_error(x, req.error_status, req.error_reason, false);
        return;
    }
    x->req_body.framing = req.framing;
    x->req_body.left = req.content_length;
    x->req_body.done = s->no_body; /* a body is done once request_pull saw all of it go */
    s->chunked = req.framing == HTTP1_BODY_CHUNKED;
    exchange_start(x);
}

/* Drives the stream's exchange until it blocks or ends (at most
 * MAX_STREAM_ROUNDS rounds: a stream queued again comes back at the next
 * round of the safe point). */
static void stream_run(struct h2s *s)
{
    for (int round = 0; round < MAX_STREAM_ROUNDS; round++) {
        enum step st = exchange_step(&s->x);
        if (st != STEP_PROGRESS)
            break;
    }
    if (s->state == H2S_EXCHANGE)
        exchange_watch(&s->x);
}

/* No longer anyone's: freed at the end of the safe point. */
static void stream_bury(struct h2s *s)
{
    list_remove(&s->link);
    list_append(&s->h->dead, &s->link);
}

/* A stream queued by a callback, at the safe point. */
static void stream_settle(struct h2s *s)
{
    if (s->state == H2S_READY && s->closed) {
        stream_bury(s); /* reset before its exchange started: it never reached a backend */
        return;
    }
    if (s->state == H2S_READY) {
        stream_start(s);
        if (s->state == H2S_EXCHANGE)
            stream_run(s);
    } else if (s->state == H2S_EXCHANGE) {
        stream_run(s);
    }
    if (s->closed) {
        if (s->state == H2S_EXCHANGE) {
            /* closed under a running exchange: the client reset it, or its
             * response went out whole before the exchange saw it end */
            exchange_step(&s->x);
            if (s->state == H2S_EXCHANGE) {
                exchange_abort(&s->x);
                exchange_ended(s);
            }
        }
        stream_bury(s);
        return;
    }
    if (s->state == H2S_ANSWERED && !s->discard)
        discard_body(s);
}

/* ---- the exchange's view of the stream (struct exchange_ops) ------------- */

static enum step h2x_request_pull(struct exchange *x)
{
    struct h2s *s = stream_of(x);
    enum step progress = STEP_BLOCKED;
    window_give_back(s);
    size_t len = s->in.buf ? buf_len(s->in.buf) : 0;
    if (!s->chunked) {
        if (x->in_fwd != len) {
            x->in_fwd = len;
            progress = STEP_PROGRESS;
        }
        if (s->end_stream && !x->req_body.done) {
            x->req_body.done = true;
            progress = STEP_PROGRESS;
        }
    } else if (x->in_fwd == 0 && !hbuf_pending(&x->req_head) && !x->req_body.done) {
        /* each run of buffered DATA goes up as one chunk; the chunk header
         * (and the previous chunk's CRLF) goes first, in the head slot */
        hbuf_reset(&x->req_head);
        int rc = 0;
        if (len > 0) {
            rc = hbuf_printf(&x->req_head, "%s%zx\r\n", s->chunk_open ? "\r\n" : "", len);
            x->in_fwd = len;
            s->chunk_open = true;
            progress = STEP_PROGRESS;
        } else if (s->end_stream) {
            rc = hbuf_printf(&x->req_head, "%s0\r\n", s->chunk_open ? "\r\n" : "");
            if (s->req_trailers)
                rc |= hbuf_append(&x->req_head, s->req_trailers->data, s->req_trailers->len);
            rc |= hbuf_append(&x->req_head, "\r\n", 2);
            x->req_body.done = true;
            progress = STEP_PROGRESS;
        }
        if (rc < 0)
            return x->ops->abort(x);
    }
    if (len == 0 && x->in_fwd == 0 && s->in.buf) {
        buf_put(&x->c->w->bufs_out, s->in.buf);
        s->in.buf = NULL;
    }
    return progress;
}

static ssize_t data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data);

/* The field list as nghttp2 wants it (copied by nghttp2 at submission). */
static nghttp2_nv *to_nv(const struct h2_field *f, size_t n)
{
    nghttp2_nv *nv = calloc(n ? n : 1, sizeof(*nv));
    if (!nv)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        nv[i].name = (uint8_t *)(uintptr_t)f[i].name.ptr;
        nv[i].namelen = f[i].name.len;
        nv[i].value = (uint8_t *)(uintptr_t)f[i].value.ptr;
        nv[i].valuelen = f[i].value.len;
        nv[i].flags = NGHTTP2_NV_FLAG_NONE;
    }
    return nv;
}

/* A gRPC answer without a body (trailers-only, as an HTTP/1.1 hop carried
 * it: Content-Length: 0) goes without its Content-Length: gRPC frames its
 * messages itself, and the field would read as the call's metadata. */
static size_t drop_length(struct h2_field *f, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!http1_slice_eq(f[i].name, "content-length"))
            f[k++] = f[i];
    return k;
}

/* Submits the head of <res> on the stream: interim (no provider, no end
 * of stream), or final (the body pulled by data_read_cb, or none). */
static int submit_head(struct h2s *s, const struct http1_response *res, bool interim, bool body)
{
    struct h2c *h = s->h;
    struct h2_field *f = calloc(res->msg.num_headers + 1, sizeof(*f));
    struct hbuf scratch = {0};
    int rc = -1;
    if (!f)
        return -1;
    int n = headers_h2_response(res, &scratch, f);
    if (n > 0 && s->x.grpc && !body)
        n = (int)drop_length(f, (size_t)n);
    nghttp2_nv *nv = n < 0 ? NULL : to_nv(f, (size_t)n);
    if (nv) {
        nghttp2_data_provider dp = {.source.ptr = s, .read_callback = data_read_cb};
        if (interim)
            rc = nghttp2_submit_headers(h->session, NGHTTP2_FLAG_NONE, s->id, NULL, nv,
                                        (size_t)n, NULL);
        else
            rc = nghttp2_submit_response(h->session, s->id, nv, (size_t)n, body ? &dp : NULL);
    }
    free(nv);
    free(f);
    hbuf_free(&scratch);
    return rc == 0 ? 0 : -1;
}

static int h2x_response_interim(struct exchange *x, const struct http1_response *res)
{
    return submit_head(stream_of(x), res, true, false);
}

static int h2x_response_head(struct exchange *x, const struct http1_response *res, bool *dechunk)
{
    struct h2s *s = stream_of(x);
    const struct http1_message *m = &res->msg;
    bool body = !(m->framing == HTTP1_BODY_NONE ||
                  (m->framing == HTTP1_BODY_LENGTH && m->content_length == 0));
    if (m->framing == HTTP1_BODY_CHUNKED) {
        /* the body goes de-chunked, its trailers as trailing HEADERS */
        *dechunk = true;
        if (!(x->trailers = calloc(1, sizeof(*x->trailers))))
            return -1;
    }
    if (submit_head(s, res, false, body) < 0)
        return -1;
    x->head_committed = true;
    drain_if_closing(s->h);
    return 0;
}

/* A gRPC request's error of usher's own: trailers-only (HEADERS with
 * END_STREAM, HTTP 200, grpc-status, grpc-message), a status its client
 * acts on where a plain HTTP error would read as INTERNAL. */
static int respond_grpc(struct h2s *s, int status, const char *detail)
{
    struct grpc_error e;
    size_t n = grpc_error_fields(&e, status, detail);
    nghttp2_nv *nv = to_nv(e.f, n);
    if (!nv)
        return -1;
    int rc = nghttp2_submit_response(s->h->session, s->id, nv, n, NULL);
    free(nv);
    if (rc != 0)
        return -1;
    hbuf_reset(&s->x.res_head);
    s->x.head_committed = true;
    drain_if_closing(s->h);
    if (!s->discard)
        discard_body(s);
    return 0;
}

static int h2x_response_error(struct exchange *x, int status, const char *detail, bool close)
{
    struct h2s *s = stream_of(x);
    if (x->grpc)
        return respond_grpc(s, status, detail);
    char body[256], len[24], code[4];
    int n = headers_error_text(body, sizeof(body), status, detail);
    snprintf(len, sizeof(len), "%d", n);
    snprintf(code, sizeof(code), "%03d", status);
    bool has_body = x->method != HTTP1_METHOD_HEAD && n > 0;
    hbuf_reset(&x->res_head);
    if (has_body && hbuf_append(&x->res_head, body, (size_t)n) < 0)
        return -1;
    const struct h2_field f[] = {
        {{":status", 7}, {code, 3}},
        {{"content-type", 12}, {"text/plain", 10}},
        {{"content-length", 14}, {len, strlen(len)}},
        {{"cache-control", 13}, {"no-store", 8}},
    };
    nghttp2_nv *nv = to_nv(f, 4);
    if (!nv)
        return -1;
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = data_read_cb};
    int rc = nghttp2_submit_response(s->h->session, s->id, nv, 4, has_body ? &dp : NULL);
    free(nv);
    if (rc != 0)
        return -1;
    s->body_from_head = true;
    x->head_committed = true;
    drain_if_closing(s->h);
    if (!s->discard)
        discard_body(s);
    return 0;
}

/* The response bytes wait for nghttp2 to pull them: a provider that found
 * none goes back in the queue (the write happens at the safe point). */
static bool h2x_response_push(struct exchange *x, enum step *progress)
{
    struct h2s *s = stream_of(x);
    if (s->deferred && !s->closed) {
        s->deferred = false;
        nghttp2_session_resume_data(s->h->session, s->id);
    }
    return true;
}

static enum step h2x_done(struct exchange *x)
{
    struct h2s *s = stream_of(x);
    exchange_ended(s);
    if (s->deferred && !s->closed) {
        s->deferred = false;
        nghttp2_session_resume_data(s->h->session, s->id); /* its end of stream, or trailers */
    }
    return STEP_CLOSED;
}

static enum step h2x_abort(struct exchange *x)
{
    struct h2s *s = stream_of(x);
    exchange_abort(x);
    exchange_ended(s);
    if (!s->closed)
        nghttp2_submit_rst_stream(s->h->session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    if (!s->discard)
        discard_body(s);
    return STEP_CLOSED;
}

static void h2x_wake(struct exchange *x)
{
    struct h2s *s = stream_of(x);
    struct h2c *h = s->h;
    if (h->c->state == CLIENT_CLOSED)
        return;
    queue(s);
    pump(h);
}

static bool h2x_can_splice(const struct exchange *x)
{
    return false; /* its bytes are framed, and share the socket with other streams */
}

static const struct exchange_ops h2_exchange_ops = {
    .request_pull = h2x_request_pull,
    .response_interim = h2x_response_interim,
    .response_head = h2x_response_head,
    .response_error = h2x_response_error,
    .response_push = h2x_response_push,
    .done = h2x_done,
    .abort = h2x_abort,
    .wake = h2x_wake,
    .can_splice = h2x_can_splice,
};

/* ---- response bodies: pulled by nghttp2 ---------------------------------- */

/* Trailing HEADERS from the trailer lines a chunked response ended with.
 * The lines always hold the section's final CRLF, so a response without
 * trailers (or whose every trailer was dropped) comes here too: false
 * then, and the last DATA frame ends the stream itself. */
static bool submit_trailers(struct h2s *s)
{
    const struct hbuf *lines = s->x.trailers;
    size_t cap = s->h->c->w->limits.max_headers;
    struct h2_field *f = calloc(cap ? cap : 1, sizeof(*f));
    struct hbuf scratch = {0};
    int n = f ? headers_h2_trailers(lines, &scratch, f, cap) : -1;
    nghttp2_nv *nv = n > 0 ? to_nv(f, (size_t)n) : NULL;
    bool sent = nv && nghttp2_submit_trailer(s->h->session, s->id, nv, (size_t)n) == 0;
    free(nv);
    free(f);
    hbuf_free(&scratch);
    return sent;
}

/* nghttp2 asks for up to <length> bytes of DATA: how many are ready
 * (copied later by send_data_cb, NO_COPY), the end of the body, or none
 * yet (DEFERRED: response_push resumes it). */
static ssize_t data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data)
{
    struct h2s *s = source->ptr;
    struct exchange *x = &s->x;
    size_t avail;
    bool last;
    if (s->body_from_head) {
        avail = x->res_head.len - x->res_head.sent;
        last = true;
    } else {
        avail = x->out_fwd;
        last = x->res_body.done;
    }
    size_t n = avail < length ? avail : length;
    if (n == 0 && !last) {
        s->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (n > 0)
        *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (last && n == avail) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (x->trailers && x->trailers->len > 0 && submit_trailers(s))
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

/* A DATA frame goes out: its header and payload straight into the output
 * (the payload's one copy), taken off the exchange's response buffer. */
static int send_data_cb(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *user_data)
{
    struct h2c *h = user_data;
    struct h2s *s = source->ptr;
    struct exchange *x = &s->x;
    if (hbuf_append(&h->out, (const char *)framehd, 9) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (s->body_from_head) {
        if (hbuf_append(&h->out, x->res_head.data + x->res_head.sent, length) < 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        x->res_head.sent += length;
    } else if (length > 0) {
        if (hbuf_append(&h->out, buf_head(x->up.buf), length) < 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        buf_consume(x->up.buf, length);
        x->out_fwd -= length;
    }
    x->bytes_out += 9 + length;
    x->last_activity = now_of(h);
    queue(s); /* its backend may be read again, or the exchange is complete */
    return h->out.len - h->out.sent >= H2_OUT_SOFT_LIMIT ? NGHTTP2_ERR_PAUSE : 0;
}

/* ---- nghttp2 callbacks (inside mem_recv / mem_send only) ----------------- */

static struct h2s *stream_get(struct h2c *h, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h->session, id);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame,
                            void *user_data)
{
    struct h2c *h = user_data;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    if (h->open >= h->max_streams) {
        /* DESIGN: past limits.h2_max_streams a stream is refused (the
         * client may retry it), never the connection */
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    struct h2s *s = stream_new(h, frame->hd.stream_id);
    if (!s) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
    h->head_started_at = now_of(h);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    struct h2c *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2s *s = stream_get(h, frame->hd.stream_id);
    if (!s)
        return 0;
    /* RFC 9113 6.5.2's measure, what SETTINGS_MAX_HEADER_LIST_SIZE said:
     * past it the client ignored usher's limit, or decompresses a small
     * block into a huge one (HPACK bomb) */
    s->head_bytes += namelen + valuelen + 32;
    size_t max = h->c->w->limits.max_head_bytes;
    if (s->head_bytes > max && s->grpc && frame->headers.cat == NGHTTP2_HCAT_REQUEST &&
        s->head_bytes <= H2_GRPC_OVERSIZE_FACTOR * max) {
        s->too_large = true; /* answered RESOURCE_EXHAUSTED; nothing more is kept */
        return 0;
    }
    if (s->head_bytes > max) {
        fail(h, NGHTTP2_ENHANCE_YOUR_CALM, "header block too large");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (s->too_large)
        return 0;
    if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        if (namelen == 12 && memcmp(name, "content-type", 12) == 0 &&
            grpc_content_type((struct http1_slice){(const char *)value, valuelen}))
            s->grpc = true;
        /* pseudo-headers (at most 4) do not count against max_headers */
        if (s->nfields >= h->c->w->limits.max_headers + 4) {
            s->too_many_fields = true;
            return 0;
        }
        if (hbuf_append(&s->fields, (const char *)name, namelen) < 0 ||
            hbuf_append(&s->fields, "", 1) < 0 ||
            hbuf_append(&s->fields, (const char *)value, valuelen) < 0 ||
            hbuf_append(&s->fields, "", 1) < 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        /* a NUL inside would cut the field (nghttp2 refuses it already) */
        s->nfields++;
        return 0;
    }
    /* trailers: a chunked upload sends them after its last chunk (whether
     * it goes chunked is known once the exchange starts, maybe after they
     * arrived: they are kept either way); the ones an HTTP/1.1 trailer
     * must not carry are dropped, as for HTTP/1.1 */
    if (headers_trailer_dropped((struct http1_slice){(const char *)name, namelen}))
        return 0;
    if (!s->req_trailers && !(s->req_trailers = calloc(1, sizeof(*s->req_trailers))))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    hbuf_append(s->req_trailers, (const char *)name, namelen);
    hbuf_append(s->req_trailers, ": ", 2);
    hbuf_append(s->req_trailers, (const char *)value, valuelen);
    hbuf_append(s->req_trailers, "\r\n", 2);
    return 0;
}

static void flood(struct h2c *h, const char *what)
{
    if (!bucket_take(&h->flood, H2_FLOOD_BURST, H2_FLOOD_RATE, now_of(h)))
        fail(h, NGHTTP2_ENHANCE_YOUR_CALM, what);
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct h2c *h = user_data;
    struct h2s *s;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        s = stream_get(h, frame->hd.stream_id);
        if (!s)
            return 0;
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
            s->end_stream = true;
        if (s->state == H2S_HEADERS) {
            /* not s->end_stream at the start: DATA and trailers that came
             * in the same read as the HEADERS have ended the stream since */
            s->no_body = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
            s->state = H2S_READY;
            h->head_started_at = 0;
        }
        queue(s);
        return 0;
    case NGHTTP2_DATA:
        if (frame->hd.length == 0 && !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            flood(h, "empty DATA frames");
        s = stream_get(h, frame->hd.stream_id);
        if (s && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            s->end_stream = true;
            queue(s);
        }
        return 0;
    case NGHTTP2_PING:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            flood(h, "PING flood");
        else if (h->state == H2C_DRAIN_NOTICE &&
                 memcmp(frame->ping.opaque_data, h->ping, sizeof(h->ping)) == 0)
            drain_final(h); /* the client saw the first GOAWAY */
        return 0;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            flood(h, "SETTINGS flood");
        return 0;
    case NGHTTP2_PRIORITY:
        flood(h, "PRIORITY flood");
        return 0;
    case NGHTTP2_RST_STREAM:
        s = stream_get(h, frame->hd.stream_id);
        /* a stream reset before its answer ended is work thrown away:
         * done at the rate of a rapid reset attack, it is one */
        if (s && s->state != H2S_ANSWERED &&
            !bucket_take(&h->resets, H2_RESET_BURST_STREAMS * h->max_streams, h->max_streams,
                         now_of(h)))
            fail(h, NGHTTP2_ENHANCE_YOUR_CALM, "rapid reset");
        return 0;
    default:
        return 0;
    }
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user_data)
{
    struct h2c *h = user_data;
    struct h2s *s = stream_get(h, stream_id);
    if (!s || s->discard || s->state == H2S_ANSWERED) {
        nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    struct side *in = &s->in;
    if (!side_ensure_buf(in, &h->c->w->bufs_out)) {
        nghttp2_session_consume(session, stream_id, len);
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_INTERNAL_ERROR);
        return 0;
    }
    if (buf_space(in->buf) < len)
        buf_compact(in->buf);
    if (buf_space(in->buf) < len) {
        /* more than the window allows: nghttp2 enforces it, so this is
         * never reached */
        nghttp2_session_consume(session, stream_id, len);
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id,
                                  NGHTTP2_FLOW_CONTROL_ERROR);
        return 0;
    }
    memcpy(in->buf->data + in->buf->end, data, len);
    in->buf->end += len;
    s->in_accounted += len;
    s->x.bytes_in += len;
    s->x.last_activity = now_of(h);
    queue(s);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    struct h2c *h = user_data;
    struct h2s *s = stream_get(h, stream_id);
    if (!s)
        return 0;
    s->closed = true;
    h->open--;
    queue(s);
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct h2c *h = user_data;
    struct h2s *s;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        s = stream_get(h, frame->hd.stream_id);
        if (s)
            s->x.bytes_out += 9 + frame->hd.length;
        /* fall through */
    case NGHTTP2_DATA:
        if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            return 0;
        s = stream_get(h, frame->hd.stream_id);
        /* the response is complete before the request (RFC 9113 8.1): the
         * client is told to stop sending, with no error */
        if (s && !s->end_stream)
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                      NGHTTP2_NO_ERROR);
        return 0;
    case NGHTTP2_GOAWAY:
        if (frame->goaway.error_code == NGHTTP2_NO_ERROR) {
            /* a drain counts once, at its first GOAWAY, which its PING
             * follows (see drain_begin) */
            if (frame->goaway.last_stream_id == H2_MAX_STREAM_ID) {
                h->c->w->h2_goaway[h->drain_reason]++;
                nghttp2_submit_ping(session, NGHTTP2_FLAG_NONE, h->ping);
            }
        } else if (!h->goaway_counted) {
            /* one nghttp2 sent on its own: a protocol error it detected */
            h->c->w->h2_goaway[reason_of_code(frame->goaway.error_code)]++;
            h->goaway_counted = true;
        }
        return 0;
    default:
        return 0;
    }
}

/* ---- the connection: reading, writing, the safe point --------------------- */

/* The SETTINGS usher sends first tells the client h2_max_streams, while
 * nghttp2 was given H2_STREAMS_SLACK more (see there): the value is
 * rewritten in the bytes of that first frame, the server's connection
 * preface (RFC 9113 3.4), before they go out. */
static void patch_settings(struct h2c *h, size_t from)
{
    uint8_t *p = (uint8_t *)h->out.data + from;
    size_t n = h->out.len - from;
    h->settings_patched = true;
    if (n < 9 || p[3] != NGHTTP2_SETTINGS || (p[4] & NGHTTP2_FLAG_ACK))
        return;
    size_t len = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
    for (size_t off = 9; off + 6 <= 9 + len && off + 6 <= n; off += 6) {
        if ((p[off] << 8 | p[off + 1]) != NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
            continue;
        uint32_t v = h->max_streams;
        p[off + 2] = (uint8_t)(v >> 24);
        p[off + 3] = (uint8_t)(v >> 16);
        p[off + 4] = (uint8_t)(v >> 8);
        p[off + 5] = (uint8_t)v;
    }
}

static size_t out_pending(const struct h2c *h)
{
    return h->out.len - h->out.sent;
}

/* Serializes what nghttp2 has to send (while the output is not too far
 * behind) and writes it. 0, or -1 if the connection failed. */
static int flush(struct h2c *h)
{
    struct client *c = h->c;
    for (;;) {
        while (out_pending(h) < H2_OUT_SOFT_LIMIT) {
            const uint8_t *data;
            size_t from = h->out.len;
            ssize_t n = nghttp2_session_mem_send(h->session, &data);
            if (n < 0) {
                fail_fatal(h, (int)n);
                return -1;
            }
            if (n > 0 && hbuf_append(&h->out, (const char *)data, (size_t)n) < 0) {
                fail_fatal(h, NGHTTP2_ERR_NOMEM);
                return -1;
            }
            if (!h->settings_patched && h->out.len > from)
                patch_settings(h, from);
            if (n == 0 && h->out.len == from)
                break; /* nothing more (DATA frames were written by send_data_cb) */
        }
        if (out_pending(h) == 0)
            break;
        ssize_t n = side_send(&c->down, &h->out, NULL, NULL);
        if (n < 0) {
            conn_close(c);
            return -1;
        }
        if (out_pending(h) > 0)
            break; /* the socket is full: EV_WRITE */
        hbuf_reset(&h->out);
        if (!nghttp2_session_want_write(h->session))
            break;
    }
    if (out_pending(h) == 0 && h->open == 0 && h->out.cap > 0)
        hbuf_free(&h->out); /* an idle connection holds no output buffer */
    return 0;
}

/* Feeds what was read to nghttp2. 0, or -1 if the session failed. */
static int feed(struct h2c *h)
{
    struct buf *b = h->c->down.buf;
    if (!b || buf_len(b) == 0)
        return 0;
    ssize_t n = nghttp2_session_mem_recv(h->session, (const uint8_t *)buf_head(b), buf_len(b));
    if (n < 0) {
        fail_fatal(h, (int)n);
        return -1;
    }
    buf_consume(b, buf_len(b)); /* nghttp2 takes everything it is given */
    return 0;
}

static void update_watchers(struct h2c *h)
{
    struct client *c = h->c;
    unsigned ev = 0;
    if (out_pending(h) < H2_OUT_SOFT_LIMIT && !c->down.eof && nghttp2_session_want_read(h->session))
        ev |= EV_READ;
    if (out_pending(h) > 0)
        ev |= EV_WRITE;
    /* h2_drive stopped at H2_READ_ROUNDS with more to read: on TLS it may
     * all be records OpenSSL already took from the socket (read_ahead), so
     * no read event would come for them — an upload's END_STREAM waited
     * forever. A write event (the socket takes writes) brings the
     * connection back next iteration, after the others, as for HTTP/1.1's
     * buffered pipelined request (mux_h1.c update_watchers). */
    if ((ev & EV_READ) && c->down.readable && h->state != H2C_FAILED)
        ev |= EV_WRITE;
    if (c->down.ssl && (ev & EV_READ) && c->down.tls_want == EV_WRITE)
        ev |= EV_WRITE; /* a TLS read waits for the socket to take a write */
    conn_want(c, ev);
}

/* The safe point: streams queued by callbacks are started or driven, what
 * they produced is written, and closed streams are freed; then either the
 * connection is done (nothing to read or write: the drain or the error
 * is over) or its watchers follow what it waits for. */
static void pump(struct h2c *h)
{
    struct client *c = h->c;
    for (int round = 0; round < H2_PUMP_ROUNDS; round++) {
        while (!list_empty(&h->pending) && c->state == CLIENT_H2) {
            struct h2s *s = container_of(h->pending.next, struct h2s, pending);
            list_remove(&s->pending);
            s->queued = false;
            stream_settle(s);
        }
        if (c->state != CLIENT_H2 || flush(h) < 0)
            return;
        if (list_empty(&h->pending))
            break;
    }
    while (!list_empty(&h->dead)) {
        struct h2s *s = container_of(h->dead.next, struct h2s, link);
        stream_free(s);
    }
    if (!nghttp2_session_want_read(h->session) && !nghttp2_session_want_write(h->session) &&
        out_pending(h) == 0) {
        /* the drain or the error is over: the lingering close, as for
         * HTTP/1.1, so nothing the client still sends resets what went out */
        log_debug("h2 connection done", "client=%s state=%s", c->peer, h2c_state_str(h->state));
        h->state = H2C_FAILED;
        conn_finish(c);
        return;
    }
    /* its last stream may have ended: the idle deadline applies again (a
     * timer already due earlier is left alone) */
    conn_arm_timer(c);
    if (!list_empty(&h->pending)) {
        /* work left after the rounds: come back next iteration (the socket
         * takes writes), after the other connections */
        conn_want(c, EV_READ | EV_WRITE);
        return;
    }
    update_watchers(h);
}

static void h2_drive(struct client *c)
{
    if (c->state == CLIENT_LINGERING) {
        conn_on_lingering(c);
        return;
    }
    if (c->state != CLIENT_H2)
        return;
    struct h2c *h = c->h2;
    for (int round = 0; round < H2_READ_ROUNDS; round++) {
        struct side *d = &c->down;
        if (!d->readable || d->eof || out_pending(h) >= H2_OUT_SOFT_LIMIT ||
            h->state == H2C_FAILED)
            break;
        if (!side_ensure_buf(d, &c->w->bufs_in)) {
            conn_close(c);
            return;
        }
        ssize_t n = side_recv(d);
        if (n == NET_AGAIN) {
            d->readable = false;
            break;
        }
        if (n <= 0) {
            /* the client went away: what it had open is cut */
            conn_close(c);
            return;
        }
        c->last_activity = now_of(h);
        if (feed(h) < 0)
            return;
    }
    if (c->down.buf && buf_len(c->down.buf) == 0) {
        buf_put(&c->w->bufs_in, c->down.buf);
        c->down.buf = NULL;
    }
    pump(h);
}

/* ---- the connection's deadline and the drain ----------------------------- */

/* OPEN: the first request due client_header after accept, an idle
 * connection's client_idle, a close_spread slot, a header block's
 * client_header. DRAIN_NOTICE: the final GOAWAY 1 s after the first.
 * DRAIN_FINAL and FAILED with no stream left: only the output is still to
 * go, and a client that reads none of it for client_idle is cut. Streams
 * in flight keep their exchanges' own deadlines. */
static ev_tstamp h2_deadline(const struct client *c)
{
    const struct h2c *h = c->h2;
    const struct conf *conf = c->w->conf;
    ev_tstamp d = NO_DEADLINE;
    if (h->head_started_at > 0)
        d = h->head_started_at + ms_to_s(conf->timeouts.client_header);
    switch (h->state) {
    case H2C_OPEN:
        if (h->drain_at > 0)
            d = earliest(d, h->drain_at);
        if (h->open == 0 && c->requests == 0)
            d = earliest(d, c->head_started_at + ms_to_s(conf->timeouts.client_header));
        else if (h->open == 0)
            d = earliest(d, c->last_activity + ms_to_s(conf->timeouts.client_idle));
        return d;
    case H2C_DRAIN_NOTICE:
        return earliest(d, h->notice_at + H2_DRAIN_PING_TIMEOUT_S);
    case H2C_DRAIN_FINAL:
    case H2C_FAILED:
        if (h->open == 0)
            d = earliest(d, h->gone_at + ms_to_s(conf->timeouts.client_idle));
        return d;
    }
    return d;
}

static void h2_timeout(struct client *c)
{
    struct h2c *h = c->h2;
    const struct conf *conf = c->w->conf;
    ev_tstamp now = now_of(h);
    if (h->head_started_at > 0 &&
        now >= h->head_started_at + ms_to_s(conf->timeouts.client_header)) {
        fail(h, NGHTTP2_ENHANCE_YOUR_CALM, "header block timeout");
    } else if (h->state == H2C_DRAIN_NOTICE) {
        drain_final(h); /* no acknowledgement within a second: the final GOAWAY anyway */
    } else if (h->state != H2C_OPEN) {
        /* going away, no stream left, and the client read nothing of what
         * was sent to it for client_idle */
        conn_close(c);
        return;
    } else if (h->drain_at > 0 && now >= h->drain_at) {
        drain_begin(h, H2_GOAWAY_DRAIN); /* its close_spread slot */
    } else if (c->requests == 0) {
        fail(h, NGHTTP2_NO_ERROR, "no request within client_header");
    } else {
        drain_begin(h, H2_GOAWAY_IDLE); /* idle: closed the safe way too */
    }
    pump(h);
}

static void h2_shutdown_idle(struct client *c, ev_tstamp close_at)
{
    struct h2c *h = c->h2;
    if (c->state != CLIENT_H2 || h->state != H2C_OPEN)
        return;
    if (h->open > 0 || h->head_started_at > 0) {
        drain_begin(h, H2_GOAWAY_DRAIN); /* streams in flight are answered, then it closes */
    } else if (close_at == DBL_MAX) {
        return; /* idle_close: after_request: its next stream begins the drain (conn_closing) */
    } else if (close_at > now_of(h)) {
        h->drain_at = close_at; /* its close_spread slot */
        conn_arm_timer(c);
        return;
    } else {
        drain_begin(h, H2_GOAWAY_DRAIN);
    }
    pump(h);
}

/* No tunnels over HTTP/2 (RFC 8441 is not offered), but gRPC calls: each
 * ends with grpc-status 14 tunnel_close_grace ahead of <deadline>. */
static void h2_tunnel_deadline(struct client *c, ev_tstamp deadline)
{
    if (c->state != CLIENT_H2)
        return;
    struct h2c *h = c->h2;
    bool now = false;
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &h->streams) {
        struct h2s *s = container_of(pos, struct h2s, link);
        if (s->state == H2S_EXCHANGE && s->x.grpc && exchange_tunnel_deadline(&s->x, deadline)) {
            queue(s);
            now = true;
        }
    }
    if (now)
        pump(h);
}

static bool h2_is_idle(const struct client *c)
{
    return c->state != CLIENT_H2 || (c->h2->open == 0 && c->h2->head_started_at == 0);
}

static void h2_release(struct client *c)
{
    struct h2c *h = c->h2;
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &h->streams) {
        struct h2s *s = container_of(pos, struct h2s, link);
        exchange_abort(&s->x);
        exchange_ended(s);
    }
    c->listener->h2_connections--;
}

static void h2_free(struct client *c)
{
    struct h2c *h = c->h2;
    if (!h)
        return;
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &h->streams) {
        stream_free(container_of(pos, struct h2s, link));
    }
    list_for_each_safe (pos, tmp, &h->dead) {
        stream_free(container_of(pos, struct h2s, link));
    }
    nghttp2_session_del(h->session);
    hbuf_free(&h->out);
    free(h);
    c->h2 = NULL;
}

bool mux_h2_spread_candidate(const struct client *c)
{
    return c->mux == &h2_mux && c->state == CLIENT_H2 && c->h2->state == H2C_OPEN &&
           h2_is_idle(c);
}

static const struct mux_ops h2_mux = {
    .drive = h2_drive,
    .deadline = h2_deadline,
    .timeout = h2_timeout,
    .shutdown_idle = h2_shutdown_idle,
    .tunnel_deadline = h2_tunnel_deadline,
    .is_idle = h2_is_idle,
    .release = h2_release,
    .free = h2_free,
};

/* ---- starting a connection ------------------------------------------------ */

static int session_new(struct h2c *h)
{
    const struct conf *conf = h->c->w->conf;
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    int rc = -1;
    if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
        goto out;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data_cb);
    /* windows open as backends take the bytes (window_give_back) */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* usher's own rapid-reset limit comes first; nghttp2's (GOAWAY
     * INTERNAL_ERROR) stays behind it */
    nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
    if (nghttp2_session_server_new2(&h->session, cb, h, opt) != 0)
        goto out;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h->max_streams + H2_STREAMS_SLACK},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)conf->limits.max_head_bytes},
        /* no priority tree: no work, no closed streams kept for it */
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    if (nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) !=
            0 ||
        nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)(h->max_streams * H2_STREAM_WINDOW)) != 0)
        goto out;
    rc = 0;
out:
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    return rc;
}

void mux_h2_start(struct client *c)
{
    struct h2c *h = calloc(1, sizeof(*h));
    if (!h) {
        conn_close(c);
        return;
    }
    h->c = c;
    h->state = H2C_OPEN;
    h->max_streams = h2_max_streams(c->w->conf);
    list_init(&h->streams);
    list_init(&h->pending);
    list_init(&h->dead);
    ev_tstamp now = ev_now(c->w->loop);
    h->flood = (struct h2_bucket){H2_FLOOD_BURST, now};
    h->resets = (struct h2_bucket){H2_RESET_BURST_STREAMS * h->max_streams, now};
    uint64_t r = prng_next(&c->w->rng); /* the drain's PING: not one the client sends */
    memcpy(h->ping, &r, sizeof(h->ping));
    c->h2 = h;
    c->mux = &h2_mux;
    c->listener->h2_connections++;
    if (session_new(h) < 0) {
        log_warn("h2 session failed", "client=%s reason=\"out of memory\"", c->peer);
        conn_close(c);
        return;
    }
    conn_set_state(c, CLIENT_H2);
    c->down.readable = true; /* the preface may be buffered already (in TLS, or read) */
    if (feed(h) < 0)
        return;
    h2_drive(c);
}
