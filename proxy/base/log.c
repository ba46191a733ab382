#include "log.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "utf8.h"

/* Longest line written; longer ones are cut (and stay one valid line). */
#define LOG_LINE_MAX 4096

/* Room kept at the end of a line for what closes it: '"' (a cut string),
 * '}' and '\n'. */
#define LINE_TAIL 3

/* Longest escape log_json_escape writes for one input byte: \u00XX or
 * \ufffd. */
#define ESCAPE_MAX 6

/* Fields the printf shim splits a formatted line into; no caller has more
 * than a dozen. */
#define SHIM_FIELDS_MAX 32

/* "2026-01-02T03:04:05" */
#define TIME_SEC_LEN 19

/* Process-wide settings, not data-plane state: written at startup and on
 * reload by the control thread, while every worker is parked (workers.c). */
static struct {
    enum conf_log_level level;
    enum conf_log_format format;
} settings = {CONF_LOG_INFO, CONF_LOG_TEXT};

static const char *level_str(enum conf_log_level l)
{
    switch (l) {
    case CONF_LOG_DEBUG:
        return "debug";
    case CONF_LOG_INFO:
        return "info";
    case CONF_LOG_WARN:
        return "warn";
    case CONF_LOG_ERROR:
        return "error";
    }
    return "info";
}

void log_configure(enum conf_log_level level, enum conf_log_format format)
{
    settings.level = level;
    settings.format = format;
}

bool log_enabled(enum conf_log_level level)
{
    return level >= settings.level;
}

/* ---- escaping: the one place -------------------------------------------- */

/* Escapes <s>[0..<n>) into <out> of <cap> bytes, stopping before an
 * escape that would not fit; *<used> says how much of <s> went in. */
static size_t escape(char *out, size_t cap, const char *s, size_t n, size_t *used)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0, i = 0;
    while (i < n) {
        unsigned char ch = u[i];
        size_t take = 1, len;
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            if (o + 1 > cap)
                break;
            out[o++] = (char)ch;
        } else if (ch >= 0x80 && (len = utf8_len(u + i, n - i)) != 0) {
            if (o + len > cap)
                break;
            memcpy(out + o, s + i, len);
            o += len;
            take = len;
        } else if (ch >= 0x80) {
            if (o + ESCAPE_MAX > cap)
                break;
            memcpy(out + o, "\\ufffd", ESCAPE_MAX);
            o += ESCAPE_MAX;
        } else if (ch == '"' || ch == '\\' || ch == '\n' || ch == '\r' || ch == '\t') {
            if (o + 2 > cap)
                break;
            out[o++] = '\\';
            out[o++] = ch == '\n' ? 'n' : ch == '\r' ? 'r' : ch == '\t' ? 't' : (char)ch;
        } else {
            if (o + ESCAPE_MAX > cap)
                break;
            memcpy(out + o, "\\u00", 4);
            out[o + 4] = hex[ch >> 4];
            out[o + 5] = hex[ch & 15];
            o += ESCAPE_MAX;
        }
        i += take;
    }
    *used = i;
    return o;
}

size_t log_json_escape(char *out, size_t cap, const char *s, size_t n)
{
    size_t used;
    return escape(out, cap, s, n, &used);
}

int log_json_str(struct hbuf *h, const char *s)
{
    char tmp[256];
    size_t n = s ? strlen(s) : 0, used;
    int rc = hbuf_append(h, "\"", 1);
    while (n > 0) {
        size_t w = escape(tmp, sizeof(tmp), s, n, &used);
        rc |= hbuf_append(h, tmp, w);
        s += used;
        n -= used;
    }
    rc |= hbuf_append(h, "\"", 1);
    return rc ? -1 : 0;
}

/* logfmt: a value is written bare unless it is empty or holds a byte a
 * reader would split on or misread (space, '"', '=', '\', a control
 * byte) or any non-ASCII byte (it may be invalid UTF-8); quoted values are
 * JSON strings, so one escaper serves both formats. */
