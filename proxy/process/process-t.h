/* The process: what sits above the data plane — signals, the drain, the
 * reload, readiness and the admin listener. Types only. */
#ifndef USHER_PROXY_PROCESS_T_H
#define USHER_PROXY_PROCESS_T_H

#include <ev.h>
#include <stdint.h>

#include "../core/worker-t.h"

struct admin;
struct overrides;
struct fleet;

struct process {
    struct ev_loop *loop;
    struct worker *w; /* the data plane */
    struct admin *admin;
    uint64_t reloads_ok;
    uint64_t reloads_error;
    struct overrides *ov; /* what the runtime API decided (overrides.h) */
    /* With a fleet: where overrides_save() writes instead of the state
     * file (fleet.c sets it; a callback, so overrides.c never calls up). */
    int (*ov_store)(struct process *p);
    struct fleet *fleet; /* NULL without `fleet` (fleet.h) */
    char *token;          /* admin.token_file's contents, trimmed; NULL without one */

    ev_signal sig_term, sig_int, sig_hup;
    ev_timer drain_timer;     /* drain_delay, then one-second progress ticks */
    ev_tstamp drain_deadline; /* when the shutdown timeout cuts the rest */
    ev_timer ready_timer;     /* polls for the first health round */
    int exit_code;
};

#endif
