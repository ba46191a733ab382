/* HTTP/1.x head parser and chunked-body scanner (RFC 9112, RFC 9110).
 *
 * The head parsers keep no state between calls: every call parses the bytes
 * it is given from the start, in one left-to-right pass, and stops at the
 * first invalid byte (HTTP1_ERROR) or at the end of the data (HTTP1_AGAIN).
 * Every check depends only on the bytes before the point where it fails, so
 * feeding a head in pieces gives exactly the result of feeding it whole, and
 * an incomplete head costs one cheap pass. Checks that need the whole head
 * (missing Host, CL with TE, framing) run once the empty line is seen.
 *
 * Only bytes below min(len, max_head_bytes) are ever read: a head that does
 * not end within the limit is "too large" whatever follows, and nothing is
 * read past the caller's data (see the guard-page test). */
#include "http1.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Character classes (RFC 9110 section 5.6.2 tchar, 5.5 field values, RFC
 * 3986 section 3.2.2 host). */
enum {
    CC_TOKEN = 1u << 0, /* tchar */
    CC_CTL = 1u << 1,   /* control byte other than HTAB: never valid in a head */
    CC_HOST = 1u << 2,  /* reg-name, IP-literal and port characters */
};

#define TH (CC_TOKEN | CC_HOST)

static const unsigned char cclass[256] = {
    [0x00 ... 0x08] = CC_CTL,
    [0x0a ... 0x1f] = CC_CTL,
    [0x7f] = CC_CTL,
    ['0' ... '9'] = TH,
    ['A' ... 'Z'] = TH,
    ['a' ... 'z'] = TH,
    ['!'] = TH,
    ['#'] = CC_TOKEN,
    ['$'] = TH,
    ['%'] = TH,
    ['&'] = TH,
    ['\''] = TH,
    ['*'] = TH,
    ['+'] = TH,
    ['-'] = TH,
    ['.'] = TH,
    ['^'] = CC_TOKEN,
    ['_'] = TH,
    ['`'] = CC_TOKEN,
    ['|'] = CC_TOKEN,
    ['~'] = TH,
    ['('] = CC_HOST,
    [')'] = CC_HOST,
    [','] = CC_HOST,
    [';'] = CC_HOST,
    ['='] = CC_HOST,
    [':'] = CC_HOST,
    ['['] = CC_HOST,
    [']'] = CC_HOST,
};

#undef TH

/* Bound on a chunk-size line (size + extensions) and on one trailer line:
 * real chunk-ext use is a few dozen bytes; the bound turns a never-ending
 * line into an error instead of an endless scan. */
#define CHUNK_LINE_MAX 4096

/* "HTTP/" DIGIT "." DIGIT, RFC 9112 section 2.3; '0' stands for any digit. */
static const char version_pattern[] = "HTTP/0.0";
#define VERSION_LEN (sizeof(version_pattern) - 1)

/* Status codes are three digits (RFC 9110 section 15); 1xx to 5xx are
 * defined, anything else from a backend is treated as invalid. */
#define STATUS_MIN 100
#define STATUS_MAX 599

/* Rejection reasons: one static string per kind of rejection, so logs and
 * tests can name the exact cause. */
static const char R_HEAD_TOO_LARGE[] = "request head too large";
static const char R_RESP_TOO_LARGE[] = "response head too large";
static const char R_TOO_MANY_FIELDS[] = "too many header fields";
static const char R_URI_TOO_LONG[] = "request target too long";
static const char R_BARE_CR[] = "bare CR (line endings must be CRLF)";
static const char R_BARE_LF[] = "bare LF (line endings must be CRLF)";
static const char R_METHOD[] = "invalid method";
static const char R_REQUEST_LINE[] = "malformed request line";
static const char R_TARGET_EMPTY[] = "empty request target";
static const char R_TARGET_CHAR[] = "invalid character in request target";
static const char R_VERSION[] = "invalid HTTP version";
static const char R_VERSION_UNSUPPORTED[] = "unsupported HTTP version";
static const char R_STATUS_LINE[] = "malformed status line";
static const char R_STATUS[] = "invalid status code";
static const char R_REASON_CTL[] = "control character in reason phrase";
static const char R_OBS_FOLD[] = "obsolete line folding";
static const char R_NAME_EMPTY[] = "empty header field name";
static const char R_NAME_WS[] = "whitespace between header field name and colon";
static const char R_NAME_CHAR[] = "invalid character in header field name";
static const char R_NO_COLON[] = "header field without colon";
static const char R_FIELD_NUL[] = "NUL byte in header field";
static const char R_FIELD_CTL[] = "control character in header field";
static const char R_HOST_MISSING[] = "missing Host header";
static const char R_HOST_MULTIPLE[] = "multiple Host headers";
static const char R_HOST_INVALID[] = "invalid Host header";
static const char R_AUTHORITY_INVALID[] = "invalid authority in request target";
static const char R_CL_INVALID[] = "invalid Content-Length";
static const char R_CL_OVERFLOW[] = "Content-Length too large";
static const char R_CL_DIFFERENT[] = "differing Content-Length values";
static const char R_CL_AND_TE[] = "Content-Length with Transfer-Encoding";
static const char R_TE_MALFORMED[] = "malformed Transfer-Encoding";
static const char R_TE_UNKNOWN[] = "unknown transfer coding";
static const char R_TE_CHUNKED_TWICE[] = "chunked applied more than once";
static const char R_TE_NOT_CHUNKED[] = "Transfer-Encoding not ending in chunked";
static const char R_TE_HTTP10[] = "Transfer-Encoding in HTTP/1.0 message";
static const char R_CHUNK_SIZE[] = "invalid chunk size";
static const char R_CHUNK_SIZE_OVERFLOW[] = "chunk size too large";
static const char R_CHUNK_LINE_LONG[] = "chunk size line too long";
static const char R_CHUNK_EXT[] = "invalid chunk extension";
static const char R_CHUNK_DATA_CRLF[] = "missing CRLF after chunk data";
static const char R_TRAILER_LONG[] = "trailer line too long";

