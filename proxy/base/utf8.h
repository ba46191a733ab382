/* UTF-8 validity, for the two escapers of proxy/base (log lines, metric
 * labels), which both write valid UTF-8 whatever the input. */
#ifndef USHER_PROXY_UTF8_H
#define USHER_PROXY_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 sequence at <s> (of <n> bytes, n >= 1), 1 for
 * ASCII, 0 if it is not one (RFC 3629 section 4: no overlongs, no
 * surrogates, nothing above U+10FFFF). */
static inline size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* bounds of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

#endif
