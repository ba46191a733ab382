/* HTTP/2 to backends (see upstream_h2.h), on nghttp2's client session
 * driven through its memory API, as mux_h2.c drives the server side: what
 * the socket gives goes to nghttp2_session_mem_recv, what
 * nghttp2_session_mem_send gives back is gathered in one output buffer
 * and written.
 *
 * struct h2b is one connection: its struct upstream (what the pool, the
 * drains and the descriptor counts know), its socket side, its session,
 * its streams. struct h2_stream is one exchange's request and response on
 * it: the HTTP/1.1 bytes the exchange writes become HEADERS and DATA (and
 * trailing HEADERS), the frames of the response become the HTTP/1.1 bytes
 * the exchange reads.
 *
 * Safe point: nghttp2 calls back only inside mem_recv and mem_send; those
 * callbacks only change stream state and queue the stream. Exchanges hear
 * of it (their upstream_cb) only from settle(), after nghttp2 returned,
 * and what an exchange then does to a stream (write, read, detach) only
 * queues frames, marks the connection for another settle (kick) and never
 * runs nghttp2's I/O under it. Streams and connections are freed at the
 * end of a settle, never under a callback that still uses them.
 *
 * Flow control is the backpressure: a stream's response window opens only
 * as its exchange takes the bytes (no automatic WINDOW_UPDATE), and its
 * request bytes are taken only while its buffer, which DATA frames empty as
 * the backend's window allows, has room. */
#include "upstream_h2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "../../health/backend.h"
#include "../../parser/http1.h"
#include "../base/log.h"
#include "../net/net.h"
#include "../net/tlsclient.h"
#include "body.h"
#include "clock.h"
#include "grpc.h"
#include "headers.h"
#include "upstream.h"

/* A stream's response window: RFC 9113's initial 65,535, what a response
 * buffer (BUF_OUT_SIZE_MIN, 64 KiB) holds, so the DATA a backend may send
 * ahead always fits; the exchange's reads open it again. */
#define H2B_STREAM_WINDOW 65535

/* The connection's window covers this many streams' windows at once:
 * it is only credit, memory is bounded per stream. */
#define H2B_CONN_WINDOW_STREAMS 256

/* Streams a connection is given before the backend's SETTINGS say how
 * many it takes (nghttp2's own assumption, RFC 9113 6.5.2 has none). */
#define H2B_ASSUMED_STREAMS 100

/* Frames are serialized while less than this waits to be written (as
 * mux_h2.c's H2_OUT_SOFT_LIMIT): a backend that does not read stops its
 * streams' DATA, not usher's memory. */
#define H2B_OUT_SOFT_LIMIT (64u * 1024u)

/* Reads per event (16 KiB each): one busy backend cannot starve the loop. */
#define H2B_READ_ROUNDS 4

/* Rounds of "tell the exchanges, write" per settle; what is left waits for
 * the next loop iteration, after the other connections. */
#define H2B_SETTLE_ROUNDS 4

/* The payload of the PING that tells whether a backend whose answer looked
 * like grpc-core's at its stop is going away (shutdown_cancel). */
#define H2B_HOLD_PING "usher-go"

/* Header fields parsed from a request head usher rebuilt: the client's
 * limits.max_headers plus what usher adds (X-Forwarded-*, X-Request-Id,
 * framing). */
#define H2B_EXTRA_FIELDS 16

enum h2b_state {
    H2B_CONNECTING = 1, /* TCP (and TLS for h2) on its way: streams wait */
    H2B_READY,          /* takes new streams while it has room */
    H2B_GOING_AWAY,     /* the backend's GOAWAY came: no new stream; the others finish */
    H2B_FAILED,         /* broken: its streams got the error; it closes once they let go */
};

/* News for a stream's exchange, told at the next settle. */
enum {
    NEWS_CONNECTED = 1u << 0,
    NEWS_CONNECT_FAILED = 1u << 1,
    NEWS_REFUSED = 1u << 2,
    NEWS_READ = 1u << 3,
    NEWS_WRITE = 1u << 4,
    NEWS_DRAIN_STARTED = 1u << 5,
    NEWS_DRAIN_EXPIRED = 1u << 6,
};

struct h2b;

struct h2_stream {
    struct h2b *h;
    int32_t id;     /* 0 until its HEADERS are submitted */
    upstream_cb cb; /* NULL once detached */
    void *owner;
    bool te_trailers;
    bool grpc; /* the request's content-type is gRPC's */
    unsigned news;
    int connect_err;

    /* the request: HTTP/1.1 bytes in */
    bool head_done;      /* HEADERS submitted */
    bool head_request;   /* HEAD: no response body */
    struct hbuf tx_head; /* the head while it arrives */
    struct buf *tx;      /* body bytes: payload ready at the front (tx_ready), framing after */
    size_t tx_ready;
    struct body_state tx_body;
    struct hbuf tx_trailers; /* a chunked body's kept trailer lines */
    bool tx_deferred;        /* the data provider waits for bytes */
    bool tx_blocked;         /* a write was short: NEWS_WRITE when room comes */
    struct hbuf replay;      /* every request byte taken, until the backend acts on it */
    bool replay_lost;        /* more than H2_REPLAY_MAX went first */
    bool confirmed;          /* the backend acted on it: no refusal can come */
    bool headers_sent;       /* its HEADERS frame went out */

    /* the response: HTTP/1.1 bytes out */
    struct hbuf rx_fields; /* "name\0value\0" of the header block arriving */
    size_t rx_nfields;
    size_t rx_field_bytes; /* RFC 9113 6.5.2 size of the block */
    struct hbuf rx_head;   /* HTTP/1.1 heads for the exchange; .sent: given */
    bool final_head;       /* the final (non-1xx) head came */
    enum h2_body rx_body;
    struct buf *rx;          /* DATA payload not yet given */
    struct hbuf rx_trailers; /* trailer lines */
    struct hbuf rx_framing;  /* chunked framing owed before more payload (.sent: given) */
    uint64_t chunk_left;     /* payload bytes of the chunk under way */
    bool rx_end;             /* END_STREAM came */
    bool last_chunk;         /* the last chunk (and trailers) is in rx_framing */
    bool rx_last_given;      /* the body's end went to the exchange */
    bool held;               /* a trailers-only CANCELLED kept from its exchange until a PING
                                round trip says whether its backend is stopping */

    bool closed;       /* nghttp2 closed it */
    bool refused;      /* never processed by the backend */
    const char *error; /* reset or broken (static reason), NULL if not */
    bool queued;
    struct list link;    /* h->streams, then h->dead */
    struct list pending; /* h->pending */
};

