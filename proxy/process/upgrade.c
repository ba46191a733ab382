/* The binary upgrade (SIGUSR2, DESIGN "The upgrade"). The old process
 * starts the binary on disk again with the same arguments, handing it every
 * listening socket the way systemd socket activation does (LISTEN_FDS,
 * LISTEN_FDNAMES: the new process needs one way to inherit sockets, not
 * two), the backends' health in a sealed memfd (USHER_UPGRADE_STATE) and one
 * end of a socketpair (USHER_UPGRADE_FD) on which the new process says
 * "ready". Until then the old one serves as if nothing happened, and goes
 * on doing so if the new one exits, crashes or overstays upgrade.timeout. */
#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../health/backend.h"
#include "../base/log.h"
#include "../core/worker.h"
#include "../control/overrides.h"
#include "sysd.h"

/* The first descriptor the new process gets its listening sockets at
 * (sd_listen_fds' SD_LISTEN_FDS_START). */
#define LISTEN_FDS_START 3

/* Descriptors the hand-over passes at most: listeners plus the admin one. */
#define UPGRADE_MAX_FDS 256

static const char env_ctl[] = "USHER_UPGRADE_FD";
static const char env_state[] = "USHER_UPGRADE_STATE";

/* ---- the state file: one line per backend -------------------------------- */

/* "backend <pool> <name> <address> <state> <drain_reason> <ok> <fail> <checked>"
 * (names and addresses never hold white space: conf checks names), then
 * "override\t<line>" per runtime override, in the state file's format. */
static int write_state(const struct process *proc, FILE *f)
{
    for (const struct pool *p = proc->w->pools; p; p = p->next)
        for (size_t i = 0; i < p->num_servers; i++) {
            const struct backend *b = p->servers[i]->hb;
            struct backend_snapshot s;
            backend_snapshot(b, &s);
            if (fprintf(f, "backend %s %s %s %d %d %u %u %d\n", b->pool_name, b->name,
                        b->address_text, (int)s.state, (int)s.drain_reason, s.success_streak,
                        s.failure_streak, s.checked_once ? 1 : 0) < 0)
                return -1;
        }
    struct hbuf ov = {0};
    overrides_format(proc->ov, &ov);
    int rc = 0;
    for (char *line = ov.data, *end; rc == 0 && line && *line; line = end + 1) {
        end = strchr(line, '\n');
        if (!end)
            break;
        rc = fprintf(f, "override\t%.*s\n", (int)(end - line), line) < 0 ? -1 : 0;
    }
    hbuf_free(&ov);
    return rc == 0 && fflush(f) == 0 ? 0 : -1;
}

static void read_state(struct process *p, int fd)
{
    struct worker *w = p->w;
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        return;
    }
    char line[1024];
    unsigned restored = 0, unknown = 0, overrides = 0;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "override\t", 9) == 0) {
            line[strcspn(line, "\n")] = '\0';
            overrides += overrides_parse_line(p->ov, line + 9) == 0;
            continue;
        }
        char pool[128], name[128], address[512];
        int state, reason, checked;
        struct backend_snapshot s;
        if (sscanf(line, "backend %127s %127s %511s %d %d %u %u %d", pool, name, address, &state,
                   &reason, &s.success_streak, &s.failure_streak, &checked) != 8)
            continue;
        struct server *sv = worker_find_server(w, pool, name);
        if (sv && strcmp(sv->hb->address_text, address) != 0)
            sv = NULL; /* the same name at another address is another backend */
        if (!sv || state < BACKEND_CHECKING || state > BACKEND_DRAINING) {
            unknown++; /* gone from the new config, or from a newer binary */
            continue;
        }
        s.state = (enum backend_state)state;
        s.drain_reason = (enum backend_drain_reason)reason;
        s.checked_once = checked != 0;
        backend_restore(sv->hb, &s);
        restored++;
    }
    fclose(f);
    log_kv(CONF_LOG_INFO, "upgrade state inherited", LOG_UINT("backends", restored),
           LOG_UINT("not_in_config", unknown), LOG_UINT("overrides", overrides));
}

/* ---- the new process ----------------------------------------------------- */

static int env_fd(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return -1;
    char *end;
    long fd = strtol(v, &end, 10);
    unsetenv(name);
    return (*end || fd < 0 || fd > 65535) ? -1 : (int)fd;
}

