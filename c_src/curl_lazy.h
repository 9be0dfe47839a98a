/*
 * curl_lazy.h — libcurl loaded at the first HTTP request, not at start.
 *
 * Linked normally, libcurl makes the dynamic loader map and relocate ~30
 * libraries (nghttp2, ssh2, ldap, krb5, ...) before main(): ~25 ms of CPU
 * per spawn, for a port that may sign for minutes before its first request.
 * The port is linked without it; curl_lazy_load() dlopens libcurl.so.4,
 * resolves every function the port calls into the table `curl_lazy` and
 * runs curl_global_init. Callers use the table (`curl_lazy.easy_init()`)
 * only after a successful load. The pointer types are <curl/curl.h>'s
 * prototypes (curl_lazy.c has the compiler check each one).
 */
#ifndef IBKR_CURL_LAZY_H
#define IBKR_CURL_LAZY_H

#include <curl/curl.h>

#define CURL_LAZY_SONAME "libcurl.so.4"
/* CURLOPT_PROTOCOLS_STR, which http.c relies on, is 7.85.0. */
#define CURL_LAZY_MIN_VERSION 0x075500

typedef struct {
    CURLcode (*global_init)(long flags);
    void (*global_cleanup)(void);
    curl_version_info_data *(*version_info)(CURLversion v);
    const char *(*easy_strerror)(CURLcode rc);

    CURL *(*easy_init)(void);
    void (*easy_cleanup)(CURL *e);
    void (*easy_reset)(CURL *e);
    CURLcode (*easy_setopt)(CURL *e, CURLoption opt, ...);
    CURLcode (*easy_getinfo)(CURL *e, CURLINFO info, ...);
    CURLcode (*easy_send)(CURL *e, const void *buf, size_t len, size_t *n);
    CURLcode (*easy_recv)(CURL *e, void *buf, size_t len, size_t *n);

    CURLM *(*multi_init)(void);
    CURLMcode (*multi_cleanup)(CURLM *m);
    CURLMcode (*multi_setopt)(CURLM *m, CURLMoption opt, ...);
    CURLMcode (*multi_add_handle)(CURLM *m, CURL *e);
    CURLMcode (*multi_remove_handle)(CURLM *m, CURL *e);
    CURLMcode (*multi_socket_action)(CURLM *m, curl_socket_t s, int ev, int *running);
    CURLMsg *(*multi_info_read)(CURLM *m, int *left);

    CURLSH *(*share_init)(void);
    CURLSHcode (*share_cleanup)(CURLSH *s);
    CURLSHcode (*share_setopt)(CURLSH *s, CURLSHoption opt, ...);

    struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
    void (*slist_free_all)(struct curl_slist *l);

    CURLU *(*url)(void);
    void (*url_cleanup)(CURLU *u);
    CURLUcode (*url_set)(CURLU *u, CURLUPart what, const char *part, unsigned int flags);
    CURLUcode (*url_get)(CURLU *u, CURLUPart what, char **part, unsigned int flags);
    void (*free)(void *p);
} curl_lazy_api;

/* Valid (all non-NULL) once curl_lazy_load has returned 0. */
extern curl_lazy_api curl_lazy;

/* Loads CURL_LAZY_SONAME (first call; later calls return 0 at once). 0, or
 * -1 with *why a message for a log line (nothing loaded then; a later call
 * tries again). */
int curl_lazy_load(const char **why);
/* The same from another library file: for tests of the failure paths. */
int curl_lazy_load_from(const char *soname, const char **why);
/* curl_global_cleanup if loaded. The library stays mapped (libcurl and
 * OpenSSL register exit handlers; unloading them is not worth the risk). */
void curl_lazy_cleanup(void);

#endif
