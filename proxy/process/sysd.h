/* systemd glue: sd_notify (Type=notify) and sockets handed over through
 * LISTEN_FDS / LISTEN_FDNAMES — by systemd socket activation or by the old
 * process of a binary upgrade, which uses the same convention. */
#ifndef USHER_PROXY_SYSD_H
#define USHER_PROXY_SYSD_H

#include <stdbool.h>
#include <stddef.h>

#include "../control/process-t.h"

/* Sends one notification ("READY=1", "STATUS=...") to $NOTIFY_SOCKET; a
 * no-op without it. */
void sysd_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Takes the sockets passed in LISTEN_FDS (names from LISTEN_FDNAMES) and
 * clears those variables so no child inherits them. Returns 0 or -1. */
int sysd_inherit(struct inherited_fds *in);

/* The socket named <name>, marked claimed; -1 if none. */
int sysd_claim(struct inherited_fds *in, const char *name);

/* Closes every socket nobody claimed (logged as a warning) and frees the
 * list. */
void sysd_release_unclaimed(struct inherited_fds *in);

#endif