/* Transfer codings a recipient may meet (IANA registry, RFC 9112 section
 * 7). "identity" was removed from HTTP (RFC 7230 appendix A.2) and is
 * unknown here, like any coding not listed: 501 for a request. */
static const char *const known_codings[] = {"chunked", "gzip",     "x-gzip",
                                            "deflate", "compress", "x-compress"};

static inline bool is_token(unsigned char c)
{
    return cclass[c] & CC_TOKEN;
}

static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static inline bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static inline struct http1_slice slice(const char *b, const char *e)
{
    return (struct http1_slice){b, (size_t)(e - b)};
}

static int fail(struct http1_message *m, int status, const char *reason)
{
    m->error_status = status;
    m->error_reason = reason;
    return HTTP1_ERROR;
}

/* Scanning helpers: each returns the first byte in [p, end) that stops a
 * run, or end. They are where the time goes, so they look at 16 bytes per
 * step with SSE2 (baseline on x86-64) and 8 per step elsewhere (SWAR); the
 * byte loops after them finish the job, so both paths give the same
 * answer. Loads never reach past <end>. */
#if defined(__SSE2__)
#define SCAN_STEP 16

/* Bit i set when byte i of the 16 at <p> is < 0x20 or 0x7f (+ space if
 * <sp>); comparisons are unsigned so obs-text (>= 0x80) passes. */
static inline unsigned ctl_mask16(const char *p, bool sp)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i low = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(sp ? 0x20 : 0x1f)), x);
    __m128i del = _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f));
    return (unsigned)_mm_movemask_epi8(_mm_or_si128(low, del));
}

/* Bit i set when byte i is NOT a letter, digit or '-': what nearly every
 * field name is made of; the rarer tchars are left to the byte loop. */
static inline unsigned not_name_mask16(const char *p)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i l = _mm_sub_epi8(_mm_or_si128(x, _mm_set1_epi8(0x20)), _mm_set1_epi8('a'));
    __m128i d = _mm_sub_epi8(x, _mm_set1_epi8('0'));
    __m128i letter = _mm_cmpeq_epi8(_mm_min_epu8(l, _mm_set1_epi8(25)), l);
    __m128i digit = _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d);
    __m128i dash = _mm_cmpeq_epi8(x, _mm_set1_epi8('-'));
    return ~(unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(letter, digit), dash)) & 0xffff;
}

static inline const char *skip_ctl_free(const char *p, const char *end, bool sp)
{
    while (end - p >= SCAN_STEP) {
        unsigned m = ctl_mask16(p, sp);
        if (m)
            return p + __builtin_ctz(m);
        p += SCAN_STEP;
    }
    return p;
}

static inline const char *skip_name_chars(const char *p, const char *end)
{
    while (end - p >= SCAN_STEP) {
        unsigned m = not_name_mask16(p);
        if (m)
            return p + __builtin_ctz(m);
        p += SCAN_STEP;
    }
    return p;
}
#else
#define SCAN_STEP 8

/* Nonzero when a byte of <x> is < <lim> (<= 0x80) or 0x7f. Exact as a
 * yes/no answer: the borrow only adds false bits above a true one. */
static inline uint64_t ctl_bits8(uint64_t x, unsigned lim)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t del = x ^ (0x7f * ones);
    return ((x - lim * ones) & ~x & highs) | ((del - ones) & ~del & highs);
}

static inline const char *skip_ctl_free(const char *p, const char *end, bool sp)
{
    while (end - p >= SCAN_STEP) {
        uint64_t x;
        memcpy(&x, p, sizeof(x));
        if (ctl_bits8(x, sp ? 0x21 : 0x20))
            break;
        p += SCAN_STEP;
    }
    return p;
}

static inline const char *skip_name_chars(const char *p, const char *end)
{
    (void)end;
    return p;
}
#endif

/* First byte in [p, end) that is < 0x20 or 0x7f (HTAB included), or end. */
static inline const char *find_ctl(const char *p, const char *end)
{
    p = skip_ctl_free(p, end, false);
    while (p < end && (unsigned char)*p >= 0x20 && *p != 0x7f)
        p++;
    return p;
}

/* First byte in [p, end) that is <= 0x20 or 0x7f, or end. */
static inline const char *find_ctl_or_sp(const char *p, const char *end)
{
    p = skip_ctl_free(p, end, true);
    while (p < end && (unsigned char)*p > 0x20 && *p != 0x7f)
        p++;
    return p;
}

/* First byte in [p, end) that is not a tchar, or end. */
static inline const char *find_non_token(const char *p, const char *end)
{
    p = skip_name_chars(p, end);
    while (p < end && is_token((unsigned char)*p))
        p++;
    return p;
}

/* Classifies the unexpected byte at <p> (< end): a CR is only judged once
 * the byte after it is known (AGAIN until then); a CRLF gets <crlf_reason>,
 * a bare CR or LF its own reason, anything else <reason>. */
static int unexpected(struct http1_message *m, const char *p, const char *end,
                      const char *crlf_reason, const char *reason)
{
    if (*p == '\r') {
        if (p + 1 == end)
            return HTTP1_AGAIN;
        return fail(m, 400, p[1] == '\n' ? crlf_reason : R_BARE_CR);
    }
    if (*p == '\n')
        return fail(m, 400, R_BARE_LF);
    return fail(m, 400, reason);
}

