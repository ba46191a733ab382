// links: usher_proxy_base
/* Unit tests of proxy/log.c: the one escaper (JSON strings, invalid UTF-8
 * as U+FFFD), logfmt quoting, typed values, cut lines that stay valid, and
 * the printf shim. Lines are captured by pointing stderr at a pipe. */
#include "proxy/base/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proxy/base/buf.h"

#define CHECK_STREAM stdout /* stderr is the captured log */
#include "test/unit/check.h"

static int pipe_fd[2], saved_stderr;

/* The last line written, without the time stamp (its first 24 bytes). */
static char captured[8192];

static const char *grab(void)
{
    ssize_t n = read(pipe_fd[0], captured, sizeof(captured) - 1);
    captured[n > 0 ? n : 0] = '\0';
    return captured;
}

static bool has(const char *needle)
{
    if (strstr(captured, needle))
        return true;
    fprintf(stdout, "  not found: %s\n  in: %s", needle, captured);
    return false;
}

static void test_escape(void)
{
    char out[64];
    size_t n = log_json_escape(out, sizeof(out), "a\"b\\c\n\x01\x7f", 8);
    CHECK(n == 21 && !memcmp(out, "a\\\"b\\\\c\\n\\u0001\\u007f", n));
    n = log_json_escape(out, sizeof(out), "\xff\xc3\xa9\xed\xa0\x80\xc0\xaf", 8);
    /* U+00E9 kept; a surrogate and an overlong are invalid, byte by byte */
    CHECK(n == 6 + 2 + 6 * 3 + 6 * 2);
    CHECK(!memcmp(out, "\\ufffd\xc3\xa9\\ufffd", 14));
    /* an escape that does not fit is left out whole */
    n = log_json_escape(out, 7, "abc\"", 4);
    CHECK(n == 5 && !memcmp(out, "abc\\\"", 5));
    n = log_json_escape(out, 4, "ab\xff", 3);
    CHECK(n == 2);

    struct hbuf h = {0};
    char big[1000];
    memset(big, '"', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CHECK(log_json_str(&h, big) == 0);
    CHECK(h.len == 2 + 2 * (sizeof(big) - 1) && h.data[0] == '"' && h.data[h.len - 1] == '"');
    hbuf_free(&h);
}

static void test_text(void)
{
    log_configure(CONF_LOG_DEBUG, CONF_LOG_TEXT);
    log_kv(CONF_LOG_INFO, "ev one", LOG_STR("plain", "abc"), LOG_STR("sp", "a b"),
           LOG_STR("q", "say \"hi\""), LOG_STR("eq", "k=v"), LOG_STR("empty", ""),
           LOG_STR("null", NULL), LOG_STRN("bad", "x\xffy", 3), LOG_INT("neg", -42),
           LOG_UINT("big", 18446744073709551615ull), LOG_FLOAT("ms", 1.25, 1),
           LOG_FLOAT("z", 0.04, 1), LOG_BOOL("ok", true));
    grab();
    CHECK(has(" info ev one plain=abc sp=\"a b\" q=\"say \\\"hi\\\"\" eq=\"k=v\" empty=\"\" "
              "null=- bad=\"x\\ufffdy\" neg=-42 big=18446744073709551615 ms=1.3 z=0.0 ok=true\n"));
    log_kv(CONF_LOG_WARN, "bare");
    grab();
    CHECK(has(" warn bare\n"));
    log_configure(CONF_LOG_ERROR, CONF_LOG_TEXT);
    log_kv(CONF_LOG_WARN, "hidden", LOG_STR("x", "y"));
    log_kv(CONF_LOG_ERROR, "shown");
    grab();
    CHECK(has(" error shown\n") && !strstr(captured, "hidden"));
}

static void test_json(void)
{
    log_configure(CONF_LOG_DEBUG, CONF_LOG_JSON);
    log_kv(CONF_LOG_INFO, "access", LOG_STR("path", "/a\"b\\\xff"), LOG_INT("status", 200),
           LOG_FLOAT("ms", 12.345, 2), LOG_BOOL("tls", false));
    grab();
    CHECK(has(",\"level\":\"info\",\"event\":\"access\",\"path\":\"/a\\\"b\\\\\\ufffd\","
              "\"status\":200,\"ms\":12.35,\"tls\":false}\n"));

    /* a line over the limit is cut inside a string and still closes */
    static char huge[10000];
    memset(huge, '"', sizeof(huge) - 1);
    log_kv(CONF_LOG_INFO, "huge", LOG_STR("v", huge), LOG_STR("after", "x"));
    grab();
    size_t n = strlen(captured);
    CHECK(n <= 4096 && n > 4000);
    CHECK(!strcmp(captured + n - 3, "\"}\n"));
    CHECK(!strstr(captured, "after"));
}

static void test_shim(void)
{
    log_configure(CONF_LOG_DEBUG, CONF_LOG_JSON);
    log_info("reload", "generation=3 ok=true name=blue reason=\"out of memory\" ratio=0.5 "
                       "id=007 flag");
    grab();
    CHECK(has("\"event\":\"reload\",\"generation\":3,\"ok\":true,\"name\":\"blue\","
              "\"reason\":\"out of memory\",\"ratio\":0.5,\"id\":\"007\",\"flag\":\"\"}\n"));
    log_configure(CONF_LOG_DEBUG, CONF_LOG_TEXT);
    log_warn("x", "error=\"unknown pool \"gren\"\" n=1");
    grab();
    CHECK(has(" warn x error=\"unknown pool \\\"gren\\\"\" n=1\n"));
}

int main(void)
{
    if (pipe(pipe_fd) < 0)
        return 1;
    saved_stderr = dup(STDERR_FILENO);
    dup2(pipe_fd[1], STDERR_FILENO);
    test_escape();
    test_text();
    test_json();
    test_shim();
    dup2(saved_stderr, STDERR_FILENO);
    return check_report("test_log");
}
