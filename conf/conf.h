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
/* Frees the strings of an address filled by conf_parse_address() and zeroes
 * it. Never call it on an address owned by a struct conf. */
void conf_address_clear(struct conf_address *a);

/* True if <a> and <b> resolve to the same socket address (family, IP, port,
 * IPv6 scope), whatever their text. */
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

/* Names as written in the config: "http", "round_robin", "info", "json"...
 * and "backend_added", "listener_split"... for change kinds; "?" if unknown. */
const char *conf_protocol_str(enum conf_protocol p);
const char *conf_balance_str(enum conf_balance b);
const char *conf_log_level_str(enum conf_log_level l);
const char *conf_log_format_str(enum conf_log_format f);
const char *conf_change_kind_str(enum conf_change_kind k);

/* Looks up a pool or a listener by name; NULL if absent. */
const struct conf_pool *conf_find_pool(const struct conf *c, const char *name);
const struct conf_listener *conf_find_listener(const struct conf *c, const char *name);

#endif
