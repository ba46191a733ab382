/* Host-name index: one open-addressing hash table holding both kinds of
 * key. An exact name is stored as it is, a wildcard "*.example.com" as its
 * suffix "example.com" with a flag. A lookup of a.b.example.com probes the
 * exact name, then the wildcard suffixes b.example.com and example.com,
 * longest first.
 *
 * The hash runs from the last byte to the first, so one pass over the name
 * yields the hash of every suffix that starts after a dot: no suffix is
 * hashed twice, and a lookup is O(length of the name) plus one probe per
 * label. A bitmap of the suffix lengths that some wildcard has skips the
 * probes that cannot hit. */
#include "hostidx.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* FNV-1a, 32 bits (the parameters of the FNV reference, draft-eastlake-fnv). */
#define FNV_OFFSET 2166136261u
#define FNV_PRIME 16777619u

/* The table is at most half full, so a probe sequence stays short. */
#define LOAD_NUM 1
#define LOAD_DEN 2
#define TABLE_MIN 16

/* Keys up to this long live in their entry: a lookup then reads one cache
 * line per probe. Host names are mostly shorter; longer ones are
 * allocated apart. */
#define KEY_INLINE 40
/* The size of a cache line on the machines usher runs on (x86-64, arm64). */
#define CACHE_LINE 64

/* One slot of the table, one cache line. */
struct entry {
    uint32_t hash;
    uint16_t len;
    uint8_t wild;
    uint8_t pad_;
    char key[KEY_INLINE]; /* lowercased; a wildcard's without its "*." */
    char *long_key;       /* the key when longer than KEY_INLINE */
    void *value;
};
_Static_assert(sizeof(struct entry) == CACHE_LINE, "a slot is one cache line");

struct hostidx {
    /* One byte per slot, beside the slots: 0 for a free one, else TAG of
     * its hash. A probe reads these (2 KB for a thousand keys: they stay
     * in L1) and a slot's own line only when its tag matches, so a miss,
     * as for the exact name of a host only a wildcard covers, reads no
     * slot at all. */
    uint8_t *tags;
    struct entry *tab;
    size_t cap; /* a power of two */
    size_t count;
    enum hostidx_wildcard mode;
    /* bit L: some wildcard's suffix is L bytes long */
    uint64_t wild_len[(HOSTIDX_NAME_MAX + 64) / 64];
};

/* ASCII lower case of every byte (the index compares names, which are
 * ASCII; other bytes are kept as they are). */
static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

static uint32_t hash_step(uint32_t h, unsigned char c)
{
    return (h ^ lower(c)) * FNV_PRIME;
}

/* Hash of <s>[0..<len>), from the end (see the top of the file). */
static uint32_t hash_name(const char *s, size_t len)
{
    uint32_t h = FNV_OFFSET;
    for (size_t i = len; i > 0; i--)
        h = hash_step(h, (unsigned char)s[i - 1]);
    return h;
}

/* Where the probe sequence of <h> starts: FNV's low bits alone spread
 * keys that differ in their first byte poorly, so they are mixed first
 * (the finaliser of MurmurHash3). */
static size_t slot_of(uint32_t h, size_t cap)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h & (cap - 1);
}

static const char *entry_key(const struct entry *e)
{
    return e->len > KEY_INLINE ? e->long_key : e->key;
}

/* True if the stored (lowercase) <key> equals <s> up to case. */
static bool key_eq(const char *key, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (key[i] != (char)lower((unsigned char)s[i]))
            return false;
    return true;
}

/* The tag of hash <h>: 7 of its bits that slot_of does not use first
 * (the top ones), and the top bit set so that 0 means free. */
static uint8_t tag_of(uint32_t h)
{
    return (uint8_t)(0x80 | h >> 25);
}

/* Zeroed tags and slots for <cap> keys, each slot on its own cache line. */
static int table_new(size_t cap, uint8_t **tags, struct entry **tab)
{
    *tags = calloc(cap, 1);
    *tab = aligned_alloc(CACHE_LINE, cap * sizeof(**tab));
    if (!*tags || !*tab) {
        free(*tags);
        free(*tab);
        *tags = NULL;
        *tab = NULL;
        return -ENOMEM;
    }
    memset(*tab, 0, cap * sizeof(**tab));
    return 0;
}

static const struct entry *find(const struct hostidx *idx, const char *s, size_t len, uint32_t h,
                                bool wild)
{
    if (!idx->count)
        return NULL;
    for (size_t i = slot_of(h, idx->cap);; i = (i + 1) & (idx->cap - 1)) {
        if (!idx->tags[i])
            return NULL;
        if (idx->tags[i] != tag_of(h))
            continue;
        const struct entry *e = &idx->tab[i];
        if (e->hash == h && e->len == len && e->wild == wild && key_eq(entry_key(e), s, len))
            return e;
    }
}

static bool len_bit(const uint64_t *bits, size_t len)
{
    return bits[len / 64] >> (len % 64) & 1;
}

/* Checks a name (no wildcard part): labels non-empty, printable ASCII
 * other than '*'. */
static bool valid_name(const char *s, size_t len)
{
    if (len == 0 || len > HOSTIDX_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '*')
            return false;
        if (c == '.' && (i == 0 || i + 1 == len || s[i - 1] == '.'))
            return false;
    }
    return true;
}

