/* Applying a config: at startup and at every reload, one path in three
 * steps — prepare (validate, build TLS contexts, bind new listeners without
 * accepting), commit (walk conf_diff() and apply each change), abort (throw
 * away only what prepare built). */
#ifndef USHER_PROXY_RELOAD_H
#define USHER_PROXY_RELOAD_H

#include "../../conf/conf-t.h"
#include "../base/buf.h"
#include "../control/process-t.h"

/* Startup: applies the worker's config (loaded and valid) to the empty data
 * plane, with the TLS contexts <tls> the caller built for it
 * (listener_tls_prepare; the array passes to the reload). Returns 0, or -1
 * after logging (exit 1). */
int reload_start(struct process *p, struct ssl_ctx_st **tls);

/* SIGHUP, POST /reload: loads the file named at startup again and applies
 * it in place; runtime overrides are applied again over it. Returns 0, or
 * -1 with the running config untouched (logged, counted as
 * result="error"). <out> (NULL: none wanted) receives the errors or the
 * changes; the caller frees them with reload_outcome_free(). */
int reload_run(struct process *p, struct reload_outcome *out);

void reload_outcome_free(struct reload_outcome *out);

#endif
