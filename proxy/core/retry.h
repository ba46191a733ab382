/* The per-pool retry budget: retries at most RETRY_RATIO of the pool's
 * requests over the last RETRY_WINDOW_S seconds, plus a floor of
 * RETRY_FLOOR_PER_S per second, so a sick fleet is not hit by a retry
 * storm (the idea of Envoy's retry budgets and Finagle's RetryBudget). */
#ifndef USHER_PROXY_RETRY_H
#define USHER_PROXY_RETRY_H

#include <stdbool.h>
#include <stdint.h>

/* Window and ratio of issue 12: 20 % of the requests of the last 10 s. */
#define RETRY_WINDOW_S 10
#define RETRY_RATIO_PERCENT 20
/* A quiet pool may still retry this many per second (one failing request
 * among a handful must not go unretried for want of traffic). */
#define RETRY_FLOOR_PER_S 3

/* Why a request went to another backend, for metrics. */
enum retry_reason {
    RETRY_CONNECT = 0,  /* the connect failed: nothing was sent (not budgeted) */
    RETRY_RESET,        /* reset or closed before any response byte */
    RETRY_INVALID_HEAD, /* the response head did not parse */
    RETRY_FIRST_BYTE,   /* nothing within timeouts.first_byte */
    RETRY_REFUSED,      /* an HTTP/2 backend never processed the stream (GOAWAY, REFUSED_STREAM):
                           nothing was acted on (not budgeted) */
    RETRY_REASONS,
};

struct retry_bucket {
    int64_t second; /* which second it counts (-1: none) */
    uint32_t requests;
    uint32_t retries;
};

struct retry_budget {
    struct retry_bucket b[RETRY_WINDOW_S];
};

/* Counts one request routed to the pool at <now> (seconds, any epoch). */
void retry_budget_request(struct retry_budget *rb, double now);

/* Takes one retry at <now> if the budget allows it (and counts it).
 * Returns true if the retry may go, false if it is refused. */
bool retry_budget_take(struct retry_budget *rb, double now);

/* "connect", "reset", "invalid_head", "first_byte", "refused". */
const char *retry_reason_str(enum retry_reason r);

#endif
