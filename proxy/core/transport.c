#include "transport.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../net/net.h"
#include "tls.h"

void side_attach(struct side *s, int fd, const struct transport *tp)
{
    struct buf *keep = s->buf;
    memset(s, 0, sizeof(*s));
    s->fd = fd;
    s->tp = tp;
    s->buf = keep;
}

static ssize_t plain_recv(struct side *s)
{
    struct buf *b = s->buf;
    if (buf_space(b) == 0)
        buf_compact(b);
    for (;;) {
        size_t want = buf_space(b);
        ssize_t n = read(s->fd, b->data + b->end, want);
        if (n > 0) {
            b->end += (size_t)n;
            if ((size_t)n < want)
                s->readable = false;
            return n;
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? NET_AGAIN : NET_ERROR;
    }
}

/* One writev per round: the head and the body bytes go in one syscall. */
static ssize_t plain_send(struct side *s, struct hbuf *head, struct buf *b, size_t *fwd)
{
    ssize_t total = 0;
    for (;;) {
        struct iovec iov[2];
        int cnt = 0;
        if (head && head->sent < head->len) {
            iov[cnt].iov_base = head->data + head->sent;
            iov[cnt++].iov_len = head->len - head->sent;
        }
        if (b && *fwd > 0) {
            iov[cnt].iov_base = buf_head(b);
            iov[cnt++].iov_len = *fwd;
        }
        if (cnt == 0)
            return total;
        ssize_t n = writev(s->fd, iov, cnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return total;
            return NET_ERROR;
        }
        total += n;
        size_t left = (size_t)n;
        if (head && head->sent < head->len) {
            size_t from_head = head->len - head->sent;
            if (from_head > left)
                from_head = left;
            head->sent += from_head;
            left -= from_head;
        }
        if (left) {
            buf_consume(b, left);
            *fwd -= left;
        }
    }
}

static void plain_shutdown_write(struct side *s)
{
    shutdown(s->fd, SHUT_WR);
}

static void plain_release(struct side *s)
{
}

static ssize_t plain_splice_in(struct side *s, struct kpipe *p, size_t max)
{
    size_t room = p->cap - p->len;
    size_t want = max < room ? max : room;
    if (want == 0)
        return NET_AGAIN;
    for (;;) {
        ssize_t n = splice(s->fd, NULL, p->wr, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            p->len += (unsigned)n;
            if ((size_t)n < want)
                s->readable = false;
            return n;
        }
        if (n == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            /* the socket is empty, or the pipe ran out of slots */
            if (p->len > 0)
                p->full = true;
            else
                s->readable = false;
            return NET_AGAIN;
        }
        return NET_ERROR;
    }
}

static ssize_t plain_splice_out(struct side *s, struct kpipe *p)
{
    ssize_t total = 0;
    while (p->len > 0) {
        ssize_t n = splice(p->rd, NULL, s->fd, NULL, p->len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            p->len -= (unsigned)n;
            p->full = false;
            total += n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        return NET_ERROR; /* 0 cannot happen with bytes in the pipe */
    }
    return total;
}

const struct transport transport_plain = {
    .recv = plain_recv,
    .send = plain_send,
    .shutdown_write = plain_shutdown_write,
    .release = plain_release,
    .splice_in = plain_splice_in,
    .splice_out = plain_splice_out,
};

static ssize_t tls_side_recv(struct side *s)
{
    struct buf *b = s->buf;
    if (buf_space(b) == 0)
        buf_compact(b);
    size_t want = buf_space(b);
    ssize_t n = tls_recv(s->ssl, b->data + b->end, want, &s->tls_want);
    if (n > 0) {
        b->end += (size_t)n;
        /* as plain_recv: a short read with nothing decrypted or buffered
         * left means the socket is empty, so no read to learn EAGAIN */
        if ((size_t)n < want && !SSL_has_pending(s->ssl))
            s->readable = false;
    }
    return n;
}

/* One TLS record's worth of plaintext (RFC 8446 5.1: 2^14 bytes). */
#define TLS_RECORD_MAX 16384

/* TLS has no writev. A head with a body behind it goes out as one record
 * with the body's first bytes (copied together): a small response is one
 * record and one write(2), not two. A write that must be retried is
 * rebuilt the same, from the same bytes (still unsent), or longer. */
static ssize_t tls_send_head_with_body(struct side *s, struct hbuf *head, struct buf *b,
                                       size_t *fwd)
{
    char one[TLS_RECORD_MAX];
    size_t h = head->len - head->sent;
    size_t k = *fwd < TLS_RECORD_MAX - h ? *fwd : TLS_RECORD_MAX - h;
    unsigned want;
    memcpy(one, head->data + head->sent, h);
    memcpy(one + h, buf_head(b), k);
    ssize_t n = tls_send(s->ssl, one, h + k, &want);
    if (n <= 0)
        return n < 0 ? NET_ERROR : 0;
    size_t from_head = (size_t)n < h ? (size_t)n : h;
    head->sent += from_head;
    buf_consume(b, (size_t)n - from_head);
    *fwd -= (size_t)n - from_head;
    return n;
}

static ssize_t tls_side_send(struct side *s, struct hbuf *head, struct buf *b, size_t *fwd)
{
    ssize_t total = 0;
    unsigned want;
    if (head && head->sent < head->len && head->len - head->sent < TLS_RECORD_MAX && b &&
        *fwd > 0) {
        total = tls_send_head_with_body(s, head, b, fwd);
        if (total <= 0 || head->sent < head->len)
            return total;
    }
    while (head && head->sent < head->len) {
        ssize_t n = tls_send(s->ssl, head->data + head->sent, head->len - head->sent, &want);
        if (n <= 0)
            return n < 0 ? NET_ERROR : total;
        head->sent += (size_t)n;
        total += n;
    }
    while (b && *fwd > 0) {
        ssize_t n = tls_send(s->ssl, buf_head(b), *fwd, &want);
        if (n <= 0)
            return n < 0 ? NET_ERROR : total;
        buf_consume(b, (size_t)n);
        *fwd -= (size_t)n;
        total += n;
    }
    return total;
}

static void tls_side_shutdown_write(struct side *s)
{
    SSL_shutdown(s->ssl);
    shutdown(s->fd, SHUT_WR);
}

static void tls_side_release(struct side *s)
{
    tls_close(s->ssl);
    s->ssl = NULL;
}

const struct transport transport_tls = {
    .recv = tls_side_recv,
    .send = tls_side_send,
    .shutdown_write = tls_side_shutdown_write,
    .release = tls_side_release,
};

/* ---- pipes for splice(2) ------------------------------------------------- */

/* The kernel buffer asked for each pipe: the size of the buffered path's
 * response buffer (BUF_OUT_SIZE_MIN in worker.c), so a spliced body holds
 * no more in flight than a buffered one; also Linux's default pipe size. */
#define KPIPE_SIZE (64 * 1024)

static void kpipe_close(struct kpipe *p)
{
    close(p->rd);
    close(p->wr);
    p->rd = p->wr = -1;
    p->len = p->cap = 0;
    p->full = false;
}

int kpipe_get(struct kpipe_pool *pool, struct kpipe *p)
{
    if (pool->idle_count > 0) {
        *p = pool->idle[--pool->idle_count];
        return 0;
    }
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return -1;
    int cap = fcntl(fds[1], F_SETPIPE_SZ, KPIPE_SIZE);
    if (cap < 0)
        cap = fcntl(fds[1], F_GETPIPE_SZ);
    if (cap <= 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    p->rd = fds[0];
    p->wr = fds[1];
    p->len = 0;
    p->cap = (unsigned)cap;
    p->full = false;
    pool->open++;
    return 0;
}

void kpipe_put(struct kpipe_pool *pool, struct kpipe *p)
{
    if (p->rd < 0)
        return;
    if (p->len == 0 && pool->idle_count < KPIPE_IDLE_MAX) {
        p->full = false;
        pool->idle[pool->idle_count++] = *p;
    } else {
        /* bytes left in it belong to a body nobody will finish */
        kpipe_close(p);
        pool->open--;
    }
    p->rd = p->wr = -1;
    p->len = p->cap = 0;
    p->full = false;
}

void kpipe_pool_trim(struct kpipe_pool *pool)
{
    while (pool->idle_count > 0) {
        kpipe_close(&pool->idle[--pool->idle_count]);
        pool->open--;
    }
}

/* Reads and drops what the socket holds: below the transport on purpose,
 * since after our close_notify nothing the peer sends matters. */
int side_discard(struct side *s, size_t max, size_t *count)
{
    char sink[4096];
    for (;;) {
        if (*count >= max)
            return 1;
        ssize_t n = read(s->fd, sink, sizeof(sink));
        if (n > 0) {
            *count += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        return 1;
    }
}
