// links: usher_proxy_core
/* The per-pool retry budget (proxy/core/retry.c): 20 % of the last 10 s
 * of requests, plus 3 per second, whatever the traffic. */
#include <stdio.h>
#include <string.h>

#include "proxy/core/retry.h"
#include "test/unit/check.h"

static void fresh(struct retry_budget *rb)
{
    memset(rb, 0, sizeof(*rb));
    for (int i = 0; i < RETRY_WINDOW_S; i++)
        rb->b[i].second = -1;
}

static unsigned take_all(struct retry_budget *rb, double now, unsigned tries)
{
    unsigned ok = 0;
    for (unsigned i = 0; i < tries; i++)
        ok += retry_budget_take(rb, now);
    return ok;
}

int main(void)
{
    struct retry_budget rb;

    /* no traffic: the floor alone, per second */
    fresh(&rb);
    CHECK(take_all(&rb, 100.1, 10) == 3, "floor of 3 in a second");
    CHECK(take_all(&rb, 100.9, 10) == 0, "floor spent in that second");
    CHECK(take_all(&rb, 101.0, 10) == 3, "a new second, a new floor");

    /* 1000 requests in 10 s: 20 % = 200 retries, the floor counted within */
    fresh(&rb);
    for (int s = 0; s < 10; s++)
        for (int i = 0; i < 100; i++)
            retry_budget_request(&rb, 200.0 + s + i / 100.0);
    unsigned got = take_all(&rb, 209.5, 1000);
    CHECK(got == 200, "20%% of 1000 requests: %u retries", got);

    /* the window slides: 10 s later the old requests no longer count */
    got = take_all(&rb, 219.5, 1000);
    CHECK(got == 3, "old requests out of the window: %u (the floor)", got);

    /* a retry storm against a steady pool stays near 20 % plus the floor */
    fresh(&rb);
    unsigned allowed = 0, wanted = 0;
    for (int s = 0; s < 30; s++)
        for (int i = 0; i < 50; i++) {
            double t = 300.0 + s + i / 50.0;
            retry_budget_request(&rb, t);
            wanted++;
            allowed += retry_budget_take(&rb, t); /* every request wants a retry */
        }
    double share = (double)allowed / wanted;
    CHECK(share <= 0.20 + 3.0 / 50 + 0.01, "storm: %.3f of requests retried", share);
    CHECK(share >= 0.18, "storm: the budget is used (%.3f)", share);

    CHECK(strcmp(retry_reason_str(RETRY_FIRST_BYTE), "first_byte") == 0, "reason name");
    return check_report("test_retry");
}