/* Case-insensitive match of <n> (a token of length <len>) against the
 * lower-case literal <lit> of the same length. Exact because the literals
 * hold only letters and '-': c | 0x20 equals a lower-case letter only for
 * that letter in either case, and equals '-' only for '-' or CR, which a
 * token cannot hold. */
static inline bool name_is(const char *n, const char *lit, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((n[i] | 0x20) != lit[i])
            return false;
    return true;
}

static inline char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + ('a' - 'A')) : c;
}

bool http1_slice_eq(struct http1_slice s, const char *lit)
{
    size_t i;
    for (i = 0; i < s.len; i++)
        if (lit[i] == '\0' || lower(s.ptr[i]) != lower(lit[i]))
            return false;
    return lit[i] == '\0';
}

bool http1_slices_eq(struct http1_slice a, struct http1_slice b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++)
        if (lower(a.ptr[i]) != lower(b.ptr[i]))
            return false;
    return true;
}

bool http1_list_next(const char **pp, const char *end, struct http1_slice *el)
{
    const char *p = *pp, *s, *e;
    while (p < end && (is_ows(*p) || *p == ','))
        p++;
    if (p == end)
        return false;
    s = p;
    while (p < end && *p != ',')
        p++;
    e = p;
    while (e > s && is_ows(e[-1]))
        e--;
    *pp = p;
    *el = slice(s, e);
    return true;
}

bool http1_list_has_token(struct http1_slice list, const char *token)
{
    const char *p, *end;
    struct http1_slice el;
    if (list.len == 0)
        return false;
    p = list.ptr;
    end = list.ptr + list.len;
    while (http1_list_next(&p, end, &el))
        if (http1_slice_eq(el, token))
            return true;
    return false;
}

static enum http1_method method_id(const char *m, size_t len)
{
    /* Methods are case-sensitive (RFC 9110 section 9.1). */
    switch (len) {
    case 3:
        if (!memcmp(m, "GET", 3))
            return HTTP1_METHOD_GET;
        if (!memcmp(m, "PUT", 3))
            return HTTP1_METHOD_PUT;
        break;
    case 4:
        if (!memcmp(m, "POST", 4))
            return HTTP1_METHOD_POST;
        if (!memcmp(m, "HEAD", 4))
            return HTTP1_METHOD_HEAD;
        break;
    case 5:
        if (!memcmp(m, "PATCH", 5))
            return HTTP1_METHOD_PATCH;
        if (!memcmp(m, "TRACE", 5))
            return HTTP1_METHOD_TRACE;
        break;
    case 6:
        if (!memcmp(m, "DELETE", 6))
            return HTTP1_METHOD_DELETE;
        break;
    case 7:
        if (!memcmp(m, "OPTIONS", 7))
            return HTTP1_METHOD_OPTIONS;
        if (!memcmp(m, "CONNECT", 7))
            return HTTP1_METHOD_CONNECT;
        break;
    }
    return HTTP1_METHOD_OTHER;
}

/* Matches "HTTP/x.y" at *pp. Returns 0 with *pp past it and the digits in
 * <major>/<minor>, AGAIN or ERROR (<m> says why). Whether the version is
 * supported is left to the caller, to be decided only once the byte after
 * it is known: "HTTP/2.0x" is garbage (400), not HTTP/2 (505). */
static int parse_version(struct http1_message *m, const char **pp, const char *end, int *major,
                         int *minor)
{
    const char *p = *pp;
    for (size_t i = 0; i < VERSION_LEN; i++) {
        if (p + i == end)
            return HTTP1_AGAIN;
        char want = version_pattern[i];
        if (want == '0' ? !is_digit(p[i]) : p[i] != want)
            return unexpected(m, p + i, end, R_VERSION, R_VERSION);
    }
    *major = p[5] - '0';
    *minor = p[7] - '0';
    *pp = p + VERSION_LEN;
    return 0;
}

/* RFC 9110 section 2.5: a 1.x minor version above ours is processed as the
 * highest we implement; another major version is not supported. */
static int check_version(struct http1_message *m, int major, int minor, int status)
{
    if (major != 1)
        return fail(m, status, R_VERSION_UNSUPPORTED);
    m->minor_version = minor > 1 ? 1 : minor;
    return 0;
}

/* Expects CR LF at *pp (anything else: <reason>); advances past it. */
static int expect_crlf(struct http1_message *m, const char **pp, const char *end,
                       const char *reason)
{
    const char *p = *pp;
    if (p == end)
        return HTTP1_AGAIN;
    if (*p != '\r')
        return unexpected(m, p, end, reason, reason);
    if (p + 1 == end)
        return HTTP1_AGAIN;
    if (p[1] != '\n')
        return fail(m, 400, R_BARE_CR);
    *pp = p + 2;
    return 0;
}

/* request-line = method SP request-target SP HTTP-version CRLF */
static int parse_request_line(struct http1_request *req, const char **pp, const char *end,
                              size_t max_uri)
{
    struct http1_message *m = &req->msg;
    const char *p = *pp, *start = p;
    int r, major, minor;

    while (p < end && is_token((unsigned char)*p))
        p++;
    if (p == end)
        return HTTP1_AGAIN;
    if (*p != ' ' || p == start)
        return unexpected(m, p, end, R_REQUEST_LINE, R_METHOD);
    req->method = slice(start, p);
    req->method_id = method_id(start, (size_t)(p - start));

    /* The target is any run of visible bytes (obs-text included, as
     * clients send raw UTF-8); the router interprets it. Its length is
     * checked before its end is seen so a huge target is refused early. */
    start = ++p;
    p = find_ctl_or_sp(p, end);
    if ((size_t)(p - start) > max_uri)
        return fail(m, 414, R_URI_TOO_LONG);
    if (p == end)
        return HTTP1_AGAIN;
    if (*p != ' ')
        return unexpected(m, p, end, R_REQUEST_LINE, R_TARGET_CHAR);
    if (p == start)
        return fail(m, 400, R_TARGET_EMPTY);
    req->target = slice(start, p);

    p++;
    r = parse_version(m, &p, end, &major, &minor);
    if (r)
        return r;
    r = expect_crlf(m, &p, end, R_VERSION);
    if (r)
        return r;
    r = check_version(m, major, minor, 505);
    if (r)
        return r;
    *pp = p;
    return 0;
}

