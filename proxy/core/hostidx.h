/* A host-name index: exact names and "*.suffix" wildcards, each with a
 * value, matched case-insensitively. One index serves route matching by
 * Host (proxy/core/route.c) and certificate selection by SNI name (with
 * thousands of certificates): a lookup costs one pass over the name plus
 * one hash probe per label, whatever the number of entries.
 *
 * Built once (hostidx_new, hostidx_add), then read-only: lookups from any
 * number of threads need no lock, as long as nobody adds meanwhile.
 * Names are ASCII and compared case-insensitively: the index folds case
 * itself (keys are stored lowercased), so callers pass names as they got
 * them. It does not strip a port or a trailing dot: a name with an empty
 * label ("a..b", ".a", "a.") matches nothing (route_host_normalize in
 * route.h prepares a Host value; an SNI name has no trailing dot, RFC 6066
 * section 3). */
#ifndef USHER_PROXY_HOSTIDX_H
#define USHER_PROXY_HOSTIDX_H

#include <stddef.h>
#include <stdint.h>

/* RFC 1035 section 2.3.4: 255 octets on the wire, so 253 characters as
 * text without the trailing dot. Longer names match nothing. */
#define HOSTIDX_NAME_MAX 253
/* The most labels such a name can have: one character and a dot each. */
#define HOSTIDX_LABELS_MAX ((HOSTIDX_NAME_MAX + 1) / 2)

/* What a wildcard covers. */
enum hostidx_wildcard {
    /* Routes (DESIGN "Routes and certificates"): "*.example.com" matches
     * a.example.com and a.b.example.com, never example.com. */
    HOSTIDX_WILDCARD_ANY_DEPTH = 1,
    /* Certificates (RFC 6125 section 6.4.3, RFC 9525 section 6.3, as
     * OpenSSL's X509_check_host and browsers do): "*.example.com" matches
     * a.example.com only, as a client will check the name it gets. */
    HOSTIDX_WILDCARD_ONE_LABEL,
};

struct hostidx;

/* Everything a lookup in progress needs; on the caller's stack. */
struct hostidx_iter {
    const struct hostidx *idx;
    const char *name;
    size_t len;
    uint32_t hash;                      /* of the whole name */
    int exact_done;                     /* the exact probe was made */
    unsigned n;                         /* wildcard suffixes left to probe, the longest last */
    uint8_t pos[HOSTIDX_LABELS_MAX];    /* where each suffix starts in <name> */
    uint32_t shash[HOSTIDX_LABELS_MAX]; /* its hash */
};

/* A new, empty index whose wildcards cover what <mode> says. Returns NULL
 * when out of memory. */
struct hostidx *hostidx_new(enum hostidx_wildcard mode);

/* Frees <idx> and its keys (not the values). NULL is allowed. */
void hostidx_free(struct hostidx *idx);

/* Adds <key>[0..<len>): a name ("api.example.com") or a wildcard
 * ("*.example.com"), with <value> (not NULL). Returns 0, -EEXIST if the key
 * is already there (its value is kept: the first one added wins), -EINVAL
 * if it is not a name or wildcard (empty, an empty label, a '*' other than
 * a whole first label, a byte outside printable ASCII, longer than
 * HOSTIDX_NAME_MAX), -ENOMEM. */
int hostidx_add(struct hostidx *idx, const char *key, size_t len, void *value);

/* The value stored under exactly <key> (a name, or "*.suffix" for a
 * wildcard), or NULL. For building on top of an index. */
void *hostidx_get(const struct hostidx *idx, const char *key, size_t len);

/* The value of the entry that best matches the host <name>[0..<len>): the
 * exact name, else the longest wildcard that covers it, else NULL. */
void *hostidx_lookup(const struct hostidx *idx, const char *name, size_t len);

/* Starts a walk over every entry that matches <name>[0..<len>) (which must
 * stay valid during the walk), in order of precedence. */
void hostidx_iter_init(struct hostidx_iter *it, const struct hostidx *idx, const char *name,
                       size_t len);

/* The value of the next matching entry: the exact name first, then the
 * wildcards from the longest to the shortest. NULL when there is no more. */
void *hostidx_iter_next(struct hostidx_iter *it);

/* The number of keys in <idx>. */
size_t hostidx_count(const struct hostidx *idx);

#endif
