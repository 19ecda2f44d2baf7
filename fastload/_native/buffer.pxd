cdef class AlignedBuffer:
    cdef char *ptr
    cdef size_t size
    cdef size_t mapped
    cdef int pin_mode_code
    cdef readonly object pin_error
    cdef int exports
