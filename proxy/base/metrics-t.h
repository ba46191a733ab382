/* Counters the admin listener exposes in Prometheus text: types only, so
 * the data plane's structs can embed them without pulling in code. */
#ifndef USHER_PROXY_METRICS_T_H
#define USHER_PROXY_METRICS_T_H

#include <stdint.h>

/* Upper bounds (seconds) of the duration histograms' buckets: from 1 ms (a
 * proxied request on a LAN) to 60 s (timeouts.backend's default), roughly
 * 1-2.5-5 per decade as Prometheus' client libraries use; a last bucket
 * (+Inf) takes the rest. Fixed: changing them breaks every stored query. */
#define METRICS_BUCKETS 15
#define METRICS_BUCKET_BOUNDS                                                                      \
    {                                                                                              \
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0   \
    }

/* A duration histogram. counts[i] is the number of observations in bucket
 * i alone (not cumulative: one increment per observation); counts[
 * METRICS_BUCKETS] those above the last bound. */
struct metrics_histogram {
    uint64_t counts[METRICS_BUCKETS + 1];
    double sum; /* seconds */
};

#endif
