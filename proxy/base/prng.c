#include "prng.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

int prng_seed(struct prng *p)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed)) {
        p->s = seed;
        return 0;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    p->s = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16);
    return -1;
}

void prng_seed_with(struct prng *p, uint64_t seed)
{
    p->s = seed;
}

uint64_t prng_next(struct prng *p)
{
    /* the constants of the reference implementation (Vigna, prng.di.unimi.it) */
    uint64_t z = (p->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void prng_hex128(struct prng *p, char out[PRNG_HEX128_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (int half = 0; half < 2; half++) {
        uint64_t v = prng_next(p);
        for (int i = 0; i < 16; i++)
            out[half * 16 + i] = hex[(v >> (60 - 4 * i)) & 0xf];
    }
    out[PRNG_HEX128_LEN] = '\0';
}
