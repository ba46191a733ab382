/* One line per event on stderr: "time level event key=value ..." (logfmt)
 * or, with log.format json, one JSON object per line.
 *
 * Logging never blocks the caller: each thread formats its line and puts
 * it in a buffer of its own; one log thread (started by the first line)
 * writes them to stderr. When stderr's reader stalls, a full buffer drops
 * the line and counts it (log_lines_dropped). The lines of one thread keep
 * their order; across threads they keep the order they were logged in
 * (log.c, "Order"). At exit the lines still buffered are written, within
 * a bound when stderr is stalled.
 *
 * Callers hand over typed fields; quoting and escaping happen here only:
 *
 *     log_kv(CONF_LOG_INFO, "backend state", LOG_STR("pool", p->name),
 *            LOG_UINT("connections", n), LOG_BOOL("draining", d));
 *
 * Keys are literals of the code, never input. Values are written as they
 * are when they can be, quoted (text) or as JSON strings otherwise, with
 * invalid UTF-8 as U+FFFD in both formats; numbers and booleans are JSON
 * numbers and booleans. */
#ifndef USHER_PROXY_LOG_H
#define USHER_PROXY_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include "../../conf/conf-t.h"

struct hbuf;

/* Sets the threshold and the format; called at startup and on reload. */
void log_configure(enum conf_log_level level, enum conf_log_format format);

/* True if a message of <level> would be written. */
bool log_enabled(enum conf_log_level level);

enum log_type {
    LOG_T_STR = 1, /* NUL-terminated string (NULL is written as "-") */
    LOG_T_STRN,    /* <len> bytes, any content */
    LOG_T_INT,
    LOG_T_UINT,
    LOG_T_FLOAT, /* fixed point, <len> decimals (0..3) */
    LOG_T_BOOL,
    LOG_T_NUMBER, /* <len> bytes already spelled as a JSON number (the printf shim) */
};

/* One key/value of an event; build them with the LOG_* constructors. */
struct log_field {
    const char *key;
    enum log_type type;
    size_t len;
    union {
        const char *s;
        long long i;
        unsigned long long u;
        double f;
        bool b;
    } v;
};

#define LOG_STR(k, x) ((struct log_field){.key = (k), .type = LOG_T_STR, .v.s = (x)})
#define LOG_STRN(k, p, n)                                                                          \
    ((struct log_field){.key = (k), .type = LOG_T_STRN, .len = (n), .v.s = (p)})
#define LOG_INT(k, x) ((struct log_field){.key = (k), .type = LOG_T_INT, .v.i = (long long)(x)})
#define LOG_UINT(k, x)                                                                             \
    ((struct log_field){.key = (k), .type = LOG_T_UINT, .v.u = (unsigned long long)(x)})
#define LOG_FLOAT(k, x, decimals)                                                                  \
    ((struct log_field){.key = (k), .type = LOG_T_FLOAT, .len = (decimals), .v.f = (double)(x)})
#define LOG_BOOL(k, x) ((struct log_field){.key = (k), .type = LOG_T_BOOL, .v.b = (x)})

/* Logs one event of <level> named <event> (a literal) with the <n>
 * <fields>: one line, never interleaved with another; a line longer than
 * the limit is cut, staying one valid line. Never blocks on stderr. */
void log_write(enum conf_log_level level, const char *event, const struct log_field *fields,
               size_t n);

/* log_kv(level, event, fields...): log_write with the fields as an array
 * on the stack; nothing is evaluated below the threshold. */
#define log_kv(level, event, ...)                                                                  \
    do {                                                                                           \
        if (log_enabled(level)) {                                                                  \
            const struct log_field log_f_[] = {{0}, ##__VA_ARGS__};                                \
            log_write(level, event, log_f_ + 1, sizeof(log_f_) / sizeof(log_f_[0]) - 1);           \
        }                                                                                          \
    } while (0)

/* Waits until every line logged before the call is written to stderr (or
 * counted as dropped), at most <timeout_ms>. Returns 0, or -1 when the
 * time ran out (stderr's reader is stalled). For the exit and for tests. */
int log_flush(unsigned timeout_ms);

/* Lines dropped so far because stderr's reader did not keep up (or stderr
 * failed): usher_log_lines_dropped_total. Any thread. */
unsigned long long log_lines_dropped(void);

/* Escapes <s>[0..<n>) as the inside of a JSON string (no quotes) into
 * <out> of <cap> bytes: '"', '\' and control bytes escaped, invalid UTF-8
 * as \ufffd. Stops before an escape that would not fit. Returns the bytes
 * written (out is not NUL-terminated). */
size_t log_json_escape(char *out, size_t cap, const char *s, size_t n);

/* Appends <s> (NUL-terminated; NULL as empty) to <h> as a quoted JSON
 * string, escaped like log_json_escape. Returns 0 or -1. */
int log_json_str(struct hbuf *h, const char *s);

/* The former printf interface, kept so existing callers build: <fmt>
 * formats "key=value key2=\"quoted value\" ..."; the pairs are split again
 * and written like log_write fields (an unquoted number or true/false
 * becomes a JSON number/boolean). A value holding a quote cannot be split
 * back reliably: such callers must move to log_kv. */
void log_event(enum conf_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(ev, ...) log_event(CONF_LOG_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...) log_event(CONF_LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...) log_event(CONF_LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_event(CONF_LOG_ERROR, ev, __VA_ARGS__)

#endif