struct h2b {
    struct upstream *u; /* NULL once closed */
    struct server *s;
    struct worker *w;
    nghttp2_session *session;
    enum h2b_state state;
    bool tls;             /* pool protocol h2 */
    struct side io;       /* its socket and transport */
    struct hbuf out;      /* frames serialized, not yet written */
    unsigned nstreams;    /* stream structs alive: attached, or waiting for nghttp2 to close them */
    bool settings_seen;   /* the backend's first SETTINGS came */
    uint32_t assumed_max; /* streams it takes until its SETTINGS say (a sibling's, else 100) */
    int32_t goaway_last;  /* the last-stream-id of its GOAWAY (state GOING_AWAY) */
    struct list streams;
    struct list pending;       /* streams with news */
    struct list dead;          /* streams to free at the end of the settle */
    struct http1_header *hdrs; /* parse scratch for request heads */
    size_t hdrs_cap;
    /* translation scratch, grown as needed and kept: no allocation per
     * request once a connection has seen its largest head */
    struct h2_field *fields;
    nghttp2_nv *nv;
    size_t fields_cap;
    struct hbuf names;
    ev_timer timer;    /* the connect timeout */
    ev_prepare kick_w; /* never started: fed to settle after the current callback */
    bool kicked;
    bool hold_ping; /* H2B_HOLD_PING sent, its ACK not yet back */
    unsigned held;  /* streams held for it */
    unsigned busy;  /* inside its own callbacks: frees wait */
    bool freeing;   /* freed when no longer busy */
};

static void settle(struct h2b *h);
static void conn_unbusy(struct h2b *h);

static const char *pool_of(const struct h2b *h)
{
    return h->s->hb->pool_name;
}

static const char *backend_of(const struct h2b *h)
{
    return h->s->hb->name;
}

static size_t out_pending(const struct h2b *h)
{
    return h->out.len - h->out.sent;
}

/* ---- news and the safe point ---------------------------------------------- */

static void news(struct h2_stream *st, unsigned what)
{
    st->news |= what;
    if (st->queued || !st->cb)
        return;
    st->queued = true;
    list_append(&st->h->pending, &st->pending);
}

/* Runs settle() after the callback in progress (an exchange's, a timer's)
 * returns, within the same loop iteration (libev runs a fed watcher with
 * the pending ones). */
static void kick(struct h2b *h)
{
    if (h->kicked)
        return;
    h->kicked = true;
    ev_feed_event(h->w->loop, &h->kick_w, EV_CUSTOM);
}

/* Tells a stream's exchange its news, most decisive first; the exchange
 * may detach the stream meanwhile (it is then freed later, not now). */
static void tell(struct h2_stream *st)
{
    unsigned n = st->news;
    st->news = 0;
    static const struct {
        unsigned bit;
        enum upstream_event ev;
    } order[] = {
        {NEWS_CONNECT_FAILED, UPSTREAM_CONNECT_FAILED},
        {NEWS_CONNECTED, UPSTREAM_CONNECTED},
        {NEWS_DRAIN_EXPIRED, UPSTREAM_DRAIN_EXPIRED},
        {NEWS_REFUSED, UPSTREAM_REFUSED},
        {NEWS_DRAIN_STARTED, UPSTREAM_DRAIN_STARTED},
        {NEWS_READ, UPSTREAM_READABLE},
        {NEWS_WRITE, UPSTREAM_WRITABLE},
    };
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        if (!(n & order[i].bit) || !st->cb)
            continue;
        st->cb(st->owner, order[i].ev, order[i].bit == NEWS_CONNECT_FAILED ? st->connect_err : 0);
        if (order[i].bit == NEWS_CONNECT_FAILED || order[i].bit == NEWS_REFUSED)
            break; /* the exchange went elsewhere (or gave up) */
    }
}

static void deliver(struct h2b *h)
{
    while (!list_empty(&h->pending)) {
        struct h2_stream *st = container_of(h->pending.next, struct h2_stream, pending);
        list_remove(&st->pending);
        list_init(&st->pending);
        st->queued = false;
        if (st->cb)
            tell(st);
    }
}

/* ---- streams --------------------------------------------------------------- */

static struct h2_stream *stream_new(struct h2b *h, upstream_cb cb, void *owner, bool te_trailers)
{
    struct h2_stream *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->h = h;
    st->cb = cb;
    st->owner = owner;
    st->te_trailers = te_trailers;
    list_init(&st->pending);
    list_append(&h->streams, &st->link);
    h->nstreams++;
    return st;
}

static void stream_buffers_free(struct h2_stream *st)
{
    struct worker *w = st->h->w;
    hbuf_free(&st->tx_head);
    buf_put(&w->bufs_in, st->tx);
    st->tx = NULL;
    st->tx_ready = 0;
    hbuf_free(&st->tx_trailers);
    hbuf_free(&st->replay);
    hbuf_free(&st->rx_fields);
    hbuf_free(&st->rx_head);
    buf_put(&w->bufs_out, st->rx);
    st->rx = NULL;
    hbuf_free(&st->rx_trailers);
    hbuf_free(&st->rx_framing);
}

/* Queued for freeing at the end of the settle. */
static void stream_bury(struct h2_stream *st)
{
    list_remove(&st->pending);
    list_init(&st->pending);
    st->queued = false;
    list_remove(&st->link);
    list_append(&st->h->dead, &st->link);
}

static void stream_free(struct h2_stream *st)
{
    struct h2b *h = st->h;
    if (h->session && st->id > 0 && !st->closed)
        nghttp2_session_set_stream_user_data(h->session, st->id, NULL);
    stream_buffers_free(st);
    list_remove(&st->link);
    h->nstreams--;
    free(st);
}

/* The backend answered the stream (a response head that is not the whole
 * answer, or DATA): it can no longer be refused, and the bytes kept to
 * send it again go. */
static void confirm(struct h2_stream *st)
{
    if (st->confirmed)
        return;
    st->confirmed = true;
    hbuf_free(&st->replay);
    st->replay_lost = true;
}

static void stream_error(struct h2_stream *st, const char *why)
{
    if (!st->error)
        st->error = why;
    news(st, NEWS_READ);
}

/* ---- the connection's end -------------------------------------------------- */

static void conn_free(struct h2b *h)
{
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &h->streams) {
        stream_free(container_of(pos, struct h2_stream, link));
    }
    list_for_each_safe (pos, tmp, &h->dead) {
        stream_free(container_of(pos, struct h2_stream, link));
    }
    ev_timer_stop(h->w->loop, &h->timer);
    ev_prepare_stop(h->w->loop, &h->kick_w); /* clears a pending feed */
    if (h->u) {
        struct upstream *u = h->u;
        h->u = NULL;
        u->cb = NULL; /* its own close: no UPSTREAM_CLOSED back */
        upstream_close(u);
    }
    if (h->io.tp && h->io.tp->release)
        h->io.tp->release(&h->io);
    buf_put(&h->w->bufs_in, h->io.buf);
    nghttp2_session_del(h->session);
    hbuf_free(&h->out);
    hbuf_free(&h->names);
    free(h->fields);
    free(h->nv);
    free(h->hdrs);
    free(h);
}

/* Frees <h> now, or once its callbacks unwound. */
static void conn_close(struct h2b *h)
{
    h->freeing = true;
    if (h->busy == 0)
        conn_free(h);
}

/* The connection broke (<why>): streams the backend never saw are refused
 * (they go again, safely), the others get the error unless their response
 * is complete. Nothing more is read or written. */
