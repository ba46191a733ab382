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
};

extern const struct transport transport_plain;
extern const struct transport transport_tls;

struct side {
    int fd; /* -1 when nothing is bound */
    const struct transport *tp;
    struct ssl_st *ssl; /* TLS state (transport_tls) */
    unsigned tls_want;  /* events a TLS read waits for (EV_WRITE during a key update) */
    struct buf *buf;    /* bytes read from this side, not yet passed on */
    bool readable;      /* the socket may have bytes (cleared on EAGAIN or a short read) */
    bool eof;           /* the peer half-closed */
    bool shut;          /* we half-closed toward the peer */
};

/* Binds <s> to socket <fd> with <tp>; the rest of the side is cleared. */
void side_attach(struct side *s, int fd, const struct transport *tp);

/* Reads and drops whatever the socket holds now (lingering close), adding
 * what it read to *<count>. Returns 0 while the peer may send more, 1 once
 * it closed or failed or *<count> reached <max>. */
int side_discard(struct side *s, size_t max, size_t *count);

#endif
