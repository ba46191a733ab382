/* The state file is text, one override a line, fields separated by tabs
 * (names never contain tabs or newlines: the config's names are YAML
 * scalars on one line, and the API refuses such bytes):
 *   usher-state 1
 *   drain  POOL BACKEND DEADLINE_EPOCH_MS
 *   weight POOL BACKEND N
 *   split  LISTENER POOL W [POOL W ...]
 * Anything else makes the whole file corrupt: half a decision is worse
 * than none. */
#include "overrides.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "../../health/backend.h"
#include "../base/buf.h"
#include "../base/log.h"
#include "../core/balance.h"
#include "../core/listener.h"
#include "../core/upstream.h"
#include "../core/worker.h"
#include "bgwork.h"

#define STATE_MAGIC "usher-state 1"
/* A state file larger than this is not ours. */
#define STATE_FILE_MAX (1 << 20)
#define STATE_FIELDS_MAX 512

long long overrides_epoch_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

struct overrides *overrides_new(void)
{
    return calloc(1, sizeof(struct overrides));
}

static void split_free(struct override_split *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->split[i].pool);
    free(s->split);
    free(s->listener);
}

static void overrides_reset(struct overrides *ov)
{
    for (size_t i = 0; i < ov->num_drains; i++) {
        free(ov->drains[i].pool);
        free(ov->drains[i].backend);
    }
    for (size_t i = 0; i < ov->num_weights; i++) {
        free(ov->weights[i].pool);
        free(ov->weights[i].backend);
    }
    for (size_t i = 0; i < ov->num_splits; i++)
        split_free(&ov->splits[i]);
    free(ov->drains);
    free(ov->weights);
    free(ov->splits);
    struct ov_saver *saver = ov->saver; /* the file's history is not the set's */
    memset(ov, 0, sizeof(*ov));
    ov->saver = saver;
}

static void saver_free(struct ov_saver *sv);

void overrides_free(struct overrides *ov)
{
    if (!ov)
        return;
    overrides_reset(ov);
    saver_free(ov->saver);
    free(ov);
}

