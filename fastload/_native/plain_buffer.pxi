# Included by the bridges that hand buffers to C: only plain data (bytes, numbers,
# characters) may be read or written as raw memory. An element of an object array is a
# PyObject pointer: C writing bytes over it corrupts reference counts (a crash later),
# C reading it copies addresses. Ask for buffers with PyBUF_FORMAT and check them here.
from cpython.buffer cimport PyBuffer_Release

# struct / PEP 3118 codes of plain values, with byte order, counts, shapes and records
cdef bytes _PLAIN_CODES = b"xcbB?hHiIlLqQnNefdgspZwut{}()0123456789@=<>!^ ,T"


cdef str _plain_format_fault(const char *fmt):
    """Why a buffer format is not plain data, or None when it is (NULL means bytes)."""
    cdef Py_ssize_t i = 0
    cdef bint in_name = False
    cdef char c
    if fmt == NULL or (fmt[1] == 0 and (fmt[0] == b"B" or fmt[0] == b"b" or fmt[0] == b"c")):
        return None
    while fmt[i] != 0:
        c = fmt[i]
        i += 1
        if c == b":":  # a record field's name, between colons
            in_name = not in_name
        elif in_name:
            continue
        elif c == b"O":
            return "it holds Python objects (an object array?)"
        elif c == b"P" or c == b"&":
            return "it holds pointers"
        elif c not in _PLAIN_CODES:
            return f"format code {chr(c)!r} is not plain data"
    return None


cdef int _check_plain(Py_buffer *view, str what) except -1:
    """Release ``view`` and raise TypeError when it does not hold plain data."""
    fault = _plain_format_fault(view.format)
    if fault is not None:
        fmt = view.format.decode("ascii", "replace")
        PyBuffer_Release(view)
        raise TypeError(f"{what}: a buffer of format {fmt!r} cannot be read or written as raw "
                        f"bytes: {fault}")
    return 0


def plain_format_fault(str fmt):
    """Why a buffer of struct format ``fmt`` is not plain data, or None when it is."""
    cdef bytes b = fmt.encode("ascii", "replace")
    return _plain_format_fault(b)
