/*
 * curl_lazy.c — dlopen libcurl on first use. See curl_lazy.h.
 */
#include "curl_lazy.h"

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

curl_lazy_api curl_lazy;

static int g_loaded;
static char g_why[256];

/* Every entry of the table: field name, and the symbol is "curl_" name. */
#define CURL_LAZY_FNS(X)                                                                 \
    X(global_init) X(global_cleanup) X(version_info) X(easy_strerror) X(easy_init)        \
    X(easy_cleanup) X(easy_reset) X(easy_setopt) X(easy_getinfo) X(easy_send)             \
    X(easy_recv) X(multi_init) X(multi_cleanup) X(multi_setopt) X(multi_add_handle)       \
    X(multi_remove_handle) X(multi_socket_action) X(multi_info_read) X(share_init)        \
    X(share_cleanup) X(share_setopt) X(slist_append) X(slist_free_all) X(url)           \
    X(url_cleanup) X(url_set) X(url_get) X(free)

/* Compile-time only: assigning curl.h's function to the field fails to
 * compile (-Werror) when the field's type differs from its prototype. The
 * operand of sizeof is not evaluated, so nothing references libcurl. */
#define CHECK_PROTOTYPE(f) (void)sizeof(api.f = curl_##f);

static const char *failed(const char *what, const char *detail)
{
    (void)snprintf(g_why, sizeof g_why, "%s: %s", what, detail != NULL ? detail : "?");
    return g_why;
}

int curl_lazy_load_from(const char *soname, const char **why)
{
    if (g_loaded)
        return 0;
    curl_lazy_api api;
    memset(&api, 0, sizeof api);
    CURL_LAZY_FNS(CHECK_PROTOTYPE)

    void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        *why = failed("cannot load libcurl", dlerror());
        return -1;
    }
    /* POSIX guarantees a function's address survives the trip through
     * dlsym's void *; memcpy avoids the cast C itself leaves undefined. */
    _Static_assert(sizeof(void *) == sizeof(api.free), "function pointers are not void *-sized");
    static const struct {
        const char *name;
        size_t off;
    } syms[] = {
#define ENTRY(f) {"curl_" #f, offsetof(curl_lazy_api, f)},
        CURL_LAZY_FNS(ENTRY)
#undef ENTRY
    };
    _Static_assert(sizeof syms / sizeof syms[0] * sizeof(void *) == sizeof(curl_lazy_api),
                   "every field of curl_lazy_api is in CURL_LAZY_FNS");
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        void *sym = dlsym(h, syms[i].name);
        if (sym == NULL) {
            *why = failed("libcurl lacks a function", dlerror());
            goto fail;
        }
        memcpy((char *)&api + syms[i].off, &sym, sizeof sym);
    }

    const curl_version_info_data *vi = api.version_info(CURLVERSION_NOW);
    if (vi == NULL || vi->version_num < CURL_LAZY_MIN_VERSION) {
        *why = failed("libcurl too old (7.85.0 needed)", vi != NULL ? vi->version : NULL);
        goto fail;
    }
    if (api.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        *why = failed("curl_global_init failed", vi->version);
        goto fail;
    }
    curl_lazy = api;
    g_loaded = 1;
    return 0;
fail:
    (void)dlclose(h); /* nothing of it was initialised */
    return -1;
}

int curl_lazy_load(const char **why)
{
    return curl_lazy_load_from(CURL_LAZY_SONAME, why);
}

void curl_lazy_cleanup(void)
{
    if (!g_loaded)
        return;
    curl_lazy.global_cleanup();
    g_loaded = 0; /* a later load runs curl_global_init again */
}
