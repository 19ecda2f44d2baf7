# The cancel flag the native readers poll without the GIL: C gets &token.flag
# (fl_file_opts.cancel, fl_http_opts.cancel). Other bridges cimport it from here.

cdef class CancelToken:
    cdef volatile int flag
