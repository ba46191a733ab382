/* Applying a config: at startup and at every reload (DESIGN "The reload").
 * Two halves. The front half gets a config ready without stopping
 * anything: the file is parsed and the TLS contexts are built on the
 * background thread (bgwork), then host names are resolved; requests that
 * arrive meanwhile are queued and folded into one more run. The commit
 * half, reload_apply(), applies a loaded, resolved config in one
 * synchronous step: prepare (validate, bind new listeners without
 * accepting), commit (walk conf_diff() and apply each change), abort
 * (throw away only what prepare built). */
#ifndef USHER_PROXY_RELOAD_H
#define USHER_PROXY_RELOAD_H

#include "../../conf/conf-t.h"
#include "../base/buf.h"
#include "../control/process-t.h"

/* ---- the front half ---------------------------------------------------- */

/* A config loaded from a file: the blocking part of every load (startup,
 * `usher -t`, each reload on the background thread). */
struct reload_loaded {
    struct conf *nc;         /* NULL when the file is invalid (see errs) */
    struct ssl_ctx_st **tls; /* per listener of nc (listener_tls_prepare) */
    struct conf_errors errs; /* every "file:line:col: key: reason" */
};

/* Parses <path> with <conf_flags> (CONF_LOAD_*) and builds its TLS
 * contexts. Blocks (file reads; without CONF_LOAD_DEFER_RESOLVE,
 * getaddrinfo: `usher -t` only). Returns 0 with l->nc and l->tls, or -1
 * with the errors in l->errs (nothing else kept). */
int reload_load(const char *path, unsigned conf_flags, struct reload_loaded *l);

/* Startup, after reload_load(CONF_LOAD_DEFER_RESOLVE): resolves l->nc's
 * host names the way a reload does (c-ares, DISCOVER_NAMES_TIMEOUT_MS),
 * waiting for them (nothing is served yet). With no config in force, a name
 * that does not resolve is an error. Returns 0, or -1 with the errors
 * appended to l->errs (l->nc and l->tls freed). */
int reload_resolve_startup(struct reload_loaded *l);

/* Frees what <l> still holds. */
void reload_loaded_free(struct reload_loaded *l);

/* Creates the reload pipeline of <p> (p->reloader, p->reload,
 * p->reload_cancel). 0 or -1 (out of memory). */
int reload_init(struct process *p);

/* SIGHUP, POST /reload: asks for a reload of the file named at startup.
 * <done>(<ctx>, ...) (NULL: nobody waits) is called on the control loop
 * with the outcome of the first reload that starts after this call: one
 * asked for while another runs waits for the next, and every request made
 * during one run shares that next one. Returns 0, or -1 (out of memory:
 * <done> will not be called). */
int reload_request(struct process *p, reload_done_cb done, void *ctx);

/* Forgets the request whose <ctx> is given (its answer has nowhere to go);
 * the reload itself goes on. */
void reload_cancel(struct process *p, void *ctx);

/* Process exit: a reload under way is abandoned (its background job frees
 * what it loaded, nothing is applied), waiting requests are forgotten.
 * Before bgwork_free(). */
void reload_stop(struct process *p);

/* ---- the commit half --------------------------------------------------- */

/* Startup: applies the worker's config (loaded and valid) to the empty data
 * plane, with the TLS contexts <tls> the caller built for it
 * (listener_tls_prepare; the array passes to the reload). Returns 0, or -1
 * after logging (exit 1). */
int reload_start(struct process *p, struct ssl_ctx_st **tls);

/* Applies <nc> (loaded, valid, its names resolved) in place of the config
 * in force, with the TLS contexts <tls> built for it; both pass to the
 * call. Runtime overrides are applied again over it. Returns 0, or -1 with
 * the running config untouched (out->reason says why, out->errors the
 * messages). <out> (NULL: none wanted) also receives the changes; the
 * caller frees it with reload_outcome_free(). */
int reload_apply(struct process *p, struct conf *nc, struct ssl_ctx_st **tls,
                 struct reload_outcome *out);

void reload_outcome_free(struct reload_outcome *out);

#endif
