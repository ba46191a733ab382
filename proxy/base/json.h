/* A strict parser for the one JSON shape the admin API reads: a flat
 * object of non-negative integers, {"name": N, ...}. No allocation: names
 * are copied into the caller's array. */
#ifndef USHER_BASE_JSON_H
#define USHER_BASE_JSON_H

#include <stddef.h>
#include <stdint.h>

/* Longest member name kept (bytes, without the NUL); a longer one is an
 * error rather than a silent truncation. */
#define JSON_NAME_MAX 127

struct json_member {
    char name[JSON_NAME_MAX + 1];
    uint64_t value;
};

/* Parses <len> bytes at <s> as one JSON object whose values are integers
 * in 0..UINT32_MAX, surrounded by optional whitespace. Fills at most <cap>
 * members into <out>, *<n> their count. Returns 0, or -1 with *<err> a
 * static reason (not an object, a value that is not a non-negative
 * integer, a duplicate name, trailing bytes, too many members, ...). */
int json_parse_flat_object(const char *s, size_t len, struct json_member *out, size_t cap,
                           size_t *n, const char **err);

#endif

#ifndef USHER_BASE_JSON_DOM
#define USHER_BASE_JSON_DOM
#include <stdbool.h>

/* A whole JSON document as a tree, for usher ctl reading /status (a CLI,
 * not the data plane: it allocates freely). */
enum json_type {
    JSON_NULL = 1,
    JSON_BOOL,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
};

struct json_value {
    enum json_type type;
    bool boolean;
    double number;
    char *string;              /* JSON_STRING, NUL-terminated UTF-8 */
    size_t count;              /* JSON_ARRAY, JSON_OBJECT: members */
    struct json_value **items; /* members */
    char **keys;               /* JSON_OBJECT: member names */
};

/* Parses <len> bytes at <s>. Returns the tree (free it with json_free),
 * or NULL with *<err> a static reason. Nesting is bounded. */
struct json_value *json_parse(const char *s, size_t len, const char **err);
void json_free(struct json_value *v);

/* The member <key> of object <v>, or NULL (also when <v> is not an
 * object). */
const struct json_value *json_get(const struct json_value *v, const char *key);
/* Convenience: the number / string at <key>, or <dflt>. */
double json_get_num(const struct json_value *v, const char *key, double dflt);
const char *json_get_str(const struct json_value *v, const char *key, const char *dflt);
/* The value of one hexadecimal digit (either case), or -1: JSON's \uXXXX
 * escapes and a path's %XX escapes. */
int hex_digit(char c);

#endif
