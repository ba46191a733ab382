/* Certificate sets: see certs.h for the rules and the choice of callback.
 *
 * Layout: one struct cert per certificate (its info, its SSL_CTX), all in
 * one array of the set. Every context of the set carries its struct cert in
 * ex_data (ctx -> cert -> set: what a connection needs for the 421 rule),
 * and the default context also owns the set (an ex_data entry with a free
 * function): when OpenSSL frees the default context, the rest goes too.
 * Every SSL accepted from the set holds the default context (OpenSSL's
 * session context never changes after SSL_new), so nothing of a set is
 * freed while a connection it served still lives. */
#include "certs.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hostidx.h"
#include "route.h"

const char cert_refused_no_sni[] = "no_sni";
const char cert_refused_unknown_sni[] = "unknown_sni";

/* RFC 6066 section 3: server_name extension, NameType host_name. */
#define SNI_HOST_NAME 0

struct cert {
    struct cert_info info;
    SSL_CTX *ctx;
    struct cert_set *set;
    long index;
};

struct cert_set {
    struct cert *certs; /* [0] the default */
    size_t n;
    struct hostidx *idx; /* name -> struct cert */
    bool strict;
    unsigned char *alpn_list; /* the params' copy; alpn points at it */
    struct tls_alpn_list alpn;
};

/* OpenSSL's ex_data indexes, registered once per process (read-only
 * afterwards): the only state of this module outside its sets. */
static CRYPTO_ONCE once = CRYPTO_ONCE_STATIC_INIT;
static int cert_index = -1;   /* SSL_CTX -> its struct cert */
static int owner_index = -1;  /* the default SSL_CTX -> the set it owns (freed with it) */
static int refuse_index = -1; /* SSL -> why strict_sni refused it (static string) */

static void set_destroy(struct cert_set *set, bool with_default);

static void owner_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    if (ptr)
        set_destroy(ptr, false); /* OpenSSL is freeing the default context itself */
}

static void indexes_init(void)
{
    cert_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    owner_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, owner_free);
    refuse_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static bool indexes_ready(void)
{
    return CRYPTO_THREAD_run_once(&once, indexes_init) && cert_index >= 0 && owner_index >= 0 &&
           refuse_index >= 0;
}

static void info_clear(struct cert_info *ci)
{
    for (size_t i = 0; i < ci->num_names; i++)
        free(ci->names[i]);
    free(ci->names);
    free((char *)ci->cert);
    free((char *)ci->key);
    memset(ci, 0, sizeof(*ci));
}

/* Frees <set> and its contexts; the default one too unless OpenSSL is
 * freeing it (then this runs from its ex_data free function). */
static void set_destroy(struct cert_set *set, bool with_default)
{
    for (size_t i = 0; i < set->n; i++) {
        struct cert *c = &set->certs[i];
        info_clear(&c->info);
        if (c->ctx && (i > 0 || with_default))
            SSL_CTX_free(c->ctx);
    }
    hostidx_free(set->idx);
    free(set->certs);
    free(set->alpn_list);
    free(set);
}

/* ---- selection -------------------------------------------------------- */

static struct cert *lookup(const struct cert_set *set, const char *name, size_t len)
{
    if (len && name[len - 1] == '.')
        len--; /* "a.example." names what "a.example" names */
    return len ? hostidx_lookup(set->idx, name, len) : NULL;
}

long cert_set_select(const struct cert_set *set, const char *name, size_t len)
{
    struct cert *c = name ? lookup(set, name, len) : NULL;
    if (c)
        return c->index;
    return set->strict ? -1 : 0;
}

/* The host_name of a ClientHello's server_name extension <p>[0..<n>):
 * 1 with *<name>, *<len>; 0 when it has none; -1 when it is malformed
 * (OpenSSL's own parser refuses it a moment later). */