/* status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF.
 * The SP before an empty reason is often left out; accepted. */
static int parse_status_line(struct http1_response *res, const char **pp, const char *end)
{
    struct http1_message *m = &res->msg;
    const char *p = *pp, *start;
    int r, major, minor;

    r = parse_version(m, &p, end, &major, &minor);
    if (r)
        return r;
    if (p == end)
        return HTTP1_AGAIN;
    if (*p != ' ')
        return unexpected(m, p, end, R_STATUS_LINE, R_VERSION);
    r = check_version(m, major, minor, 502);
    if (r)
        return r;
    p++;

    res->status = 0;
    for (int i = 0; i < 3; i++, p++) {
        if (p == end)
            return HTTP1_AGAIN;
        if (!is_digit(*p))
            return unexpected(m, p, end, R_STATUS, R_STATUS);
        res->status = res->status * 10 + (*p - '0');
    }
    if (p == end)
        return HTTP1_AGAIN;
    if (*p != ' ' && *p != '\r')
        return unexpected(m, p, end, R_STATUS, R_STATUS);
    if (res->status < STATUS_MIN || res->status > STATUS_MAX)
        return fail(m, 400, R_STATUS);
    if (*p == ' ')
        p++;

    start = p;
    for (;;) {
        p = find_ctl(p, end);
        if (p == end)
            return HTTP1_AGAIN;
        if (*p != '\t')
            break;
        p++;
    }
    if (*p != '\r')
        return unexpected(m, p, end, R_REASON_CTL, R_REASON_CTL);
    res->reason = slice(start, p);
    r = expect_crlf(m, &p, end, R_REASON_CTL);
    if (r)
        return r;
    *pp = p;
    return 0;
}

/* What the field lines of one head have said so far. */
struct fields {
    struct http1_message *m;
    size_t max_headers;
    bool request;
    unsigned hosts;
    struct http1_slice host;
    bool expect_continue;
    bool te_chunked;      /* chunked is among the transfer codings */
    bool te_last_chunked; /* ... and is the last one so far */
};

static int on_host(struct fields *f, struct http1_slice v)
{
    /* One Host only (RFC 9112 section 3.2); restricted to what a host and
     * port can hold, because the router acts on it. */
    if (!f->request)
        return 0;
    if (++f->hosts > 1)
        return fail(f->m, 400, R_HOST_MULTIPLE);
    for (size_t i = 0; i < v.len; i++)
        if (!(cclass[(unsigned char)v.ptr[i]] & CC_HOST))
            return fail(f->m, 400, R_HOST_INVALID);
    f->host = v;
    return 0;
}

/* Content-Length = 1*DIGIT (RFC 9110 section 8.6). Lists are not accepted;
 * repeated fields must carry the same value. */
static int on_content_length(struct fields *f, struct http1_slice v)
{
    struct http1_message *m = f->m;
    uint64_t n = 0;
    if (v.len == 0)
        return fail(m, 400, R_CL_INVALID);
    for (size_t i = 0; i < v.len; i++) {
        if (!is_digit(v.ptr[i]))
            return fail(m, 400, R_CL_INVALID);
        unsigned d = (unsigned)(v.ptr[i] - '0');
        if (n > (UINT64_MAX - d) / 10)
            return fail(m, 400, R_CL_OVERFLOW);
        n = n * 10 + d;
    }
    if ((m->flags & HTTP1_F_HAS_CL) && m->content_length != n)
        return fail(m, 400, R_CL_DIFFERENT);
    m->flags |= HTTP1_F_HAS_CL;
    m->content_length = n;
    return 0;
}

/* Transfer-Encoding = #transfer-coding; several fields form one list. */
static int on_transfer_encoding(struct fields *f, struct http1_slice v)
{
    struct http1_message *m = f->m;
    const char *p = v.ptr, *end = v.ptr + v.len;
    struct http1_slice el;

    m->flags |= HTTP1_F_HAS_TE;
    while (http1_list_next(&p, end, &el)) {
        size_t k, n = sizeof(known_codings) / sizeof(known_codings[0]);
        for (size_t i = 0; i < el.len; i++)
            if (!is_token((unsigned char)el.ptr[i]))
                return fail(m, 400, R_TE_MALFORMED); /* no known coding takes parameters */
        for (k = 0; k < n; k++)
            if (http1_slice_eq(el, known_codings[k]))
                break;
        if (k == n)
            return fail(m, 501, R_TE_UNKNOWN);
        /* chunked must not be applied twice (RFC 9112 section 6.1) */
        if (k == 0 && f->te_chunked)
            return fail(m, 400, R_TE_CHUNKED_TWICE);
        f->te_chunked |= k == 0;
        f->te_last_chunked = k == 0;
    }
    return 0;
}

/* <el> (a slice of a field value, so free of CTLs) equals the lower-case
 * literal <lit> of length <len>, ignoring case. name_is() is exact here
 * too: the bytes it could confuse with '-' or a digit are CTLs. */
static inline bool token_is(struct http1_slice el, const char *lit, size_t len)
{
    return el.len == len && name_is(el.ptr, lit, len);
}

