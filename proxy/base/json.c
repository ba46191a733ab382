#include "json.h"

#include <string.h>

/* RFC 8259 section 2: insignificant whitespace */
static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

int hex_digit(char c)
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
        case '"':
            cp = '"';
            break;
        case '\\':
            cp = '\\';
            break;
        case '/':
            cp = '/';
            break;
        case 'b':
            cp = '\b';
            break;
        case 'f':
            cp = '\f';
            break;
        case 'n':
            cp = '\n';
            break;
        case 'r':
            cp = '\r';
            break;
        case 't':
            cp = '\t';
            break;
        case 'u':
            cp = 0;
            for (int h = 1; h <= 4; h++) {
                int v = k + (size_t)h < len ? hex_digit(s[k + (size_t)h]) : -1;
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

/* ---- the tree parser (usher ctl) ------------------------------------------ */

#include <stdlib.h>

/* Deeper documents than this are not /status. */
#define JSON_DEPTH_MAX 32
/* Longest string kept (a /status name or an error message). */
#define JSON_STRING_MAX 65536

struct jp {
    const char *s;
    size_t len, i;
    const char *err;
};

static struct json_value *parse_value(struct jp *p, int depth);

void json_free(struct json_value *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->count; i++) {
        json_free(v->items[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->string);
    free(v);
}

static char *parse_str_alloc(struct jp *p)
{
    char *buf = malloc(JSON_STRING_MAX + 1);
    if (!buf) {
        p->err = "out of memory";
        return NULL;
    }
    if (parse_string(p->s, p->len, &p->i, buf, JSON_STRING_MAX, &p->err) < 0) {
        free(buf);
        return NULL;
    }
    char *shrunk = realloc(buf, strlen(buf) + 1);
    return shrunk ? shrunk : buf;
}

static int push(struct json_value *v, struct json_value *item, char *key, size_t *cap)
{
    if (v->count == *cap) {
        size_t nc = *cap ? *cap * 2 : 8;
        struct json_value **items = realloc(v->items, nc * sizeof(*items));
        if (!items)
            return -1;
        v->items = items;
        if (v->type == JSON_OBJECT) {
            char **keys = realloc(v->keys, nc * sizeof(*keys));
            if (!keys)
                return -1;
            v->keys = keys;
        }
        *cap = nc;
    }
    v->items[v->count] = item;
    if (v->type == JSON_OBJECT)
        v->keys[v->count] = key;
    v->count++;
    return 0;
}

static struct json_value *parse_container(struct jp *p, int depth, enum json_type t)
{
    char close = t == JSON_OBJECT ? '}' : ']';
    struct json_value *v = calloc(1, sizeof(*v));
    size_t cap = 0;
    if (!v) {
        p->err = "out of memory";
        return NULL;
    }
    v->type = t;
    p->i = skip_ws(p->s, p->len, p->i + 1);
    if (p->i < p->len && p->s[p->i] == close) {
        p->i++;
        return v;
    }
    for (;;) {
        char *key = NULL;
        if (t == JSON_OBJECT) {
            if (p->i >= p->len || p->s[p->i] != '"') {
                p->err = "expected a member name";
                goto fail;
            }
            key = parse_str_alloc(p);
            if (!key)
                goto fail;
            p->i = skip_ws(p->s, p->len, p->i);
            if (p->i >= p->len || p->s[p->i] != ':') {
                free(key);
                p->err = "expected ':'";
                goto fail;
            }
            p->i = skip_ws(p->s, p->len, p->i + 1);
        }
        struct json_value *item = parse_value(p, depth + 1);
        if (!item || push(v, item, key, &cap) < 0) {
            json_free(item);
            free(key);
            if (!p->err)
                p->err = "out of memory";
            goto fail;
        }
        p->i = skip_ws(p->s, p->len, p->i);
        if (p->i < p->len && p->s[p->i] == ',') {
            p->i = skip_ws(p->s, p->len, p->i + 1);
            continue;
        }
        if (p->i < p->len && p->s[p->i] == close) {
            p->i++;
            return v;
        }
        p->err = t == JSON_OBJECT ? "expected ',' or '}'" : "expected ',' or ']'";
        goto fail;
    }
fail:
    json_free(v);
    return NULL;
}

static bool literal(struct jp *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->i < n || memcmp(p->s + p->i, word, n) != 0)
        return false;
    p->i += n;
    return true;
}

static struct json_value *parse_value(struct jp *p, int depth)
{
    if (depth > JSON_DEPTH_MAX) {
        p->err = "nested too deep";
        return NULL;
    }
    p->i = skip_ws(p->s, p->len, p->i);
    if (p->i >= p->len) {
        p->err = "unexpected end";
        return NULL;
    }
    char c = p->s[p->i];
    if (c == '{')
        return parse_container(p, depth, JSON_OBJECT);
    if (c == '[')
        return parse_container(p, depth, JSON_ARRAY);
    struct json_value *v = calloc(1, sizeof(*v));
    if (!v) {
        p->err = "out of memory";
        return NULL;
    }
    if (c == '"') {
        v->type = JSON_STRING;
        v->string = parse_str_alloc(p);
        if (!v->string)
            goto fail;
    } else if (literal(p, "true") || literal(p, "false")) {
        v->type = JSON_BOOL;
        v->boolean = p->s[p->i - 1] == 'e' && p->s[p->i - 2] == 'u';
    } else if (literal(p, "null")) {
        v->type = JSON_NULL;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        char num[64];
        size_t k = 0;
        while (p->i < p->len && k < sizeof(num) - 1 && strchr("+-0123456789.eE", p->s[p->i]))
            num[k++] = p->s[p->i++];
        num[k] = '\0';
        char *end;
        v->type = JSON_NUMBER;
        v->number = strtod(num, &end);
        if (*end) {
            p->err = "bad number";
            goto fail;
        }
    } else {
        p->err = "unexpected character";
        goto fail;
    }
    return v;
fail:
    json_free(v);
    return NULL;
}

struct json_value *json_parse(const char *s, size_t len, const char **err)
{
    struct jp p = {.s = s, .len = len};
    struct json_value *v = parse_value(&p, 0);
    if (v && skip_ws(s, len, p.i) != len) {
        json_free(v);
        v = NULL;
        p.err = "trailing bytes after the document";
    }
    if (!v)
        *err = p.err ? p.err : "invalid JSON";
    return v;
}

const struct json_value *json_get(const struct json_value *v, const char *key)
{
    if (!v || v->type != JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < v->count; i++)
        if (strcmp(v->keys[i], key) == 0)
            return v->items[i];
    return NULL;
}

double json_get_num(const struct json_value *v, const char *key, double dflt)
{
    const struct json_value *m = json_get(v, key);
    return m && m->type == JSON_NUMBER ? m->number : dflt;
}

const char *json_get_str(const struct json_value *v, const char *key, const char *dflt)
{
    const struct json_value *m = json_get(v, key);
    return m && m->type == JSON_STRING ? m->string : dflt;
}
