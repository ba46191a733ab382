/* What the workers of a process share, kept by the first worker: the
 * descriptors every worker's connections and pipes use (descriptors are
 * the process's, not a worker's) and each backend's requests in flight.
 * Inline: client.c, balance.c and upstream.c use them per request and
 * need nothing from worker.c for it. */
#ifndef USHER_PROXY_FDS_H
#define USHER_PROXY_FDS_H

#include "worker-t.h"

/* The first worker: <w> itself, or the one <w> is a replica of. */
static inline struct worker *worker_first(const struct worker *w)
{
    return w->primary ? w->primary : (struct worker *)w;
}

/* A connection of <w> took (<delta> 1) or gave back (-1) a descriptor. */
static inline void worker_fds_add(struct worker *w, int delta)
{
    __atomic_add_fetch(&worker_first(w)->fds_used, (unsigned)delta, __ATOMIC_RELAXED);
}

/* Descriptors the connections of every worker use now. */
static inline unsigned worker_fds_used(const struct worker *w)
{
    return __atomic_load_n(&worker_first(w)->fds_used, __ATOMIC_RELAXED);
}

/* The pipe pool of <w> went from <open_before> pipes to what it holds now
 * (2 descriptors each). */
static inline void worker_fds_pipes(struct worker *w, unsigned open_before)
{
    worker_fds_add(w, FDS_PER_PIPE * ((int)w->pipes.open - (int)open_before));
}

/* Requests in flight to the backend of <s> across every worker: one atomic
 * count, kept by the primary server (least_conn compares these). */
static inline unsigned server_inflight(const struct server *s)
{
    const struct server *shared = s->primary ? s->primary : s;
    return __atomic_load_n(&shared->inflight, __ATOMIC_RELAXED);
}

static inline void server_inflight_add(struct server *s, int delta)
{
    struct server *shared = s->primary ? s->primary : s;
    __atomic_add_fetch(&shared->inflight, (unsigned)delta, __ATOMIC_RELAXED);
}

#endif
