/* usher: command line, startup and exit codes (DESIGN.md "Command line"). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../conf/conf.h"
#include "../base/log.h"
#include "../core/listener.h"
#include "../core/worker.h"
#include "lifecycle.h"

enum exit_code {
    EXIT_DRAINED = 0,    /* every connection finished before the shutdown timeout */
    EXIT_CUT = 1,        /* shutdown timeout, second signal, or fatal runtime error */
    EXIT_BAD_CONFIG = 2, /* bad command line or config at startup */
};

static void usage(FILE *out)
{
    fprintf(out, "usage: usher -c FILE        run in the foreground, logs to stderr\n"
                 "       usher -t -c FILE     check the config, print what is wrong, exit 0/2\n"
                 "       usher --version | --help\n");
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int check_only = 0, opt;
    while ((opt = getopt_long(argc, argv, "c:tVh", long_opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            check_only = 1;
            break;
        case 'V':
            printf("usher %s\n", USHER_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_BAD_CONFIG;
        }
    }
    if (!path || optind != argc) {
        fprintf(stderr, "usher: %s\n", path ? "unexpected argument" : "missing -c FILE");
        usage(stderr);
        return EXIT_BAD_CONFIG;
    }

    struct conf_errors errs = {0};
    struct conf *conf = conf_load(path, &errs);
    if (!conf) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "%s\n", errs.messages[i]);
        if (errs.count == 0)
            fprintf(stderr, "%s: cannot load configuration\n", path);
        conf_errors_clear(&errs);
        return EXIT_BAD_CONFIG;
    }
    /* the contexts startup uses, built once: a bad certificate fails here */
    char tls_err[512];
    struct ssl_ctx_st **tls = calloc(conf->num_listeners + 1, sizeof(*tls));
    if (!tls || listener_tls_prepare(conf, tls, tls_err, sizeof(tls_err)) < 0) {
        fprintf(stderr, "%s\n", tls ? tls_err : "usher: out of memory");
        free(tls);
        conf_free(conf);
        return EXIT_BAD_CONFIG;
    }
    if (check_only) {
        listener_tls_release(tls, conf->num_listeners);
        free(tls);
        conf_free(conf);
        printf("configuration ok\n");
        return 0;
    }

    worker_raise_fd_limit();
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (!loop) {
        fprintf(stderr, "usher: cannot initialise the event loop\n");
        listener_tls_release(tls, conf->num_listeners);
        free(tls);
        conf_free(conf);
        return EXIT_CUT;
    }
    log_configure(conf->log.level, conf->log.format);
    struct process *p = process_new(loop, conf);
    if (!p) {
        fprintf(stderr, "usher: out of memory\n");
        listener_tls_release(tls, conf->num_listeners);
        free(tls);
        conf_free(conf);
        return EXIT_CUT;
    }
    log_info("usher starting", "version=%s pid=%d config=%s", USHER_VERSION, (int)getpid(), path);
    int code = process_start(p, tls) == 0 ? process_run(p) : EXIT_CUT;
    process_free(p);
    log_info("usher stopped", "exit_code=%d", code);
    ev_loop_destroy(loop);
    return code;
}
