# Included by the reading bridges: the destination of a read, as one writable span.
from cpython.buffer cimport PyBUF_ANY_CONTIGUOUS, PyBUF_WRITABLE, PyObject_GetBuffer


cdef int _get_out_buffer(object out, Py_buffer *view) except -1:
    """Fill ``view`` with ``out``'s memory (release it with PyBuffer_Release)."""
    try:
        PyObject_GetBuffer(out, view, PyBUF_WRITABLE | PyBUF_ANY_CONTIGUOUS)
    except BufferError as exc:
        raise ValueError(f"the destination buffer must be writable and contiguous: {exc}") from None
    return 0