static void ctl_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct process *p = container_of(io, struct process, upgrade.ctl_io);
    struct upgrade *u = &p->upgrade;
    char buf[64];
    ssize_t n = read(u->ctl_fd, buf, sizeof(buf));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (u->role == UPGRADE_OLD && n > 0 && !u->handed_over && memmem(buf, (size_t)n, "ready", 5)) {
        u->handed_over = true;
        ev_timer_stop(loop, &u->timeout);
        log_kv(CONF_LOG_INFO, "upgrade ready", LOG_INT("new_pid", u->peer_pid));
        /* the new process is systemd's main process from now on; this one
         * sends no STOPPING */
        sysd_notify("MAINPID=%d\nREADY=1", u->peer_pid);
        u->handed_over_cb(p);
        return;
    }
    if (n > 0)
        return;
    /* EOF: the peer is gone. For the new process: the old one finished. */
    ev_io_stop(loop, io);
    close(u->ctl_fd);
    u->ctl_fd = -1;
    if (u->role == UPGRADE_NEW) {
        log_kv(CONF_LOG_INFO, "upgrade done", LOG_INT("old_pid", u->peer_pid));
        u->role = UPGRADE_NONE;
        u->peer_pid = 0;
    }
}

int upgrade_inherit(struct process *p)
{
    struct upgrade *u = &p->upgrade;
    int ctl = env_fd(env_ctl);
    int state = env_fd(env_state);
    u->ctl_fd = -1;
    if (ctl < 0) {
        if (state >= 0)
            close(state);
        return 0;
    }
    fcntl(ctl, F_SETFD, FD_CLOEXEC);
    fcntl(ctl, F_SETFL, O_NONBLOCK);
    /* the sockets LISTEN_FDS describes are ours: the old process could not
     * name our pid (posix_spawn), so we do, before sysd_inherit reads it */
    if (getenv("LISTEN_FDS")) {
        char pid[24];
        snprintf(pid, sizeof(pid), "%d", (int)getpid());
        setenv("LISTEN_PID", pid, 1);
    }
    u->role = UPGRADE_NEW;
    u->peer_pid = (int)getppid();
    u->ctl_fd = ctl;
    u->state_fd = state;
    ev_io_init(&u->ctl_io, ctl_cb, ctl, EV_READ);
    ev_io_start(p->loop, &u->ctl_io);
    log_kv(CONF_LOG_INFO, "upgrade started", LOG_STR("role", "new"),
           LOG_INT("old_pid", u->peer_pid));
    return 0;
}

void upgrade_restore(struct process *p)
{
    struct upgrade *u = &p->upgrade;
    if (u->state_fd < 0)
        return;
    fcntl(u->state_fd, F_SETFD, FD_CLOEXEC);
    lseek(u->state_fd, 0, SEEK_SET);
    read_state(p, u->state_fd);
    u->state_fd = -1;
}

void upgrade_ready(struct process *p)
{
    struct upgrade *u = &p->upgrade;
    if (u->role != UPGRADE_NEW || u->ctl_fd < 0)
        return;
    static const char msg[] = "ready\n";
    if (write(u->ctl_fd, msg, sizeof(msg) - 1) < 0)
        log_kv(CONF_LOG_WARN, "upgrade ready not sent", LOG_STR("reason", strerror(errno)));
}

/* ---- the old process ----------------------------------------------------- */

static void failed(struct process *p, const char *reason, int status)
{
    struct upgrade *u = &p->upgrade;
    log_kv(CONF_LOG_ERROR, "upgrade failed", LOG_STR("reason", reason),
           LOG_INT("new_pid", u->peer_pid), LOG_INT("status", status));
    ev_timer_stop(p->loop, &u->timeout);
    if (u->ctl_fd >= 0) {
        ev_io_stop(p->loop, &u->ctl_io);
        close(u->ctl_fd);
        u->ctl_fd = -1;
    }
    u->role = UPGRADE_NONE;
    u->peer_pid = 0;
    sysd_notify("READY=1\nSTATUS=upgrade failed: %s", reason);
}