static void conn_broken(struct h2b *h, const char *why)
{
    if (h->state == H2B_FAILED)
        return;
    log_kv(CONF_LOG_DEBUG, "backend h2 connection broken", LOG_STR("pool", pool_of(h)),
           LOG_STR("backend", backend_of(h)), LOG_STR("reason", why),
           LOG_UINT("streams", h->nstreams));
    h->state = H2B_FAILED;
    if (h->u)
        upstream_want(h->u, 0);
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &h->streams) {
        struct h2_stream *st = container_of(pos, struct h2_stream, link);
        if (st->held) {
            st->held = false;
            h->held--;
            news(st, NEWS_READ); /* no verdict came: the answer as it was */
            continue;
        }
        if (!st->cb || st->closed)
            continue;
        if (!st->headers_sent && !st->confirmed) {
            st->refused = true;
            news(st, NEWS_REFUSED);
        } else if (!st->rx_end) {
            stream_error(st, why);
        }
    }
}

/* ---- writing: frames out ---------------------------------------------------- */

/* Serializes what nghttp2 has to send (while the output is not too far
 * behind) and writes it. 0, or -1 if the connection broke. */
static int flush(struct h2b *h)
{
    if (h->state == H2B_CONNECTING || h->state == H2B_FAILED || !h->u)
        return 0;
    for (;;) {
        while (out_pending(h) < H2B_OUT_SOFT_LIMIT) {
            const uint8_t *data;
            size_t from = h->out.len;
            ssize_t n = nghttp2_session_mem_send(h->session, &data);
            if (n < 0) {
                conn_broken(h, nghttp2_strerror((int)n));
                return -1;
            }
            if (n > 0 && hbuf_append(&h->out, (const char *)data, (size_t)n) < 0) {
                conn_broken(h, "out of memory");
                return -1;
            }
            if (n == 0 && h->out.len == from)
                break; /* nothing more (DATA went through send_data_cb) */
        }
        if (out_pending(h) == 0)
            break;
        ssize_t n = side_send(&h->io, &h->out, NULL, NULL);
        if (n < 0) {
            conn_broken(h, "backend write failed");
            return -1;
        }
        if (out_pending(h) > 0)
            break; /* the socket is full: EV_WRITE */
        hbuf_reset(&h->out);
        if (!nghttp2_session_want_write(h->session))
            break;
    }
    if (out_pending(h) == 0 && h->out.cap > 0 && h->nstreams == 0)
        hbuf_free(&h->out); /* an idle connection holds no output buffer */
    return 0;
}

static void update_watchers(struct h2b *h)
{
    if (!h->u || h->state == H2B_CONNECTING || h->state == H2B_FAILED)
        return;
    unsigned ev = 0;
    if (nghttp2_session_want_read(h->session) && !h->io.eof)
        ev |= EV_READ;
    if (out_pending(h) > 0)
        ev |= EV_WRITE;
    if (h->io.ssl && (ev & EV_READ) && h->io.tls_want == EV_WRITE)
        ev |= EV_WRITE;
    upstream_want(h->u, ev);
}

/* No stream left: pooled (the keep rule decides: a draining or switched
 * backend's, a draining process's, closes), or closed if it is going away
 * or broken. */
static void conn_idle(struct h2b *h)
{
    if (h->state == H2B_READY && !h->io.eof && h->u && h->u->state == UPSTREAM_ACTIVE) {
        struct upstream *u = h->u;
        upstream_release(u, true); /* may close it: UPSTREAM_CLOSED clears h->u */
        if (h->u)
            update_watchers(h);
        else
            conn_close(h);
        return;
    }
    if (h->state != H2B_READY || h->io.eof || !h->u) {
        if (h->state == H2B_READY && h->session)
            nghttp2_session_terminate_session(h->session, NGHTTP2_NO_ERROR);
        if (h->state == H2B_READY)
            flush(h); /* best effort: the GOAWAY, so the backend logs no error */
        conn_close(h);
    }
}

static void settle(struct h2b *h)
{
    for (int round = 0; round < H2B_SETTLE_ROUNDS; round++) {
        deliver(h);
        if (h->freeing)
            return;
        flush(h);
        if (list_empty(&h->pending))
            break;
    }
    while (!list_empty(&h->dead)) {
        struct h2_stream *st = container_of(h->dead.next, struct h2_stream, link);
        stream_free(st);
    }
    if (!list_empty(&h->pending))
        kick(h); /* the rest after the other connections' turn */
    if (h->nstreams == 0 && h->state == H2B_CONNECTING) {
        conn_close(h); /* nobody waits for it any more */
        return;
    }
    if (h->nstreams == 0) {
        conn_idle(h);
        if (h->freeing)
            return;
    }
    if (h->state == H2B_FAILED && h->nstreams == 0) {
        conn_close(h);
        return;
    }
    update_watchers(h);
}

static void conn_unbusy(struct h2b *h)
{
    if (--h->busy == 0 && h->freeing)
        conn_free(h);
}

/* ---- nghttp2 callbacks (inside mem_recv / mem_send only) ---------------- */

