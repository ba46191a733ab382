/* Scalar values of the configuration: durations, addresses and networks. */
#include "conf.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- durations ----------------------------------------------------------
 * A duration is a whole number followed by one unit: ms, s, m or h. No
 * fractions ("1.5s" is an error: write "1500ms"), no spaces, no sign, no
 * compound forms ("1m30s"): one obvious spelling per value keeps configs
 * greppable and makes "5" (a forgotten unit) an error rather than a guess. */

static const struct {
    const char *suffix;
    conf_ms factor;
} duration_units[] = {
    {"h", 3600000},
    {"m", 60000},
    {"s", 1000},
    {"ms", 1},
};

static const char duration_bad[] = "must be a whole number with a unit ms, s, m or h";
static const char duration_no_unit[] = "missing unit (ms, s, m or h)";
static const char duration_fraction[] = "no fractions, use a smaller unit (1500ms, not 1.5s)";
static const char duration_too_long[] = "at most 720h";

int conf_parse_duration(const char *text, conf_ms *out, const char **reason)
{
    const char *p = text;
    conf_ms n = 0;

    if (*p < '0' || *p > '9') {
        *reason = duration_bad;
        return -1;
    }
    for (; *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (conf_ms)(*p - '0');
        if (n > CONF_DURATION_MAX) {
            *reason = duration_too_long;
            return -1;
        }
    }
    if (*p == '\0') {
        *reason = duration_no_unit;
        return -1;
    }
    if (*p == '.' || *p == ',') {
        *reason = duration_fraction;
        return -1;
    }
    for (size_t i = 0; i < sizeof(duration_units) / sizeof(duration_units[0]); i++) {
        if (strcmp(p, duration_units[i].suffix) != 0)
            continue;
        if (n > CONF_DURATION_MAX / duration_units[i].factor) {
            *reason = duration_too_long;
            return -1;
        }
        *out = n * duration_units[i].factor;
        return 0;
    }
    *reason = duration_bad;
    return -1;
}

const char *conf_format_duration(conf_ms ms, char *buf, size_t len)
{
    if (ms == 0) {
        snprintf(buf, len, "0s");
        return buf;
    }
    for (size_t i = 0; i < sizeof(duration_units) / sizeof(duration_units[0]); i++) {
        if (ms % duration_units[i].factor == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(ms / duration_units[i].factor),
                     duration_units[i].suffix);
            break;
        }
    }
    return buf;
}

/* ---- addresses ---------------------------------------------------------- */

/* A DNS name is at most 253 characters (RFC 1035 section 2.3.4, without the
 * trailing dot). */
#define HOST_NAME_MAX_LEN 253

static const char addr_no_port[] = "expected host:port";
static const char addr_no_host[] = "missing host";
static const char addr_bad_port[] = "port must be between 1 and 65535";
static const char addr_v6_brackets[] = "IPv6 addresses need brackets, e.g. [::1]:80";
static const char addr_bad_v6[] = "bad IPv6 address";
static const char addr_bad_v4[] = "bad IPv4 address";
static const char addr_bad_host[] = "bad host name";
static const char addr_unresolved[] = "cannot resolve host";
static const char addr_again[] = "cannot resolve host (temporary failure in name resolution)";
static const char addr_nomem[] = "out of memory";

static int parse_port(const char *s, uint16_t *port)
{
    unsigned long v = 0;

    if (*s == '\0')
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (unsigned long)(*s - '0');
        if (v > 65535)
            return -1;
    }
    if (v == 0)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

static bool host_name_valid(const char *h)
{
    size_t n = strlen(h);

    if (n == 0 || n > HOST_NAME_MAX_LEN)
        return false;
    for (; *h; h++) {
        char ch = *h;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '.' || ch == '_'))
            return false;
    }
    return true;
}

static bool all_digits_and_dots(const char *h)
{
    for (; *h; h++)
        if (!((*h >= '0' && *h <= '9') || *h == '.'))
            return false;
    return true;
}

/* Resolves <host> (a name, or a numeric IPv6 address with <numeric6>) into
 * <out>. An IPv4 answer is preferred when the name has both: test backends and
 * most services listen on 127.0.0.1 even where "localhost" also maps to ::1. */