static bool same(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

int overrides_set_drain(struct overrides *ov, const char *pool, const char *backend,
                        long long deadline)
{
    for (size_t i = 0; i < ov->num_drains; i++)
        if (same(ov->drains[i].pool, pool) && same(ov->drains[i].backend, backend))
            return 0; /* idempotent: the first drain's deadline stands */
    struct override_drain *d = realloc(ov->drains, (ov->num_drains + 1) * sizeof(*d));
    if (!d)
        return -1;
    ov->drains = d;
    d = &d[ov->num_drains];
    d->pool = strdup(pool);
    d->backend = strdup(backend);
    d->deadline_epoch_ms = deadline;
    if (!d->pool || !d->backend) {
        free(d->pool);
        free(d->backend);
        return -1;
    }
    ov->num_drains++;
    return 0;
}

void overrides_clear_drain(struct overrides *ov, const char *pool, const char *backend)
{
    for (size_t i = 0; i < ov->num_drains; i++)
        if (same(ov->drains[i].pool, pool) && same(ov->drains[i].backend, backend)) {
            free(ov->drains[i].pool);
            free(ov->drains[i].backend);
            ov->drains[i] = ov->drains[--ov->num_drains];
            return;
        }
}

const struct override_weight *overrides_find_weight(const struct overrides *ov, const char *pool,
                                                    const char *backend)
{
    for (size_t i = 0; i < ov->num_weights; i++)
        if (same(ov->weights[i].pool, pool) && same(ov->weights[i].backend, backend))
            return &ov->weights[i];
    return NULL;
}

int overrides_set_weight(struct overrides *ov, const char *pool, const char *backend,
                         unsigned weight)
{
    struct override_weight *w = (struct override_weight *)overrides_find_weight(ov, pool, backend);
    if (w) {
        w->weight = weight;
        return 0;
    }
    w = realloc(ov->weights, (ov->num_weights + 1) * sizeof(*w));
    if (!w)
        return -1;
    ov->weights = w;
    w = &w[ov->num_weights];
    w->pool = strdup(pool);
    w->backend = strdup(backend);
    w->weight = weight;
    if (!w->pool || !w->backend) {
        free(w->pool);
        free(w->backend);
        return -1;
    }
    ov->num_weights++;
    return 0;
}

void overrides_clear_weight(struct overrides *ov, const char *pool, const char *backend)
{
    for (size_t i = 0; i < ov->num_weights; i++)
        if (same(ov->weights[i].pool, pool) && same(ov->weights[i].backend, backend)) {
            free(ov->weights[i].pool);
            free(ov->weights[i].backend);
            ov->weights[i] = ov->weights[--ov->num_weights];
            return;
        }
}

const struct override_split *overrides_find_split(const struct overrides *ov, const char *listener)
{
    for (size_t i = 0; i < ov->num_splits; i++)
        if (same(ov->splits[i].listener, listener))
            return &ov->splits[i];
    return NULL;
}

int overrides_set_split(struct overrides *ov, const char *listener, const struct conf_split *split,
                        size_t n)
{
    struct override_split ns = {.listener = strdup(listener),
                                .split = calloc(n ? n : 1, sizeof(struct conf_split)),
                                .n = 0};
    if (!ns.listener || !ns.split)
        goto fail;
    for (; ns.n < n; ns.n++) {
        ns.split[ns.n].pool = strdup(split[ns.n].pool);
        ns.split[ns.n].weight = split[ns.n].weight;
        if (!ns.split[ns.n].pool)
            goto fail;
    }
    for (size_t i = 0; i < ov->num_splits; i++)
        if (same(ov->splits[i].listener, listener)) {
            split_free(&ov->splits[i]);
            ov->splits[i] = ns;
            return 0;
        }
    struct override_split *s = realloc(ov->splits, (ov->num_splits + 1) * sizeof(*s));
    if (!s)
        goto fail;
    ov->splits = s;
    s[ov->num_splits++] = ns;
    return 0;
fail:
    split_free(&ns);
    return -1;
}

void overrides_clear_split(struct overrides *ov, const char *listener)
{
    for (size_t i = 0; i < ov->num_splits; i++)
        if (same(ov->splits[i].listener, listener)) {
            split_free(&ov->splits[i]);
            ov->splits[i] = ov->splits[--ov->num_splits];
            return;
        }
}

/* ---- applying ------------------------------------------------------------ */

/* The server named pool/backend in the config in force (not one a reload
 * removed and that is only draining out), or NULL. */
void overrides_apply(struct process *p, bool log_kept)
{
    struct overrides *ov = p->ov;
    struct worker *w = p->w;
    bool dropped = false;
    long long now = overrides_epoch_ms();

    for (size_t i = 0; i < ov->num_drains;) {
        struct override_drain *d = &ov->drains[i];
        struct server *s = worker_find_server(w, d->pool, d->backend);
        if (!s) {
            log_kv(CONF_LOG_WARN, "override dropped", LOG_STR("kind", "drain"),
                   LOG_STR("pool", d->pool), LOG_STR("backend", d->backend),
                   LOG_STR("reason", "the config no longer has this backend"));
            overrides_clear_drain(ov, d->pool, d->backend);
            dropped = true;
            continue;
        }
        long long left = d->deadline_epoch_ms - now;
        backend_admin_drain(s->hb, (conf_ms)(left > 0 ? left : 0));
        if (log_kept)
            log_kv(CONF_LOG_INFO, "override kept", LOG_STR("kind", "drain"),
                   LOG_STR("pool", d->pool), LOG_STR("backend", d->backend));
        i++;
    }
    for (size_t i = 0; i < ov->num_weights;) {
        struct override_weight *o = &ov->weights[i];
        struct server *s = worker_find_server(w, o->pool, o->backend);
        if (!s) {
            log_kv(CONF_LOG_WARN, "override dropped", LOG_STR("kind", "weight"),
                   LOG_STR("pool", o->pool), LOG_STR("backend", o->backend),
                   LOG_STR("reason", "the config no longer has this backend"));
            overrides_clear_weight(ov, o->pool, o->backend);
            dropped = true;
            continue;
        }
        server_override_weight(s, true, o->weight);
        if (log_kept)
            log_kv(CONF_LOG_INFO, "override kept", LOG_STR("kind", "weight"),
                   LOG_STR("pool", o->pool), LOG_STR("backend", o->backend),
                   LOG_UINT("weight", o->weight));
        i++;
    }
    for (size_t i = 0; i < ov->num_splits;) {
        struct override_split *o = &ov->splits[i];
        struct listener *l = worker_listener_named(w, o->listener);
        const char *unknown = NULL;
        if (!l || listener_override_split(l, o->split, o->n, &unknown) < 0) {
            log_kv(CONF_LOG_WARN, "override dropped", LOG_STR("kind", "split"),
                   LOG_STR("listener", o->listener),
                   LOG_STR("reason", l ? "the listener no longer has a pool it names"
                                       : "the config no longer has this listener"));
            if (unknown)
                log_kv(CONF_LOG_WARN, "override dropped pool", LOG_STR("listener", o->listener),
                       LOG_STR("pool", unknown));
            overrides_clear_split(ov, o->listener);
            dropped = true;
            continue;
        }
        if (log_kept)
            log_kv(CONF_LOG_INFO, "override kept", LOG_STR("kind", "split"),
                   LOG_STR("listener", o->listener));
        i++;
    }
    /* with a fleet, etcd keeps what this config lacks: another instance's
     * config may have it */
    if (dropped && !p->ov_store)
        overrides_save(p);
}

/* ---- the state file ------------------------------------------------------ */

void overrides_format(const struct overrides *ov, struct hbuf *o)
{
    for (size_t i = 0; i < ov->num_drains; i++)
        hbuf_printf(o, "drain\t%s\t%s\t%lld\n", ov->drains[i].pool, ov->drains[i].backend,
                    ov->drains[i].deadline_epoch_ms);
    for (size_t i = 0; i < ov->num_weights; i++)
        hbuf_printf(o, "weight\t%s\t%s\t%u\n", ov->weights[i].pool, ov->weights[i].backend,
                    ov->weights[i].weight);
    for (size_t i = 0; i < ov->num_splits; i++) {
        hbuf_printf(o, "split\t%s", ov->splits[i].listener);
        for (size_t k = 0; k < ov->splits[i].n; k++)
            hbuf_printf(o, "\t%s\t%u", ov->splits[i].split[k].pool, ov->splits[i].split[k].weight);
        hbuf_append_str(o, "\n");
    }
}

/* ---- saving off the loop -------------------------------------------------
 * The loop formats the overrides (a snapshot: the set may change right
 * after) and hands the text to the background thread, which writes it.
 * Ordering: one background thread runs jobs in FIFO order, and a job takes
 * the newest text when it starts, so a later state is never overwritten by
 * an earlier one; saves asked for while a job waits to start fold into
 * that job (one write for a burst of mutations). Each save has a number;
 * a job reports the number of the text it wrote, and every wait for that
 * number or a lower one is answered. */

struct save_wait {
    unsigned long long seq;
    void (*cb)(void *ctx);
    void *ctx;
    struct save_wait *next;
};

struct ov_saver {
    pthread_mutex_t lock; /* <next*> and <queued>: the loop and the thread */
    struct hbuf next;     /* the newest text, not yet taken by a job */
    char *next_path;
    unsigned long long next_seq;
    bool queued; /* a job is queued that has not taken <next> yet */
    /* the loop's alone: */
    unsigned long long issued;  /* the last save asked for */
    unsigned long long settled; /* every save up to it is written or failed */
    struct save_wait *waits;
};

/* One write, from the job's start to its done callback. */
struct save_job {
    struct ov_saver *sv;
    struct hbuf text;
    char *path;
    unsigned long long seq;
    const char *why; /* static: what failed, NULL when written */
    int err;         /* errno of it */
};

static void saver_free(struct ov_saver *sv)
{
    if (!sv)
        return;
    while (sv->waits) {
        struct save_wait *w = sv->waits;
        sv->waits = w->next;
        free(w);
    }
    hbuf_free(&sv->next);
    free(sv->next_path);
    pthread_mutex_destroy(&sv->lock);
    free(sv);
}

static struct ov_saver *saver_get(struct overrides *ov)
{
    if (!ov->saver) {
        ov->saver = calloc(1, sizeof(*ov->saver));
        if (ov->saver)
            pthread_mutex_init(&ov->saver->lock, NULL);
    }
    return ov->saver;
}

/* The directory entry of a rename is durable only once the directory
 * itself is synced (ext4 and xfs may otherwise lose it in a crash). */
static int sync_dir(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Blocking: temp file, fsync, rename, fsync of the directory. */
static void write_file(struct save_job *j)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", j->path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        j->why = "cannot create the temp file";
        goto fail;
    }
    size_t off = 0;
    while (off < j->text.len) {
        ssize_t n = write(fd, j->text.data + off, j->text.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            j->why = "write failed";
            goto fail;
        }
        off += (size_t)n;
    }
    if (fsync(fd) < 0) {
        j->why = "fsync failed";
        goto fail;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, j->path) < 0) {
        j->why = "rename failed";
        goto fail;
    }
    if (sync_dir(j->path) < 0) {
        j->why = "fsync of the directory failed";
        j->err = errno;
    }
    return;
