"""Reading one object in chunks, two chunks in flight, handed out in order (``get``, ``bench``).

Memory stays at three chunk buffers whatever the object's size: reader threads fill the
next two chunks while the caller takes the last one (writes it to a file, or drops it).
Chunk sizes ramp up from one part to ``chunk`` bytes, so the first bytes (and the first
progress and rate figures) come after one part, not after a whole chunk. On any error or
Ctrl-C the reads still in flight are cancelled through the engine's cancel token.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from fastload._native.buffer import AlignedBuffer
from fastload._native.file_reader import CancelToken
from fastload.storage.engine import RangeEngine
from fastload.storage.read_settings import ReadSettings
from fastload.storage.uri import ParsedURI

IN_FLIGHT = 2


def chunk_plan(size: int, first: int, chunk: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of each chunk: ``first`` bytes, then doubling up to ``chunk``."""
    off, n = 0, max(1, min(first, chunk))
    while off < size:
        length = min(n, size - off)
        yield off, length
        off += length
        n = min(n * 2, chunk)


def read_in_chunks(
    engine: RangeEngine,
    src: ParsedURI,
    size: int,
    settings: ReadSettings,
    chunk: int,
    take: Callable[[memoryview], None],
) -> None:
    """Read bytes 0..size of ``src`` and call ``take(view)`` on each chunk, in order."""
    if size == 0:
        return
    chunk = max(1, min(chunk, size))
    buffers = [AlignedBuffer(chunk) for _ in range(IN_FLIGHT + 1)]
    cancel = CancelToken()
    plan = chunk_plan(size, settings.part_size_for(src.scheme), chunk)
    pending: deque[tuple[Future[None], memoryview]] = deque()

    def read(off: int, n: int, buf: AlignedBuffer) -> None:
        table = np.array([[0, off, n, 0]], dtype=np.int64)
        engine.read_into([src], table, buf, settings=settings, cancel=cancel)

    pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="fastload-get")
    try:
        for k, (off, n) in enumerate(plan):
            buf = buffers[k % len(buffers)]  # free: chunk k - 3 was taken already
            pending.append((pool.submit(read, off, n, buf), memoryview(buf)[:n]))
            if len(pending) > IN_FLIGHT:  # chunk k-2 is taken while k-1 and k are read
                _take_next(pending, take)
        while pending:
            _take_next(pending, take)
    except BaseException:
        cancel.cancel()  # the reads in flight end within milliseconds
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _take_next(
    pending: deque[tuple[Future[None], memoryview]], take: Callable[[memoryview], None]
) -> None:
    future, view = pending.popleft()
    future.result()
    take(view)
