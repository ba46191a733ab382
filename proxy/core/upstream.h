/* A backend's connections: the proxy's struct server for each backend, its
 * upstream connections, their keep-alive pool, and the draining rules of
 * DESIGN.md "Draining details" (all three live here, in one place). */
#ifndef USHER_PROXY_UPSTREAM_H
#define USHER_PROXY_UPSTREAM_H

#include "worker-t.h"

/* Creates the server for backend <cb> of pool <cp> in runtime pool <p>:
 * the health record (checks start on w->health_loop) and the proxy's
 * per-backend state. With <primary> (the same backend's server in the
 * first worker), a replica for worker <w> that shares its health record
 * instead. Returns NULL on allocation failure. */
struct server *server_new(struct worker *w, struct pool *p, const struct conf_pool *cp,
                          const struct conf_backend *cb, struct server *primary);

/* Closes the server's idle connections, stops its checks and frees it (a
 * primary frees the health record: its replicas must be gone). Its active
 * connections must be gone. */
void server_free(struct server *s);

/* Passive health: the outcome of one real request to <s> (<failure>:
 * connect failure, reset, timeout, 502/503/504; <why> a static string for
 * the log). Enough failures in a row eject the backend, within the pool's
 * max_ejected_percent. */
void server_passive_report(struct server *s, bool failure, const char *why);
/* The weight in force for <s>: the runtime override if set, else the
 * config's. */
unsigned server_weight(const struct server *s);

/* True if new requests may go to <s>: its backend is healthy and its
 * weight in force is above 0. */
bool server_in_rotation(const struct server *s);

/* Sets (<set> true) or clears the runtime weight override of primary <s>
 * and its replicas; the next pick uses it. A weight of 0 takes it out of
 * rotation (idle pooled connections close). */
void server_override_weight(struct server *s, bool set, unsigned weight);

/* What primary <s> and its replicas served, summed over the workers. */
struct server_totals {
    uint64_t requests;
    uint64_t responses[STATUS_CLASSES];
    uint64_t connect_failures;
    uint64_t bytes_in, bytes_out;
    unsigned idle; /* pooled idle upstreams */
    struct metrics_histogram duration;
};
void server_totals(const struct server *s, struct server_totals *t);

/* Age in seconds of the oldest open upstream connection of primary <s> and
 * its replicas (0 when none): the drain record's. It walks every
 * connection, so only a draining backend's record asks. */
double server_oldest_connection_age(const struct server *s);

/* Starts a non-blocking connect to <s> for <owner>, whose <cb> then hears
 * of the outcome (UPSTREAM_CONNECTED or UPSTREAM_CONNECT_FAILED) and every
 * later event. Returns the upstream in UPSTREAM_CONNECTING, or NULL if the
 * connect failed at once (*<err> is the errno; <cb> is never called). */
struct upstream *upstream_connect(struct server *s, upstream_cb cb, void *owner, int *err);

/* Takes a pooled idle connection to <s>, the most recently used. For a
 * request that cannot be replayed (<replayable> false) it must still be
 * open (a backend that closed it left an EOF behind: it is dropped) and
 * have idled briefly; a replayable one that finds it closed is sent again
 * on a new connection by the caller. NULL if none. */
struct upstream *upstream_take_idle(struct server *s, bool replayable, upstream_cb cb, void *owner);

/* Takes the pooled idle connection <u> back into use for <owner> (<cb>
 * hears its events): an HTTP/2 one gets its next stream. */
void upstream_take(struct upstream *u, upstream_cb cb, void *owner);

/* The exchange on <u> ended: it goes back to the pool if upstream_keep_rule
 * allows (<reusable>: the request and response left it reusable), else it
 * closes. */
void upstream_release(struct upstream *u, bool reusable);

/* Closes <u> and frees it (a mux connection's owner hears
 * UPSTREAM_CLOSED first, unless it cleared u->cb: its own close). */
void upstream_close(struct upstream *u);

/* Closes every idle pooled connection of <s>. */
void upstream_close_idle(struct server *s);

/* ... of primary <s> and of its replicas: every worker's. */
void server_close_idle(struct server *s);

/* Closes up to <n> idle pooled connections of the worker, least recently
 * used servers' first; returns how many. Descriptor pressure: a client
 * must never be refused for an idle connection nobody uses. */
unsigned upstream_reclaim_idle(struct worker *w, unsigned n);

/* Sets the io watcher of <u> to <events> (EV_READ|EV_WRITE). */
void upstream_want(struct upstream *u, unsigned events);

/* The facts the keep-or-close rule looks at when an exchange ends. */
struct keep_facts {
    bool reusable;         /* request and response allow another exchange */
    bool in_rotation;      /* the backend takes new requests */
    bool switched_away;    /* the runtime API switched every listener away from its pool */
    bool pool_full;        /* limits.backend_idle_connections reached */
    bool process_draining; /* listeners closed: nothing will reuse it */
    bool fd_pressure;      /* descriptors are short: clients come first */
};

/* Keep (NULL) or close (a static reason) a connection whose exchange ended. */
const char *upstream_keep_rule(const struct keep_facts *f);

#endif