fail:
    j->err = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
}

/* The background thread: the newest text is the one written. */
static void save_run(void *arg)
{
    struct save_job *j = arg;
    struct ov_saver *sv = j->sv;
    pthread_mutex_lock(&sv->lock);
    j->text = sv->next;
    j->path = sv->next_path;
    j->seq = sv->next_seq;
    sv->next = (struct hbuf){0};
    sv->next_path = NULL;
    sv->queued = false;
    pthread_mutex_unlock(&sv->lock);
    write_file(j);
}

/* Answers every wait the save of <seq> covers. */
static void settle(struct ov_saver *sv, unsigned long long seq)
{
    if (seq > sv->settled)
        sv->settled = seq;
    for (struct save_wait **pp = &sv->waits; *pp;) {
        struct save_wait *w = *pp;
        if (w->seq > sv->settled) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        void (*cb)(void *) = w->cb;
        void *ctx = w->ctx;
        free(w);
        cb(ctx); /* may wait or unwait: the list is consistent here */
        pp = &sv->waits;
    }
}

static void log_not_saved(const char *path, const char *why, int err)
{
    log_kv(CONF_LOG_ERROR, "state file not saved", LOG_STR("file", path), LOG_STR("reason", why),
           LOG_STR("error", strerror(err)));
}

