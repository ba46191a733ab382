/* Hexadecimal digits, for the %XX escapes of a request path. */
#ifndef USHER_BASE_HEX_H
#define USHER_BASE_HEX_H

/* The value of one hexadecimal digit (either case), or -1. */
static inline int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