static void on_connection(struct fields *f, struct http1_slice v)
{
    struct http1_message *m = f->m;
    const char *p = v.ptr, *end = v.ptr + v.len;
    struct http1_slice el;

    m->connection = v;
    while (http1_list_next(&p, end, &el)) {
        if (token_is(el, "close", 5))
            m->flags |= HTTP1_F_CONN_CLOSE;
        else if (token_is(el, "keep-alive", 10))
            m->flags |= HTTP1_F_CONN_KEEPALIVE;
        else if (token_is(el, "upgrade", 7))
            m->flags |= HTTP1_F_CONN_UPGRADE;
    }
}

/* The fields that matter to framing and routing, recognised by length
 * first so most names cost one switch. */
static int on_field(struct fields *f, const char *n, size_t len, struct http1_slice v)
{
    switch (len) {
    case 4:
        if (name_is(n, "host", 4))
            return on_host(f, v);
        break;
    case 6:
        if (name_is(n, "expect", 6) && http1_list_has_token(v, "100-continue"))
            f->expect_continue = true;
        break;
    case 7:
        if (name_is(n, "upgrade", 7)) {
            f->m->flags |= HTTP1_F_HAS_UPGRADE;
            f->m->upgrade = v;
        }
        break;
    case 10:
        if (name_is(n, "connection", 10))
            on_connection(f, v);
        break;
    case 14:
        if (name_is(n, "content-length", 14))
            return on_content_length(f, v);
        break;
    case 17:
        if (name_is(n, "transfer-encoding", 17))
            return on_transfer_encoding(f, v);
        break;
    }
    return 0;
}

/* Why the byte at <p> (< end) cannot continue a field name starting at
 * <name>. */
static int bad_name_byte(struct http1_message *m, const char *name, const char *p, const char *end)
{
    unsigned char c = (unsigned char)*p;
    if (is_ows(*p))
        return fail(m, 400, p == name ? R_OBS_FOLD : R_NAME_WS);
    if (c == '\0')
        return fail(m, 400, R_FIELD_NUL);
    if (c == '\r' || c == '\n')
        return unexpected(m, p, end, R_NO_COLON, R_NO_COLON);
    if (cclass[c] & CC_CTL)
        return fail(m, 400, R_FIELD_CTL);
    return fail(m, 400, R_NAME_CHAR);
}

/* Parses field lines from <p> up to and including the empty line that ends
 * the head; sets head_len. */
static int parse_fields(const char *buf, const char *p, const char *end, struct fields *f)
{
    struct http1_message *m = f->m;

    for (;;) {
        const char *name, *colon, *value, *vend;
        struct http1_header *h;
        int r;

        if (p == end)
            return HTTP1_AGAIN;
        if (*p == '\r') {
            if (p + 1 == end)
                return HTTP1_AGAIN;
            if (p[1] != '\n')
                return fail(m, 400, R_BARE_CR);
            m->head_len = (size_t)(p + 2 - buf);
            return 0;
        }

        name = p;
        p = find_non_token(p, end);
        if (p == end)
            return HTTP1_AGAIN;
        if (*p != ':')
            return bad_name_byte(m, name, p, end);
        if (p == name)
            return fail(m, 400, R_NAME_EMPTY);
        if (m->num_headers == f->max_headers)
            return fail(m, 431, R_TOO_MANY_FIELDS);

        colon = p++;
        while (p < end && is_ows(*p))
            p++;
        value = p;
        for (;;) {
            p = find_ctl(p, end);
            if (p == end)
                return HTTP1_AGAIN;
            if (*p != '\t')
                break;
            p++;
        }
        if (*p != '\r') {
            if (*p == '\0')
                return fail(m, 400, R_FIELD_NUL);
            return unexpected(m, p, end, R_FIELD_CTL, R_FIELD_CTL);
        }
        if (p + 1 == end)
            return HTTP1_AGAIN;
        if (p[1] != '\n')
            return fail(m, 400, R_BARE_CR);
        vend = p;
        while (vend > value && is_ows(vend[-1]))
            vend--;

        h = &m->headers[m->num_headers++];
        h->name = slice(name, colon);
        h->value = slice(value, vend);
        r = on_field(f, name, (size_t)(colon - name), h->value);
        if (r)
            return r;
        p += 2;
    }
}

/* RFC 9112 section 9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only
 * with "keep-alive". A body delimited by the close never persists. */
static void set_keep_alive(struct http1_message *m)
{
    bool keep;
    if (m->flags & HTTP1_F_CONN_CLOSE)
        keep = false;
    else if (m->minor_version >= 1)
        keep = true;
    else
        keep = m->flags & HTTP1_F_CONN_KEEPALIVE;
    if (m->framing == HTTP1_BODY_UNTIL_CLOSE)
        keep = false;
    if (keep)
        m->flags |= HTTP1_F_KEEP_ALIVE;
}

/* Length of the "http://" or "https://" prefix of <t> (any case), or 0. */
static size_t http_scheme_len(struct http1_slice t)
{
    if (t.len >= 7 && name_is(t.ptr, "http://", 7))
        return 7;
    if (t.len >= 8 && name_is(t.ptr, "https://", 8))
        return 8;
    return 0;
}

/* An absolute-form target (RFC 9112 section 3.2.2) names the host itself:
 * its authority wins over any Host field, and what is forwarded is the
 * origin-form, so the backend and usher route on the same name. Only the
 * http(s) schemes are recognised; other targets are left as they are. */
