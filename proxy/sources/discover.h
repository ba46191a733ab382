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

/* ---- the config's own host names (DESIGN "The reload") ----------------------
 * Static addresses (backends, listeners, nameservers...) that hold a host
 * name are resolved by the same c-ares, configured the same way, without
 * blocking the loop: at startup and before a reload commits. */

/* A reload waits this long at most for its names (DESIGN: "a name that does
 * not resolve within 2 s ... keeps the address it had"). */
#define DISCOVER_NAMES_TIMEOUT_MS 2000

struct discover_names;

/* Resolves the <n> host names <hosts> (copied) on <loop>, as discovery does
 * with <nc>'s resolver.nameservers (with <system>, or without nameservers:
 * /etc/resolv.conf), all of them within <timeout_ms> from now. <done>(<ctx>)
 * is called on the loop once every name has its answer or the time is up,
 * never from inside this call. Returns the batch, or NULL with *<why> (a
 * static string: c-ares or memory failed; <done> will not be called). */
struct discover_names *discover_names_start(struct ev_loop *loop, const struct conf *nc,
                                            bool system, const char *const *hosts, size_t n,
                                            conf_ms timeout_ms, void (*done)(void *ctx), void *ctx,
                                            const char **why);

/* The answer for host <i>, once done: 0 with its address in <sa> (an IPv4
 * one when the name has both, as conf_load() picks; port 0), or -1 with
 * *<why> a static string ("timed out", or c-ares's reason). */
int discover_names_result(const struct discover_names *b, size_t i, struct sockaddr_storage *sa,
                          socklen_t *len, const char **why);

/* Drops what is still out and frees <b>; <done> is not called after this.
 * NULL is fine. */
void discover_names_free(struct discover_names *b);

/* A backend whose host name the last reload (or the startup) could not
 * resolve and that kept its previous address. */
struct discover_resolve_error {
    const char *pool, *backend; /* copied */
    const char *why;            /* static */
};

/* Replaces the set of such backends with <n> <errs> (after a config was
 * applied). Returns 0, or -1 out of memory (the set is then empty). */
int discover_set_resolve_errors(struct discover *d, const struct discover_resolve_error *errs,
                                size_t n);

/* /status `resolve_error`: why the last resolution of <pool>/<backend>'s
 * host name failed (it kept its address), or NULL when it worked (or the
 * address is no name). Constant time. */
const char *discover_resolve_error(const struct discover *d, const char *pool, const char *backend);

#endif