/* The loop: the outcome is logged, and what waited for it answered. */
static void save_done(void *arg)
{
    struct save_job *j = arg;
    if (j->why)
        log_not_saved(j->path, j->why, j->err);
    else
        log_kv(CONF_LOG_DEBUG, "state file saved", LOG_STR("file", j->path),
               LOG_UINT("save", j->seq), LOG_UINT("bytes", j->text.len));
    settle(j->sv, j->seq);
    hbuf_free(&j->text);
    free(j->path);
    free(j);
}

int overrides_save(struct process *p)
{
    if (p->ov_store)
        return p->ov_store(p);
    const char *path = p->w->conf->admin.state_file;
    if (!path || !*path)
        return 0;
    struct ov_saver *sv = saver_get(p->ov);
    struct hbuf o = {0};
    char *path_copy = strdup(path); /* a reload may free the conf before the job runs */
    if (!sv || !path_copy || hbuf_printf(&o, "%s\n", STATE_MAGIC) < 0)
        goto nomem;
    overrides_format(p->ov, &o);
    unsigned long long seq = sv->issued + 1;
    if (!p->bg) {
        struct save_job j = {.sv = sv, .text = o, .path = path_copy, .seq = seq};
        write_file(&j);
        sv->issued = seq;
        if (j.why)
            log_not_saved(path, j.why, j.err);
        settle(sv, seq);
        hbuf_free(&o);
        free(path_copy);
        return j.why ? -1 : 0;
    }
    struct save_job *j = calloc(1, sizeof(*j)); /* unused if the save folds */
    if (!j)
        goto nomem;
    j->sv = sv;
    /* one critical section decides and hands over: a job that has not
     * started yet takes this text (fold); one that has started wrote
     * (or writes) an older one, so a new job is needed */
    pthread_mutex_lock(&sv->lock);
    bool fold = sv->queued;
    hbuf_free(&sv->next);
    free(sv->next_path);
    sv->next = o;
    sv->next_path = path_copy;
    sv->next_seq = seq;
    sv->queued = true;
    pthread_mutex_unlock(&sv->lock);
    sv->issued = seq;
    if (fold) {
        free(j);
        return 0;
    }
    if (bgwork_submit(p->bg, save_run, save_done, j) < 0) {
        /* nothing will take <next>: the next save tries again */
        pthread_mutex_lock(&sv->lock);
        sv->queued = false;
        pthread_mutex_unlock(&sv->lock);
        free(j);
        log_not_saved(path, "out of memory", ENOMEM);
        settle(sv, seq);
        return -1;
    }
    return 0;
nomem:
    free(path_copy);
    hbuf_free(&o);
    log_not_saved(path, "out of memory", ENOMEM);
    return -1;
}

unsigned long long overrides_save_issued(const struct overrides *ov)
{
    return ov && ov->saver ? ov->saver->issued : 0;
}

bool overrides_save_settled(const struct overrides *ov, unsigned long long seq)
{
    return seq == 0 || (ov && ov->saver && ov->saver->settled >= seq);
}

