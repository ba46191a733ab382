/* One peer of a client connection — the client's socket or the bound
 * upstream's — and the transport that moves its bytes (plain TCP or TLS),
 * behind a small ops table so the state machine never asks "is this TLS?". */
#ifndef USHER_PROXY_TRANSPORT_H
#define USHER_PROXY_TRANSPORT_H

#include <stdbool.h>
#include <sys/types.h>

#include "../base/buf.h"

struct side;
struct ssl_st;
struct h2_stream;

/* A kernel pipe that carries a body from one socket to the other without
 * passing through user space (splice(2)). Bounded: what it holds is at most
 * cap bytes, so a slow reader stops the reads from the fast side. */
struct kpipe {
    int rd, wr; /* -1 when none is held */
    unsigned len; /* bytes in the pipe, not yet sent on */
    unsigned cap; /* what it takes at most (its kernel buffer size, at most 1 MiB) */
    bool full;  /* the last splice in found no room (the kernel counts pipe slots, not
                   bytes): no more until some bytes went out */
};

/* Idle pipes kept per worker for reuse, and the count of every pipe open. */
#define KPIPE_IDLE_MAX 8
struct kpipe_pool {
    struct kpipe idle[KPIPE_IDLE_MAX];
    unsigned idle_count;
    unsigned open; /* held by clients, plus idle[]: each costs 2 descriptors */
};

struct transport {
    /* Reads into s->buf. Returns bytes read (> 0), 0 on EOF, NET_AGAIN when
     * nothing is there, or NET_ERROR. A short read clears s->readable so the
     * next read waits for the event instead of costing an EAGAIN syscall. */
    ssize_t (*recv)(struct side *s);
    /* Writes the unsent part of <head>, then up to *<fwd> bytes of <b> (NULL
     * is fine). Returns bytes written (>= 0; short: the socket is full) or
     * NET_ERROR. */
    ssize_t (*send)(struct side *s, struct hbuf *head, struct buf *b, size_t *fwd);
    /* Half-closes the write direction (close_notify first on TLS). */
    void (*shutdown_write)(struct side *s);
    /* Releases the transport state (not the socket). */
    void (*release)(struct side *s);
    /* Moves up to <max> bytes from the socket into <p> (kernel to kernel).
     * Returns bytes moved (> 0), 0 on EOF, NET_AGAIN when the socket had
     * nothing or <p> had no room (a short move clears s->readable as recv
     * does), or NET_ERROR. NULL: the transport cannot (TLS bytes must be
     * decrypted in user space). */
    ssize_t (*splice_in)(struct side *s, struct kpipe *p, size_t max);
    /* Moves what <p> holds to the socket. Returns bytes moved (>= 0; short:
     * the socket is full) or NET_ERROR. NULL when splice_in is. */
    ssize_t (*splice_out)(struct side *s, struct kpipe *p);
};

extern const struct transport transport_plain;
extern const struct transport transport_tls;

struct side {
    int fd;            /* -1 when nothing is bound */
    unsigned tls_want; /* events a TLS read waits for (EV_WRITE during a key update) */
    const struct transport *tp;
    struct ssl_st *ssl;    /* TLS state (transport_tls) */
    struct h2_stream *h2s; /* the HTTP/2 backend stream it moves bytes of (transport_h2_stream) */
    struct buf *buf;       /* bytes read from this side, not yet passed on */
    bool readable;         /* the socket may have bytes (cleared on EAGAIN or a short read) */
    bool eof;              /* the peer half-closed */
    bool shut;             /* we half-closed toward the peer */
};

/* True if <s> has room to read into (maybe after compacting), or no
 * buffer yet (one is taken when it reads). */
static inline bool side_can_read(const struct side *s)
{
    return !s->buf || buf_space(s->buf) > 0 || s->buf->start > 0;
}

/* Gives <s> a buffer from <pool> if it has none. False when none could be
 * had (memory). */
static inline bool side_ensure_buf(struct side *s, struct buf_pool *pool)
{
    if (!s->buf)
        s->buf = buf_get(pool);
    return s->buf != NULL;
}

/* Reads into s->buf through the side's transport (struct transport recv). */
static inline ssize_t side_recv(struct side *s)
{
    return s->tp->recv(s);
}

/* Writes <head>'s unsent part, then up to *<fwd> bytes of <b> (struct
 * transport send). */
static inline ssize_t side_send(struct side *s, struct hbuf *head, struct buf *b, size_t *fwd)
{
    return s->tp->send(s, head, b, fwd);
}

/* True while part of <h> was not written yet. */
static inline bool hbuf_pending(const struct hbuf *h)
{
    return h->sent < h->len;
}

/* Binds <s> to socket <fd> with <tp>; the rest of the side is cleared. */
void side_attach(struct side *s, int fd, const struct transport *tp);

/* Reads and drops whatever the socket holds now (lingering close), adding
 * what it read to *<count>. Returns 0 while the peer may send more, 1 once
 * it closed or failed or *<count> reached <max>. */
int side_discard(struct side *s, size_t max, size_t *count);

/* Takes an idle pipe of <pool> into <p>, or opens one. Returns 0, or -1
 * if none could be had (descriptors, memory): <p> stays empty. */
int kpipe_get(struct kpipe_pool *pool, struct kpipe *p);

/* Gives <p> back to <pool> (closed if it still holds bytes, or the pool
 * has enough idle ones) and empties it. An empty <p> is fine. */
void kpipe_put(struct kpipe_pool *pool, struct kpipe *p);

/* Closes every idle pipe of <pool> (descriptors are short, or teardown). */
void kpipe_pool_trim(struct kpipe_pool *pool);

#endif
