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

struct ov_saver;

struct overrides {
    struct ov_saver *saver; /* the state file's writes in flight (overrides.c) */
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

/* Saves the overrides: with a fleet, to etcd (p->ov_store); else to
 * admin.state_file (if set), atomically (temp file, fsync, rename, fsync of
 * the directory) on the background thread p->bg: the loop never waits for
 * the disk. The content is taken now; writes land in the order they were
 * asked for, and a save asked for while another waits to start replaces
 * it (the later state is the one that counts). Without p->bg the file is
 * written at once. Returns 0, or -1 when nothing could be queued (logged;
 * the previous file stays). */
int overrides_save(struct process *p);

/* The state file's saves, each numbered when asked for (1, 2, ...). */
/* The number of the last save asked for; 0 before the first. */
unsigned long long overrides_save_issued(const struct overrides *ov);
/* True once save <seq> (and every one before it) is on disk, or failed
 * (logged): nothing more will happen for it. */
bool overrides_save_settled(const struct overrides *ov, unsigned long long seq);
/* Calls <cb>(<ctx>) on the loop once save <seq> settled. Returns 0 (it
 * will be called), 1 if it already settled (it will not be), -1 out of
 * memory (it will not be). */
int overrides_save_wait(struct overrides *ov, unsigned long long seq, void (*cb)(void *ctx),
                        void *ctx);
/* Forgets the wait of <ctx> (its answer has nowhere to go any more). */
void overrides_save_unwait(struct overrides *ov, void *ctx);

/* Reads admin.state_file (if set and present) into p->ov. A corrupt or
 * unreadable file is logged and leaves p->ov empty: usher never refuses
 * to start over it. */
void overrides_load(struct process *p);

/* Milliseconds since the epoch (wall clock), for deadlines that must
 * survive a restart. */
long long overrides_epoch_ms(void);

#endif