static void child_cb(struct ev_loop *loop, ev_child *c, int revents)
{
    struct process *p = container_of(c, struct process, upgrade.child);
    struct upgrade *u = &p->upgrade;
    ev_child_stop(loop, c);
    if (u->handed_over)
        return; /* the new process ended after taking over: not ours to judge */
    int st = c->rstatus;
    if (WIFEXITED(st))
        failed(p, WEXITSTATUS(st) == 2 ? "new process rejected the config" : "new process exited",
               WEXITSTATUS(st));
    else
        failed(p, "new process was killed", WIFSIGNALED(st) ? WTERMSIG(st) : -1);
}

static void timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct process *p = container_of(t, struct process, upgrade.timeout);
    /* killed, then reaped by child_cb, which reports nothing twice */
    kill(p->upgrade.peer_pid, SIGKILL);
    ev_child_stop(loop, &p->upgrade.child);
    waitpid(p->upgrade.peer_pid, NULL, 0);
    failed(p, "new process not ready within upgrade.timeout", -1);
}

/* The environment of the new process: ours without what describes our own
 * inherited sockets, plus the hand-over variables. No LISTEN_PID: it must
 * name the new process, whose pid posix_spawn tells only afterwards; the
 * new process sets it itself (upgrade_inherit). */
static char **child_env(size_t nfds, const char *names, int state_fd, int ctl_fd)
{
    extern char **environ;
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 8, sizeof(*env));
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "LISTEN_", 7) != 0 &&
            strncmp(environ[i], "USHER_UPGRADE_", 14) != 0)
            env[k++] = environ[i];
    char *fds = malloc(64), *fdnames = malloc(strlen(names) + 16), *st = malloc(64),
         *ctl = malloc(64);
    if (!fds || !fdnames || !st || !ctl) {
        free(fds), free(fdnames), free(st), free(ctl), free(env);
        return NULL;
    }
    snprintf(fds, 64, "LISTEN_FDS=%zu", nfds);
    snprintf(fdnames, strlen(names) + 16, "LISTEN_FDNAMES=%s", names);
    snprintf(st, 64, "%s=%d", env_state, state_fd);
    snprintf(ctl, 64, "%s=%d", env_ctl, ctl_fd);
    env[k++] = fds;
    env[k++] = fdnames;
    env[k++] = st;
    env[k++] = ctl;
    return env;
}

static void free_child_env(char **env)
{
    for (size_t i = 0; env && env[i]; i++)
        if (strncmp(env[i], "LISTEN_", 7) == 0 || strncmp(env[i], "USHER_UPGRADE_", 14) == 0)
            free(env[i]);
    free(env);
}

/* The sockets to hand over and their names (colon-separated). */
static size_t collect_fds(struct process *p, int *fds, char *names, size_t cap)
{
    size_t n = 0, len = 0;
    names[0] = '\0';
    for (struct listener *l = p->w->listeners; l && n < UPGRADE_MAX_FDS - 1; l = l->next) {
        if (l->closed || !l->conf)
            continue;
        fds[n++] = l->fd;
        len += (size_t)snprintf(names + len, cap - len, "%s%s", len ? ":" : "", l->name);
    }
    int admin_fd = p->admin_fd;
    if (admin_fd >= 0) {
        fds[n++] = admin_fd;
        snprintf(names + len, cap - len, "%sadmin", len ? ":" : "");
    }
    return n;
}

/* Starts the binary with <src>[i] (<n> descriptors) at LISTEN_FDS_START +
 * i. posix_spawn (a vfork-like clone: no page table is copied, the calling
 * thread waits only for the exec, the other threads never) instead of
 * fork, which copies the page tables of a large process and then makes
 * every thread pay copy-on-write faults. Returns 0 with *<pid>, or an
 * errno value (also when the exec failed: glibc reports it here). */