static struct h2_stream *stream_get(struct h2b *h, int32_t id)
{
    return nghttp2_session_get_stream_user_data(h->session, id);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct h2_stream *st = stream_get(user_data, frame->hd.stream_id);
    if (st) {
        hbuf_reset(&st->rx_fields);
        st->rx_nfields = 0;
        st->rx_field_bytes = 0;
    }
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    struct h2b *h = user_data;
    struct h2_stream *st = stream_get(h, frame->hd.stream_id);
    if (!st || !st->cb || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    /* RFC 9113 6.5.2's measure, bounded as a client's head is */
    st->rx_field_bytes += namelen + valuelen + 32;
    if (st->rx_field_bytes > h->w->limits.max_head_bytes) {
        stream_error(st, "response head too large");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the stream is reset */
    }
    if (hbuf_append(&st->rx_fields, (const char *)name, namelen) < 0 ||
        hbuf_append(&st->rx_fields, "", 1) < 0 ||
        hbuf_append(&st->rx_fields, (const char *)value, valuelen) < 0 ||
        hbuf_append(&st->rx_fields, "", 1) < 0) {
        stream_error(st, "out of memory");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    st->rx_nfields++;
    return 0;
}

/* Room for <n> fields (and their nghttp2_nv) in the connection's scratch. */
static bool scratch_fit(struct h2b *h, size_t n)
{
    if (n <= h->fields_cap)
        return true;
    size_t cap = n < 32 ? 32 : n;
    struct h2_field *f = realloc(h->fields, cap * sizeof(*f));
    if (f)
        h->fields = f;
    nghttp2_nv *nv = f ? realloc(h->nv, cap * sizeof(*nv)) : NULL;
    if (nv)
        h->nv = nv;
    if (!f || !nv)
        return false;
    h->fields_cap = cap;
    return true;
}

/* The fields of the block just received, as slices into rx_fields (in the
 * connection's scratch). */
static struct h2_field *fields_of(struct h2_stream *st)
{
    if (!scratch_fit(st->h, st->rx_nfields))
        return NULL;
    struct h2_field *f = st->h->fields;
    size_t pos = 0;
    for (size_t i = 0; i < st->rx_nfields; i++) {
        size_t nl = strlen(st->rx_fields.data + pos);
        f[i].name = (struct http1_slice){st->rx_fields.data + pos, nl};
        pos += nl + 1;
        size_t vl = strlen(st->rx_fields.data + pos);
        f[i].value = (struct http1_slice){st->rx_fields.data + pos, vl};
        pos += vl + 1;
    }
    return f;
}

/* grpc-core's answer to a call that arrived as its server began to stop
 * (server.stop: the stream is at or below its GOAWAY's last-stream-id):
 * the call is cancelled before any handler saw it, with a trailers-only
 * CANCELLED — where RFC 9113 8.7 would have REFUSED_STREAM. Taken as that
 * refusal: a gRPC stream answered by one HEADERS with END_STREAM, :status
 * 200 and grpc-status 1 (no message, no metadata of its own), on a
 * connection whose backend says GOAWAY — already, or by the time a PING
 * sent when the answer came is acknowledged (the answer may come first). */
static bool shutdown_cancel(const struct h2b *h, const struct h2_stream *st,
                            const struct h2_field *f)
{
    if (!st->grpc || st->rx_head.len > 0)
        return false;
    bool ok200 = false, cancelled = false;
    for (size_t i = 0; i < st->rx_nfields; i++) {
        if (http1_slice_eq(f[i].name, ":status"))
            ok200 = f[i].value.len == 3 && memcmp(f[i].value.ptr, "200", 3) == 0;
        else if (http1_slice_eq(f[i].name, "grpc-status"))
            cancelled = f[i].value.len == 1 && f[i].value.ptr[0] == '1';
        else if (!http1_slice_eq(f[i].name, "content-type") &&
                 !http1_slice_eq(f[i].name, "grpc-message"))
            return false; /* metadata: a handler ran */
    }
    return ok200 && cancelled;
}

/* A response head (interim or final) or the trailers arrived whole. */
static void on_header_block(struct h2b *h, struct h2_stream *st, bool end_stream)
{
    struct h2_field *f = fields_of(st);
    if (!f) {
        stream_error(st, "out of memory");
        return;
    }
    if (!st->final_head && end_stream && shutdown_cancel(h, st, f)) {
        if (h->state == H2B_GOING_AWAY) {
            st->refused = true; /* never run: it goes again */
            hbuf_free(&st->rx_fields);
            st->rx_nfields = 0;
            return;
        }
        /* the answer is kept (below) but not told until the PING's ACK */
        st->held = true;
        h->held++;
        if (!h->hold_ping &&
            nghttp2_submit_ping(h->session, NGHTTP2_FLAG_NONE, (const uint8_t *)H2B_HOLD_PING) == 0)
            h->hold_ping = true;
    }
    if (!st->final_head) {
        int status;
        enum h2_body body;
        if (headers_h1_from_h2_response(&st->rx_head, f, st->rx_nfields, end_stream,
                                        st->head_request, &status, &body) < 0) {
            stream_error(st, "invalid response head");
            nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, st->id,
                                      NGHTTP2_PROTOCOL_ERROR);
        } else if (status >= 200) {
            st->final_head = true;
            st->rx_body = body;
        }
    } else {
        /* trailers: "name: value" lines after the last chunk */
        for (size_t i = 0; i < st->rx_nfields; i++) {
            if (f[i].name.len == 0 || f[i].name.ptr[0] == ':')
                continue;
            if (hbuf_append(&st->rx_trailers, f[i].name.ptr, f[i].name.len) < 0 ||
                hbuf_append(&st->rx_trailers, ": ", 2) < 0 ||
                hbuf_append(&st->rx_trailers, f[i].value.ptr, f[i].value.len) < 0 ||
                hbuf_append(&st->rx_trailers, "\r\n", 2) < 0)
                stream_error(st, "out of memory");
        }
    }
    hbuf_free(&st->rx_fields);
    st->rx_nfields = 0;
}

/* The streams held for a PING round trip: refused if their backend is
 * going away by now, else their CANCELLED is told as it came. */
static void release_held(struct h2b *h)
{
    if (h->held == 0)
        return;
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &h->streams) {
        struct h2_stream *s = container_of(pos, struct h2_stream, link);
        if (!s->held)
            continue;
        s->held = false;
        h->held--;
        if (h->state == H2B_GOING_AWAY) {
            s->refused = true;
            hbuf_free(&s->rx_head);
            s->final_head = false;
            news(s, NEWS_REFUSED);
        } else {
            news(s, NEWS_READ);
        }
    }
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct h2b *h = user_data;
    struct h2_stream *st = frame->hd.stream_id ? stream_get(h, frame->hd.stream_id) : NULL;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (!st || !st->cb)
            return 0;
        if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
            confirm(st); /* trailers-only answers may still be a refusal */
        on_header_block(h, st, frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
        if (st->refused) {
            news(st, NEWS_REFUSED);
            return 0;
        }
        break;
    case NGHTTP2_DATA:
        if (!st || !st->cb)
            return 0;
        confirm(st);
        break;
    case NGHTTP2_WINDOW_UPDATE:
        return 0;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            h->settings_seen = true;
        return 0;
    case NGHTTP2_PING:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) && h->hold_ping &&
            memcmp(frame->ping.opaque_data, H2B_HOLD_PING, 8) == 0) {
            h->hold_ping = false;
            release_held(h);
        }
        return 0;
    case NGHTTP2_GOAWAY: {
        /* a drain, not a failure: no new stream here; the streams above
         * its last-stream-id were never processed (nghttp2 closes them
         * with REFUSED_STREAM: their exchanges send them again), the
         * others finish */
        int32_t last = frame->goaway.last_stream_id;
        unsigned above = 0;
        struct list *pos, *tmp;
        list_for_each_safe (pos, tmp, &h->streams) {
            struct h2_stream *s = container_of(pos, struct h2_stream, link);
            if (s->id > last && !s->closed)
                above++;
        }
        log_kv(CONF_LOG_INFO, "backend goaway", LOG_STR("pool", pool_of(h)),
               LOG_STR("backend", backend_of(h)), LOG_INT("last_stream_id", last),
               LOG_STR("error", nghttp2_http2_strerror(frame->goaway.error_code)),
               LOG_UINT("streams", h->nstreams), LOG_UINT("refused", above));
        if (h->state == H2B_READY || h->state == H2B_GOING_AWAY) {
            h->state = H2B_GOING_AWAY;
            h->goaway_last = last;
        }
        if (frame->goaway.error_code == NGHTTP2_NO_ERROR)
            __atomic_store_n(&h->s->hb->goaway_ms, (uint64_t)(ev_now(h->w->loop) * 1000.0),
                             __ATOMIC_RELAXED);
        release_held(h);
        return 0;
    }
    default:
        return 0;
    }
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
        st->rx_end = true;
    if (!st->held)
        news(st, NEWS_READ);
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user_data)
{
    struct h2b *h = user_data;
    struct h2_stream *st = stream_get(h, stream_id);
    if (!st || !st->cb || st->error || (st->final_head && st->rx_body == H2_BODY_NONE)) {
        nghttp2_session_consume(session, stream_id, len); /* nobody wants it */
        return 0;
    }
    if (!st->rx && !(st->rx = buf_get(&h->w->bufs_out))) {
        nghttp2_session_consume(session, stream_id, len);
        stream_error(st, "out of memory");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (buf_space(st->rx) < len)
        buf_compact(st->rx);
    if (buf_space(st->rx) < len) {
        /* past the window usher gave: nghttp2 enforces it, so never */
        nghttp2_session_consume(session, stream_id, len);
        stream_error(st, "flow control");
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    memcpy(st->rx->data + st->rx->end, data, len);
    st->rx->end += len;
    news(st, NEWS_READ);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    struct h2b *h = user_data;
    struct h2_stream *st = stream_get(h, stream_id);
    if (!st)
        return 0;
    st->closed = true;
    if (error_code != NGHTTP2_NO_ERROR)
        log_kv(CONF_LOG_DEBUG, "backend stream reset", LOG_STR("pool", pool_of(h)),
               LOG_STR("backend", backend_of(h)), LOG_INT("stream", stream_id),
               LOG_STR("error", nghttp2_http2_strerror(error_code)),
               LOG_STR("response", st->rx_end       ? "complete"
                                   : st->final_head ? "started"
                                                    : "none"),
               LOG_STR("exchange", st->cb ? "bound" : "gone"));
    if (!st->cb) {
        stream_bury(st); /* detached: it only waited for this */
        return 0;
    }
    if (error_code == NGHTTP2_REFUSED_STREAM && !st->final_head && st->rx_head.len == 0) {
        /* RFC 9113 8.7: closed before any processing; also nghttp2's code
         * for a stream above a GOAWAY's last-stream-id, or whose HEADERS
         * could not go out */
        st->refused = true;
        news(st, NEWS_REFUSED);
    } else if (!st->rx_end) {
        stream_error(st, error_code == NGHTTP2_NO_ERROR ? "backend ended the stream early"
                                                        : "backend reset the stream");
    } else {
        news(st, NEWS_READ | NEWS_WRITE); /* the request's rest is not wanted */
    }
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct h2b *h = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    struct h2_stream *st = stream_get(h, frame->hd.stream_id);
    if (st)
        st->headers_sent = true;
    return 0;
}

/* nghttp2 asks for up to <length> bytes of the request body: how many are
 * ready (copied by send_data_cb, NO_COPY), its end (with trailers), or
 * none yet (DEFERRED: a write resumes it). */
static ssize_t tx_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                          uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct h2_stream *st = source->ptr;
    if (!st->cb)
        return NGHTTP2_ERR_DEFERRED; /* detached: its RST_STREAM follows */
    size_t n = st->tx_ready < length ? st->tx_ready : length;
    if (n == 0 && !st->tx_body.done) {
        st->tx_deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (n > 0)
        *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (st->tx_body.done && n == st->tx_ready) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->tx_trailers.len > 0) {
            size_t cap = st->h->w->limits.max_headers;
            struct h2_field *f = calloc(cap ? cap : 1, sizeof(*f));
            struct hbuf scratch = {0};
            int nf = f ? headers_h2_trailers(&st->tx_trailers, &scratch, f, cap) : -1;
            nghttp2_nv *nv = nf > 0 ? calloc((size_t)nf, sizeof(*nv)) : NULL;
            if (nv) {
                for (int i = 0; i < nf; i++)
                    nv[i] = (nghttp2_nv){(uint8_t *)(uintptr_t)f[i].name.ptr,
                                         (uint8_t *)(uintptr_t)f[i].value.ptr, f[i].name.len,
                                         f[i].value.len, NGHTTP2_NV_FLAG_NONE};
                if (nghttp2_submit_trailer(session, stream_id, nv, (size_t)nf) == 0)
                    *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            }
            free(nv);
            free(f);
            hbuf_free(&scratch);
        }
    }
    return (ssize_t)n;
}

