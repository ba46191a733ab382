/* A test PKI made at test time with the OpenSSL API (no fixed keys in the
 * tree, nothing that expires), and TLS handshakes over a socketpair driven
 * from one thread: for test_certs.c, test_tlsclient.c and
 * test_health_tls.c.
 *
 *   tlsfix_dir()                   a fresh temporary directory (removed by
 *                                  tlsfix_cleanup())
 *   tlsfix_key()                   a P-256 key
 *   tlsfix_cert(...)               a certificate: CA or leaf, SAN list in
 *                                  OpenSSL's syntax ("DNS:a.test,IP:127.0.0.1")
 *   tlsfix_write(...)              its PEM files: <dir>/<stem>.pem and .key
 *   tlsfix_pair(fds)               a non-blocking socketpair
 *   tlsfix_pump(client, server)    steps both handshakes until both ended */
#ifndef USHER_TEST_TLSFIX_H
#define USHER_TEST_TLSFIX_H

#include <fcntl.h>
#include <ftw.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define TLSFIX_PATH 512

/* Every helper: static, and no warning in a test that uses only some. */
#define TLSFIX_FN __attribute__((unused)) static

/* CHECK_INT with a printf-style note on failure (check.h's takes none). */
#define CHECK_INTF(a, b, ...)                                                                      \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            char note_[1024];                                                                      \
            snprintf(note_, sizeof(note_), __VA_ARGS__);                                           \
            check_fail(__FILE__, __LINE__, NULL, "%s == %lld, expected %lld (%s)", #a, a_, b_,     \
                       note_);                                                                     \
        }                                                                                          \
    } while (0)

static char tlsfix_root[64];

TLSFIX_FN const char *tlsfix_dir(void)
{
    if (!tlsfix_root[0]) {
        snprintf(tlsfix_root, sizeof(tlsfix_root), "/tmp/usher-tlsfix-XXXXXX");
        if (!mkdtemp(tlsfix_root)) {
            perror("mkdtemp");
            exit(1);
        }
    }
    return tlsfix_root;
}

TLSFIX_FN int tlsfix_unlink(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

TLSFIX_FN void tlsfix_cleanup(void)
{
    if (tlsfix_root[0])
        nftw(tlsfix_root, tlsfix_unlink, 16, FTW_DEPTH | FTW_PHYS);
    tlsfix_root[0] = '\0';
}

TLSFIX_FN EVP_PKEY *tlsfix_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (!k) {
        fprintf(stderr, "tlsfix: cannot make a key\n");
        exit(1);
    }
    return k;
}

TLSFIX_FN void tlsfix_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    if (!e || !X509_add_ext(x, e, -1)) {
        fprintf(stderr, "tlsfix: bad extension %s\n", value);
        exit(1);
    }
    X509_EXTENSION_free(e);
}

/* A certificate for <key> with subject CN <cn> (NULL: none) and the
 * subjectAltName <san> (NULL: none), valid from an hour ago for <days>
 * days, signed by <issuer>/<issuer_key> (NULL: self-signed). <ca> makes a
 * CA. Exits on failure (a broken fixture is no test). */
TLSFIX_FN X509 *tlsfix_cert(EVP_PKEY *key, const char *cn, const char *san, long days, X509 *issuer,
                            EVP_PKEY *issuer_key, bool ca)
{
    static long serial = 1000;
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), days * 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    if (cn)
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    else
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"usher tests",
                                   -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    tlsfix_ext(x, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
    tlsfix_ext(x, &v3, NID_subject_key_identifier, "hash");
    if (ca) {
        tlsfix_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        tlsfix_ext(x, &v3, NID_key_usage, "critical,digitalSignature");
        tlsfix_ext(x, &v3, NID_ext_key_usage, "serverAuth,clientAuth");
    }
    if (san)
        tlsfix_ext(x, &v3, NID_subject_alt_name, san);
    if (!X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256())) {
        fprintf(stderr, "tlsfix: cannot sign\n");
        exit(1);
    }
    return x;
}

/* Writes <x> (and <issuer> after it when given: a chain) to
 * <dir>/<stem>.pem and <key> to <dir>/<stem>.key; the paths go to
 * <cert_out> and <key_out> (TLSFIX_PATH bytes each; either may be NULL). */
TLSFIX_FN void tlsfix_write(const char *stem, X509 *x, EVP_PKEY *key, char *cert_out, char *key_out)
{
    char c[TLSFIX_PATH], k[TLSFIX_PATH];
    snprintf(c, sizeof(c), "%s/%s.pem", tlsfix_dir(), stem);
    snprintf(k, sizeof(k), "%s/%s.key", tlsfix_dir(), stem);
    FILE *f = fopen(c, "w");
    if (!f || !PEM_write_X509(f, x) || fclose(f) != 0) {
        fprintf(stderr, "tlsfix: cannot write %s\n", c);
        exit(1);
    }
    if (key) {
        f = fopen(k, "w");
        if (!f || !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) || fclose(f) != 0) {
            fprintf(stderr, "tlsfix: cannot write %s\n", k);
            exit(1);
        }
    }
    if (cert_out)
        snprintf(cert_out, TLSFIX_PATH, "%s", c);
    if (key_out)
        snprintf(key_out, TLSFIX_PATH, "%s", k);
}

/* Writes <text> to <dir>/<name>; the path goes to <out>. */
TLSFIX_FN void tlsfix_write_text(const char *name, const char *text, char *out)
{
    snprintf(out, TLSFIX_PATH, "%s/%s", tlsfix_dir(), name);
    FILE *f = fopen(out, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "tlsfix: cannot write %s\n", out);
        exit(1);
    }
}

TLSFIX_FN void tlsfix_pair(int fds[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) < 0) {
        perror("socketpair");
        exit(1);
    }
    for (int i = 0; i < 2; i++)
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
}

/* OpenSSL's reason code of the last side that failed in tlsfix_pump (for
 * the client: the alert it read, SSL_R_TLSV1_UNRECOGNIZED_NAME...). */
static int tlsfix_client_reason, tlsfix_server_reason;

/* One handshake step of <ssl>: 1 done, 0 wants more, -1 failed (its
 * reason code in *<reason>). */
TLSFIX_FN int tlsfix_step(SSL *ssl, int *reason)
{
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    if (r == 1)
        return 1;
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    *reason = ERR_GET_REASON(ERR_peek_last_error());
    return -1;
}

/* Steps <client> and <server> in turn until both ended (bounded). Returns
 * 0 when both completed, -1 when the client failed, -2 when the server
 * failed (the other side is stepped a few more times, so it reads the
 * alert), -3 when neither moved on. */
TLSFIX_FN int tlsfix_pump(SSL *client, SSL *server)
{
    int c = 0, s = 0;
    tlsfix_client_reason = tlsfix_server_reason = 0;
    for (int i = 0; i < 200 && (c == 0 || s == 0); i++) {
        if (c == 0)
            c = tlsfix_step(client, &tlsfix_client_reason);
        if (s == 0)
            s = tlsfix_step(server, &tlsfix_server_reason);
    }
    ERR_clear_error();
    if (c == 1 && s == 1)
        return 0;
    if (s < 0)
        return -2;
    if (c < 0)
        return -1;
    return -3;
}

#endif