static int sni_parse(const unsigned char *p, size_t n, const char **name, size_t *len)
{
    if (n < 2)
        return -1;
    size_t list = (size_t)p[0] << 8 | p[1];
    if (list != n - 2)
        return -1;
    for (size_t i = 2; i + 3 <= n;) {
        unsigned type = p[i];
        size_t l = (size_t)p[i + 1] << 8 | p[i + 2];
        if (i + 3 + l > n)
            return -1;
        if (type == SNI_HOST_NAME) {
            *name = (const char *)p + i + 3;
            *len = l;
            return l ? 1 : -1;
        }
        i += 3 + l;
    }
    return 0;
}

/* Runs before OpenSSL looks at any session the client offers: see certs.h. */
static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
    const struct cert_set *set = arg;
    const unsigned char *ext = NULL;
    size_t ext_len = 0;
    const char *name = NULL;
    size_t len = 0;
    int has = 0;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &ext_len) == 1)
        has = sni_parse(ext, ext_len, &name, &len);
    if (has < 0)
        return SSL_CLIENT_HELLO_SUCCESS; /* OpenSSL answers it with decode_error */
    long i = cert_set_select(set, has ? name : NULL, len);
    if (i < 0) {
        SSL_set_ex_data(ssl, refuse_index,
                        (void *)(has ? cert_refused_unknown_sni : cert_refused_no_sni));
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_CLIENT_HELLO_ERROR;
    }
    SSL_CTX *ctx = set->certs[i].ctx;
    if (SSL_get_SSL_CTX(ssl) != ctx && SSL_set_SSL_CTX(ssl, ctx) != ctx) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* The certificate was chosen already; this only makes OpenSSL acknowledge
 * the client's server_name extension (it does so only through this
 * callback). */
static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    return SSL_TLSEXT_ERR_OK;
}

long cert_set_covering(const struct cert_set *set, const char *host, size_t len)
{
    const char *h = NULL;
    size_t n = route_host_normalize(host, len, &h);
    struct cert *c = n ? hostidx_lookup(set->idx, h, n) : NULL;
    return c ? c->index : -1;
}

static const struct cert *cert_of_ctx(const SSL_CTX *ctx)
{
    if (!ctx || cert_index < 0)
        return NULL;
    return SSL_CTX_get_ex_data(ctx, cert_index);
}

long cert_set_presented(const SSL *ssl)
{
    const struct cert *c = cert_of_ctx(SSL_get_SSL_CTX(ssl));
    return c ? c->index : -1;
}

bool cert_set_misdirected(const SSL *ssl, const char *host, size_t len)
{
    const struct cert *c = cert_of_ctx(SSL_get_SSL_CTX(ssl));
    if (!c)
        return false;
    long cover = cert_set_covering(c->set, host, len);
    return cover >= 0 && cover != c->index;
}

const char *cert_set_refusal(const SSL *ssl)
{
    return refuse_index < 0 ? NULL : SSL_get_ex_data(ssl, refuse_index);
}

/* ---- references and reading ------------------------------------------- */

struct cert_set *cert_set_ref(struct cert_set *set)
{
    if (set)
        SSL_CTX_up_ref(set->certs[0].ctx);
    return set;
}

void cert_set_free(struct cert_set *set)
{
    if (set)
        SSL_CTX_free(set->certs[0].ctx);
}

SSL_CTX *cert_set_ctx(const struct cert_set *set)
{
    return set->certs[0].ctx;
}

struct cert_set *cert_set_of(const SSL_CTX *ctx)
{
    const struct cert *c = cert_of_ctx(ctx);
    return c ? c->set : NULL;
}

size_t cert_set_count(const struct cert_set *set)
{
    return set->n;
}

const struct cert_info *cert_set_info(const struct cert_set *set, size_t i)
{
    return i < set->n ? &set->certs[i].info : NULL;
}

bool cert_set_strict(const struct cert_set *set)
{
    return set->strict;
}

/* ---- loading ------------------------------------------------------------ */

