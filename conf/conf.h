/* Loading, validating and diffing usher configuration files. */
#ifndef USHER_CONF_CONF_H
#define USHER_CONF_CONF_H

#include "conf-t.h"

/* Loads and validates the YAML file at <path>. Every problem found is
 * appended to <errs> as "file:line:column: key: reason" (all of them, not
 * just the first). Returns the config, or NULL if there was any error. */
struct conf *conf_load(const char *path, struct conf_errors *errs);

/* Same as conf_load() but from an in-memory document; <name> is used as the
 * file name in error messages. */
struct conf *conf_load_string(const char *name, const char *yaml, size_t len,
                              struct conf_errors *errs);

/* Flags of conf_load_flags(). */
/* Host names are not resolved (no blocking getaddrinfo): each address that
 * holds one is checked, left unresolved and listed in conf.unresolved for
 * the caller to resolve (c-ares) and fill in with conf_address_fill(), then
 * conf_check_resolved(). IP literals are parsed as always. Without it,
 * conf_load() resolves names itself, blocking. */
#define CONF_LOAD_DEFER_RESOLVE 0x1u

/* conf_load() and conf_load_string() with <flags> (CONF_LOAD_*). */
struct conf *conf_load_flags(const char *path, unsigned flags, struct conf_errors *errs);
struct conf *conf_load_string_flags(const char *name, const char *yaml, size_t len, unsigned flags,
                                    struct conf_errors *errs);

/* Frees <c> and everything it owns. NULL is fine. */
void conf_free(struct conf *c);

/* Frees the messages in <errs> and resets it to empty. */
void conf_errors_clear(struct conf_errors *errs);

/* Parses a duration such as "250ms", "5s", "2m", "1h" into milliseconds.
 * Returns 0 on success, -1 with *<reason> set to a static string otherwise. */
int conf_parse_duration(const char *text, conf_ms *out, const char **reason);

/* Writes <ms> into <buf> (of <len> bytes) in the largest unit that is exact:
 * "0s", "250ms", "10s", "2m", "1h". Returns <buf>. */
const char *conf_format_duration(conf_ms ms, char *buf, size_t len);

/* Parses and resolves "host:port" / "[v6]:port" into <out> (strings are
 * malloc'd; release with conf_address_clear). Returns 0 or -1 with *<reason>. */
int conf_parse_address(const char *text, struct conf_address *out, const char **reason);
/* The same; with <resolve> false a host name is only checked, and <out>
 * left unresolved (an IP literal is parsed either way). */
int conf_parse_address_ex(const char *text, bool resolve, struct conf_address *out,
                          const char **reason);

/* True once <a> holds a socket address: an IP literal, or a name resolved
 * (by conf_load() or conf_address_fill()). */
bool conf_address_resolved(const struct conf_address *a);

/* Fills the unresolved address <a> in with <sa> (<len> bytes, AF_INET or
 * AF_INET6; its port is ignored: <a>'s own port is set). The only change a
 * struct conf allows after conf_load(), and only while the conf is still
 * being built: before conf_check_resolved() and before it is published to
 * any other thread or diffed. Returns 0, or -1 if <sa> is not an IPv4 or
 * IPv6 address (<a> unchanged). */
int conf_address_fill(struct conf_address *a, const struct sockaddr *sa, socklen_t len);

/* After conf.unresolved was filled in: the checks that need the resolved
 * addresses (binds of listeners and admin that collide), and every address
 * still unresolved reported as "cannot resolve host". Appends each problem
 * to <errs> as conf_load() would ("file:line:column: key: reason").
 * Returns 0 if there was none, -1 otherwise (the conf is then unusable). */
int conf_check_resolved(const struct conf *c, struct conf_errors *errs);

/* Appends to <errs> the error conf_load() gives an address it cannot
 * resolve: "file:line:column: <u>'s key: invalid address "text": <reason>"
 * (<reason>: a static string such as "cannot resolve host"). For a caller
 * that resolves conf.unresolved itself and knows better why one failed. */
void conf_unresolved_error(const struct conf *c, const struct conf_unresolved *u,
                           const char *reason, struct conf_errors *errs);

/* Parses a network "10.0.0.0/8", "2001:db8::/32", or an address alone (one
 * host) into <out> (its text left NULL). Bits set beyond the prefix are an
 * error. Returns 0 or -1 with *<reason> set to a static string. */
int conf_parse_cidr(const char *text, struct conf_cidr *out, const char **reason);

/* True if the socket address <sa> (IPv4, IPv6, or IPv4-mapped IPv6 against
 * an IPv4 network) is inside <net>. */
bool conf_cidr_match(const struct conf_cidr *net, const struct sockaddr *sa);
/* Frees the strings of an address filled by conf_parse_address() and zeroes
 * it. Never call it on an address owned by a struct conf. */
void conf_address_clear(struct conf_address *a);

/* True if <a> and <b> resolve to the same socket address (family, IP, port,
 * IPv6 scope), whatever their text. An address still unresolved
 * (CONF_LOAD_DEFER_RESOLVE) is the same only as another unresolved one with
 * the same host name (case-insensitive) and port. */
bool conf_address_same(const struct conf_address *a, const struct conf_address *b);

/* True if binding both <a> and <b> would collide: the same address, or the
 * same family and port with one of them the wildcard (0.0.0.0 / [::]). */
bool conf_address_overlap(const struct conf_address *a, const struct conf_address *b);

/* Computes what changed from <old> to <new> (order: see enum
 * conf_change_kind). <old> NULL means everything was added, <new> NULL that
 * everything was removed. Returns 0, or -1 on allocation failure (then <out>
 * is empty). Release with conf_diff_free(). */
int conf_diff(const struct conf *old, const struct conf *new, struct conf_diff *out);
void conf_diff_free(struct conf_diff *d);

/* The dotted key of the first setting that differs between <old> and <new>
 * and that a reload cannot apply (flagged "restart" in the schema table:
 * workers, admin, admin.bind), or NULL if a reload can apply everything.
 * Everything else, admin.token_file and upgrade.timeout included, reloads. */
const char *conf_restart_needed(const struct conf *old, const struct conf *new);

/* Names as written in the config: "http", "round_robin", "info", "json",
 * "h2c", "auto", "v2"... and "backend_added", "route_changed"... for change
 * kinds; "?" if unknown. conf_proxy_protocol_str(CONF_PROXY_OFF) is "false". */
const char *conf_protocol_str(enum conf_protocol p);
const char *conf_pool_protocol_str(enum conf_pool_protocol p);
const char *conf_http2_str(enum conf_http2 h);
const char *conf_proxy_protocol_str(enum conf_proxy_protocol p);
const char *conf_balance_str(enum conf_balance b);
const char *conf_log_level_str(enum conf_log_level l);
const char *conf_log_format_str(enum conf_log_format f);
const char *conf_change_kind_str(enum conf_change_kind k);

/* Looks up a pool, a listener or a listener's route by name; NULL if absent. */
const struct conf_pool *conf_find_pool(const struct conf *c, const char *name);
const struct conf_listener *conf_find_listener(const struct conf *c, const char *name);
const struct conf_route *conf_find_route(const struct conf_listener *l, const char *name);

#endif
