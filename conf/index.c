/* Open addressing (linear probing) over element indexes; the names stay in
 * the elements. */
#include "index.h"

#include <stdlib.h>
#include <string.h>

/* FNV-1a, 64 bits: names are short and not chosen by an attacker (they
 * come from the operator's own file). */
static uint64_t hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static const char *name_at(const struct conf_index *ix, size_t i)
{
    return *(char *const *)(ix->base + i * ix->stride);
}

int conf_index_init(struct conf_index *ix, const void *first_name, size_t stride, size_t count)
{
    size_t n = 8;

    while (n < count * 2)
        n *= 2;
    ix->slots = calloc(n, sizeof(*ix->slots));
    ix->mask = n - 1;
    ix->base = first_name;
    ix->stride = stride;
    return ix->slots ? 0 : -1;
}

size_t conf_index_add(struct conf_index *ix, size_t i)
{
    const char *name = name_at(ix, i);

    if (!name)
        return i;
    for (size_t s = (size_t)hash(name) & ix->mask;; s = (s + 1) & ix->mask) {
        if (ix->slots[s] == 0) {
            ix->slots[s] = i + 1;
            return i;
        }
        const char *other = name_at(ix, ix->slots[s] - 1);
        if (strcmp(other, name) == 0)
            return ix->slots[s] - 1;
    }
}

int conf_index_build(struct conf_index *ix, const void *first_name, size_t stride, size_t count)
{
    if (conf_index_init(ix, first_name, stride, count) < 0)
        return -1;
    for (size_t i = 0; i < count; i++)
        conf_index_add(ix, i);
    return 0;
}

size_t conf_index_find(const struct conf_index *ix, const char *name)
{
    if (!name || !ix->slots)
        return CONF_INDEX_NONE;
    for (size_t s = (size_t)hash(name) & ix->mask;; s = (s + 1) & ix->mask) {
        if (ix->slots[s] == 0)
            return CONF_INDEX_NONE;
        if (strcmp(name_at(ix, ix->slots[s] - 1), name) == 0)
            return ix->slots[s] - 1;
    }
}

void conf_index_free(struct conf_index *ix)
{
    free(ix->slots);
    ix->slots = NULL;
}