static int split_absolute_form(struct http1_request *req)
{
    size_t skip = http_scheme_len(req->target);
    if (skip == 0)
        return 0;
    const char *a = req->target.ptr + skip, *end = req->target.ptr + req->target.len, *p = a;
    while (p < end && *p != '/' && *p != '?')
        p++;
    /* no userinfo (RFC 9110 section 4.2.4), no empty host (4.2.1) */
    if (p == a)
        return fail(&req->msg, 400, R_AUTHORITY_INVALID);
    for (const char *q = a; q < p; q++)
        if (!(cclass[(unsigned char)*q] & CC_HOST))
            return fail(&req->msg, 400, R_AUTHORITY_INVALID);
    req->host = slice(a, p);
    req->target = slice(p, end);
    req->msg.flags |= HTTP1_F_ABSOLUTE_FORM;
    return 0;
}

/* Checks that need the whole head, and the framing (RFC 9112 section 6.3). */
static int finish_request(struct http1_request *req, struct fields *f)
{
    struct http1_message *m = &req->msg;

    if (m->minor_version >= 1 && f->hosts == 0)
        return fail(m, 400, R_HOST_MISSING);
    req->host = f->host;
    if (split_absolute_form(req) < 0)
        return HTTP1_ERROR;
    if (m->flags & HTTP1_F_HAS_TE) {
        if (m->flags & HTTP1_F_HAS_CL)
            return fail(m, 400, R_CL_AND_TE);
        /* RFC 9112 section 6.1: HTTP/1.0 framing with TE is faulty */
        if (m->minor_version == 0)
            return fail(m, 400, R_TE_HTTP10);
        if (!f->te_last_chunked)
            return fail(m, 400, R_TE_NOT_CHUNKED);
        m->framing = HTTP1_BODY_CHUNKED;
    } else if (m->flags & HTTP1_F_HAS_CL) {
        m->framing = HTTP1_BODY_LENGTH;
    } else {
        m->framing = HTTP1_BODY_NONE;
    }
    /* RFC 9110 section 10.1.1: ignore 100-continue from an HTTP/1.0 client */
    if (f->expect_continue && m->minor_version >= 1)
        m->flags |= HTTP1_F_EXPECT_CONTINUE;
    set_keep_alive(m);
    return 0;
}

static int finish_response(struct http1_response *res, enum http1_method req_method,
                           struct fields *f)
{
    struct http1_message *m = &res->msg;
    int st = res->status;

    if (m->flags & HTTP1_F_HAS_TE) {
        if (m->flags & HTTP1_F_HAS_CL)
            return fail(m, 502, R_CL_AND_TE);
        if (m->minor_version == 0)
            return fail(m, 502, R_TE_HTTP10);
    }
    if (req_method == HTTP1_METHOD_HEAD || st < 200 || st == 204 || st == 304)
        m->framing = HTTP1_BODY_NONE;
    else if (req_method == HTTP1_METHOD_CONNECT && st < 300)
        m->framing = HTTP1_BODY_UNTIL_CLOSE; /* a tunnel */
    else if (m->flags & HTTP1_F_HAS_TE)
        m->framing = f->te_last_chunked ? HTTP1_BODY_CHUNKED : HTTP1_BODY_UNTIL_CLOSE;
    else if (m->flags & HTTP1_F_HAS_CL)
        m->framing = HTTP1_BODY_LENGTH;
    else
        m->framing = HTTP1_BODY_UNTIL_CLOSE;
    set_keep_alive(m);
    return 0;
}

static void message_reset(struct http1_message *m)
{
    struct http1_header *headers = m->headers;
    memset(m, 0, sizeof(*m));
    m->headers = headers;
    m->framing = HTTP1_BODY_NONE;
}

/* The head did not end within the data: too large once the data reaches
 * the limit, else wait for more. */
static int need_more(struct http1_message *m, size_t len, size_t max, int status,
                     const char *reason)
{
    if (len > 0 && len >= max)
        return fail(m, status, reason);
    return HTTP1_AGAIN;
}

int http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
                        struct http1_request *req)
{
    struct http1_message *m = &req->msg;
    struct fields f = {.m = m, .max_headers = lim->max_headers, .request = true};
    const char *p, *end;
    int r;

    message_reset(m);
    req->method = req->target = req->host = (struct http1_slice){buf, 0};
    req->method_id = HTTP1_METHOD_OTHER;
    if (len == 0)
        return HTTP1_AGAIN;

    p = buf;
    end = buf + (len < lim->max_head_bytes ? len : lim->max_head_bytes);
    /* RFC 9112 section 2.2: empty lines before a request line are ignored
     * (some clients send a CRLF after a body). */
    while (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
        p += 2;
    r = parse_request_line(req, &p, end, lim->max_uri_bytes);
    if (r == 0)
        r = parse_fields(buf, p, end, &f);
    if (r == 0)
        r = finish_request(req, &f);
    if (r == HTTP1_AGAIN)
        r = need_more(m, len, lim->max_head_bytes, 431, R_HEAD_TOO_LARGE);
    return r;
}

int http1_parse_response(const char *buf, size_t len, const struct http1_limits *lim,
                         enum http1_method req_method, struct http1_response *res)
{
    struct http1_message *m = &res->msg;
    struct fields f = {.m = m, .max_headers = lim->max_headers, .request = false};
    const char *p, *end;
    int r;

    message_reset(m);
    res->status = 0;
    res->reason = (struct http1_slice){buf, 0};
    if (len == 0)
        return HTTP1_AGAIN;

