/* DNS discovery (DESIGN.md "Discovery and fleets"): every pool with
 * `discover` is resolved on the event loop with c-ares every interval; each
 * address of the answer is a backend named ADDRESS:PORT ([ADDRESS]:PORT for
 * IPv6), added to and drained from the data plane through
 * worker_apply_discovered(). A failure, a timeout or an empty answer changes
 * nothing for resolver.hold; only an answer that no longer lists an address
 * drains it (reason dns). Control side: runs on the process's loop. */
#ifndef USHER_PROXY_DISCOVER_H
#define USHER_PROXY_DISCOVER_H

#include <ev.h>
#include <stdbool.h>

#include "../../conf/conf-t.h"

struct discover;
struct worker;
struct hbuf;

/* Creates the discovery of <w> on <loop>; nothing is resolved until
 * discover_configure(). NULL on allocation failure. */
struct discover *discover_new(struct ev_loop *loop, struct worker *w);

/* Follows config <nc> (at startup and at every reload, after the worker
 * committed it, while the previous generation still lives): new discover
 * pools start resolving at once, changed ones re-resolve at once and keep
 * their backends until an answer replaces them, pools that lost `discover`
 * (or went away) drain every backend they discovered. Returns 0, or -1 when
 * memory or c-ares failed (logged; what could be applied was). */
int discover_configure(struct discover *d, const struct conf *nc);

/* True once every discover pool has had its first answer or failure (the
 * readiness of a first round, like a first health check). */
bool discover_first_round_done(const struct discover *d);

/* Appends the pool's discovery state to <o> as a JSON object: {"dns",
 * "addresses" (the backends in force), "last_error" (null when the last
 * attempt succeeded), "resolved_age_ms" (since the last good answer, null
 * before the first)}. Returns false, appending nothing, when <pool> does not
 * discover. */
bool discover_status_json(const struct discover *d, const char *pool, struct hbuf *o);

/* Cancels every query and frees <d>; the backends stay the worker's.
 * NULL is fine. */
void discover_free(struct discover *d);

#endif