struct hostidx *hostidx_new(enum hostidx_wildcard mode)
{
    struct hostidx *idx = calloc(1, sizeof(*idx));
    if (!idx)
        return NULL;
    if (table_new(TABLE_MIN, &idx->tags, &idx->tab) < 0) {
        free(idx);
        return NULL;
    }
    idx->cap = TABLE_MIN;
    idx->mode = mode;
    return idx;
}

void hostidx_free(struct hostidx *idx)
{
    if (!idx)
        return;
    for (size_t i = 0; i < idx->cap; i++)
        free(idx->tab[i].long_key);
    free(idx->tags);
    free(idx->tab);
    free(idx);
}

static void place(uint8_t *tags, struct entry *tab, size_t cap, const struct entry *e)
{
    size_t i = slot_of(e->hash, cap);
    while (tags[i])
        i = (i + 1) & (cap - 1);
    tags[i] = tag_of(e->hash);
    tab[i] = *e;
}

static int grow(struct hostidx *idx)
{
    size_t cap = idx->cap * 2;
    uint8_t *tags;
    struct entry *tab;
    if (table_new(cap, &tags, &tab) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < idx->cap; i++)
        if (idx->tags[i])
            place(tags, tab, cap, &idx->tab[i]);
    free(idx->tags);
    free(idx->tab);
    idx->tags = tags;
    idx->tab = tab;
    idx->cap = cap;
    return 0;
}

int hostidx_add(struct hostidx *idx, const char *key, size_t len, void *value)
{
    bool wild = len >= 2 && key[0] == '*' && key[1] == '.';
    const char *s = wild ? key + 2 : key;
    size_t n = wild ? len - 2 : len;

    if (!value || len > HOSTIDX_NAME_MAX || !valid_name(s, n))
        return -EINVAL;
    uint32_t h = hash_name(s, n);
    if (find(idx, s, n, h, wild))
        return -EEXIST;
    if ((idx->count + 1) * LOAD_DEN > idx->cap * LOAD_NUM && grow(idx) < 0)
        return -ENOMEM;

    struct entry e = {.value = value, .hash = h, .len = (uint16_t)n, .wild = wild};
    char *k = e.key;
    if (n > KEY_INLINE) {
        e.long_key = k = malloc(n);
        if (!k)
            return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        k[i] = (char)lower((unsigned char)s[i]);
    place(idx->tags, idx->tab, idx->cap, &e);
    idx->count++;
    if (wild)
        idx->wild_len[n / 64] |= 1ull << (n % 64);
    return 0;
}

void *hostidx_get(const struct hostidx *idx, const char *key, size_t len)
{
    bool wild = len >= 2 && key[0] == '*' && key[1] == '.';
    const char *s = wild ? key + 2 : key;
    size_t n = wild ? len - 2 : len;
    if (n > HOSTIDX_NAME_MAX)
        return NULL;
    const struct entry *e = find(idx, s, n, hash_name(s, n), wild);
    return e ? e->value : NULL;
}

void hostidx_iter_init(struct hostidx_iter *it, const struct hostidx *idx, const char *name,
                       size_t len)
{
    it->idx = idx;
    it->name = name;
    it->len = len;
    it->n = 0;
    it->exact_done = 0;
    if (len == 0 || len > HOSTIDX_NAME_MAX || idx->count == 0) {
        it->exact_done = 1; /* nothing can match */
        return;
    }

    /* one pass from the end: the hash of each suffix after a dot is the
     * running hash when the dot is reached */
    uint32_t h = FNV_OFFSET;
    size_t label_end = len; /* the label being read ends here */
    for (size_t i = len; i > 0; i--) {
        unsigned char c = (unsigned char)name[i - 1];
        if (c == '.') {
            if (label_end == i) {
                it->exact_done = 1; /* an empty label: not a host name */
                it->n = 0;
                return;
            }
            size_t slen = len - i;
            if (len_bit(idx->wild_len, slen)) {
                it->pos[it->n] = (uint8_t)i;
                it->shash[it->n] = h;
                it->n++;
            }
            label_end = i - 1;
        }
        h = hash_step(h, c);
    }
    if (label_end == 0) {
        it->exact_done = 1; /* a leading dot */
        it->n = 0;
        return;
    }
    it->hash = h;

    /* one label only: just the suffix after the first dot, if a wildcard
     * of its length exists (it is then the last one recorded) */
    if (idx->mode == HOSTIDX_WILDCARD_ONE_LABEL && it->n) {
        const char *dot = memchr(name, '.', len);
        if (it->pos[it->n - 1] == (size_t)(dot - name) + 1) {
            it->pos[0] = it->pos[it->n - 1];
            it->shash[0] = it->shash[it->n - 1];
            it->n = 1;
        } else {
            it->n = 0;
        }
    }
}

void *hostidx_iter_next(struct hostidx_iter *it)
{
    const struct entry *e;
    if (!it->exact_done) {
        it->exact_done = 1;
        e = find(it->idx, it->name, it->len, it->hash, false);
        if (e)
            return e->value;
    }
    while (it->n > 0) {
        it->n--;
        size_t p = it->pos[it->n];
        e = find(it->idx, it->name + p, it->len - p, it->shash[it->n], true);
        if (e)
            return e->value;
    }
    return NULL;
}

void *hostidx_lookup(const struct hostidx *idx, const char *name, size_t len)
{
    struct hostidx_iter it;
    hostidx_iter_init(&it, idx, name, len);
    return hostidx_iter_next(&it);
}

size_t hostidx_count(const struct hostidx *idx)
{
    return idx->count;
}
