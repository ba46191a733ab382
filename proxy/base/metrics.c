#include "metrics.h"

#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

#include "utf8.h"

static const double bounds[METRICS_BUCKETS] = METRICS_BUCKET_BOUNDS;

/* The bounds as the "le" label spells them: Go's strconv 'g' form, which
 * is what client libraries print and what dashboards match on. */
static const char *const bound_text[METRICS_BUCKETS] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5",   "1",      "2.5",   "5",    "10",    "30",   "60",
};

unsigned metrics_bucket_of(double seconds)
{
    if (!(seconds > bounds[0])) /* also NaN and negative */
        return 0;
    /* binary search for the first bound >= seconds: 4 comparisons for 15 */
    unsigned lo = 1, hi = METRICS_BUCKETS;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (seconds <= bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

void metrics_histogram_observe(struct metrics_histogram *h, double seconds)
{
    h->counts[metrics_bucket_of(seconds)]++;
    if (seconds > 0)
        h->sum += seconds;
}

int metrics_label_escape(struct hbuf *out, const char *s)
{
    if (!s)
        return 0;
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    int rc = 0;
    while (n > 0) {
        size_t run = 0; /* bytes written as they are */
        while (run < n && p[run] != '\\' && p[run] != '"' && p[run] != '\n') {
            size_t l = utf8_len(p + run, n - run);
            if (l == 0)
                break;
            run += l;
        }
        if (run > 0)
            rc |= hbuf_append(out, (const char *)p, run);
        p += run;
        n -= run;
        if (n == 0)
            break;
        if (*p == '\\')
            rc |= hbuf_append(out, "\\\\", 2);
        else if (*p == '"')
            rc |= hbuf_append(out, "\\\"", 2);
        else if (*p == '\n')
            rc |= hbuf_append(out, "\\n", 2);
        else
            rc |= hbuf_append(out, "\xEF\xBF\xBD", 3); /* U+FFFD for the invalid byte */
        p++;
        n--;
    }
    return rc ? -1 : 0;
}

int metrics_labels(struct hbuf *out, ...)
{
    va_list ap;
    va_start(ap, out);
    int rc = 0;
    bool first = true;
    for (const char *k; (k = va_arg(ap, const char *)) != NULL;) {
        const char *v = va_arg(ap, const char *);
        if (!first)
            rc |= hbuf_append(out, ",", 1);
        first = false;
        rc |= hbuf_append_str(out, k);
        rc |= hbuf_append(out, "=\"", 2);
        rc |= metrics_label_escape(out, v);
        rc |= hbuf_append(out, "\"", 1);
    }
    va_end(ap);
    return rc ? -1 : 0;
}

int metrics_family(struct hbuf *out, const char *name, const char *type, const char *help)
{
    return hbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int metrics_histogram_write(struct hbuf *out, const char *name, const char *labels,
                            const struct metrics_histogram *h)
{
    const char *sep = labels[0] ? "," : "";
    unsigned long long cum = 0;
    int rc = 0;
    for (unsigned i = 0; i < METRICS_BUCKETS; i++) {
        cum += h->counts[i];
        rc |= hbuf_printf(out, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep, bound_text[i],
                          cum);
    }
    cum += h->counts[METRICS_BUCKETS];
    rc |= hbuf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, cum);
    if (labels[0]) {
        rc |= hbuf_printf(out, "%s_sum{%s} %.6f\n", name, labels, h->sum);
        rc |= hbuf_printf(out, "%s_count{%s} %llu\n", name, labels, cum);
    } else {
        rc |= hbuf_printf(out, "%s_sum %.6f\n%s_count %llu\n", name, h->sum, name, cum);
    }
    return rc ? -1 : 0;
}

void metrics_histogram_add(struct metrics_histogram *dst, const struct metrics_histogram *src)
{
    for (size_t i = 0; i < METRICS_BUCKETS + 1; i++)
        dst->counts[i] += src->counts[i];
    dst->sum += src->sum;
}
