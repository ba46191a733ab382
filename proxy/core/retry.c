#include "retry.h"

#include <math.h>

static struct retry_bucket *bucket_at(struct retry_budget *rb, int64_t sec)
{
    struct retry_bucket *b = &rb->b[(uint64_t)sec % RETRY_WINDOW_S];
    if (b->second != sec) {
        b->second = sec;
        b->requests = 0;
        b->retries = 0;
    }
    return b;
}

void retry_budget_request(struct retry_budget *rb, double now)
{
    bucket_at(rb, (int64_t)floor(now))->requests++;
}

bool retry_budget_take(struct retry_budget *rb, double now)
{
    int64_t sec = (int64_t)floor(now);
    struct retry_bucket *cur = bucket_at(rb, sec);
    uint64_t requests = 0, retries = 0;
    for (int i = 0; i < RETRY_WINDOW_S; i++) {
        const struct retry_bucket *b = &rb->b[i];
        if (b->second > sec - RETRY_WINDOW_S && b->second <= sec) {
            requests += b->requests;
            retries += b->retries;
        }
    }
    bool floor_ok = cur->retries < RETRY_FLOOR_PER_S;
    bool ratio_ok = (retries + 1) * 100 <= requests * RETRY_RATIO_PERCENT;
    if (!floor_ok && !ratio_ok)
        return false;
    cur->retries++;
    return true;
}

const char *retry_reason_str(enum retry_reason r)
{
    switch (r) {
    case RETRY_CONNECT:
        return "connect";
    case RETRY_RESET:
        return "reset";
    case RETRY_INVALID_HEAD:
        return "invalid_head";
    case RETRY_FIRST_BYTE:
        return "first_byte";
    case RETRY_REFUSED:
        return "refused";
    case RETRY_REASONS:
        break;
    }
    return "unknown";
}
