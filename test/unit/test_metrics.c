// links: usher_proxy_base
/* Unit tests of proxy/base/metrics.c: label escaping (the one function
 * every label value goes through), histogram bucket placement at and
 * around every bound, and the cumulative exposition of a histogram. */
#include "proxy/base/metrics.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include "test/unit/check.h"

static const char *escaped(const char *in)
{
    static char out[256];
    struct hbuf h = {0};
    CHECK(metrics_label_escape(&h, in) == 0);
    size_t n = h.len < sizeof(out) - 1 ? h.len : sizeof(out) - 1;
    memcpy(out, h.data ? h.data : "", n);
    out[n] = '\0';
    hbuf_free(&h);
    return out;
}

static void test_label_escape(void)
{
    CHECK(strcmp(escaped("blue-1"), "blue-1") == 0);
    CHECK(strcmp(escaped(""), "") == 0);
    CHECK(strcmp(escaped(NULL), "") == 0);
    CHECK(strcmp(escaped("a\"b"), "a\\\"b") == 0);
    CHECK(strcmp(escaped("a\\b"), "a\\\\b") == 0);
    CHECK(strcmp(escaped("a\nb"), "a\\nb") == 0);
    CHECK(strcmp(escaped("\"\\\n"), "\\\"\\\\\\n") == 0);
    /* valid UTF-8 as it is; a tab and other bytes need no escape */
    CHECK(strcmp(escaped("gr\xc3\xbcn\t="), "gr\xc3\xbcn\t=") == 0);
    CHECK(strcmp(escaped("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80") == 0);
    /* invalid UTF-8: each bad byte becomes U+FFFD */
    CHECK(strcmp(escaped("a\xff"
                         "b"),
                 "a\xef\xbf\xbd"
                 "b") == 0);
    CHECK(strcmp(escaped("\xc3"), "\xef\xbf\xbd") == 0);                 /* truncated */
    CHECK(strcmp(escaped("\xc0\xaf"), "\xef\xbf\xbd\xef\xbf\xbd") == 0); /* overlong */
    CHECK(strcmp(escaped("\xed\xa0\x80"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd") ==
          0); /* surrogate */
}

static void test_labels(void)
{
    struct hbuf h = {0};
    CHECK(metrics_labels(&h, "pool", "blue", "backend", "b\"1", NULL) == 0);
    CHECK(h.len == strlen("pool=\"blue\",backend=\"b\\\"1\"") &&
          memcmp(h.data, "pool=\"blue\",backend=\"b\\\"1\"", h.len) == 0);
    hbuf_free(&h);
}

static void test_bucket_of(void)
{
    static const double b[METRICS_BUCKETS] = METRICS_BUCKET_BOUNDS;
    for (unsigned i = 0; i < METRICS_BUCKETS; i++) {
        CHECK(metrics_bucket_of(b[i]) == i);                     /* le: the bound is inside */
        CHECK(metrics_bucket_of(nextafter(b[i], 1e9)) == i + 1); /* just above: the next */
        CHECK(metrics_bucket_of(nextafter(b[i], 0)) == i);       /* just below: still this one */
    }
    CHECK(metrics_bucket_of(0) == 0);
    CHECK(metrics_bucket_of(-1) == 0);
    CHECK(metrics_bucket_of(NAN) == 0);
    CHECK(metrics_bucket_of(1e9) == METRICS_BUCKETS);
    CHECK(metrics_bucket_of(INFINITY) == METRICS_BUCKETS);
    CHECK(metrics_bucket_of(0.003) == 2);
    CHECK(metrics_bucket_of(0.7) == 9);
}

static void test_histogram_write(void)
{
    struct metrics_histogram hist;
    memset(&hist, 0, sizeof(hist));
    metrics_histogram_observe(&hist, 0.0005);
    metrics_histogram_observe(&hist, 0.2);
    metrics_histogram_observe(&hist, 0.2);
    metrics_histogram_observe(&hist, 100);
    struct hbuf h = {0};
    CHECK(metrics_histogram_write(&h, "x_seconds", "listener=\"web\"", &hist) == 0);
    CHECK(hbuf_append(&h, "", 1) == 0);
    CHECK(strstr(h.data, "x_seconds_bucket{listener=\"web\",le=\"0.001\"} 1\n"));
    CHECK(strstr(h.data, "x_seconds_bucket{listener=\"web\",le=\"0.1\"} 1\n"));
    CHECK(strstr(h.data, "x_seconds_bucket{listener=\"web\",le=\"0.25\"} 3\n"));
    CHECK(strstr(h.data, "x_seconds_bucket{listener=\"web\",le=\"60\"} 3\n"));
    CHECK(strstr(h.data, "x_seconds_bucket{listener=\"web\",le=\"+Inf\"} 4\n"));
    CHECK(strstr(h.data, "x_seconds_sum{listener=\"web\"} 100.400500\n"));
    CHECK(strstr(h.data, "x_seconds_count{listener=\"web\"} 4\n"));
    hbuf_free(&h);
    CHECK(metrics_histogram_write(&h, "y", "", &hist) == 0);
    CHECK(hbuf_append(&h, "", 1) == 0);
    CHECK(strstr(h.data, "y_bucket{le=\"+Inf\"} 4\n") && strstr(h.data, "y_count 4\n"));
    hbuf_free(&h);
}

int main(void)
{
    test_label_escape();
    test_labels();
    test_bucket_of();
    test_histogram_write();
    return check_report("test_metrics");
}
