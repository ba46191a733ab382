/* The process: what sits above the data plane — signals, the drain, the
 * reload, readiness and the admin listener. Types only. */
#ifndef USHER_PROXY_PROCESS_T_H
#define USHER_PROXY_PROCESS_T_H

#include <ev.h>
#include <stdint.h>

#include "../core/worker-t.h"
#include "../../conf/conf-t.h"
#include "../base/buf.h"

/* A listening socket this process was given. */
struct inherited_fd {
    int fd;
    char *name; /* FileDescriptorName: a listener's name, or "admin" */
    bool claimed;
};

struct inherited_fds {
    struct inherited_fd *fds;
    size_t count;
};

/* What a reload reports to a caller that answers for it (POST /reload). */
struct reload_outcome {
    struct conf_errors errors; /* "file:line:col: key: reason" or a static reason */
    struct hbuf changes;       /* JSON array elements: {"kind","pool","backend","listener"} */
    const char *reason;        /* static: why it failed (the log's reason=), NULL if it did not */
};

/* A reload asked for (SIGHUP, POST /reload) ended: <rc> 0 (applied) or -1
 * (the running config kept); <out> is only read during the call. */
typedef void (*reload_done_cb)(void *ctx, int rc, const struct reload_outcome *out);

struct admin;
struct discover;
struct process;

enum upgrade_role {
    UPGRADE_NONE = 0,
    UPGRADE_OLD, /* SIGUSR2 received: a new process starts from our sockets */
    UPGRADE_NEW, /* started by an old process, which drains once we are ready */
};

/* A binary upgrade as one side sees it (DESIGN "The upgrade"). */
struct upgrade {
    enum upgrade_role role;
    int peer_pid;     /* the other process */
    int ctl_fd;       /* socketpair end: "ready" goes from new to old; EOF = peer gone */
    int state_fd;     /* new side: the health states handed over, until restored */
    ev_io ctl_io;
    ev_child child;   /* old side: the new process, to learn if it dies first */
    ev_timer timeout; /* old side: upgrade.timeout */
    bool handed_over; /* old side: the new one is ready, we drain */
    /* old side: the new process took over; the lifecycle drains this one */
    void (*handed_over_cb)(struct process *p);
};
struct overrides;
struct fleet;
struct worker_thread;
struct bgwork;
struct reloader;

struct process {
    struct ev_loop *loop; /* the control thread's */
    /* The data plane: the first worker, which lists the others (the
     * process layer calls it and it acts on every worker). */
    struct worker *w;
    unsigned num_workers;
    struct worker_thread *threads; /* one per worker; NULL with one (it runs on <loop>) */
    ev_async drain_check;          /* a draining worker closed connections */
    struct admin *admin;
    struct discover *discover; /* DNS discovery of the pools with `discover` */
    int admin_fd; /* the admin listening socket, -1 if none (for the upgrade) */
    uint64_t reloads_ok;
    uint64_t reloads_error;
    struct overrides *ov; /* what the runtime API decided (overrides.h) */
    struct bgwork *bg;    /* blocking work off the loops: loads, fsyncs (bgwork.h) */
    /* With a fleet: where overrides_save() writes instead of the state
     * file (fleet.c sets it; a callback, so overrides.c never calls up). */
    int (*ov_store)(struct process *p);
    struct fleet *fleet; /* NULL without `fleet` (fleet.h) */
    /* POST /reload: the process layer's reload (reload_request,
     * reload_cancel in reload.h), handed down so the admin floor never
     * calls up */
    int (*reload)(struct process *p, reload_done_cb done, void *ctx);
    void (*reload_cancel)(struct process *p, void *ctx);
    struct reloader *reloader; /* the reload pipeline (reload.c) */
    char *token;          /* admin.token_file's contents, trimmed; NULL without one */

    char *exe;         /* the binary to start again on SIGUSR2 (absolute path) */
    char **argv;       /* the arguments it was started with */
    struct inherited_fds inherited; /* sockets from LISTEN_FDS, until startup claimed them */
    struct upgrade upgrade;

    ev_signal sig_term, sig_int, sig_hup, sig_usr2;
    ev_timer drain_timer;     /* drain_delay, then one-second progress ticks */
    ev_tstamp drain_deadline; /* when the shutdown timeout cuts the rest */
    ev_timer ready_timer;     /* polls for the first health round */
    int exit_code;
};

#endif