static int resolve(const char *host, bool numeric6, struct conf_address *out, const char **reason)
{
    struct addrinfo hints, *res = NULL, *pick = NULL;
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = numeric6 ? AF_INET6 : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = numeric6 ? AI_NUMERICHOST : 0;
    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        if (numeric6)
            *reason = addr_bad_v6;
        else if (rc == EAI_AGAIN)
            *reason = addr_again;
        else if (rc == EAI_MEMORY)
            *reason = addr_nomem;
        else
            *reason = addr_unresolved;
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        if (!pick || (pick->ai_family != AF_INET && ai->ai_family == AF_INET))
            pick = ai;
    }
    if (!pick || pick->ai_addrlen > sizeof(out->sa)) {
        freeaddrinfo(res);
        *reason = addr_unresolved;
        return -1;
    }
    memcpy(&out->sa, pick->ai_addr, pick->ai_addrlen);
    out->sa_len = (socklen_t)pick->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int conf_parse_address(const char *text, struct conf_address *out, const char **reason)
{
    return conf_parse_address_ex(text, true, out, reason);
}

int conf_parse_address_ex(const char *text, bool resolve_it, struct conf_address *out,
                          const char **reason)
{
    char *buf = NULL;
    const char *host, *port_text;
    bool v6 = false;
    uint16_t port;

    memset(out, 0, sizeof(*out));
    buf = strdup(text);
    if (!buf) {
        *reason = addr_nomem;
        goto fail;
    }

    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        if (!close) {
            *reason = addr_bad_v6;
            goto fail;
        }
        *close = '\0';
        host = buf + 1;
        if (close[1] != ':') {
            *reason = addr_no_port;
            goto fail;
        }
        port_text = close + 2;
        v6 = true;
    } else {
        char *colon = strrchr(buf, ':');
        if (!colon) {
            *reason = addr_no_port;
            goto fail;
        }
        *colon = '\0';
        if (strchr(buf, ':')) {
            *reason = addr_v6_brackets;
            goto fail;
        }
        host = buf;
        port_text = colon + 1;
    }
    if (*host == '\0') {
        *reason = addr_no_host;
        goto fail;
    }
    if (parse_port(port_text, &port) < 0) {
        *reason = addr_bad_port;
        goto fail;
    }

    if (v6) {
        if (resolve(host, true, out, reason) < 0)
            goto fail;
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->sa;
        if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
            sin->sin_family = AF_INET;
            out->sa_len = sizeof(*sin);
        } else if (all_digits_and_dots(host)) {
            /* getaddrinfo would accept inet_aton forms such as "10.1" */
            *reason = addr_bad_v4;
            goto fail;
        } else if (!host_name_valid(host)) {
            *reason = addr_bad_host;
            goto fail;
        } else {
            out->named = true;
            if (resolve_it && resolve(host, false, out, reason) < 0)
                goto fail;
        }
    }
    if (out->sa.ss_family == AF_INET)
        ((struct sockaddr_in *)&out->sa)->sin_port = htons(port);
    else if (out->sa.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&out->sa)->sin6_port = htons(port);
    out->port = port;
    out->text = strdup(text);
    out->host = strdup(host);
    if (!out->text || !out->host) {
        *reason = addr_nomem;
        goto fail;
    }
    free(buf);
    return 0;

fail:
    free(buf);
    conf_address_clear(out);
    return -1;
}

void conf_address_clear(struct conf_address *a)
{
    free(a->text);
    free(a->host);
    memset(a, 0, sizeof(*a));
}

bool conf_address_resolved(const struct conf_address *a)
{
    return a->sa.ss_family == AF_INET || a->sa.ss_family == AF_INET6;
}

int conf_address_fill(struct conf_address *a, const struct sockaddr *sa, socklen_t len)
{
    if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a->sa;
        memset(&a->sa, 0, sizeof(a->sa));
        memcpy(sin, sa, sizeof(*sin));
        sin->sin_port = htons(a->port);
        a->sa_len = sizeof(*sin);
        return 0;
    }
    if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->sa;
        memset(&a->sa, 0, sizeof(a->sa));
        memcpy(sin6, sa, sizeof(*sin6));
        sin6->sin6_port = htons(a->port);
        a->sa_len = sizeof(*sin6);
        return 0;
    }
    return -1;
}

