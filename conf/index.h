/* A name index for conf's own use (the loader's uniqueness checks, the
 * diff's matching): elements of an array looked up by a string field in
 * constant time, so that checking or diffing a config with tens of
 * thousands of backends stays linear. Not part of conf's public API. */
#ifndef USHER_CONF_INDEX_H
#define USHER_CONF_INDEX_H

#include <stddef.h>
#include <stdint.h>

#define CONF_INDEX_NONE ((size_t)-1)

struct conf_index {
    size_t *slots;    /* element index + 1; 0 = empty */
    size_t mask;      /* slots - 1: a power of two, at least twice the elements */
    const char *base; /* element i's name: *(char **)(base + i * stride) */
    size_t stride;
};

/* The <first_name>, <stride> arguments for the `char *` member <field> of
 * the elements of array <arr>, which may be NULL (when it has none). */
#define CONF_INDEX_FIELD(arr, field)                                                               \
    ((arr) ? (const char *)(arr) + offsetof(__typeof__(*(arr)), field) : NULL), sizeof(*(arr))

/* Prepares <ix> for at most <count> elements whose names are `char *`
 * fields <stride> bytes apart, the first one at <first_name> (may be NULL
 * when <count> is 0). Returns 0, or -1 when out of memory. */
int conf_index_init(struct conf_index *ix, const void *first_name, size_t stride, size_t count);

/* Adds element <i>. Returns <i>, or the index of the element already there
 * with the same name (then <i> is not added). An element whose name is NULL
 * is not added (returns <i>). */
size_t conf_index_add(struct conf_index *ix, size_t i);

/* Builds <ix> over all <count> elements (the first of equal names wins).
 * Returns 0 or -1 (out of memory). */
int conf_index_build(struct conf_index *ix, const void *first_name, size_t stride, size_t count);

/* The index of the element named <name>, or CONF_INDEX_NONE. */
size_t conf_index_find(const struct conf_index *ix, const char *name);

void conf_index_free(struct conf_index *ix);

#endif
