# distutils: sources = csrc/fl_buffer.c
"""AlignedBuffer: 4096-byte aligned, zeroed, optionally pinned host memory."""

from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_FillInfo
from cpython.pyport cimport PY_SSIZE_T_MAX

from fastload._native.includes.fl cimport (
    FL_ALIGN, FL_PIN_CUDA, FL_PIN_MLOCK, FL_PIN_NONE, fl_buffer_alloc, fl_buffer_free,
    fl_buffer_pin, fl_buffer_unpin, fl_cuda_available,
)

include "plain_buffer.pxi"

import operator
import os

_PIN_NAMES = {FL_PIN_NONE: "none", FL_PIN_MLOCK: "mlock", FL_PIN_CUDA: "cuda"}

ALIGNMENT = FL_ALIGN


def cuda_available():
    """True when a CUDA runtime with at least one device can be loaded."""
    return bool(fl_cuda_available())


cdef class AlignedBuffer:
    """Writable host memory, 4096-byte aligned and zeroed, exposed through the buffer protocol.

    From 2 MiB it is mapped on huge pages (``hugepages``) and faulted in at once
    (``prefault``), so reads into it do not pay for page faults one page at a time;
    smaller buffers are never pre-faulted (their first read faults the few pages).

    ``numpy.asarray(buf)`` and ``memoryview(buf)`` are zero-copy; the memory is
    freed when the last view is gone. With ``pin=True`` the pages are locked:
    registered with CUDA (``pin_mode == "cuda"``) when a CUDA runtime is
    loadable, else mlock'ed (``"mlock"``); if both are refused the buffer stays
    usable unpinned and ``pin_error`` says why.
    """

    def __cinit__(self, object nbytes, bint pin=False, bint hugepages=True, bint prefault=True):
        cdef int err = 0
        cdef char why[512]
        nbytes = operator.index(nbytes)
        if not 0 <= nbytes <= PY_SSIZE_T_MAX:  # the buffer protocol's length is a Py_ssize_t
            raise OverflowError(f"AlignedBuffer: nbytes={nbytes} must be between 0 and {PY_SSIZE_T_MAX}")
        self.size = nbytes
        self.pin_error = None
        self.pin_mode_code = FL_PIN_NONE
        with nogil:
            self.ptr = <char *>fl_buffer_alloc(self.size, hugepages, prefault, &self.mapped, &err)
        if self.ptr == NULL:
            raise MemoryError(f"cannot allocate an aligned buffer of {nbytes} bytes: "
                              f"{os.strerror(err)}")
        if pin:
            with nogil:
                self.pin_mode_code = fl_buffer_pin(self.ptr, self.mapped, 1, why, sizeof(why))
            if self.pin_mode_code == FL_PIN_NONE:
                self.pin_error = why.decode("utf-8", "replace")

    def __dealloc__(self):
        if self.ptr != NULL:
            fl_buffer_unpin(self.ptr, self.mapped, self.pin_mode_code)
            fl_buffer_free(self.ptr, self.mapped)
            self.ptr = NULL

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, self.ptr, self.size, 0, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1

    def __len__(self):
        return self.size

    @property
    def nbytes(self):
        """Usable size in bytes."""
        return self.size

    @property
    def capacity(self):
        """Bytes really reserved (rounded up to the page or huge-page size)."""
        return self.mapped

    @property
    def address(self):
        """Address of the first byte (a multiple of 4096)."""
        return <size_t>self.ptr

    @property
    def pinned(self):
        """True when the pages are locked (by CUDA or mlock)."""
        return self.pin_mode_code != FL_PIN_NONE

    @property
    def pin_mode(self):
        """How the memory was pinned: "cuda", "mlock" or "none"."""
        return _PIN_NAMES[self.pin_mode_code]

    @property
    def views(self):
        """Buffer-protocol views currently alive."""
        return self.exports

    def __repr__(self):
        return (f"AlignedBuffer(nbytes={self.size}, address=0x{<size_t>self.ptr:x}, "
                f"pin_mode={self.pin_mode!r})")