static bool needs_quotes(const char *s, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '"' || ch == '=' || ch == '\\')
            return true;
    }
    return false;
}

/* ---- the line ------------------------------------------------------------ */

struct line {
    char buf[LOG_LINE_MAX];
    size_t len;
    bool json;
};

static size_t room(const struct line *l)
{
    return l->len + LINE_TAIL < sizeof(l->buf) ? sizeof(l->buf) - LINE_TAIL - l->len : 0;
}

static void put(struct line *l, const char *s, size_t n)
{
    if (n > room(l))
        n = room(l);
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(struct line *l, const char *s)
{
    put(l, s, strlen(s));
}

/* A string value: JSON string, or logfmt bare or quoted. A cut string
 * still gets its closing quote (LINE_TAIL keeps room for it). */
static void put_string(struct line *l, const char *s, size_t n)
{
    if (!l->json && !needs_quotes(s, n)) {
        put(l, s, n);
        return;
    }
    if (room(l) == 0)
        return;
    l->buf[l->len++] = '"';
    l->len += log_json_escape(l->buf + l->len, room(l), s, n);
    l->buf[l->len++] = '"'; /* from LINE_TAIL if the string was cut */
}

static void put_uint(struct line *l, unsigned long long v)
{
    char digits[20]; /* ULLONG_MAX has 20 digits */
    size_t i = sizeof(digits);
    do
        digits[--i] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    put(l, digits + i, sizeof(digits) - i);
}

/* Fixed point without printf (the access log's ms is on the hot path).
 * Not finite, or too large for the fixed-point path: written as 0 in
 * JSON's terms (null is not a number) — no usher value gets there. */
static void put_float(struct line *l, double v, size_t decimals)
{
    static const unsigned scale[] = {1, 10, 100, 1000};
    if (decimals > 3)
        decimals = 3;
    if (!isfinite(v) || fabs(v) >= 1e15) {
        put(l, "0", 1);
        return;
    }
    if (v < 0) {
        put(l, "-", 1);
        v = -v;
    }
    unsigned long long x = (unsigned long long)llround(v * scale[decimals]);
    put_uint(l, x / scale[decimals]);
    if (decimals == 0)
        return;
    char frac[3];
    unsigned long long f = x % scale[decimals];
    for (size_t i = decimals; i-- > 0; f /= 10)
        frac[i] = (char)('0' + f % 10);
    put(l, ".", 1);
    put(l, frac, decimals);
}

static void put_value(struct line *l, const struct log_field *f)
{
    switch (f->type) {
    case LOG_T_STR:
        put_string(l, f->v.s ? f->v.s : "-", f->v.s ? strlen(f->v.s) : 1);
        return;
    case LOG_T_STRN:
        put_string(l, f->v.s, f->len);
        return;
    case LOG_T_INT:
        if (f->v.i < 0) {
            put(l, "-", 1);
            put_uint(l, 0ull - (unsigned long long)f->v.i);
        } else {
            put_uint(l, (unsigned long long)f->v.i);
        }
        return;
    case LOG_T_UINT:
        put_uint(l, f->v.u);
        return;
    case LOG_T_FLOAT:
        put_float(l, f->v.f, f->len);
        return;
    case LOG_T_BOOL:
        put_str(l, f->v.b ? "true" : "false");
        return;
    case LOG_T_NUMBER:
        put(l, f->v.s, f->len);
        return;
    }
}

/* The second is formatted once per second per thread: gmtime and strftime
 * are not free, and the access log calls this per request. */
static void put_time(struct line *l)
{
    static __thread time_t cached_sec = -1;
    static __thread char cached[TIME_SEC_LEN + 1];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = tv.tv_sec;
    }
    unsigned ms = (unsigned)(tv.tv_usec / 1000);
    char frac[6] = {'.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10),
                    'Z'};
    put(l, cached, TIME_SEC_LEN);
    put(l, frac, 5);
}

