"""Shared memory: anonymous segments handed over as file descriptors, and named segments.

``SharedBuffer`` (the loader's workers): a memfd (Linux; elsewhere a file in /dev/shm
unlinked the moment it is created), mapped, and handed to the other process as a file
descriptor over their Unix socket. No name ever exists, so a process killed at any moment,
by SIGKILL too, leaves nothing behind: the memory goes with the last mapping. It is not
bounded by the size of /dev/shm either (docker's 64 MiB default).

``Segment`` (the torch adapter's slots, which torch's own pickling hands over by name): a
file in /dev/shm, mapped, the descriptor closed once mapped.
"""

from __future__ import annotations

import mmap
import os
import secrets
import tempfile

SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def _anonymous_fd() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("fastload", os.MFD_CLOEXEC)
    fd, path = tempfile.mkstemp(prefix="fastload-anon-", dir=SHM_DIR)
    os.unlink(path)
    return fd


class SharedBuffer:
    """Shared memory without a name. ``SharedBuffer(nbytes)`` makes one; ``SharedBuffer(fd=fd)``
    maps one received from another process (the descriptor then belongs to this object).
    ``fd`` stays open until ``close_fd()`` (after handing it over) or ``close()``."""

    def __init__(self, nbytes: int = 0, *, fd: int | None = None) -> None:
        created = fd is None
        self.fd: int | None = _anonymous_fd() if fd is None else fd
        try:
            if created:
                os.ftruncate(self.fd, max(nbytes, 1))
            self.nbytes = os.fstat(self.fd).st_size
            self.mm = mmap.mmap(self.fd, self.nbytes)
        except BaseException:
            self.close_fd()
            raise

    def close_fd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        self.close_fd()
        try:
            self.mm.close()
        except BufferError:  # a view is still alive; the mapping goes when it does
            pass


class Segment:
    """A shared-memory segment: an mmap of a file in /dev/shm (fd closed once mapped)."""

    def __init__(self, nbytes: int, name: str | None = None) -> None:
        self.created = name is None
        self.name = name or f"fastload-{os.getpid()}-{secrets.token_hex(6)}"
        self.path = os.path.join(SHM_DIR, self.name)
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if self.created else 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            if self.created:
                os.ftruncate(fd, max(nbytes, 1))
            self.nbytes = os.fstat(fd).st_size
            self.mm = mmap.mmap(fd, self.nbytes)
        except BaseException:
            if self.created:
                self.unlink()
            raise
        finally:
            os.close(fd)

    def unlink(self) -> None:
        self.remove(self.name)

    @staticmethod
    def remove(name: str) -> None:
        try:
            os.unlink(os.path.join(SHM_DIR, name))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        try:
            self.mm.close()
        except BufferError:  # a view is still alive; the mapping goes when it does
            pass
