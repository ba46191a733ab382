#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_pool_init(struct buf_pool *p, size_t buf_size, size_t max_free)
{
    p->buf_size = buf_size;
    p->free = NULL;
    p->free_count = 0;
    p->max_free = max_free;
}

void buf_pool_destroy(struct buf_pool *p)
{
    while (p->free) {
        struct buf *b = p->free;
        p->free = b->next_free;
        free(b);
    }
    p->free_count = 0;
}

struct buf *buf_get(struct buf_pool *p)
{
    struct buf *b = p->free;
    if (b) {
        p->free = b->next_free;
        p->free_count--;
    } else {
        /* one allocation: the struct followed by its bytes */
        b = malloc(sizeof(*b) + p->buf_size);
        if (!b)
            return NULL;
        b->data = (char *)(b + 1);
        b->cap = p->buf_size;
    }
    b->start = b->end = 0;
    b->next_free = NULL;
    return b;
}

void buf_put(struct buf_pool *p, struct buf *b)
{
    if (!b)
        return;
    if (p->free_count >= p->max_free || b->cap != p->buf_size) {
        free(b);
        return;
    }
    b->next_free = p->free;
    p->free = b;
    p->free_count++;
}

void buf_consume(struct buf *b, size_t n)
{
    b->start += n;
    if (b->start >= b->end)
        b->start = b->end = 0;
}

void buf_compact(struct buf *b)
{
    if (b->start == 0)
        return;
    memmove(b->data, b->data + b->start, b->end - b->start);
    b->end -= b->start;
    b->start = 0;
}

static int hbuf_reserve(struct hbuf *h, size_t extra)
{
    if (h->len + extra <= h->cap)
        return 0;
    size_t cap = h->cap ? h->cap : 1024;
    while (cap < h->len + extra)
        cap *= 2;
    char *p = realloc(h->data, cap);
    if (!p)
        return -1;
    h->data = p;
    h->cap = cap;
    return 0;
}

int hbuf_append(struct hbuf *h, const char *p, size_t n)
{
    if (hbuf_reserve(h, n + 1) < 0)
        return -1;
    memcpy(h->data + h->len, p, n);
    h->len += n;
    h->data[h->len] = '\0'; /* data is always a C string too */
    return 0;
}

int hbuf_append_str(struct hbuf *h, const char *s)
{
    return hbuf_append(h, s, strlen(s));
}

int hbuf_printf(struct hbuf *h, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || hbuf_reserve(h, (size_t)n + 1) < 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf(h->data + h->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    h->len += (size_t)n;
    return 0;
}

void hbuf_reset(struct hbuf *h)
{
    h->len = 0;
    h->sent = 0;
}

void hbuf_free(struct hbuf *h)
{
    free(h->data);
    h->data = NULL;
    h->len = h->cap = h->sent = 0;
}
