#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Longest line written; longer ones are cut (and stay one line). */
#define LOG_LINE_MAX 4096

/* Process-wide settings, not data-plane state: written at startup and on
 * reload by the event loop thread only. */
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

static size_t format_time(char *out, size_t cap)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(out + n, cap - n, ".%03dZ", (int)(tv.tv_usec / 1000));
    return n;
}

/* Appends <s>[0..<n>) as a JSON string body (without quotes). */
static size_t json_escape(char *out, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 7 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    return o;
}

/* Turns "k=v k2=\"a b\"" into ,"k":"v","k2":"a b". */
static size_t kv_to_json(char *out, size_t cap, const char *kv)
{
    size_t o = 0;
    const char *p = kv;
    while (*p && o + 16 < cap) {
        while (*p == ' ')
            p++;
        const char *key = p;
        while (*p && *p != '=' && *p != ' ')
            p++;
        size_t key_len = (size_t)(p - key);
        if (key_len == 0)
            break;
        const char *val = p;
        size_t val_len = 0;
        if (*p == '=') {
            p++;
            if (*p == '"') {
                val = ++p;
                while (*p && !(*p == '"' && p[-1] != '\\'))
                    p++;
                val_len = (size_t)(p - val);
                if (*p == '"')
                    p++;
            } else {
                val = p;
                while (*p && *p != ' ')
                    p++;
                val_len = (size_t)(p - val);
            }
        }
        out[o++] = ',';
        out[o++] = '"';
        o += json_escape(out + o, cap - o, key, key_len);
        out[o++] = '"';
        out[o++] = ':';
        out[o++] = '"';
        o += json_escape(out + o, cap - o, val, val_len);
        if (o + 2 < cap)
            out[o++] = '"';
    }
    return o;
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

    char line[LOG_LINE_MAX + 512];
    char ts[40];
    format_time(ts, sizeof(ts));
    size_t n;
    if (settings.format == CONF_LOG_JSON) {
        n = (size_t)snprintf(line, sizeof(line), "{\"time\":\"%s\",\"level\":\"%s\",\"event\":\"",
                             ts, level_str(level));
        n += json_escape(line + n, sizeof(line) - n, event, strlen(event));
        line[n++] = '"';
        n += kv_to_json(line + n, sizeof(line) - n - 3, kv);
        line[n++] = '}';
    } else {
        int m = snprintf(line, sizeof(line) - 1, "%s %s %s%s%s", ts, level_str(level), event,
                         kv[0] ? " " : "", kv);
        n = (m < 0) ? 0 : ((size_t)m < sizeof(line) - 1 ? (size_t)m : sizeof(line) - 2);
    }
    line[n++] = '\n';
    /* one write(2) per line so concurrent writers never interleave a line */
    ssize_t r = write(STDERR_FILENO, line, n);
    (void)r;
}