static int send_data_cb(nghttp2_session *session, nghttp2_frame *frame, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *source, void *user_data)
{
    struct h2b *h = user_data;
    struct h2_stream *st = source->ptr;
    if (hbuf_append(&h->out, (const char *)framehd, 9) < 0 ||
        (length > 0 && hbuf_append(&h->out, buf_head(st->tx), length) < 0))
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (length > 0) {
        buf_consume(st->tx, length);
        st->tx_ready -= length;
        if (st->tx_blocked)
            news(st, NEWS_WRITE);
    }
    return out_pending(h) >= H2B_OUT_SOFT_LIMIT ? NGHTTP2_ERR_PAUSE : 0;
}

/* ---- reading: frames in ----------------------------------------------------- */

static void conn_read(struct h2b *h)
{
    for (int round = 0; round < H2B_READ_ROUNDS && h->state != H2B_FAILED; round++) {
        struct side *io = &h->io;
        if (!io->readable || io->eof)
            break;
        if (!side_ensure_buf(io, &h->w->bufs_in)) {
            conn_broken(h, "out of memory");
            return;
        }
        ssize_t n = side_recv(io);
        if (n == NET_AGAIN) {
            io->readable = false;
            break;
        }
        if (n <= 0) {
            io->eof = true;
            conn_broken(h, n == 0 ? "backend closed the connection" : "backend connection reset");
            break;
        }
        ssize_t rv = nghttp2_session_mem_recv(h->session, (const uint8_t *)buf_head(io->buf),
                                              buf_len(io->buf));
        buf_consume(io->buf, buf_len(io->buf)); /* nghttp2 takes everything it is given */
        if (rv < 0) {
            conn_broken(h, nghttp2_strerror((int)rv));
            break;
        }
    }
    if (h->io.buf && buf_len(h->io.buf) == 0) {
        buf_put(&h->w->bufs_in, h->io.buf);
        h->io.buf = NULL;
    }
}

/* ---- the connection's events ---------------------------------------------------- */

static void every_stream(struct h2b *h, unsigned what)
{
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &h->streams) {
        struct h2_stream *st = container_of(pos, struct h2_stream, link);
        if (st->cb)
            news(st, what);
    }
}

/* Connected (TLS done for h2): the session's preface and SETTINGS go out
 * with the first streams' HEADERS. */
static void conn_ready(struct h2b *h)
{
    ev_timer_stop(h->w->loop, &h->timer);
    if (__atomic_load_n(&h->s->hb->goaway_ms, __ATOMIC_RELAXED))
        __atomic_store_n(&h->s->hb->goaway_ms, 0, __ATOMIC_RELAXED); /* it is back */
    h->state = H2B_READY;
    h->io.readable = true;
    every_stream(h, NEWS_CONNECTED);
}

static void conn_connect_failed(struct h2b *h, int err)
{
    ev_timer_stop(h->w->loop, &h->timer);
    h->state = H2B_FAILED;
    if (h->u)
        upstream_want(h->u, 0);
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, &h->streams) {
        struct h2_stream *st = container_of(pos, struct h2_stream, link);
        st->connect_err = err;
        if (st->cb)
            news(st, NEWS_CONNECT_FAILED);
    }
}

/* A TLS failure is a connect failure (DESIGN "PROXY protocol and TLS to
 * backends"): OpenSSL's reason in the log, EPROTO to the streams. */
static void tls_failed(struct h2b *h, const char *why)
{
    log_kv(CONF_LOG_WARN, "backend connect failed", LOG_STR("pool", pool_of(h)),
           LOG_STR("backend", backend_of(h)), LOG_STR("address", h->s->hb->address_text),
           LOG_STR("error", why));
    conn_connect_failed(h, errno ? errno : EPROTO);
}

/* pools[].protocol h2: the handshake, until done; then ALPN must have
 * picked h2 (a backend that only speaks HTTP/1.1 over TLS is one this
 * pool cannot use). */
