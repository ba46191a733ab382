/* usher: command line, startup and exit codes (DESIGN.md "Command line"). */
#include <ares.h>
#include <ev.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "../../conf/conf.h"
#include "../base/log.h"
#include "../core/listener.h"
#include "../core/worker.h"
#include "../ctl/ctl.h"
#include "lifecycle.h"
#include "reload.h"
#include "usher_commit.h"

enum exit_code {
    EXIT_DRAINED = 0,    /* every connection finished before the shutdown timeout */
    EXIT_CUT = 1,        /* shutdown timeout, second signal, or fatal runtime error */
    EXIT_BAD_CONFIG = 2, /* bad command line or config at startup */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: usher -c FILE             run in the foreground, logs to stderr\n"
            "       usher -t -c FILE          check the config, print what is wrong, exit 0/2\n"
            "       usher ctl [-c FILE | --admin HOST:PORT] [--token-file F] COMMAND ...\n"
            "                                 drive a running usher through its admin API\n"
            "       usher --version | --help\n"
            "\n"
            "options:\n"
            "  -c, --config FILE   the YAML config (see conf/usher.yaml)\n"
            "  -t, --test          check the config and exit: 0 ok, 2 errors (file:line:column)\n"
            "  -V, --version       print the version, the commit and the linked libraries\n"
            "  -h, --help          print this help\n"
            "\n"
            "signals: SIGTERM/SIGINT drain and exit, SIGHUP reloads the config,\n"
            "         SIGUSR2 upgrades to the binary on disk\n"
            "exit codes: 0 drained cleanly, 1 connections cut or fatal error, 2 bad command\n"
            "            line or config\n");
}

/* What --version says: enough to reproduce a bug report (the commit) and
 * to tell which shared libraries the binary actually runs with. */
static void version(void)
{
    printf("usher %s\n"
           "commit %s\n"
           "libev %d.%d\n"
           "%s\n"
           "libyaml %s\n"
           "c-ares %s\n",
           USHER_VERSION, USHER_COMMIT, ev_version_major(), ev_version_minor(),
           OpenSSL_version(OPENSSL_VERSION), yaml_get_version_string(), ares_version(NULL));
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "ctl") == 0)
        return ctl_main(argc - 1, argv + 1);
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
            version();
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_BAD_CONFIG;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "usher: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_BAD_CONFIG;
    }
    if (!path) {
        fprintf(stderr, "usher: missing -c FILE\n");
        usage(stderr);
        return EXIT_BAD_CONFIG;
    }

    /* the file and the contexts startup uses, built once: a bad
     * certificate fails here (the same load as every reload's) */
    struct reload_loaded loaded;
    /* -t resolves names with getaddrinfo (nothing is served); startup
     * resolves them as every reload does, with c-ares within a bound */
    int rc = reload_load(path, check_only ? 0 : CONF_LOAD_DEFER_RESOLVE, &loaded);
    if (rc < 0 && !check_only) {
        /* a broken file: its errors exactly as -t gives them (the checks
         * that need resolved names included), nothing is served anyway */
        struct reload_loaded full;
        if (reload_load(path, 0, &full) < 0) {
            reload_loaded_free(&loaded);
            loaded = full;
        } else {
            reload_loaded_free(&full);
        }
    }
    if (rc < 0 || (!check_only && reload_resolve_startup(&loaded) < 0)) {
        for (size_t i = 0; i < loaded.errs.count; i++)
            fprintf(stderr, "%s\n", loaded.errs.messages[i]);
        reload_loaded_free(&loaded);
        return EXIT_BAD_CONFIG;
    }
    struct conf *conf = loaded.nc;
    struct ssl_ctx_st **tls = loaded.tls;
    if (check_only) {
        listener_tls_release(tls, conf->num_listeners);
        free(tls);
        conf_free(conf);
        printf("configuration ok\n");
        return 0;
    }

    /* before anything can log: log.format applies from the first line */
    log_configure(conf->log.level, conf->log.format);
    worker_raise_fd_limit();
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    if (!loop) {
        fprintf(stderr, "usher: cannot initialise the event loop\n");
        listener_tls_release(tls, conf->num_listeners);
        free(tls);
        conf_free(conf);
        return EXIT_CUT;
    }
    /* the path of this binary, which SIGUSR2 starts again (a new build
     * installed there is what an upgrade picks up) */
    char exe[4096];
    ssize_t exe_len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[exe_len > 0 ? exe_len : 0] = '\0';
    struct process *p = process_new(loop, conf, strdup(exe_len > 0 ? exe : argv[0]), argv);
    if (!p) {
        fprintf(stderr, "usher: out of memory\n");
        listener_tls_release(tls, conf->num_listeners);
        free(tls);
        conf_free(conf);
        return EXIT_CUT;
    }
    log_kv(CONF_LOG_INFO, "usher starting", LOG_STR("version", USHER_VERSION),
           LOG_INT("pid", getpid()), LOG_STR("config", path));
    int code = process_start(p, tls) == 0 ? process_run(p) : EXIT_CUT;
    process_free(p);
    log_kv(CONF_LOG_INFO, "usher stopped", LOG_INT("exit_code", code));
    ev_loop_destroy(loop);
    return code;
}
