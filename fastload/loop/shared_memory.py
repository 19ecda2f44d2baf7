"""Shared-memory segments: files in /dev/shm, mapped, the descriptor closed once mapped."""

from __future__ import annotations

import mmap
import os
import secrets
import tempfile

SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


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