static void tls_step(struct h2b *h)
{
    char err[256];
    unsigned want = 0;
    int rc = tlsc_handshake(h->io.ssl, &want, err, sizeof(err));
    if (rc == NET_AGAIN) {
        upstream_want(h->u, want ? want : EV_READ);
        return;
    }
    if (rc < 0) {
        tls_failed(h, err);
        return;
    }
    const unsigned char *proto;
    unsigned len;
    tlsc_alpn_selected(h->io.ssl, &proto, &len);
    if (len != 2 || memcmp(proto, "h2", 2) != 0) {
        errno = 0;
        tls_failed(h, "the backend did not choose h2 by ALPN");
        return;
    }
    conn_ready(h);
}

static void on_connected(struct h2b *h)
{
    if (!h->tls) {
        conn_ready(h);
        return;
    }
    char err[768];
    struct backend *b = h->s->hb;
    struct tlsc_ctx *ctx = backend_tls_ctx(b, err, sizeof(err));
    SSL *ssl =
        ctx ? tlsc_conn_new(ctx, h->io.fd, b->host, &b->tls_session, NULL, 0, err, sizeof(err))
            : NULL;
    if (!ssl) {
        errno = 0;
        tls_failed(h, err);
        return;
    }
    side_attach(&h->io, h->io.fd, &transport_tls);
    h->io.ssl = ssl;
    tls_step(h);
}

static void conn_event(void *owner, enum upstream_event ev, int err)
{
    struct h2b *h = owner;
    h->busy++;
    switch (ev) {
    case UPSTREAM_CONNECTED:
        on_connected(h);
        break;
    case UPSTREAM_CONNECT_FAILED:
        conn_connect_failed(h, err);
        break;
    case UPSTREAM_READABLE:
    case UPSTREAM_WRITABLE:
        if (h->state == H2B_CONNECTING) {
            if (h->io.ssl)
                tls_step(h); /* the handshake's next step */
            break;
        }
        if (ev == UPSTREAM_READABLE || (h->io.ssl && h->io.tls_want == EV_WRITE))
            h->io.readable = true;
        conn_read(h);
        break;
    case UPSTREAM_DRAIN_STARTED:
        every_stream(h, NEWS_DRAIN_STARTED);
        break;
    case UPSTREAM_DRAIN_EXPIRED:
        every_stream(h, NEWS_DRAIN_EXPIRED);
        break;
    case UPSTREAM_CLOSED:
        /* the pool closes it (idle, or its backend left): it has no stream */
        h->u = NULL;
        h->freeing = true;
        break;
    case UPSTREAM_REFUSED:
        break;
    }
    if (!h->freeing)
        settle(h);
    conn_unbusy(h);
}

static void kick_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
    struct h2b *h = container_of(p, struct h2b, kick_w);
    h->kicked = false;
    h->busy++;
    settle(h);
    conn_unbusy(h);
}

/* timeouts.connect for the connection itself: every stream waiting on it
 * hears a connect timeout (CONNECT_FAILED with no errno). */
static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct h2b *h = container_of(t, struct h2b, timer);
    if (h->state != H2B_CONNECTING)
        return;
    h->busy++;
    conn_connect_failed(h, 0);
    settle(h);
    conn_unbusy(h);
}

/* ---- the session ---------------------------------------------------------------- */

static int session_new(struct h2b *h)
{
    const struct conf *conf = h->w->conf;
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
    /* windows open as the exchanges take the bytes */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_peer_max_concurrent_streams(opt, h->assumed_max);
    if (nghttp2_session_client_new2(&h->session, cb, h, opt) != 0)
        goto out;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2B_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)conf->limits.max_head_bytes},
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    if (nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) !=
            0 ||
        nghttp2_session_set_local_window_size(h->session, NGHTTP2_FLAG_NONE, 0,
                                              H2B_STREAM_WINDOW * H2B_CONN_WINDOW_STREAMS) != 0)
        goto out;
    rc = 0;
out:
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    return rc;
}

static uint32_t remote_max(const struct h2b *h)
{
    return h->settings_seen ? nghttp2_session_get_remote_settings(
                                  h->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)
                            : h->assumed_max;
}

/* What a new connection to <s> may carry before the backend's SETTINGS
 * come: what its other connections were told, else H2B_ASSUMED_STREAMS
 * (so a backend that takes 2 streams gets a third connection for a fifth
 * stream, not a queue). */
static uint32_t assumed_max(struct server *s)
{
    struct list *heads[] = {&s->active, &s->idle};
    for (size_t k = 0; k < 2; k++)
        for (struct list *pos = heads[k]->next; pos != heads[k]; pos = pos->next) {
            struct upstream *u = container_of(pos, struct upstream, pool_link);
            if (u->mux && u->owner && ((struct h2b *)u->owner)->settings_seen)
                return remote_max(u->owner);
        }
    return H2B_ASSUMED_STREAMS;
}

/* A new connection to <s>, connecting. NULL with *<err> if the connect
 * failed at once. */
static struct h2b *conn_new(struct server *s, int *err)
{
    struct worker *w = s->w;
    struct h2b *h = calloc(1, sizeof(*h));
    if (!h) {
        *err = ENOMEM;
        return NULL;
    }
    h->s = s;
    h->w = w;
    h->state = H2B_CONNECTING;
    h->tls = s->pool->conf && s->pool->conf->protocol == CONF_POOL_H2;
    h->assumed_max = assumed_max(s);
    list_init(&h->streams);
    list_init(&h->pending);
    list_init(&h->dead);
    ev_timer_init(&h->timer, timer_cb, 0., 0.);
    ev_prepare_init(&h->kick_w, kick_cb);
    h->hdrs_cap = w->limits.max_headers + H2B_EXTRA_FIELDS;
    if (!(h->hdrs = calloc(h->hdrs_cap, sizeof(*h->hdrs))) || session_new(h) < 0) {
        *err = ENOMEM;
        goto fail;
    }
    h->u = upstream_connect(s, conn_event, h, err);
    if (!h->u)
        goto fail;
    h->u->mux = true;
    side_attach(&h->io, h->u->fd, &transport_plain);
    ev_timer_set(&h->timer, ms_to_s(w->conf->timeouts.connect), 0.);
    ev_timer_start(w->loop, &h->timer);
    return h;
fail:
    nghttp2_session_del(h->session);
    free(h->hdrs);
    free(h);
    return NULL;
}

/* Room for another stream: neither going away nor broken, and below the
 * backend's SETTINGS_MAX_CONCURRENT_STREAMS (what nghttp2 would otherwise
 * queue). */
static bool conn_has_room(const struct h2b *h)
{
    if (h->freeing || (h->state != H2B_READY && h->state != H2B_CONNECTING))
        return false;
    return h->nstreams < remote_max(h);
}

/* The first connection of <s> in <list> with room (a ready one before a
 * connecting one): the streams fill few connections. */
static struct h2b *conn_pick(struct list *list, struct h2b *best)
{
    struct list *pos, *tmp;
    list_for_each_safe (pos, tmp, list) {
        struct upstream *u = container_of(pos, struct upstream, pool_link);
        if (!u->mux || !u->owner)
            continue;
        struct h2b *h = u->owner;
        if (!conn_has_room(h))
            continue;
        if (h->state == H2B_READY)
            return h;
        if (!best)
            best = h;
    }
    return best;
}