static int name_add(struct cert_info *ci, const char *name, size_t len)
{
    char **v = realloc(ci->names, (ci->num_names + 1) * sizeof(*v));
    if (!v)
        return -1;
    ci->names = v;
    if (!(v[ci->num_names] = strndup(name, len)))
        return -1;
    ci->num_names++;
    return 0;
}

/* A name as a certificate may write it: printable ASCII, no NUL inside
 * (an embedded NUL is the classic spoofing trick). */
static bool printable(const unsigned char *p, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] <= 0x20 || p[i] >= 0x7f)
            return false;
    return true;
}

/* Reads the names of <x> into <ci>: the subjectAltName DNS names, or the
 * CN when there is none (a CN with spaces, "usher test CA", is no name;
 * the index refuses other malformed ones). Returns 0 or -1 (out of
 * memory). */
static int names_read(X509 *x, struct cert_info *ci)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    bool any_dns = false;
    int rc = 0;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && rc == 0; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS)
            continue;
        any_dns = true;
        const unsigned char *p = ASN1_STRING_get0_data(g->d.dNSName);
        size_t n = (size_t)ASN1_STRING_length(g->d.dNSName);
        if (printable(p, n))
            rc = name_add(ci, (const char *)p, n);
    }
    GENERAL_NAMES_free(gens);
    if (rc < 0 || any_dns)
        return rc;
    /* RFC 6125 section 6.4.4: the CN only without a DNS subjectAltName */
    const X509_NAME *subj = X509_get_subject_name(x);
    for (int j = -1; (j = X509_NAME_get_index_by_NID(subj, NID_commonName, j)) >= 0;) {
        const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, j));
        unsigned char *utf8 = NULL;
        int n = ASN1_STRING_to_UTF8(&utf8, s);
        if (n > 0 && printable(utf8, (size_t)n))
            rc = name_add(ci, (const char *)utf8, (size_t)n);
        OPENSSL_free(utf8);
        if (rc < 0)
            return rc;
        if (ci->num_names)
            ci->names_from_cn = true;
    }
    return 0;
}

static int expiry_read(X509 *x, struct cert_info *ci)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1)
        return -1;
    ci->not_after_unix = (int64_t)timegm(&tm);
    strftime(ci->not_after, sizeof(ci->not_after), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return 0;
}

/* Everything a certificate's context needs beside the files: the set's
 * callbacks and its own session ID context. */
static int ctx_setup(struct cert_set *set, struct cert *c, X509 *x)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    if (X509_digest(x, EVP_sha256(), md, &md_len) != 1)
        return -1;
    if (md_len > SSL_MAX_SID_CTX_LENGTH)
        md_len = SSL_MAX_SID_CTX_LENGTH;
    if (SSL_CTX_set_session_id_context(c->ctx, md, md_len) != 1 ||
        SSL_CTX_set_ex_data(c->ctx, cert_index, c) != 1)
        return -1;
    SSL_CTX_set_client_hello_cb(c->ctx, client_hello_cb, set);
    SSL_CTX_set_tlsext_servername_callback(c->ctx, servername_cb);
    return 0;
}

/* Reports "file:line:column: key: reason" through <error>. */
static void report(const struct conf *conf, struct conf_pos pos, const char *key,
                   const char *reason, cert_error_fn error, void *arg)
{
    char msg[1024];
    snprintf(msg, sizeof(msg), "%s:%u:%u: %s: %s", conf->path ? conf->path : "?", pos.line,
             pos.column, key, reason);
    error(arg, msg);
}

/* Loads certificate <c> from <cert>/<key>. Returns 0, or -1 with a reason
 * in <err>. */