/* Two addresses still unresolved: the same name and port is all that can
 * be told (a name and a literal may well be the same socket: not known). */
static bool unresolved_same(const struct conf_address *a, const struct conf_address *b)
{
    if (conf_address_resolved(a) || conf_address_resolved(b) || !a->host || !b->host)
        return false;
    return a->port == b->port && strcasecmp(a->host, b->host) == 0;
}

bool conf_address_same(const struct conf_address *a, const struct conf_address *b)
{
    if (!conf_address_resolved(a) || !conf_address_resolved(b))
        return unresolved_same(a, b);
    if (a->sa.ss_family != b->sa.ss_family)
        return false;
    if (a->sa.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)&a->sa;
        const struct sockaddr_in *y = (const struct sockaddr_in *)&b->sa;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)&a->sa;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)&b->sa;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

bool conf_address_overlap(const struct conf_address *a, const struct conf_address *b)
{
    if (conf_address_same(a, b))
        return true;
    if (!conf_address_resolved(a) || !conf_address_resolved(b))
        return false; /* unknown until resolved: conf_check_resolved() tells */
    if (a->sa.ss_family != b->sa.ss_family || a->port != b->port)
        return false;
    if (a->sa.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)&a->sa;
        const struct sockaddr_in *y = (const struct sockaddr_in *)&b->sa;
        return x->sin_addr.s_addr == htonl(INADDR_ANY) || y->sin_addr.s_addr == htonl(INADDR_ANY);
    }
    if (a->sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)&a->sa;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)&b->sa;
        return IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr);
    }
    return false;
}

/* ---- networks ------------------------------------------------------------
 * "10.0.0.0/8", "2001:db8::/32", or an address alone (one host: /32 or
 * /128). Bits set beyond the prefix are an error, not silently cleared:
 * "10.0.0.1/8" is more likely a mistyped prefix than a network. */

static const char cidr_bad[] = "expected an IPv4 or IPv6 network such as 10.0.0.0/8 or ::1/128";
static const char cidr_bad_prefix[] = "bad prefix length (0-32 for IPv4, 0-128 for IPv6)";
static const char cidr_host_bits[] = "address bits set beyond the prefix length";

int conf_parse_cidr(const char *text, struct conf_cidr *out, const char **reason)
{
    char buf[INET6_ADDRSTRLEN + 8];
    const char *slash = strchr(text, '/');
    size_t n = slash ? (size_t)(slash - text) : strlen(text);
    unsigned max, prefix = 0;

    memset(out, 0, sizeof(*out));
    if (n == 0 || n >= sizeof(buf)) {
        *reason = cidr_bad;
        return -1;
    }
    memcpy(buf, text, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        *reason = cidr_bad;
        return -1;
    }
    if (!slash) {
        out->prefix = max;
        return 0;
    }
    const char *p = slash + 1;
    if (*p == '\0' || (*p == '0' && p[1] != '\0')) {
        *reason = cidr_bad_prefix;
        return -1;
    }
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || (prefix = prefix * 10 + (unsigned)(*p - '0')) > max) {
            *reason = cidr_bad_prefix;
            return -1;
        }
    }
    for (unsigned bit = prefix; bit < max; bit++) {
        if (out->addr[bit / 8] & (0x80u >> (bit % 8))) {
            *reason = cidr_host_bits;
            return -1;
        }
    }
    out->prefix = prefix;
    return 0;
}

static bool prefix_match(const uint8_t *net, const uint8_t *addr, unsigned prefix)
{
    unsigned whole = prefix / 8, rest = prefix % 8;

    if (memcmp(net, addr, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (net[whole] & mask) == (addr[whole] & mask);
}

bool conf_cidr_match(const struct conf_cidr *net, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        return net->family == AF_INET &&
               prefix_match(net->addr, (const uint8_t *)&sin->sin_addr, net->prefix);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        const uint8_t *a = sin6->sin6_addr.s6_addr;
        if (net->family == AF_INET6)
            return prefix_match(net->addr, a, net->prefix);
        /* a dual-stack socket sees an IPv4 peer as ::ffff:a.b.c.d */
        return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) &&
               prefix_match(net->addr, a + 12, net->prefix);
    }
    return false;
}