struct h2_stream *upstream_h2_attach(struct server *s, upstream_cb cb, void *owner,
                                     bool te_trailers, bool *reused, int *err)
{
    *reused = false;
    struct h2b *h = conn_pick(&s->active, NULL);
    if (!h || h->state != H2B_READY) {
        struct h2b *idle = conn_pick(&s->idle, NULL);
        if (idle && (!h || idle->state == H2B_READY))
            h = idle;
    }
    if (h && h->u->state == UPSTREAM_IDLE) {
        upstream_take(h->u, conn_event, h);
        *reused = h->nstreams == 0;
    }
    if (!h && !(h = conn_new(s, err)))
        return NULL;
    struct h2_stream *st = stream_new(h, cb, owner, te_trailers);
    if (!st) {
        *err = ENOMEM;
        if (h->nstreams == 0)
            kick(h); /* pooled again, or closed, at its next settle */
        return NULL;
    }
    return st;
}

bool upstream_h2_stopping(const struct server *s, ev_tstamp now)
{
    uint64_t at = __atomic_load_n(&s->hb->goaway_ms, __ATOMIC_RELAXED);
    return at && (double)at / 1000.0 + H2_STOP_GRACE_S > now;
}

struct upstream *upstream_h2_conn(const struct h2_stream *st)
{
    return st->h->u;
}

bool upstream_h2_ready(const struct h2_stream *st)
{
    return st->h->state != H2B_CONNECTING;
}

bool upstream_h2_refused(const struct h2_stream *st)
{
    return st->refused;
}

ssize_t upstream_h2_replay(struct h2_stream *st, struct hbuf *out)
{
    if (st->replay_lost)
        return -1;
    size_t n = st->replay.len;
    if (n == 0)
        return 0; /* it took nothing: the exchange's own bytes stand */
    hbuf_free(out);
    *out = st->replay;
    out->sent = 0;
    st->replay = (struct hbuf){0};
    st->replay_lost = true;
    return (ssize_t)n;
}

void upstream_h2_detach(struct h2_stream *st)
{
    struct h2b *h = st->h;
    st->cb = NULL;
    st->owner = NULL;
    if (st->held) {
        st->held = false;
        h->held--;
    }
    list_remove(&st->pending);
    list_init(&st->pending);
    st->queued = false;
    if (h->session && st->rx && buf_len(st->rx) > 0)
        nghttp2_session_consume(h->session, st->id, buf_len(st->rx)); /* the connection's window */
    stream_buffers_free(st);
    if (st->id == 0 || st->closed || h->state == H2B_FAILED || !h->session) {
        stream_bury(st);
    } else {
        /* not complete both ways: the backend is told to stop (its close
         * then frees it); complete: nghttp2 closes it on its own */
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_CANCEL);
    }
    kick(h);
}

/* Bytes (or an end, or an error) wait for the exchange's next read. */
static bool rx_pending(const struct h2_stream *st)
{
    if (st->held)
        return false;
    return st->refused || st->error || st->rx_head.len > 0 || (st->rx && buf_len(st->rx) > 0) ||
           st->rx_framing.len > 0 || (st->final_head && st->rx_end && !st->rx_last_given);
}

void upstream_h2_want(struct h2_stream *st, unsigned events)
{
    /* level-triggered, as a socket's watcher is: what is there already is
     * told again (an exchange that stopped at its round limit, its response
     * buffer full meanwhile, hears of what waited) */
    unsigned n = 0;
    if ((events & EV_READ) && rx_pending(st))
        n |= NEWS_READ;
    if ((events & EV_WRITE) && st->head_done && (!st->tx || buf_len(st->tx) < st->tx->cap))
        n |= NEWS_WRITE;
    if (n) {
        news(st, n);
        kick(st->h);
    }
}

/* ---- the exchange's side: HTTP/1.1 bytes in and out (struct transport) ------- */

/* Keeps <n> bytes the stream took for a replay, while it may be refused. */
static void replay_keep(struct h2_stream *st, const char *p, size_t n)
{
    if (st->replay_lost || n == 0)
        return;
    if (st->replay.len + n > H2_REPLAY_MAX || hbuf_append(&st->replay, p, n) < 0) {
        hbuf_free(&st->replay);
        st->replay_lost = true;
    }
}

/* The request head is complete in tx_head: HEADERS (with END_STREAM when
 * it has no body). 0, or -1 (the stream failed). */
static int submit_head(struct h2_stream *st)
{
    struct h2b *h = st->h;
    struct http1_request req;
    memset(&req, 0, sizeof(req));
    req.msg.headers = h->hdrs;
    struct http1_limits lim = {SIZE_MAX, h->hdrs_cap, SIZE_MAX};
    if (http1_parse_request(st->tx_head.data, st->tx_head.len, &lim, &req) != HTTP1_OK)
        return -1; /* usher's own head: never */
    int rc = -1;
    bool room = scratch_fit(h, req.msg.num_headers + 5);
    struct h2_field *f = h->fields;
    nghttp2_nv *nv = h->nv;
    int n = room ? headers_h2_from_h1_request(&req, h->tls ? "https" : "http", st->te_trailers,
                                              &h->names, f)
                 : -1;
    if (n > 0) {
        for (int i = 0; i < n; i++)
            nv[i] = (nghttp2_nv){(uint8_t *)(uintptr_t)f[i].name.ptr,
                                 (uint8_t *)(uintptr_t)f[i].value.ptr, f[i].name.len,
                                 f[i].value.len, NGHTTP2_NV_FLAG_NONE};
        body_start(&st->tx_body, &req.msg, true);
        for (size_t i = 0; i < req.msg.num_headers; i++)
            if (http1_slice_eq(req.msg.headers[i].name, "content-type"))
                st->grpc = grpc_content_type(req.msg.headers[i].value);
        st->tx_body.trailers = &st->tx_trailers;
        st->head_request = req.method_id == HTTP1_METHOD_HEAD;
        nghttp2_data_provider dp = {.source.ptr = st, .read_callback = tx_read_cb};
        bool body = !st->tx_body.done;
        int32_t id = nghttp2_submit_request(h->session, NULL, nv, (size_t)n, body ? &dp : NULL, st);
        if (id > 0) {
            st->id = id;
            st->head_done = true;
            rc = 0;
        } else if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
            /* stream ids ran out: the connection goes away, the stream
             * was never sent */
            h->state = H2B_GOING_AWAY;
            st->refused = true;
            news(st, NEWS_REFUSED);
            rc = 0;
        }
    }
    hbuf_free(&st->tx_head);
    return rc;
}

/* Takes request bytes <p> (<n>): the head until it ends, then body bytes
 * while the buffer has room. Returns how many were taken, or -1. */
