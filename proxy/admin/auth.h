/* Who may change things through the admin API (DESIGN.md "Runtime
 * control"): a bearer token with admin.token_file, else loopback peers. */
#ifndef USHER_PROXY_AUTH_H
#define USHER_PROXY_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "../control/process-t.h"

/* True if <sa> is a loopback peer: 127.0.0.0/8, ::1, or IPv4-mapped
 * ::ffff:127.0.0.0/104. Anything else (other families included) is not. */
bool auth_peer_is_loopback(const struct sockaddr *sa, socklen_t len);

/* (Re)reads admin.token_file of <conf> into p->token (surrounding
 * whitespace trimmed). <at_start>: warn about a file readable by others
 * and about a non-loopback admin.bind without a token. Returns 0, or -1
 * after logging (an unreadable or empty file; p->token is then NULL at
 * start, kept as it was at a reload). */
int auth_load(struct process *p, const struct conf *conf, bool at_start);

/* Decides a mutation: 0 allowed, 401 (token set: missing or wrong
 * "Authorization: Bearer" <authz>, <authz_len> bytes, may be NULL) or 403
 * (no token: the peer is not on loopback). *<why> is a static reason. */
int auth_check(const struct process *p, const char *authz, size_t authz_len,
               const struct sockaddr *peer, socklen_t peer_len, const char **why);

#endif
