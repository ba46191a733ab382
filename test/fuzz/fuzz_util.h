/* What the request and response harnesses check alike. */
#ifndef USHER_FUZZ_UTIL_H
#define USHER_FUZZ_UTIL_H

#include <stdlib.h>
#include <string.h>

#include "parser/http1.h"

#define MAX_HEADERS 100

static struct http1_header headers[MAX_HEADERS], headers2[MAX_HEADERS];

/* The default limits, and small ones so the limit paths are reached. */
static const struct http1_limits limits[] = {
    {.max_head_bytes = 16384, .max_headers = MAX_HEADERS, .max_uri_bytes = 8192},
    {.max_head_bytes = 200, .max_headers = 4, .max_uri_bytes = 24},
};

/* Aborts unless <s> lies within <buf>[0..<len>). */
static void in_buf(struct http1_slice s, const char *buf, size_t len)
{
    if (s.len == 0)
        return;
    if (s.ptr < buf || s.ptr + s.len > buf + len)
        abort();
}

/* Invariants of any complete head <m> parsed from <buf>[0..<len>). */
static void check_head(const struct http1_message *m, const char *buf, size_t len,
                       const struct http1_limits *lim)
{
    if (m->head_len > len || m->head_len > lim->max_head_bytes || m->head_len < 4 ||
        memcmp(buf + m->head_len - 4, "\r\n\r\n", 4) != 0)
        abort();
    if (m->num_headers > lim->max_headers)
        abort();
    in_buf(m->upgrade, buf, m->head_len);
    in_buf(m->connection, buf, m->head_len);
    for (size_t i = 0; i < m->num_headers; i++) {
        if (m->headers[i].name.len == 0)
            abort();
        in_buf(m->headers[i].name, buf, m->head_len);
        in_buf(m->headers[i].value, buf, m->head_len);
    }
}

#endif
