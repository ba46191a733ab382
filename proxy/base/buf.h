/* Byte buffers for connections, recycled through a per-worker free list so
 * an idle connection holds none and a busy one never mallocs per request. */
#ifndef USHER_PROXY_BUF_H
#define USHER_PROXY_BUF_H

#include <stddef.h>

struct buf {
    char *data;
    size_t start; /* first unconsumed byte */
    size_t end;   /* one past the last byte */
    size_t cap;
    struct buf *next_free;
};

/* A free list of equally sized buffers. */
struct buf_pool {
    size_t buf_size;
    struct buf *free;
    size_t free_count;
    size_t max_free; /* beyond this many idle buffers, give memory back to malloc */
};

/* Initialises <p> for buffers of <buf_size> bytes. */
void buf_pool_init(struct buf_pool *p, size_t buf_size, size_t max_free);

/* Releases every free buffer of <p>. */
void buf_pool_destroy(struct buf_pool *p);

/* Returns an empty buffer, or NULL on allocation failure. */
struct buf *buf_get(struct buf_pool *p);

/* Gives <b> back to <p>. NULL is fine. */
void buf_put(struct buf_pool *p, struct buf *b);

static inline size_t buf_len(const struct buf *b)
{
    return b->end - b->start;
}

static inline size_t buf_space(const struct buf *b)
{
    return b->cap - b->end;
}

static inline char *buf_head(const struct buf *b)
{
    return b->data + b->start;
}

/* Drops <n> bytes from the front; an emptied buffer is rewound. */
void buf_consume(struct buf *b, size_t n);

/* Moves the unconsumed bytes to the front so buf_space() is maximal. */
void buf_compact(struct buf *b);

/* A growable byte string, for heads that usher rebuilds. Once anything
 * was appended, data[len] is a NUL: data also reads as a C string. */
struct hbuf {
    char *data;
    size_t len;
    size_t cap;
    size_t sent; /* bytes already written to the peer */
};

/* Appends <n> bytes. Returns 0, or -1 on allocation failure. */
int hbuf_append(struct hbuf *h, const char *p, size_t n);
int hbuf_append_str(struct hbuf *h, const char *s);
/* Appends printf-formatted text. Returns 0 or -1. */
int hbuf_printf(struct hbuf *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void hbuf_reset(struct hbuf *h);
void hbuf_free(struct hbuf *h);

#endif
