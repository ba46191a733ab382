/* Prometheus text exposition (format 0.0.4) helpers: label escaping, HELP
 * and TYPE lines, and duration histograms. Pure functions over buffers. */
#ifndef USHER_PROXY_METRICS_H
#define USHER_PROXY_METRICS_H

#include <stddef.h>

#include "buf.h"
#include "metrics-t.h"

/* The bucket a duration of <seconds> falls in: the first whose bound is
 * >= <seconds> (bounds are inclusive, "le"), METRICS_BUCKETS if above all.
 * A negative or NaN duration counts in bucket 0. */
unsigned metrics_bucket_of(double seconds);

/* Counts one observation of <seconds> in <h>: a few comparisons and one
 * increment, cheap enough for every request. */
void metrics_histogram_observe(struct metrics_histogram *h, double seconds);

/* Adds the observations of <src> to <dst> (a sum over workers). */
void metrics_histogram_add(struct metrics_histogram *dst, const struct metrics_histogram *src);

/* Appends <s> (NUL-terminated, NULL as empty) to <out> escaped as the
 * inside of a label value: '\' as \\, '"' as \", newline as \n, invalid
 * UTF-8 as U+FFFD (the format is UTF-8). Returns 0 or -1. */
int metrics_label_escape(struct hbuf *out, const char *s);

/* Appends a label set without its braces: the NULL-terminated list of
 * <key>, <value> string pairs as k1="v1",k2="v2" (values escaped with
 * metrics_label_escape; keys are literals of the code). Returns 0 or -1. */
int metrics_labels(struct hbuf *out, ...) __attribute__((sentinel));

/* Appends the "# HELP" and "# TYPE" lines of family <name> (<type>:
 * "counter", "gauge" or "histogram"; <help> a literal without newline or
 * backslash). Returns 0 or -1. */
int metrics_family(struct hbuf *out, const char *name, const char *type, const char *help);

/* Appends the samples of histogram <h> of family <name> with the label set
 * <labels> (as metrics_labels writes it; "" for none): one cumulative
 * <name>_bucket per bound and +Inf, <name>_sum and <name>_count. Returns 0
 * or -1. */
int metrics_histogram_write(struct hbuf *out, const char *name, const char *labels,
                            const struct metrics_histogram *h);

#endif
