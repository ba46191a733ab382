#include "balance.h"

#include <string.h>

#include "../../health/backend.h"
#include "fds.h"
#include "upstream.h"

/* Slow start never starts below this share (DESIGN.md: max(10%, ...)):
 * a backend that gets no request learns nothing and warms nothing. */
#define SLOW_START_MIN_PERMILLE 100
#define PERMILLE 1000

unsigned slow_start_permille(double elapsed_s, conf_ms ramp_ms)
{
    if (ramp_ms == 0)
        return PERMILLE;
    double share = elapsed_s * 1000.0 / (double)ramp_ms;
    if (share >= 1.0)
        return PERMILLE;
    unsigned pm = share > 0 ? (unsigned)(share * PERMILLE) : 0;
    return pm < SLOW_START_MIN_PERMILLE ? SLOW_START_MIN_PERMILLE : pm;
}

static conf_ms ramp_of(const struct server *s)
{
    if (s->ramp_started <= 0 || !s->pool || !s->pool->conf)
        return 0;
    return s->pool->conf->slow_start;
}

uint64_t balance_weight(const struct server *s)
{
    uint64_t base = server_weight(s); /* the runtime override, else the config's */
    conf_ms ramp = ramp_of(s);
    if (ramp == 0)
        return base * PERMILLE;
    return base * slow_start_permille(ev_now(s->w->loop) - s->ramp_started, ramp);
}

uint64_t balance_ramp_left_ms(const struct server *s)
{
    conf_ms ramp = ramp_of(s);
    if (ramp == 0)
        return 0;
    double left = (double)ramp - (ev_now(s->w->loop) - s->ramp_started) * 1000.0;
    return left > 0 ? (uint64_t)left : 0;
}

static bool was_tried(const struct server *b, struct server *const *tried, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (tried[i] == b)
            return true;
    return false;
}

static bool is_candidate(const struct server *b, struct server *const *tried, unsigned n)
{
    return server_in_rotation(b) && !was_tried(b, tried, n);
}

static bool pool_has_candidate(const struct pool *p, struct server *const *tried, unsigned n)
{
    for (size_t i = 0; i < p->num_servers; i++)
        if (is_candidate(p->servers[i], tried, n))
            return true;
    return false;
}

/* Smooth weighted round robin (as in nginx's upstream module): every
 * candidate gains its weight, the largest wins and pays back the total.
 * Over any window the picks follow the weights without bursts. */
static struct server *pick_round_robin(struct pool *p, struct server *const *tried, unsigned n)
{
    struct server *best = NULL;
    int64_t total = 0;
    size_t count = p->num_servers;
    for (size_t k = 0; k < count; k++) {
        /* ties go to the first in scan order, which starts at a different
         * backend in each worker: N workers do not all begin on the same */
        struct server *b = p->servers[(k + p->stagger) % count];
        if (!is_candidate(b, tried, n))
            continue;
        int64_t wt = (int64_t)balance_weight(b);
        b->rr_current += wt;
        total += wt;
        if (!best || b->rr_current > best->rr_current)
            best = b;
    }
    if (best)
        best->rr_current -= total;
    return best;
}

/* Fewest in-flight requests per unit of weight; ties rotate so equal
 * backends share the load. Compares a/wa < b/wb as a*wb < b*wa. */
static struct server *pick_least_conn(struct pool *p, struct server *const *tried, unsigned n)
{
    struct server *best = NULL;
    size_t count = p->num_servers;
    for (size_t k = 0; k < count; k++) {
        struct server *b = p->servers[(p->lc_next + k) % count];
        if (!is_candidate(b, tried, n))
            continue;
        if (!best || (uint64_t)server_inflight(b) * balance_weight(best) <
                         (uint64_t)server_inflight(best) * balance_weight(b))
            best = b;
    }
    if (count)
        p->lc_next = (p->lc_next + 1) % count;
    return best;
}

struct server *balance_pick(struct listener *l, struct server *const *tried, unsigned num_tried,
                            struct pool **pool_out)
{
    struct split_slot *best = NULL;
    int64_t total = 0;
    for (size_t i = 0; i < l->num_slots; i++) {
        struct split_slot *s = &l->slots[i];
        if (s->weight == 0 || !s->pool || !pool_has_candidate(s->pool, tried, num_tried))
            continue;
        s->current += s->weight;
        total += s->weight;
        if (!best || s->current > best->current)
            best = s;
    }
    if (!best)
        return NULL;
    best->current -= total;

    struct pool *p = best->pool;
    *pool_out = p;
    if (p->conf && p->conf->balance == CONF_BALANCE_LEAST_CONN)
        return pick_least_conn(p, tried, num_tried);
    return pick_round_robin(p, tried, num_tried);
}

bool balance_has_backend(const struct listener *l)
{
    for (size_t i = 0; i < l->num_slots; i++) {
        const struct split_slot *s = &l->slots[i];
        if (s->weight > 0 && s->pool && pool_has_candidate(s->pool, NULL, 0))
            return true;
    }
    return false;
}

struct pool *pool_find(struct pool *pools, const char *name)
{
    for (struct pool *p = pools; p; p = p->next)
        if (strcmp(p->name, name) == 0)
            return p;
    return NULL;
}