int overrides_save_wait(struct overrides *ov, unsigned long long seq, void (*cb)(void *ctx),
                        void *ctx)
{
    if (overrides_save_settled(ov, seq))
        return 1;
    struct save_wait *w = calloc(1, sizeof(*w));
    if (!w)
        return -1;
    w->seq = seq;
    w->cb = cb;
    w->ctx = ctx;
    w->next = ov->saver->waits;
    ov->saver->waits = w;
    return 0;
}

void overrides_save_unwait(struct overrides *ov, void *ctx)
{
    if (!ov || !ov->saver)
        return;
    for (struct save_wait **pp = &ov->saver->waits; *pp; pp = &(*pp)->next)
        if ((*pp)->ctx == ctx) {
            struct save_wait *w = *pp;
            *pp = w->next;
            free(w);
            return;
        }
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    if (!*s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno || v > max)
        return -1;
    *out = v;
    return 0;
}

int overrides_parse_line(struct overrides *ov, char *line)
{
    char *f[STATE_FIELDS_MAX];
    size_t n = 0;
    for (char *tok = line;;) {
        if (n == STATE_FIELDS_MAX)
            return -1;
        f[n++] = tok;
        char *tab = strchr(tok, '\t');
        if (!tab)
            break;
        *tab = '\0';
        tok = tab + 1;
    }
    unsigned long long v;
    for (size_t i = 0; i < n; i++)
        if (!*f[i])
            return -1;
    if (same(f[0], "drain") && n == 4 && parse_uint(f[3], (1ULL << 62), &v) == 0)
        return overrides_set_drain(ov, f[1], f[2], (long long)v);
    if (same(f[0], "weight") && n == 4 && parse_uint(f[3], UINT32_MAX, &v) == 0)
        return overrides_set_weight(ov, f[1], f[2], (unsigned)v);
    if (same(f[0], "split") && n >= 2 && n % 2 == 0) {
        size_t k = (n - 2) / 2;
        struct conf_split sp[STATE_FIELDS_MAX / 2];
        for (size_t i = 0; i < k; i++) {
            if (parse_uint(f[3 + 2 * i], UINT32_MAX, &v) < 0)
                return -1;
            sp[i].pool = f[2 + 2 * i];
            sp[i].pool_index = 0;
            sp[i].weight = (unsigned)v;
        }
        return overrides_set_split(ov, f[1], sp, k);
    }
    return -1;
}

void overrides_load(struct process *p)
{
    const char *path = p->w->conf->admin.state_file;
    if (!path || !*path || p->w->conf->fleet.enabled)
        return; /* a fleet's overrides are in etcd (fleet.c) */
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno != ENOENT)
            log_kv(CONF_LOG_ERROR, "state file unreadable", LOG_STR("file", path),
                   LOG_STR("reason", strerror(errno)),
                   LOG_STR("action", "starting without overrides"));
        return;
    }
    char *buf = malloc(STATE_FILE_MAX + 1);
    size_t len = buf ? fread(buf, 1, STATE_FILE_MAX + 1, f) : 0;
    fclose(f);
    const char *why = NULL;
    unsigned lineno = 0;
    if (!buf) {
        why = "out of memory";
        goto corrupt;
    }
    if (len > STATE_FILE_MAX) {
        why = "file too large";
        goto corrupt;
    }
    buf[len] = '\0';
    if (memchr(buf, '\0', len)) {
        why = "NUL byte";
        goto corrupt;
    }
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        if (lineno == 1) {
            if (!same(line, STATE_MAGIC)) {
                why = "not an usher state file (first line)";
                goto corrupt;
            }
            continue;
        }
        if (overrides_parse_line(p->ov, line) < 0) {
            why = "malformed line";
            goto corrupt;
        }
    }
    if (lineno == 0) {
        why = "empty file";
        goto corrupt;
    }
    free(buf);
    log_kv(CONF_LOG_INFO, "state file loaded", LOG_STR("file", path),
           LOG_UINT("drains", p->ov->num_drains), LOG_UINT("weights", p->ov->num_weights),
           LOG_UINT("splits", p->ov->num_splits));
    return;
corrupt:
    free(buf);
    overrides_reset(p->ov);
    log_kv(CONF_LOG_ERROR, "state file corrupt", LOG_STR("file", path), LOG_STR("reason", why),
           LOG_UINT("line", lineno), LOG_STR("action", "starting without overrides"));
}
