/* Choosing where a new request or connection goes: the listener's split
 * over pools, then the pool's balance over its backends. */
#ifndef USHER_PROXY_BALANCE_H
#define USHER_PROXY_BALANCE_H

#include "worker-t.h"

/* Picks a backend in rotation for a new request on <l>, skipping the
 * <num_tried> backends in <tried>. The split is taken over the pools that
 * still have a candidate (weights renormalised); within the pool
 * round_robin is smooth weighted round robin and least_conn picks the
 * fewest in-flight requests relative to weight. Returns the server (and
 * its pool in *<pool_out>), or NULL if none can take it (answer 503/502). */
struct server *balance_pick(struct listener *l, struct server *const *tried, unsigned num_tried,
                            struct pool **pool_out);

/* True if balance_pick could choose a backend for a new request on <l>
 * now: a pool of its split with weight above 0 has a backend in rotation. */
bool balance_has_backend(const struct listener *l);

/* The runtime pool named <name> in the list <pools>, or NULL. */
struct pool *pool_find(struct pool *pools, const char *name);

#endif
