# Included by the reading bridges: the destination of a read, as one writable span.
from cpython.buffer cimport PyBUF_ANY_CONTIGUOUS, PyBUF_FORMAT, PyBUF_WRITABLE, PyObject_GetBuffer

include "plain_buffer.pxi"


cdef int _get_out_buffer(object out, Py_buffer *view) except -1:
    """Fill ``view`` with ``out``'s memory (release it with PyBuffer_Release)."""
    try:
        PyObject_GetBuffer(out, view, PyBUF_WRITABLE | PyBUF_ANY_CONTIGUOUS | PyBUF_FORMAT)
    except BufferError as exc:
        raise ValueError(f"the destination buffer must be writable and contiguous: {exc}") from None
    _check_plain(view, "the destination buffer")
    return 0
