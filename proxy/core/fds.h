/* Descriptors are the process's, not a worker's: the count every worker's
 * client and upstream connections use, kept by the first worker. Inline,
 * so that client.c and upstream.c need nothing from worker.c. */
#ifndef USHER_PROXY_FDS_H
#define USHER_PROXY_FDS_H

#include "worker-t.h"

/* A connection of <w> took (<delta> 1) or gave back (-1) a descriptor. */
static inline void worker_fds_add(struct worker *w, int delta)
{
    struct worker *first = w->primary ? w->primary : w;
    __atomic_add_fetch(&first->fds_used, (unsigned)delta, __ATOMIC_RELAXED);
}

/* Descriptors the connections of every worker use now. */
static inline unsigned worker_fds_used(const struct worker *w)
{
    const struct worker *first = w->primary ? w->primary : w;
    return __atomic_load_n(&first->fds_used, __ATOMIC_RELAXED);
}

/* The pipe pool of <w> went from <open_before> pipes to what it holds now
 * (2 descriptors each). */
static inline void worker_fds_pipes(struct worker *w, unsigned open_before)
{
    worker_fds_add(w, FDS_PER_PIPE * ((int)w->pipes.open - (int)open_before));
}

#endif
