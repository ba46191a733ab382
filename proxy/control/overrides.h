/* Runtime overrides: what an operator decided through the admin API
 * (admin drains, weights, splits). They outlive reloads (re-applied after
 * every commit) and, with admin.state_file, restarts. */
#ifndef USHER_PROXY_OVERRIDES_H
#define USHER_PROXY_OVERRIDES_H

#include <stdbool.h>
#include <stddef.h>

#include "../../conf/conf-t.h"
#include "process-t.h"

struct override_drain {
    char *pool, *backend;
    long long deadline_epoch_ms; /* wall clock, so a restart keeps the deadline */
};

struct override_weight {
    char *pool, *backend;
    unsigned weight;
};

struct override_split {
    char *listener;
    struct conf_split *split; /* pool names owned here */
    size_t n;
};

struct overrides {
    struct override_drain *drains;
    size_t num_drains;
    struct override_weight *weights;
    size_t num_weights;
    struct override_split *splits;
    size_t num_splits;
};

/* An empty set; NULL on allocation failure. */
struct overrides *overrides_new(void);
void overrides_free(struct overrides *ov);

/* Record (or replace) / forget one override. The data plane is the
 * caller's to change; these only keep the decision. Return 0 or -1
 * (ENOMEM). Forgetting what is not there is a no-op 0. */
int overrides_set_drain(struct overrides *ov, const char *pool, const char *backend,
                        long long deadline_epoch_ms);
void overrides_clear_drain(struct overrides *ov, const char *pool, const char *backend);
int overrides_set_weight(struct overrides *ov, const char *pool, const char *backend,
                         unsigned weight);
void overrides_clear_weight(struct overrides *ov, const char *pool, const char *backend);
int overrides_set_split(struct overrides *ov, const char *listener, const struct conf_split *split,
                        size_t n);
void overrides_clear_split(struct overrides *ov, const char *listener);

/* The recorded split of <listener>, or NULL. */
const struct override_split *overrides_find_split(const struct overrides *ov, const char *listener);
/* The recorded weight override of pool/backend, or NULL. */
const struct override_weight *overrides_find_weight(const struct overrides *ov, const char *pool,
                                                    const char *backend);

/* Applies every override to the data plane of <p>: after the startup
 * config and after each reload commit. An override naming something the
 * config no longer has is dropped with a log line; with <log_kept> each
 * one kept is logged. Saves the state file if something was dropped. */
void overrides_apply(struct process *p, bool log_kept);

/* Appends the overrides to <o>, one line each ("drain|weight|split\t..."),
 * the format of the state file and of an upgrade's hand-over. */
void overrides_format(const struct overrides *ov, struct hbuf *o);

/* Records the override one such line (tab-split in place) describes.
 * Returns 0, or -1 if it is not a valid line (or out of memory). */
int overrides_parse_line(struct overrides *ov, char *line);

/* Writes the overrides to admin.state_file (if set) atomically: temp
 * file, fsync, rename. Returns 0, or -1 after logging. */
int overrides_save(struct process *p);

/* Reads admin.state_file (if set and present) into p->ov. A corrupt or
 * unreadable file is logged and leaves p->ov empty: usher never refuses
 * to start over it. */
void overrides_load(struct process *p);

/* Milliseconds since the epoch (wall clock), for deadlines that must
 * survive a restart. */
long long overrides_epoch_ms(void);

#endif
