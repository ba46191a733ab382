#include "auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../../conf/conf-t.h"
#include "../base/log.h"

/* A token file larger than this is not a token. */
#define TOKEN_FILE_MAX 4096

bool auth_peer_is_loopback(const struct sockaddr *sa, socklen_t len)
{
    if (!sa)
        return false;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127; /* RFC 1122 3.2.1.3 */
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return true;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127; /* RFC 4291 2.5.5.2 */
    }
    return false;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int auth_load(struct process *p, const struct conf *conf, bool at_start)
{
    const char *path = conf->admin.token_file;
    if (!path || !*path) {
        free(p->token);
        p->token = NULL;
        if (at_start && conf->admin.enabled &&
            !auth_peer_is_loopback((const struct sockaddr *)&conf->admin.bind.sa,
                                   conf->admin.bind.sa_len))
            log_kv(CONF_LOG_WARN, "admin mutations off", LOG_STR("bind", conf->admin.bind.text),
                   LOG_STR("reason", "admin.bind is not loopback and admin.token_file is unset: "
                                     "mutations are accepted from loopback peers only"));
        return 0;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        log_kv(CONF_LOG_ERROR, "admin token unreadable", LOG_STR("file", path),
               LOG_STR("reason", strerror(errno)));
        goto fail;
    }
    struct stat st;
    if (at_start && fstat(fileno(f), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)))
        log_kv(CONF_LOG_WARN, "admin token readable by others", LOG_STR("file", path),
               LOG_STR("reason", "chmod 600 it: anyone who reads it can drive usher"));
    char buf[TOKEN_FILE_MAX + 1];
    size_t n = fread(buf, 1, TOKEN_FILE_MAX, f);
    fclose(f);
    buf[n] = '\0';
    size_t a = 0;
    while (a < n && is_space(buf[a]))
        a++;
    while (n > a && is_space(buf[n - 1]))
        n--;
    if (n == a) {
        log_kv(CONF_LOG_ERROR, "admin token unreadable", LOG_STR("file", path),
               LOG_STR("reason", "the file is empty"));
        goto fail;
    }
    char *tok = strndup(buf + a, n - a);
    OPENSSL_cleanse(buf, sizeof(buf));
    if (!tok)
        goto fail;
    if (p->token)
        OPENSSL_cleanse(p->token, strlen(p->token));
    free(p->token);
    p->token = tok;
    return 0;
fail:
    if (at_start) {
        /* no token is not "open to all": mutations fall back to loopback */
        free(p->token);
        p->token = NULL;
    }
    return -1;
}

int auth_check(const struct process *p, const char *authz, size_t authz_len,
               const struct sockaddr *peer, socklen_t peer_len, const char **why)
{
    static const char bearer[] = "Bearer ";
    const size_t bl = sizeof(bearer) - 1;
    if (!p->token) {
        if (auth_peer_is_loopback(peer, peer_len))
            return 0;
        *why = "mutations are accepted from loopback peers only (no admin.token_file)";
        return 403;
    }
    size_t tl = strlen(p->token);
    if (!authz || authz_len < bl || strncasecmp(authz, bearer, bl) != 0) {
        *why = "missing Authorization: Bearer token";
        return 401;
    }
    authz += bl;
    authz_len -= bl;
    /* lengths differ: still compare, so the time does not tell how close */
    int diff = CRYPTO_memcmp(authz, p->token, authz_len < tl ? authz_len : tl);
    if (diff != 0 || authz_len != tl) {
        *why = "wrong token";
        return 401;
    }
    return 0;
}