void log_write(enum conf_log_level level, const char *event, const struct log_field *fields,
               size_t n)
{
    if (!log_enabled(level))
        return;
    struct line l;
    l.len = 0;
    l.json = settings.format == CONF_LOG_JSON;
    if (l.json) {
        put_str(&l, "{\"time\":\"");
        put_time(&l);
        put_str(&l, "\",\"level\":\"");
        put_str(&l, level_str(level));
        put_str(&l, "\",\"event\":");
        put_string(&l, event, strlen(event));
    } else {
        put_time(&l);
        put(&l, " ", 1);
        put_str(&l, level_str(level));
        put(&l, " ", 1);
        put_str(&l, event);
    }
    for (size_t i = 0; i < n; i++) {
        /* a field that cannot start whole is left out, not half written */
        if (room(&l) < strlen(fields[i].key) + 8)
            break;
        if (l.json) {
            put(&l, ",\"", 2);
            put_str(&l, fields[i].key);
            put(&l, "\":", 2);
        } else {
            put(&l, " ", 1);
            put_str(&l, fields[i].key);
            put(&l, "=", 1);
        }
        put_value(&l, &fields[i]);
    }
    if (l.json)
        l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    /* one write(2) per line so concurrent writers never interleave a line */
    ssize_t r = write(STDERR_FILENO, l.buf, l.len);
    (void)r;
}

/* ---- the printf shim ----------------------------------------------------- */

/* An unquoted value spelled as a JSON number: -?digits(.digits)? */
static bool is_number(const char *s, size_t n)
{
    size_t i = 0, d = 0;
    if (i < n && s[i] == '-')
        i++;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, d++;
    if (d == 0 || (d > 1 && s[i - d] == '0'))
        return false;
    if (i < n && s[i] == '.') {
        size_t f = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == f)
            return false;
    }
    return i == n;
}

/* Splits "k=v k2=\"a b\" ..." into <f> (keys are the caller's literals;
 * the text stays in <kv>, which the fields point into). A quoted value
 * ends at the quote that is followed by a space or the end, so a value
 * with a quote inside mostly survives; callers must not rely on it. */
static size_t split_pairs(char *kv, struct log_field *f, size_t max)
{
    size_t n = 0;
    char *p = kv;
    while (*p && n < max) {
        while (*p == ' ')
            p++;
        char *key = p;
        while (*p && *p != '=' && *p != ' ')
            p++;
        if (p == key)
            break;
        bool has_value = *p == '=';
        if (*p)
            *p++ = '\0'; /* ends the key in place */
        f[n] = (struct log_field){.key = key, .type = LOG_T_STRN, .v.s = p};
        if (has_value && *p == '"') {
            char *v = ++p;
            while (*p && !(*p == '"' && (p[1] == ' ' || p[1] == '\0')))
                p++;
            f[n].v.s = v;
            f[n].len = (size_t)(p - v);
            if (*p)
                p++;
        } else if (has_value) {
            char *v = p;
            while (*p && *p != ' ')
                p++;
            f[n].len = (size_t)(p - v);
            if (is_number(v, f[n].len))
                f[n].type = LOG_T_NUMBER;
            else if ((f[n].len == 4 && !memcmp(v, "true", 4)) ||
                     (f[n].len == 5 && !memcmp(v, "false", 5)))
                f[n].type = LOG_T_NUMBER; /* spelled the same in JSON */
        } else {
            f[n].len = 0;
        }
        n++;
    }
    return n;
}

void log_event(enum conf_log_level level, const char *event, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char kv[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kv, sizeof(kv), fmt, ap);
    va_end(ap);
    struct log_field f[SHIM_FIELDS_MAX];
    log_write(level, event, f, split_pairs(kv, f, SHIM_FIELDS_MAX));
}
