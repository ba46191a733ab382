// links: usher_proxy_core
/* Slow start (proxy/core/balance.c): weight x max(10 %, elapsed / ramp),
 * and the smooth round robin following the ramped weights. */
#include <stdio.h>
#include <string.h>

#include "proxy/core/balance.h"
#include "test/unit/check.h"

int main(void)
{
    struct {
        double elapsed;
        conf_ms ramp;
        unsigned want;
    } cases[] = {
        {0, 0, 1000},      /* no slow start */
        {0, 10000, 100},   /* the floor: 10 % */
        {0.5, 10000, 100}, /* 5 % -> 10 % */
        {1.0, 10000, 100}, /* exactly 10 % */
        {2.5, 10000, 250},   {5.0, 10000, 500},   {9.99, 10000, 999},
        {10.0, 10000, 1000}, {99.0, 10000, 1000}, /* after the ramp */
        {-1.0, 10000, 100},                       /* clock oddities never go below the floor */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned got = slow_start_permille(cases[i].elapsed, cases[i].ramp);
        CHECK(got == cases[i].want, "%.2fs of %llums: %u permille, want %u", cases[i].elapsed,
              (unsigned long long)cases[i].ramp, got, cases[i].want);
    }
    /* monotonic over the ramp */
    unsigned prev = 0;
    for (int ms = 0; ms <= 12000; ms += 7) {
        unsigned pm = slow_start_permille(ms / 1000.0, 10000);
        CHECK(pm >= prev, "not monotonic at %d ms", ms);
        prev = pm;
    }

    /* two servers of weight 1, one ramping at 10 %: smooth round robin gives
     * it 1 pick in 11 */
    struct ev_loop *loop = ev_default_loop(0);
    struct worker w;
    memset(&w, 0, sizeof(w));
    w.loop = loop;
    struct conf_pool cp;
    memset(&cp, 0, sizeof(cp));
    cp.slow_start = 100000;
    struct backend hb[2];
    struct server sv[2], *ptrs[2] = {&sv[0], &sv[1]};
    struct pool pool;
    memset(hb, 0, sizeof(hb));
    memset(sv, 0, sizeof(sv));
    memset(&pool, 0, sizeof(pool));
    pool.conf = &cp;
    pool.servers = ptrs;
    pool.num_servers = 2;
    for (int i = 0; i < 2; i++) {
        hb[i].state = BACKEND_HEALTHY;
        hb[i].weight = 1;
        sv[i].hb = &hb[i];
        sv[i].pool = &pool;
        sv[i].w = &w;
    }
    sv[1].ramp_started = ev_now(loop); /* just entered rotation */
    CHECK(balance_weight(&sv[0]) == 1000 && balance_weight(&sv[1]) == 100, "weights %llu %llu",
          (unsigned long long)balance_weight(&sv[0]), (unsigned long long)balance_weight(&sv[1]));
    CHECK(balance_ramp_left_ms(&sv[1]) > 99000, "ramp left %llu",
          (unsigned long long)balance_ramp_left_ms(&sv[1]));
    struct split_slot slot = {.pool = &pool, .weight = 100};
    struct listener l;
    memset(&l, 0, sizeof(l));
    l.slots = &slot;
    l.num_slots = 1;
    unsigned picks[2] = {0, 0};
    for (int i = 0; i < 1100; i++) {
        struct pool *p = NULL;
        struct server *s = balance_pick(&l, NULL, 0, &p);
        picks[s == &sv[1]]++;
    }
    CHECK(picks[1] == 100 && picks[0] == 1000, "picks old %u new %u", picks[0], picks[1]);
    return check_report("test_slowstart");
}