static ssize_t take(struct h2_stream *st, const char *p, size_t n)
{
    size_t taken = 0;
    if (!st->head_done && !st->refused) {
        size_t from = st->tx_head.len > 3 ? st->tx_head.len - 3 : 0;
        if (hbuf_append(&st->tx_head, p, n) < 0)
            return -1;
        const char *end = memmem(st->tx_head.data + from, st->tx_head.len - from, "\r\n\r\n", 4);
        if (!end) {
            replay_keep(st, p, n);
            return (ssize_t)n;
        }
        size_t head_len = (size_t)(end - st->tx_head.data) + 4;
        size_t excess = st->tx_head.len - head_len; /* body bytes behind it (a replay) */
        st->tx_head.len = head_len;
        taken = n - excess;
        replay_keep(st, p, taken);
        if (submit_head(st) < 0)
            return -1;
        p += taken;
        n -= taken;
    }
    if (n == 0 || st->refused)
        return (ssize_t)taken;
    struct worker *w = st->h->w;
    if (!st->tx && !(st->tx = buf_get(&w->bufs_in)))
        return -1;
    if (buf_space(st->tx) < n)
        buf_compact(st->tx);
    size_t k = buf_space(st->tx) < n ? buf_space(st->tx) : n;
    memcpy(st->tx->data + st->tx->end, p, k);
    st->tx->end += k;
    replay_keep(st, p, k);
    if (body_frame(&st->tx_body, st->tx, &st->tx_ready) < 0)
        return -1;
    return (ssize_t)(taken + k);
}

static ssize_t ts_send(struct side *sd, struct hbuf *head, struct buf *b, size_t *fwd)
{
    struct h2_stream *st = sd->h2s;
    struct h2b *h = st->h;
    size_t want = (head ? head->len - head->sent : 0) + (b && fwd ? *fwd : 0);
    if (st->rx_end && (st->closed || st->error)) {
        /* the response is complete and the backend wants no more: the
         * rest of the request is dropped, as HTTP/1.1 drops it */
        if (head)
            head->sent = head->len;
        if (b && fwd && *fwd) {
            buf_consume(b, *fwd);
            *fwd = 0;
        }
        return (ssize_t)want;
    }
    if (st->error || h->state == H2B_FAILED)
        return NET_ERROR;
    ssize_t total = 0;
    if (head && head->sent < head->len) {
        ssize_t n = take(st, head->data + head->sent, head->len - head->sent);
        if (n < 0)
            return NET_ERROR;
        head->sent += (size_t)n;
        total += n;
    }
    if (b && fwd && *fwd > 0 && (!head || head->sent == head->len)) {
        ssize_t n = take(st, buf_head(b), *fwd);
        if (n < 0)
            return NET_ERROR;
        buf_consume(b, (size_t)n);
        *fwd -= (size_t)n;
        total += n;
    }
    st->tx_blocked = (size_t)total < want;
    if (st->tx_deferred && (st->tx_ready > 0 || st->tx_body.done) && st->id > 0 && !st->closed) {
        st->tx_deferred = false;
        nghttp2_session_resume_data(h->session, st->id);
    }
    if (total > 0)
        kick(h);
    return total;
}

/* Appends as much of <p> (<n>) as fits to <b>; returns how much. */
static size_t put_some(struct buf *b, const char *p, size_t n)
{
    size_t k = buf_space(b) < n ? buf_space(b) : n;
    memcpy(b->data + b->end, p, k);
    b->end += k;
    return k;
}

/* Gives what it can of <h>'s unsent part; true once all of it went. */
static bool give_hbuf(struct buf *b, struct hbuf *h)
{
    h->sent += put_some(b, h->data + h->sent, h->len - h->sent);
    if (h->sent < h->len)
        return false;
    hbuf_reset(h);
    return true;
}

/* Body bytes for the exchange, framed as the head said; a byte of room
 * always makes progress (the chunked framing is given a piece at a time,
 * so a buffer nearly full never stalls the stream). Returns the payload
 * bytes given (their window is opened again), or -1 (memory). */
static ssize_t give_body(struct h2_stream *st, struct buf *b)
{
    size_t payload = 0;
    size_t have = st->rx ? buf_len(st->rx) : 0;
    switch (st->rx_body) {
    case H2_BODY_NONE:
        payload = have; /* nothing may follow such a head: dropped */
        if (have)
            buf_consume(st->rx, have);
        st->rx_last_given = st->rx_end;
        break;
    case H2_BODY_LENGTH:
        payload = have ? put_some(b, buf_head(st->rx), have) : 0;
        if (payload)
            buf_consume(st->rx, payload);
        st->rx_last_given = st->rx_end && (!st->rx || buf_len(st->rx) == 0);
        break;
    case H2_BODY_CHUNKED:
        for (;;) {
            if (st->rx_framing.len > 0 && !give_hbuf(b, &st->rx_framing))
                break; /* no room */
            if (st->last_chunk) {
                st->rx_last_given = true;
                break;
            }
            if (st->chunk_left > 0) {
                size_t k = put_some(b, buf_head(st->rx),
                                    st->chunk_left < have ? (size_t)st->chunk_left : have);
                if (k == 0)
                    break;
                buf_consume(st->rx, k);
                have -= k;
                payload += k;
                st->chunk_left -= k;
                if (st->chunk_left == 0 && hbuf_append(&st->rx_framing, "\r\n", 2) < 0)
                    return -1;
                continue;
            }
            if (have > 0) {
                st->chunk_left = have; /* what came later is the next chunk */
                if (hbuf_printf(&st->rx_framing, "%zx\r\n", have) < 0)
                    return -1;
                continue;
            }
            if (!st->rx_end)
                break;
            int rc = hbuf_append(&st->rx_framing, "0\r\n", 3);
            if (st->rx_trailers.len)
                rc |= hbuf_append(&st->rx_framing, st->rx_trailers.data, st->rx_trailers.len);
            rc |= hbuf_append(&st->rx_framing, "\r\n", 2);
            if (rc < 0)
                return -1;
            st->last_chunk = true;
        }
        break;
    }
    return (ssize_t)payload;
}

static ssize_t ts_recv(struct side *sd)
{
    struct h2_stream *st = sd->h2s;
    struct h2b *h = st->h;
    struct buf *b = sd->buf;
    if (st->refused || (st->error && !st->rx_last_given))
        return NET_ERROR;
    if (st->held) {
        sd->readable = false;
        return NET_AGAIN;
    }
    if (buf_space(b) == 0)
        buf_compact(b);
    size_t before = buf_len(b);
    if (st->rx_head.sent < st->rx_head.len) {
        size_t k =
            put_some(b, st->rx_head.data + st->rx_head.sent, st->rx_head.len - st->rx_head.sent);
        st->rx_head.sent += k;
        if (st->rx_head.sent == st->rx_head.len)
            hbuf_free(&st->rx_head);
    }
    ssize_t payload = 0;
    if (st->rx_head.len == 0 && st->final_head && (payload = give_body(st, b)) < 0)
        return NET_ERROR;
    if (payload > 0 && h->session) {
        /* the WINDOW_UPDATE (only the connection's once it closed) */
        if (!st->closed)
            nghttp2_session_consume(h->session, st->id, (size_t)payload);
        else
            nghttp2_session_consume_connection(h->session, (size_t)payload);
        kick(h);
    }
    size_t n = buf_len(b) - before;
    if (!rx_pending(st))
        sd->readable = false; /* NEWS_READ sets it again */
    if (n == 0)
        return NET_AGAIN;
    return (ssize_t)n;
}

static void ts_shutdown_write(struct side *sd)
{
}

const struct transport transport_h2_stream = {
    .recv = ts_recv,
    .send = ts_send,
    .shutdown_write = ts_shutdown_write,
    .release = NULL,
    .splice_in = NULL,
    .splice_out = NULL,
};