static int cert_load(struct cert_set *set, struct cert *c, const char *cert, const char *key,
                     bool need_names, char *err, size_t cap)
{
    /* the set outlives the config generation it was built from */
    if (!(c->info.cert = strdup(cert)) || !(c->info.key = strdup(key))) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    c->ctx = tls_server_context_new(cert, key, &set->alpn, err, cap);
    if (!c->ctx)
        return -1;
    X509 *x = SSL_CTX_get0_certificate(c->ctx);
    if (!x || expiry_read(x, &c->info) < 0) {
        snprintf(err, cap, "cannot read the certificate in %s", cert);
        return -1;
    }
    if (names_read(x, &c->info) < 0 || ctx_setup(set, c, x) < 0) {
        snprintf(err, cap, "out of memory");
        return -1;
    }
    size_t indexed = 0;
    for (size_t i = 0; i < c->info.num_names; i++) {
        const char *nm = c->info.names[i];
        int rc = hostidx_add(set->idx, nm, strlen(nm), c);
        if (rc == -ENOMEM) {
            snprintf(err, cap, "out of memory");
            return -1;
        }
        /* -EEXIST: an earlier certificate has the name (it keeps it);
         * -EINVAL: a name no SNI can match ("*", "a*.example.com") */
        if (rc == 0 || rc == -EEXIST)
            indexed++;
    }
    if (need_names && indexed == 0) {
        snprintf(err, cap,
                 "%s names no host (no subjectAltName DNS name, no host name as CN): no SNI "
                 "can select it",
                 cert);
        return -1;
    }
    return 0;
}

int cert_set_build(const struct conf *conf, size_t li, const struct cert_set_params *params,
                   struct cert_set **out, cert_error_fn error, void *arg)
{
    const struct conf_listener *cl = &conf->listeners[li];
    const struct conf_tls *t = &cl->tls;
    char key[96];
    char err[768];
    *out = NULL;
    snprintf(key, sizeof(key), "listeners[%zu].tls", li);
    struct cert_set *set = calloc(1, sizeof(*set));
    if (!indexes_ready() || !set) {
        free(set);
        report(conf, cl->pos, key, "out of memory", error, arg);
        return -1;
    }
    set->strict = t->strict_sni;
    set->n = 1 + t->num_certificates;
    set->certs = calloc(set->n, sizeof(*set->certs));
    set->idx = hostidx_new(HOSTIDX_WILDCARD_ONE_LABEL);
    if (params && params->alpn.len) {
        set->alpn_list = malloc(params->alpn.len);
        if (set->alpn_list) {
            memcpy(set->alpn_list, params->alpn.list, params->alpn.len);
            set->alpn = (struct tls_alpn_list){set->alpn_list, params->alpn.len};
        }
    }
    if (!set->certs || !set->idx || (params && params->alpn.len && !set->alpn_list)) {
        set->n = 0;
        set_destroy(set, true);
        report(conf, cl->pos, key, "out of memory", error, arg);
        return -1;
    }
    int bad = 0;
    for (size_t i = 0; i < set->n; i++) {
        set->certs[i].set = set;
        set->certs[i].index = (long)i;
    }
    /* tls.certificates first: a name two certificates share goes to the
     * first one written there, and any of them beats the default */
    for (size_t j = 0; j < t->num_certificates; j++) {
        const struct conf_certificate *cc = &t->certificates[j];
        if (cert_load(set, &set->certs[j + 1], cc->cert, cc->key, true, err, sizeof(err)) < 0) {
            char k[160];
            snprintf(k, sizeof(k), "%s.certificates[%zu]", key, j);
            report(conf, cc->pos.line ? cc->pos : cl->pos, k, err, error, arg);
            bad++;
        }
    }
    if (cert_load(set, &set->certs[0], t->cert, t->key, false, err, sizeof(err)) < 0) {
        report(conf, cl->pos, key, err, error, arg);
        bad++;
    }
    ERR_clear_error();
    if (bad || SSL_CTX_set_ex_data(set->certs[0].ctx, owner_index, set) != 1) {
        if (!bad)
            report(conf, cl->pos, key, "out of memory", error, arg);
        set_destroy(set, true);
        return -1;
    }
    *out = set; /* the default context's reference is the set's */
    return 0;
}