static int spawn(struct process *p, const int *src, size_t n, char **env, pid_t *pid)
{
    /* each source is first duplicated above every target, so that a dup2
     * onto a target can never land on a source still to be moved: with
     * file actions (no F_DUPFD in the child) the parent does that step;
     * the copies are close-on-exec, and dup2 clears the flag on its target */
    int base = LISTEN_FDS_START + (int)n;
    int high[UPGRADE_MAX_FDS + 2];
    size_t made = 0;
    int err = 0;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    if ((err = posix_spawn_file_actions_init(&fa)) != 0)
        return err;
    if ((err = posix_spawnattr_init(&attr)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return err;
    }
    for (; made < n; made++) {
        high[made] = fcntl(src[made], F_DUPFD_CLOEXEC, base);
        if (high[made] < 0) {
            err = errno;
            goto out;
        }
    }
    for (size_t i = 0; i < n && !err; i++)
        err = posix_spawn_file_actions_adddup2(&fa, high[i], LISTEN_FDS_START + (int)i);
    /* the new process starts with no signal blocked, whatever this thread has */
    sigset_t none;
    sigemptyset(&none);
    if (!err)
        err = posix_spawnattr_setsigmask(&attr, &none);
    if (!err)
        err = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    if (!err)
        err = posix_spawn(pid, p->exe, &fa, &attr, p->argv, env);
out:
    for (size_t i = 0; i < made; i++)
        close(high[i]);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return err;
}

void upgrade_start(struct process *p)
{
    struct upgrade *u = &p->upgrade;
    if (u->role != UPGRADE_NONE) {
        log_kv(CONF_LOG_WARN, "upgrade ignored", LOG_STR("reason", "an upgrade is under way"),
               LOG_INT("peer_pid", u->peer_pid));
        return;
    }
    if (p->w->state >= WORKER_DRAIN_DELAY) {
        log_kv(CONF_LOG_WARN, "upgrade ignored", LOG_STR("reason", "draining"));
        return;
    }
    int fds[UPGRADE_MAX_FDS + 2]; /* the sockets, then the state and the control end */
    char names[UPGRADE_MAX_FDS * 72];
    size_t nfds = collect_fds(p, fds, names, sizeof(names));

    int pair[2] = {-1, -1};
    int state_fd = memfd_create("usher-upgrade-state", MFD_CLOEXEC);
    FILE *f = state_fd >= 0 ? fdopen(dup(state_fd), "w") : NULL;
    if (!f || write_state(p, f) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
        if (f)
            fclose(f);
        if (state_fd >= 0)
            close(state_fd);
        failed(p, "cannot prepare the hand-over", errno);
        return;
    }
    fclose(f);

    /* where the child puts each descriptor: listeners from 3, then the two */
    int state_at = LISTEN_FDS_START + (int)nfds, ctl_at = state_at + 1;
    char **env = child_env(nfds, names, state_at, ctl_at);
    if (!env) {
        close(state_fd), close(pair[0]), close(pair[1]);
        failed(p, "out of memory", ENOMEM);
        return;
    }
    log_kv(CONF_LOG_INFO, "upgrade started", LOG_STR("role", "old"), LOG_STR("binary", p->exe),
           LOG_UINT("sockets", nfds));
    fds[nfds] = state_fd;
    fds[nfds + 1] = pair[1];
    pid_t pid = -1;
    int err = spawn(p, fds, nfds + 2, env, &pid);
    free_child_env(env);
    close(state_fd);
    close(pair[1]);
    if (err) {
        close(pair[0]);
        failed(p, "spawn failed", err);
        return;
    }
    u->role = UPGRADE_OLD;
    u->peer_pid = (int)pid;
    u->handed_over = false;
    u->ctl_fd = pair[0];
    fcntl(pair[0], F_SETFL, O_NONBLOCK);
    ev_io_init(&u->ctl_io, ctl_cb, pair[0], EV_READ);
    ev_io_start(p->loop, &u->ctl_io);
    ev_child_init(&u->child, child_cb, pid, 0);
    ev_child_start(p->loop, &u->child);
    ev_timer_init(&u->timeout, timeout_cb, (double)p->w->conf->upgrade.timeout / 1000.0, 0.);
    ev_timer_start(p->loop, &u->timeout);
}

void upgrade_stop(struct process *p)
{
    struct upgrade *u = &p->upgrade;
    ev_timer_stop(p->loop, &u->timeout);
    ev_child_stop(p->loop, &u->child);
    if (u->ctl_fd >= 0) {
        ev_io_stop(p->loop, &u->ctl_io);
        close(u->ctl_fd);
        u->ctl_fd = -1;
    }
    if (u->state_fd >= 0) {
        close(u->state_fd);
        u->state_fd = -1;
    }
}
