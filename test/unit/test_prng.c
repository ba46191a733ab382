// links: usher_proxy_base
/* Unit tests of proxy/base/prng.c: the splitmix64 reference output, the
 * hex form of request ids, and that a seeded generator does not repeat. */
#include "proxy/base/prng.h"

#include <stdio.h>
#include <string.h>
#include "test/unit/check.h"

int main(void)
{
    struct prng p;
    /* splitmix64 from seed 0: the first outputs of the reference code */
    prng_seed_with(&p, 0);
    CHECK(prng_next(&p) == 0xe220a8397b1dcdafULL);
    CHECK(prng_next(&p) == 0x6e789e6aa1b965f4ULL);

    prng_seed_with(&p, 0);
    char id[PRNG_HEX128_LEN + 1];
    prng_hex128(&p, id);
    CHECK(strlen(id) == 32);
    CHECK(strcmp(id, "e220a8397b1dcdaf6e789e6aa1b965f4") == 0);

    CHECK(prng_seed(&p) == 0); /* getrandom works here */
    char prev[PRNG_HEX128_LEN + 1];
    prng_hex128(&p, prev);
    for (int i = 0; i < 1000; i++) {
        prng_hex128(&p, id);
        CHECK(strspn(id, "0123456789abcdef") == 32);
        CHECK(strcmp(id, prev) != 0);
        memcpy(prev, id, sizeof(id));
    }
    return check_report("test_prng");
}
