/* Binding libcurl at run time: dlopen the library pycurl ships (or the
 * system's) and look up the functions the transfer driver calls. */
#define _GNU_SOURCE
#include "fl_curl.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "fl_curl_abi.h"

fl_curl_api fl_curl;

int fl_curl_load(const char *path, char *why, size_t why_len) {
    if (fl_curl.lib) return 0;
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(why, why_len, "%s", dlerror());
        return -1;
    }
#define SYM(field, name)                                                              \
    do {                                                                              \
        *(void **)(&fl_curl.field) = dlsym(lib, name);                                \
        if (!fl_curl.field && strcmp(name, "curl_multi_poll") != 0) {                 \
            snprintf(why, why_len, "%s: symbol %s missing", path, name);              \
            memset(&fl_curl, 0, sizeof(fl_curl));                                     \
            dlclose(lib);                                                             \
            return -1;                                                                \
        }                                                                             \
    } while (0)
    SYM(global_init, "curl_global_init");
    SYM(version, "curl_version");
    SYM(easy_init, "curl_easy_init");
    SYM(easy_setopt, "curl_easy_setopt");
    SYM(easy_getinfo, "curl_easy_getinfo");
    SYM(easy_cleanup, "curl_easy_cleanup");
    SYM(easy_strerror, "curl_easy_strerror");
    SYM(multi_init, "curl_multi_init");
    SYM(multi_setopt, "curl_multi_setopt");
    SYM(multi_add_handle, "curl_multi_add_handle");
    SYM(multi_remove_handle, "curl_multi_remove_handle");
    SYM(multi_perform, "curl_multi_perform");
    SYM(multi_poll, "curl_multi_poll"); /* 7.66+; curl_multi_wait otherwise */
    SYM(multi_wait, "curl_multi_wait");
    SYM(multi_info_read, "curl_multi_info_read");
    SYM(multi_cleanup, "curl_multi_cleanup");
    SYM(multi_strerror, "curl_multi_strerror");
    SYM(slist_append, "curl_slist_append");
    SYM(slist_free_all, "curl_slist_free_all");
#undef SYM
    if (fl_curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(why, why_len, "%s: curl_global_init failed", path);
        memset(&fl_curl, 0, sizeof(fl_curl));
        dlclose(lib);
        return -1;
    }
    fl_curl.lib = lib;
    return 0;
}

const char *fl_curl_version(void) { return fl_curl.lib ? fl_curl.version() : NULL; }

/* The hard-coded ABI values, so a test can hold them against pycurl's. */
#define ABI(name) {#name, name}
static const struct {
    const char *name;
    long value;
} abi_table[] = {
    ABI(CURLOPT_WRITEDATA), ABI(CURLOPT_URL), ABI(CURLOPT_RANGE), ABI(CURLOPT_USERAGENT),
    ABI(CURLOPT_HTTPHEADER), ABI(CURLOPT_CAINFO), ABI(CURLOPT_WRITEFUNCTION),
    ABI(CURLOPT_HEADERFUNCTION), ABI(CURLOPT_LOW_SPEED_LIMIT), ABI(CURLOPT_LOW_SPEED_TIME),
    ABI(CURLOPT_NOPROGRESS), ABI(CURLOPT_FOLLOWLOCATION), ABI(CURLOPT_SSL_VERIFYPEER),
    ABI(CURLOPT_MAXREDIRS), ABI(CURLOPT_HTTPGET), ABI(CURLOPT_SSL_VERIFYHOST),
    ABI(CURLOPT_HTTP_VERSION), ABI(CURLOPT_BUFFERSIZE), ABI(CURLOPT_NOSIGNAL),
    ABI(CURLOPT_TCP_NODELAY), ABI(CURLOPT_CONNECTTIMEOUT_MS), ABI(CURLOPT_TCP_KEEPALIVE), ABI(CURLOPT_PIPEWAIT), ABI(CURLOPT_PATH_AS_IS),
    ABI(CURLOPT_PROTOCOLS), ABI(CURLOPT_REDIR_PROTOCOLS), ABI(CURLPROTO_HTTP), ABI(CURLPROTO_HTTPS),
    ABI(CURLINFO_RESPONSE_CODE), ABI(CURLINFO_NUM_CONNECTS), ABI(CURLMOPT_PIPELINING),
    ABI(CURLMOPT_MAXCONNECTS), ABI(CURLE_PARTIAL_FILE), ABI(CURLE_WRITE_ERROR),
    ABI(CURLE_OPERATION_TIMEDOUT), ABI(CURLE_COULDNT_CONNECT), ABI(CURLE_RECV_ERROR),
    ABI(CURLE_PEER_FAILED_VERIFICATION), ABI(CURLE_SSL_CACERT_BADFILE),
};
#undef ABI

int fl_curl_abi_count(void) { return (int)(sizeof(abi_table) / sizeof(abi_table[0])); }
const char *fl_curl_abi_name(int i) { return abi_table[i].name; }
long fl_curl_abi_value(int i) { return abi_table[i].value; }

