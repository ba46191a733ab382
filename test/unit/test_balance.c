// links: usher_proxy_core
/* Balancing: the listener split over pools and the pool's balance over its
 * backends (proxy/balance.c), on hand-built runtime objects. */
#include <stdio.h>
#include <string.h>

#include "proxy/core/balance.h"

#include "test/unit/check.h"

#define MAX_B 4

struct fixture {
    struct backend hb[2][MAX_B];
    struct server b[2][MAX_B];
    struct server *ptrs[2][MAX_B];
    struct pool pools[2];
    struct conf_pool conf_pools[2];
    struct split_slot slots[2];
    struct listener l;
};

static void setup(struct fixture *f, const unsigned weights[2][MAX_B], size_t nb,
                  const unsigned split[2], enum conf_balance balance)
{
    memset(f, 0, sizeof(*f));
    static char *names[] = {"a", "b", "c", "d"};
    for (int p = 0; p < 2; p++) {
        for (size_t i = 0; i < nb; i++) {
            f->hb[p][i].name = names[i];
            f->hb[p][i].weight = weights[p][i];
            f->hb[p][i].state = BACKEND_HEALTHY;
            f->b[p][i].hb = &f->hb[p][i];
            f->ptrs[p][i] = &f->b[p][i];
        }
        f->conf_pools[p].balance = balance;
        f->pools[p].conf = &f->conf_pools[p];
        f->pools[p].name = p ? "green" : "blue";
        f->pools[p].servers = f->ptrs[p];
        f->pools[p].num_servers = nb;
        f->slots[p].pool = &f->pools[p];
        f->slots[p].weight = split[p];
    }
    f->l.slots = f->slots;
    f->l.num_slots = 2;
}

static int index_of(struct fixture *f, struct server *b, int *pool)
{
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < MAX_B; i++)
            if (&f->b[p][i] == b) {
                *pool = p;
                return i;
            }
    return -1;
}

/* Smooth WRR with weights 5,1,1 yields a a b a c a a: never a burst of 5. */
static void test_smooth_sequence(void)
{
    struct fixture f;
    const unsigned w[2][MAX_B] = {{5, 1, 1}, {1}};
    const unsigned split[2] = {1, 0};
    setup(&f, w, 3, split, CONF_BALANCE_ROUND_ROBIN);
    const char *want = "aabacaa";
    char got[8] = {0};
    for (int i = 0; i < 7; i++) {
        struct pool *p = NULL;
        struct server *b = balance_pick(&f.l, NULL, 0, &p);
        CHECK(b && p == &f.pools[0], "pick %d", i);
        got[i] = b ? b->hb->name[0] : '?';
    }
    CHECK(strcmp(got, want) == 0, "sequence %s, want %s", got, want);
}

static void test_split_and_weights(void)
{
    struct fixture f;
    const unsigned w[2][MAX_B] = {{1, 1, 0}, {1, 3, 0}};
    const unsigned split[2] = {90, 10};
    setup(&f, w, 3, split, CONF_BALANCE_ROUND_ROBIN);
    int count[2][MAX_B] = {{0}};
    for (int i = 0; i < 2000; i++) {
        struct pool *p = NULL;
        int pi = -1;
        struct server *b = balance_pick(&f.l, NULL, 0, &p);
        int bi = index_of(&f, b, &pi);
        CHECK(bi >= 0 && p == &f.pools[pi], "pick %d", i);
        if (bi >= 0)
            count[pi][bi]++;
    }
    CHECK(count[0][0] + count[0][1] == 1800, "blue got %d", count[0][0] + count[0][1]);
    CHECK(count[0][0] == 900 && count[0][1] == 900, "blue split %d/%d", count[0][0], count[0][1]);
    CHECK(count[1][0] == 50 && count[1][1] == 150, "green split %d/%d", count[1][0], count[1][1]);
    CHECK(count[0][2] == 0 && count[1][2] == 0, "weight 0 got traffic");
}

/* A pool without a backend in rotation is skipped; its share moves over. */
static void test_renormalise(void)
{
    struct fixture f;
    const unsigned w[2][MAX_B] = {{1, 1}, {1, 1}};
    const unsigned split[2] = {90, 10};
    setup(&f, w, 2, split, CONF_BALANCE_ROUND_ROBIN);
    f.hb[0][0].state = BACKEND_DRAINING;
    f.hb[0][1].state = BACKEND_UNHEALTHY;
    for (int i = 0; i < 100; i++) {
        struct pool *p = NULL;
        struct server *b = balance_pick(&f.l, NULL, 0, &p);
        CHECK(b && p == &f.pools[1], "pick %d went to %s", i, p ? p->name : "none");
    }
    f.hb[1][0].state = BACKEND_CHECKING;
    f.hb[1][1].weight = 0;
    struct pool *p = NULL;
    CHECK(balance_pick(&f.l, NULL, 0, &p) == NULL, "nothing in rotation must give NULL");
}

static void test_tried_excluded(void)
{
    struct fixture f;
    const unsigned w[2][MAX_B] = {{1, 1}, {1}};
    const unsigned split[2] = {1, 0};
    setup(&f, w, 2, split, CONF_BALANCE_ROUND_ROBIN);
    struct server *tried[1] = {&f.b[0][0]};
    for (int i = 0; i < 10; i++) {
        struct pool *p = NULL;
        CHECK(balance_pick(&f.l, tried, 1, &p) == &f.b[0][1], "tried backend picked");
    }
    struct server *both[2] = {&f.b[0][0], &f.b[0][1]};
    struct pool *p = NULL;
    CHECK(balance_pick(&f.l, both, 2, &p) == NULL, "all tried must give NULL");
}

static void test_least_conn(void)
{
    struct fixture f;
    const unsigned w[2][MAX_B] = {{1, 1, 2}, {1}};
    const unsigned split[2] = {1, 0};
    setup(&f, w, 3, split, CONF_BALANCE_LEAST_CONN);
    f.b[0][0].inflight = 3;
    f.b[0][1].inflight = 1;
    f.b[0][2].inflight = 4; /* 4/2 = 2 per weight: more loaded than b */
    struct pool *p = NULL;
    CHECK(balance_pick(&f.l, NULL, 0, &p) == &f.b[0][1], "least_conn must pick b");
    f.b[0][1].inflight = 5;
    CHECK(balance_pick(&f.l, NULL, 0, &p) == &f.b[0][2], "least_conn must pick c (2/weight)");
    /* ties rotate */
    f.b[0][0].inflight = f.b[0][1].inflight = f.b[0][2].inflight = 0;
    int seen[3] = {0};
    for (int i = 0; i < 30; i++) {
        int pi;
        seen[index_of(&f, balance_pick(&f.l, NULL, 0, &p), &pi)]++;
    }
    CHECK(seen[0] > 0 && seen[1] > 0 && seen[2] > 0, "ties must rotate: %d %d %d", seen[0], seen[1],
          seen[2]);
}

int main(void)
{
    test_smooth_sequence();
    test_split_and_weights();
    test_renormalise();
    test_tried_excluded();
    test_least_conn();
    return check_report("test_balance");
}
