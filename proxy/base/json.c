#include "json.h"

#include <string.h>

/* RFC 8259 section 2: insignificant whitespace */
static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A string at s[*i] == '"' into <dst> as UTF-8 (RFC 8259 section 7). */
static int parse_string(const char *s, size_t len, size_t *i, char *dst, size_t cap,
                        const char **err)
{
    size_t o = 0;
    size_t k = *i + 1;
    while (k < len && s[k] != '"') {
        unsigned char c = (unsigned char)s[k];
        unsigned cp;
        if (c < 0x20) {
            *err = "control character in a string";
            return -1;
        }
        if (c != '\\') {
            if (o >= cap) {
                *err = "name too long";
                return -1;
            }
            dst[o++] = (char)c;
            k++;
            continue;
        }
        if (++k >= len)
            break;
        switch (s[k]) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            cp = 0;
            for (int h = 1; h <= 4; h++) {
                int v = k + (size_t)h < len ? hexval(s[k + (size_t)h]) : -1;
                if (v < 0) {
                    *err = "bad \\u escape";
                    return -1;
                }
                cp = cp * 16 + (unsigned)v;
            }
            k += 4;
            if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF)) {
                *err = "unsupported \\u escape (NUL or surrogate)";
                return -1;
            }
            break;
        default:
            *err = "bad escape in a string";
            return -1;
        }
        k++;
        char enc[3];
        size_t el;
        if (cp < 0x80) {
            enc[0] = (char)cp;
            el = 1;
        } else if (cp < 0x800) {
            enc[0] = (char)(0xC0 | (cp >> 6));
            enc[1] = (char)(0x80 | (cp & 0x3F));
            el = 2;
        } else {
            enc[0] = (char)(0xE0 | (cp >> 12));
            enc[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
            enc[2] = (char)(0x80 | (cp & 0x3F));
            el = 3;
        }
        if (o + el > cap) {
            *err = "name too long";
            return -1;
        }
        memcpy(dst + o, enc, el);
        o += el;
    }
    if (k >= len) {
        *err = "unterminated string";
        return -1;
    }
    dst[o] = '\0';
    *i = k + 1;
    return 0;
}

int json_parse_flat_object(const char *s, size_t len, struct json_member *out, size_t cap,
                           size_t *n, const char **err)
{
    size_t i = skip_ws(s, len, 0);
    *n = 0;
    if (i >= len || s[i] != '{') {
        *err = "body is not a JSON object";
        return -1;
    }
    i = skip_ws(s, len, i + 1);
    if (i < len && s[i] == '}') {
        i++;
        goto end;
    }
    for (;;) {
        if (i >= len || s[i] != '"') {
            *err = "expected a member name";
            return -1;
        }
        if (*n >= cap) {
            *err = "too many members";
            return -1;
        }
        struct json_member *m = &out[*n];
        if (parse_string(s, len, &i, m->name, JSON_NAME_MAX, err) < 0)
            return -1;
        for (size_t k = 0; k < *n; k++)
            if (strcmp(out[k].name, m->name) == 0) {
                *err = "duplicate member name";
                return -1;
            }
        i = skip_ws(s, len, i);
        if (i >= len || s[i] != ':') {
            *err = "expected ':'";
            return -1;
        }
        i = skip_ws(s, len, i + 1);
        if (i >= len || s[i] < '0' || s[i] > '9') {
            *err = "value must be a non-negative integer";
            return -1;
        }
        /* RFC 8259 section 6: no leading zeros */
        if (s[i] == '0' && i + 1 < len && s[i + 1] >= '0' && s[i + 1] <= '9') {
            *err = "value must be a non-negative integer";
            return -1;
        }
        uint64_t v = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            v = v * 10 + (uint64_t)(s[i] - '0');
            if (v > UINT32_MAX) {
                *err = "value out of range";
                return -1;
            }
            i++;
        }
        if (i < len && (s[i] == '.' || s[i] == 'e' || s[i] == 'E')) {
            *err = "value must be a non-negative integer";
            return -1;
        }
        m->value = v;
        (*n)++;
        i = skip_ws(s, len, i);
        if (i < len && s[i] == ',') {
            i = skip_ws(s, len, i + 1);
            continue;
        }
        if (i < len && s[i] == '}') {
            i++;
            break;
        }
        *err = "expected ',' or '}'";
        return -1;
    }
end:
    if (skip_ws(s, len, i) != len) {
        *err = "trailing bytes after the object";
        return -1;
    }
    return 0;
}
