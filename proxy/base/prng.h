/* A fast, non-cryptographic generator for identifiers (request ids): one
 * state per worker, seeded from the kernel, never shared between threads.
 * Not for secrets: the output is predictable from a few earlier values. */
#ifndef USHER_PROXY_PRNG_H
#define USHER_PROXY_PRNG_H

#include <stdint.h>

/* splitmix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
 * generators", OOPSLA 2014): a 64-bit counter through a mixing function;
 * every state value is visited once per 2^64 outputs. */
struct prng {
    uint64_t s;
};

/* 128 bits as 32 lowercase hex digits, plus the NUL. */
#define PRNG_HEX128_LEN 32

/* Seeds <p> from getrandom(2) (the clock and pid if that fails, so a
 * worker always starts). Returns 0, or -1 if the fallback was used. */
int prng_seed(struct prng *p);

/* Seeds <p> with <seed> (tests). */
void prng_seed_with(struct prng *p, uint64_t seed);

/* The next 64 bits of <p>. */
uint64_t prng_next(struct prng *p);

/* Writes 128 fresh bits of <p> to <out> as PRNG_HEX128_LEN hex digits and
 * a NUL. */
void prng_hex128(struct prng *p, char out[PRNG_HEX128_LEN + 1]);

#endif
