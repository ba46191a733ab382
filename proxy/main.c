/* usher: command line, startup and exit codes (DESIGN.md "Command line"). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../conf/conf.h"
#include "listener.h"
#include "log.h"
#include "worker.h"

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
    char tls_err[512];
    if (listener_check_tls(conf, tls_err, sizeof(tls_err)) < 0) {
        fprintf(stderr, "%s\n", tls_err);
        conf_free(conf);
        return EXIT_BAD_CONFIG;
    }
    if (check_only) {
        printf("configuration ok\n");
        conf_free(conf);
        return 0;
    }

    /* before anything can log: log.format applies from the first line */
    log_configure(conf->log.level, conf->log.format);
    worker_raise_fd_limit();
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (!loop) {
        fprintf(stderr, "usher: cannot initialise the event loop\n");
        conf_free(conf);
        return EXIT_CUT;
    }
    struct worker *w = worker_new(loop, conf);
    if (!w) {
        fprintf(stderr, "usher: out of memory\n");
        conf_free(conf);
        return EXIT_CUT;
    }
    log_kv(CONF_LOG_INFO, "usher starting", LOG_STR("version", USHER_VERSION),
           LOG_INT("pid", getpid()), LOG_STR("config", path));
    int code = worker_start(w) < 0 ? EXIT_CUT : worker_run(w);
    worker_free(w);
    log_kv(CONF_LOG_INFO, "usher stopped", LOG_INT("exit_code", code));
    ev_loop_destroy(loop);
    return code;
}