    p = buf;
    end = buf + (len < lim->max_head_bytes ? len : lim->max_head_bytes);
    r = parse_status_line(res, &p, end);
    if (r == 0)
        r = parse_fields(buf, p, end, &f);
    if (r == 0)
        r = finish_response(res, req_method, &f);
    if (r == HTTP1_AGAIN)
        r = need_more(m, len, lim->max_head_bytes, 502, R_RESP_TOO_LARGE);
    if (r == HTTP1_ERROR)
        m->error_status = 502; /* whatever is wrong with a response is the backend's fault */
    return r;
}

/* Reason phrases of RFC 9110 section 15 (plus 102, 103, 418, 425, 428,
 * 429 from their own RFCs). */
static const struct {
    short status;
    const char *text;
} status_texts[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {102, "Processing"},
    {103, "Early Hints"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {305, "Use Proxy"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {418, "I'm a teapot"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Content"},
    {425, "Too Early"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

const char *http1_status_text(int status)
{
    for (size_t i = 0; i < sizeof(status_texts) / sizeof(status_texts[0]); i++)
        if (status_texts[i].status == status)
            return status_texts[i].text;
    return "Unknown";
}

/* ---- chunked transfer coding (RFC 9112 section 7.1) ---------------------- */

enum chunked_state {
    CS_SIZE_FIRST = 0, /* first hex digit of a chunk-size (0: a zeroed struct is ready) */
    CS_SIZE,           /* more hex digits, or what ends the size */
    CS_SIZE_BWS,       /* whitespace after the size: only ';' may follow */
    CS_EXT,            /* chunk extensions, up to CR */
    CS_SIZE_LF,        /* LF ending the size line */
    CS_DATA,           /* chunk_left bytes of data */
    CS_DATA_CR,        /* CR after the data */
    CS_DATA_LF,        /* LF after the data */
    CS_TRAILER,        /* start of a trailer line, or of the final CRLF */
    CS_TRAILER_NAME,   /* trailer field name, up to ':' */
    CS_TRAILER_VALUE,  /* trailer field value, up to CR */
    CS_TRAILER_LF,     /* LF ending a trailer line */
    CS_END_LF,         /* LF ending the body */
    CS_DONE,           /* body complete */
    CS_ERROR,          /* invalid framing seen; error_reason says why */
};

const char *http1_chunked_state_str(const struct http1_chunked *c)
{
    switch ((enum chunked_state)c->state) {
    case CS_SIZE_FIRST:
        return "size-first";
    case CS_SIZE:
        return "size";
    case CS_SIZE_BWS:
        return "size-bws";
    case CS_EXT:
        return "ext";
    case CS_SIZE_LF:
        return "size-lf";
    case CS_DATA:
        return "data";
    case CS_DATA_CR:
        return "data-cr";
    case CS_DATA_LF:
        return "data-lf";
    case CS_TRAILER:
        return "trailer";
    case CS_TRAILER_NAME:
        return "trailer-name";
    case CS_TRAILER_VALUE:
        return "trailer-value";
    case CS_TRAILER_LF:
        return "trailer-lf";
    case CS_END_LF:
        return "end-lf";
    case CS_DONE:
        return "done";
    case CS_ERROR:
        return "error";
    }
    return "?";
}

void http1_chunked_init(struct http1_chunked *c)
{
    memset(c, 0, sizeof(*c));
    c->state = CS_SIZE_FIRST;
}

static int hex_value(unsigned char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch |= 0x20;
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

/* Reason for a byte that cannot appear in a trailer field value. */
static const char *bad_value_byte(unsigned char ch)
{
    if (ch == '\n')
        return R_BARE_LF;
    return ch == '\0' ? R_FIELD_NUL : R_FIELD_CTL;
}

/* Reason for a byte that cannot continue a trailer field name; <first>:
 * it would start the line. */
static const char *bad_trailer_name_byte(unsigned char ch, bool first)
{
    if (ch == ' ' || ch == '\t')
        return first ? R_OBS_FOLD : R_NAME_WS;
    if (ch == '\n')
        return R_BARE_LF;
    if (ch == '\r')
        return R_NO_COLON;
    if (ch == '\0')
        return R_FIELD_NUL;
    if (cclass[ch] & CC_CTL)
        return R_FIELD_CTL;
    return R_NAME_CHAR;
}

/* Steps the size-line and trailer states over one byte; returns the
 * rejection reason or NULL. */
static const char *chunked_step(struct http1_chunked *c, unsigned char ch)
{
    int d;

    switch ((enum chunked_state)c->state) {
    case CS_SIZE_FIRST:
        d = hex_value(ch);
        if (d < 0)
            return ch == '\n' ? R_BARE_LF : R_CHUNK_SIZE;
        c->chunk_left = (uint64_t)d;
        c->line_len = 1;
        c->state = CS_SIZE;
        return NULL;
    case CS_SIZE:
    case CS_SIZE_BWS:
    case CS_EXT:
        if (++c->line_len > CHUNK_LINE_MAX)
            return R_CHUNK_LINE_LONG;
        if (ch == '\r') {
            if (c->state == CS_SIZE_BWS)
                return R_CHUNK_SIZE;
            c->state = CS_SIZE_LF;
            return NULL;
        }
        if (ch == '\n')
            return R_BARE_LF;
        if (c->state == CS_EXT)
            return ch != '\t' && (cclass[ch] & CC_CTL) ? R_CHUNK_EXT : NULL;
        if (ch == ';') {
            c->state = CS_EXT;
            return NULL;
        }
        /* BWS before ';' (RFC 9112 section 7.1.1), nothing else */
        if (ch == ' ' || ch == '\t') {
            c->state = CS_SIZE_BWS;
            return NULL;
        }
        d = hex_value(ch);
        if (d < 0 || c->state == CS_SIZE_BWS)
            return R_CHUNK_SIZE;
        if (c->chunk_left >> 60) /* a 17th significant hex digit */
            return R_CHUNK_SIZE_OVERFLOW;
        c->chunk_left = c->chunk_left << 4 | (uint64_t)d;
        return NULL;
    case CS_SIZE_LF:
        if (ch != '\n')
            return R_BARE_CR;
        c->line_len = 0;
        c->state = c->chunk_left ? CS_DATA : CS_TRAILER;
        return NULL;
    case CS_DATA_CR:
        if (ch != '\r')
            return R_CHUNK_DATA_CRLF;
        c->state = CS_DATA_LF;
        return NULL;
    case CS_DATA_LF:
        if (ch != '\n')
            return R_CHUNK_DATA_CRLF;
        c->state = CS_SIZE_FIRST;
        return NULL;
    case CS_TRAILER:
        if (ch == '\r') {
            c->state = CS_END_LF;
            return NULL;
        }
        if (ch == ':')
            return R_NAME_EMPTY;
        if (!is_token(ch))
            return bad_trailer_name_byte(ch, true);
        c->line_len = 1;
        c->state = CS_TRAILER_NAME;
        return NULL;
    case CS_TRAILER_NAME:
    case CS_TRAILER_VALUE:
        if (++c->line_len > CHUNK_LINE_MAX)
            return R_TRAILER_LONG;
        if (c->state == CS_TRAILER_NAME) {
            if (ch == ':')
                c->state = CS_TRAILER_VALUE;
            else if (!is_token(ch))
                return bad_trailer_name_byte(ch, false);
            return NULL;
        }
        if (ch == '\r')
            c->state = CS_TRAILER_LF;
        else if (ch != '\t' && (cclass[ch] & CC_CTL))
            return bad_value_byte(ch);
        return NULL;
    case CS_TRAILER_LF:
        if (ch != '\n')
            return R_BARE_CR;
        c->line_len = 0;
        c->state = CS_TRAILER;
        return NULL;
    case CS_END_LF:
        if (ch != '\n')
            return R_BARE_CR;
        c->state = CS_DONE;
        return NULL;
    case CS_DATA:
    case CS_DONE:
    case CS_ERROR:
        break;
    }
    return R_CHUNK_SIZE; /* not reached: the caller handles these states */
}

/* One step of the scanner over <buf>: up to the end of the body, the end of
 * one run of chunk data, or (<stop_at_trailer>) the start of a trailer
 * line, whichever is first. */
static int decode(struct http1_chunked *c, const char *buf, size_t len, size_t *consumed,
                  size_t *data_off, size_t *data_len, bool stop_at_trailer)
{
    size_t i = 0;

    *consumed = *data_off = *data_len = 0;
    if (c->state == CS_ERROR)
        return HTTP1_ERROR;
    while (i < len && c->state != CS_DONE) {
        if (c->state == CS_DATA) {
            uint64_t n = len - i;
            if (n > c->chunk_left)
                n = c->chunk_left;
            *data_off = i;
            *data_len = (size_t)n;
            i += (size_t)n;
            c->chunk_left -= n;
            c->data_bytes += n;
            if (c->chunk_left == 0)
                c->state = CS_DATA_CR;
            break; /* one data run per call */
        }
        const char *reason = chunked_step(c, (unsigned char)buf[i]);
        if (reason) {
            c->state = CS_ERROR;
            c->error_reason = reason;
            *consumed = i;
            return HTTP1_ERROR;
        }
        i++;
        if (stop_at_trailer && c->state == CS_TRAILER)
            break;
    }
    *consumed = i;
    return c->state == CS_DONE ? HTTP1_OK : HTTP1_AGAIN;
}

int http1_chunked_scan(struct http1_chunked *c, const char *buf, size_t len, size_t *consumed)
{
    /* decode, ignoring where the payload is: one call per chunk */
    size_t pos = 0, used, off, data_len;
    int rc;
    do {
        rc = decode(c, buf + pos, len - pos, &used, &off, &data_len, false);
        pos += used;
    } while (rc == HTTP1_AGAIN && pos < len);
    *consumed = pos;
    return rc;
}

int http1_chunked_decode(struct http1_chunked *c, const char *buf, size_t len, size_t *consumed,
                         size_t *data_off, size_t *data_len)
{
    return decode(c, buf, len, consumed, data_off, data_len, false);
}

int http1_chunked_filter(struct http1_chunked *c, char *buf, size_t *len, size_t *consumed,
                         http1_field_pred drop)
{
    size_t pos = 0, used, off, data_len;
    int rc = c->state == CS_ERROR ? HTTP1_ERROR : HTTP1_AGAIN;

    while (rc == HTTP1_AGAIN && pos < *len) {
        if (c->state != CS_TRAILER || buf[pos] == '\r') {
            rc = decode(c, buf + pos, *len - pos, &used, &off, &data_len, true);
            pos += used;
            continue;
        }
        /* A trailer line is judged whole, so its bytes are held back (not
         * consumed) until its LF is here. */
        const char *lf = memchr(buf + pos, '\n', *len - pos);
        if (!lf) {
            /* scan a copy: invalid bytes and an overlong line fail now,
             * not once the buffer is full */
            struct http1_chunked probe = *c;
            if (decode(&probe, buf + pos, *len - pos, &used, &off, &data_len, true) ==
                HTTP1_ERROR) {
                *c = probe;
                pos += used;
                rc = HTTP1_ERROR;
            }
            break;
        }
        size_t line = (size_t)(lf + 1 - (buf + pos));
        rc = decode(c, buf + pos, line, &used, &off, &data_len, true);
        if (rc == HTTP1_ERROR) {
            pos += used;
            break;
        }
        /* the scanner accepted the line: it holds a name and a colon */
        const char *colon = memchr(buf + pos, ':', line);
        if (drop((struct http1_slice){buf + pos, (size_t)(colon - (buf + pos))})) {
            memmove(buf + pos, buf + pos + line, *len - pos - line);
            *len -= line;
        } else {
            pos += line;
        }
    }
    *consumed = pos;
    return rc;
}
