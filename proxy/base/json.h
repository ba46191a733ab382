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
