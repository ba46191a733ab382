#include "sysd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "../base/log.h"

void sysd_notify(const char *fmt, ...)
{
    if (!getenv("NOTIFY_SOCKET"))
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sd_notify(0, msg);
}

int sysd_inherit(struct inherited_fds *in)
{
    char **names = NULL;
    in->fds = NULL;
    in->count = 0;
    int n = sd_listen_fds_with_names(1, &names);
    if (n <= 0) {
        if (n < 0)
            log_kv(CONF_LOG_WARN, "inherited sockets ignored", LOG_STR("reason", strerror(-n)));
        return 0;
    }
    in->fds = calloc((size_t)n, sizeof(*in->fds));
    if (!in->fds)
        return -1;
    for (int i = 0; i < n; i++) {
        in->fds[i].fd = SD_LISTEN_FDS_START + i;
        in->fds[i].name = names ? names[i] : NULL;
    }
    free(names);
    in->count = (size_t)n;
    return 0;
}

int sysd_claim(struct inherited_fds *in, const char *name)
{
    for (size_t i = 0; i < in->count; i++) {
        struct inherited_fd *f = &in->fds[i];
        if (!f->claimed && f->name && strcmp(f->name, name) == 0) {
            f->claimed = true;
            return f->fd;
        }
    }
    return -1;
}

void sysd_release_unclaimed(struct inherited_fds *in)
{
    for (size_t i = 0; i < in->count; i++) {
        struct inherited_fd *f = &in->fds[i];
        if (!f->claimed) {
            log_kv(CONF_LOG_WARN, "inherited socket closed", LOG_INT("fd", f->fd),
                   LOG_STR("name", f->name ? f->name : "-"),
                   LOG_STR("reason", "no listener of that name"));
            close(f->fd);
        }
        free(f->name);
    }
    free(in->fds);
    in->fds = NULL;
    in->count = 0;
}
