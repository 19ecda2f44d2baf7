/* Binding libcurl at run time (dlopen/dlsym), so no development package is
 * needed: the bridge hands in the path of the library pycurl ships, or of
 * the system's libcurl.so.4. */
#ifndef FL_CURL_H
#define FL_CURL_H

#include <stddef.h>

/* Loads libcurl from `path` and calls curl_global_init once. Not thread-safe:
 * call it under the GIL before any transfer. Returns 0, or -1 with `why` set. */
int fl_curl_load(const char *path, char *why, size_t why_len);
/* curl_version() of the loaded library, or NULL before fl_curl_load. */
const char *fl_curl_version(void);
/* The libcurl ABI constants compiled in (name, value), for tests. */
int fl_curl_abi_count(void);
const char *fl_curl_abi_name(int i);
long fl_curl_abi_value(int i);

#endif
