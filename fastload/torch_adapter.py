"""PyTorch side of fastload: batches as tensors, pinned buffers, asynchronous
device copies, and adapters for users who keep ``torch.utils.data.DataLoader``.

``import fastload`` never imports this module (nor torch): the DataLoader
imports it only for ``consumer="torch"``, and users import it themselves for
:class:`TorchIterableDataset` and :class:`TorchCollate`.

Tensors are zero-copy views of the loader's pooled buffers: NCHW, or torch's
``channels_last`` (an NCHW-shaped tensor with NHWC strides over NHWC memory,
no transposition) as ``memory_format`` says. With a CUDA ``device`` each
batch is copied on a side stream (``non_blocking``: without waiting for the
copy), the stream the DataLoader was made on waits for the copy before any
later work, and the pooled host buffer is reused only after the copy's event
has completed (a busy hook in the pool).

Inside torch's worker processes, :class:`TorchIterableDataset` and
:class:`TorchCollate` put each batch into a reusable slot of a shared-memory
segment that the main process maps once, instead of letting torch pass one
file descriptor per tensor (see ``SlotSender``).
"""

from __future__ import annotations

import errno
import multiprocessing
import multiprocessing.context
import multiprocessing.util
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data

from fastload._buffer import AlignedBuffer
from fastload.buffer_pool import BufferPool
from fastload.collate import _plan_batch, as_torch, choose_layout, collate
from fastload.datasets import Dataset
from fastload.distributed import resolve_rank, resolve_worker
from fastload.loader import DataLoader, RaggedBatch
from fastload.options import LoaderConfig, LoaderOptions
from fastload.planner import batch_slices
from fastload.samplers import make_sampler
from fastload.workers import Segment

_BF16 = "bfloat16"
_IMAGE_LAYOUTS = ("HWC", "CHW")

_warn_lock = threading.Lock()
_pin_warned = False


def cuda_usable() -> bool:
    """True when torch can use a CUDA device in this process."""
    return torch.cuda.is_available()


def warn_pin_without_cuda() -> bool:
    """Warn, once per process as torch's DataLoader does, that ``pin_memory`` has no
    CUDA device to serve. Returns True when this call warned."""
    global _pin_warned
    with _warn_lock:
        if _pin_warned:
            return False
        _pin_warned = True
    warnings.warn(
        "fastload: pin_memory=True but no CUDA device is available, so batches are not "
        "CUDA-pinned (the loader's pin_mode says what the OS granted instead); loading goes on",
        UserWarning, stacklevel=4,
    )
    return True


def pooled_buffer(array: Any) -> AlignedBuffer | None:
    """The AlignedBuffer whose memory ``array`` views (following ``.base``), or None."""
    obj = array
    while obj is not None:
        if isinstance(obj, AlignedBuffer):
            return obj
        obj = obj.obj if isinstance(obj, memoryview) else getattr(obj, "base", None)
    return None


def _is_bf16(dtype: Any) -> bool:
    return isinstance(dtype, str) and dtype.lower() == _BF16


def _labels_tensor(y: np.ndarray) -> Any:
    """Numeric labels as a tensor; others (strings, objects) stay numpy."""
    return torch.from_numpy(np.ascontiguousarray(y)) if y.dtype.kind in "biufc" else y


class TorchOutput:
    """Turns the DataLoader's numpy batches into torch tensors (``consumer="torch"``).

    ``layout``: how the dataset stores images ("HWC", "CHW"; anything else:
    not images, no layout view). ``dtype``: the loader's output dtype
    ("bfloat16" reinterprets the kernel's uint16 bits). ``device``: where
    batches go (None: stay on the host as views of the pooled buffers).
    """

    def __init__(self, config: LoaderConfig, layout: str, dtype: Any = None, device: Any = None) -> None:
        self.plan = choose_layout(config.memory_format, layout, "torch") if layout in _IMAGE_LAYOUTS else None
        self.bf16 = _is_bf16(dtype)
        self.non_blocking = config.non_blocking
        self.device = None if device is None else torch.device(device)
        if self.device is not None and self.device.type == "cuda" and not cuda_usable():
            raise RuntimeError(f"device={device!r}: torch sees no CUDA device "
                               "(torch.cuda.is_available() is False)")
        if config.pin_memory and not cuda_usable():
            warn_pin_without_cuda()
        self.copy_stream: Any = None
        self.consumer_stream: Any = None
        if self.device is not None and self.device.type == "cuda":
            # Batches must be ready for work on the stream current where the loader was made.
            self.consumer_stream = torch.cuda.current_stream(self.device)
            self.copy_stream = torch.cuda.Stream(self.device)

    def tensor(self, x: np.ndarray) -> Any:
        """A host tensor viewing ``x`` (channels_last view for a 4-D batch when asked)."""
        plan = self.plan if x.ndim == 4 else None
        return as_torch(x, plan, dtype=_BF16 if self.bf16 and x.dtype == np.uint16 else None)

    def __call__(self, x: Any, y: np.ndarray | None, pool: BufferPool) -> Any:
        if isinstance(x, RaggedBatch):
            arrays = [x.data]
            out: list[Any] = [torch.from_numpy(x.data)]
        else:
            arrays = [x]
            out = [self.tensor(x)]
        if y is not None:
            out.append(_labels_tensor(y))
        if self.device is not None:
            out = self.to_device(out, arrays, pool)
        batch = RaggedBatch(out[0], torch.from_numpy(x.offsets)) if isinstance(x, RaggedBatch) else out[0]
        return batch if y is None else (batch, out[1])

    def to_device(self, tensors: list[Any], arrays: list[np.ndarray], pool: BufferPool) -> list[Any]:
        """Copy ``tensors`` to the device; pooled buffers stay busy until the copy is done."""
        assert self.device is not None
        if self.copy_stream is None:
            return [t.to(self.device) if isinstance(t, torch.Tensor) else t for t in tensors]
        with torch.cuda.stream(self.copy_stream):
            moved = [t.to(self.device, non_blocking=self.non_blocking) if isinstance(t, torch.Tensor) else t
                     for t in tensors]
            done = torch.cuda.Event()
            done.record(self.copy_stream)
        self.consumer_stream.wait_event(done)
        for t in moved:
            if isinstance(t, torch.Tensor):
                # The caching allocator must not hand this memory to the copy stream
                # again while the consumer's work on it is queued.
                t.record_stream(self.consumer_stream)
        guard_copy(pool, arrays, done.query)
        return moved


def guard_copy(pool: BufferPool, arrays: Sequence[np.ndarray], finished: Callable[[], bool]) -> int:
    """Keep the pooled buffers behind ``arrays`` from reuse until ``finished()`` is true.

    Call it while ``arrays`` are still alive (they keep the buffers busy until
    the hook is in place). Returns how many pooled buffers were guarded.
    """
    guarded = 0
    for a in arrays:
        buf = pooled_buffer(a)
        if buf is not None:
            pool.set_busy_hook(buf, lambda: not finished())
            guarded += 1
    return guarded


class TorchIterableDataset(torch.utils.data.IterableDataset):
    """fastload batches inside ``torch.utils.data.DataLoader``.

    Each torch worker process (``get_worker_info``) and each rank reads its
    own share through fastload's engine and collate kernel: whole batches,
    worker ``w`` taking batches ``w, w + num_workers, ...`` of the rank's
    order, so torch's round-robin over workers yields exactly that order.
    Use it with ``batch_size=None`` (batches are already made)::

        ds = TorchIterableDataset(RecordDataset(...), batch_size=256, shuffle=True)
        for x, y in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=4): ...

    ``rank`` / ``world_size``: None takes the options' ``shard_rank`` /
    ``shard_world_size`` when they are not the default 0 of 1, else discovers
    them (torch.distributed, else RANK / WORLD_SIZE). The epoch is what :meth:`set_epoch` last set, as with
    ``DistributedSampler``; it lives in shared memory, so torch's
    ``persistent_workers`` see it too.
    ``dtype`` / ``mean`` / ``std`` / ``scale`` as for fastload's DataLoader;
    other keyword arguments are LoaderOptions knobs (``pin_memory`` acts when
    iterated in the main process; in torch workers pin with torch's own
    ``pin_memory=True``).
    """

    def __init__(self, dataset: Dataset, options: LoaderOptions | None = None, *, rank: int | None = None,
                 world_size: int | None = None, dtype: Any = None, mean: Any = None, std: Any = None,
                 scale: float | None = None, **knobs: Any) -> None:
        super().__init__()
        if not isinstance(dataset, Dataset):
            raise TypeError(f"TorchIterableDataset needs a fastload Dataset, got {type(dataset).__name__}")
        options = options if options is not None else LoaderOptions()
        options = options.replace(**knobs) if knobs else options
        options.validate_for(len(dataset))
        self.dataset = dataset
        self.options = options
        self.rank, self.world_size = rank, world_size
        self._rank()  # a bad explicit pair fails here, not in a worker
        self.output_args = {"dtype": dtype, "mean": mean, "std": std, "scale": scale}
        # Shared with torch's workers, persistent ones included (their dataset copy is never re-sent).
        self._epoch = multiprocessing.RawValue("q", 0)
        self._loader: DataLoader | None = None
        self._loader_key: tuple[int, ...] | None = None

    def _rank(self) -> tuple[int, int]:
        """(rank, world size): ``rank`` / ``world_size`` when given, else a rank the options set
        (anything but the default 0 of 1), else discovered (None in the options discovers too)."""
        rank, world = self.rank, self.world_size
        cfg = self.options.config
        if rank is None and world is None and (cfg.shard_rank, cfg.shard_world_size) != (0, 1):
            rank, world = cfg.shard_rank, cfg.shard_world_size
        return resolve_rank(rank, world)

    def set_epoch(self, epoch: int) -> None:
        """Read epoch ``epoch``'s order next (call it before each epoch when shuffling)."""
        self._epoch.value = int(epoch)

    @property
    def epoch(self) -> int:
        """The epoch the next iteration reads."""
        return int(self._epoch.value)

    def _config_here(self) -> LoaderOptions:
        """The options for this process: its rank's share, its torch worker's part of it."""
        rank, world = self._rank()
        worker, workers = resolve_worker(None, None)
        opts = self.options.replace(shard_rank=rank, shard_world_size=world, worker_id=worker,
                                    num_workers_pytorch=workers)
        if torch.utils.data.get_worker_info() is not None:
            # A worker copies batches into shared slots: pinning there buys nothing, and a
            # forked child must not call CUDA. torch's pin_memory=True pins in the main process.
            opts = opts.replace(pin_memory=False, non_blocking=False)
        return opts

    def loader(self) -> DataLoader:
        """This process's fastload DataLoader (made once per process, worker and rank)."""
        opts = self._config_here()
        cfg = opts.config
        key = (os.getpid(), cfg.shard_rank, cfg.shard_world_size, cfg.worker_id, cfg.num_workers_pytorch)
        if self._loader is None or self._loader_key != key:
            # A forked worker inherits the parent's loader object: never reuse it there.
            self._loader = DataLoader(self.dataset, opts, consumer="torch", **self.output_args)
            self._loader_key = key  # type: ignore[assignment]
        return self._loader

    def __iter__(self) -> Iterator[Any]:
        loader = self.loader()
        loader.set_epoch(self.epoch)
        if torch.utils.data.get_worker_info() is None:
            return iter(loader)
        return worker_sender().send_all(iter(loader))

    def __len__(self) -> int:
        """Batches per epoch for this rank (all torch workers together)."""
        rank, world = self._rank()
        cfg = self.options.config.replace(shard_rank=rank, shard_world_size=world, worker_id=0,
                                          num_workers_pytorch=1)
        return len(batch_slices(make_sampler(cfg, len(self.dataset)).rank_len, cfg.batch_size, cfg.drop_last))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_loader"] = state["_loader_key"] = None  # threads and buffers stay in their process
        if multiprocessing.context.get_spawning_popen() is None:
            state["_epoch"] = self.epoch  # plain pickling, not to a starting worker: a value, not the share
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["_epoch"], int):
            state["_epoch"] = multiprocessing.RawValue("q", state["_epoch"])
        self.__dict__.update(state)


# ---- batches from torch workers to the main process ----------------------------------
# torch pickles every tensor a worker yields: it moves the storage to shared memory and
# passes a file descriptor per tensor through a socket handshake with the worker (about
# 0.7 ms each here), which caps a DataLoader at ~1500 tensors/s whatever the data. A
# worker of TorchIterableDataset instead copies each batch into a slot of a shared
# segment that the main process maps once; only (segment, slot, layout) is pickled.
# The main process marks the slot free when the last tensor viewing it is gone.

_HEADER = 4096  # the segment starts with one "busy" byte per slot
_SLOTS = 2  # per ring; a worker adds rings while the main process holds more batches
_ALIGN = 64


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def _dense(t: Any) -> Any:
    """``t`` if its strides describe a dense block of ``numel`` elements (so the same strides
    fit a slot of that size), else a contiguous copy."""
    dense = t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))
    return t if dense else t.contiguous()


class SlotRing:
    """Worker side: ``slots`` batch slots of ``slot_bytes`` in one shared segment."""

    def __init__(self, slots: int, slot_bytes: int) -> None:
        self.slots = slots
        self.slot_bytes = _round_up(max(slot_bytes, 1), 4096)
        self.segment = Segment(_HEADER + slots * self.slot_bytes)
        # The main process unlinks the file once it has mapped it; this covers the rest.
        multiprocessing.util.Finalize(self, self.segment.unlink, exitpriority=0)
        _reserve(self.segment)
        self.busy = np.frombuffer(self.segment.mm, dtype=np.uint8, count=slots)

    def slot(self, k: int) -> Any:
        start = _HEADER + k * self.slot_bytes
        return torch.from_numpy(np.frombuffer(self.segment.mm, dtype=np.uint8, count=self.slot_bytes,
                                              offset=start))


class SharedMemoryFull(OSError):
    """The shared-memory folder has no room for another ring of batch slots."""


def _reserve(segment: Segment) -> None:
    """Allocate the segment's pages now: a full /dev/shm then fails here, with a clear
    error, instead of a SIGBUS/SIGSEGV on the first write into the mapping."""
    fd = os.open(segment.path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, segment.nbytes)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return  # a filesystem without fallocate: pages come on first touch
        segment.unlink()
        raise SharedMemoryFull(exc.errno, f"fastload: no room for {segment.nbytes} bytes of batch slots in "
                               f"{os.path.dirname(segment.path)} ({exc.strerror}); enlarge it "
                               "(docker: --shm-size) or use smaller batches") from None
    finally:
        os.close(fd)


class Reservation:
    """A slot taken for one batch; ``slot`` is a uint8 tensor over it.

    The slot stays busy while any worker-side view of it lives; once the batch is
    pickled to the main process (``handed_over``) only the main process frees it.
    """

    def __init__(self, ring: SlotRing, k: int, offsets: list[int]) -> None:
        ring.busy[k] = 1
        start = _HEADER + k * ring.slot_bytes
        anchor = np.frombuffer(ring.segment.mm, dtype=np.uint8, count=ring.slot_bytes, offset=start)
        self.handed_over = [False]
        weakref.finalize(anchor, _release_unless_handed_over, ring.busy, k, self.handed_over)
        self.slot = torch.from_numpy(anchor)
        self.offsets = offsets
        self.where = (ring.segment.name, os.getpid(), ring.slot_bytes, k)

    def place(self, i: int, t: Any) -> Any:
        """Copy tensor ``t`` to its place ``i`` in the slot; returns the slot-side tensor."""
        off, n = self.offsets[i], t.numel() * t.element_size()
        dst = self.slot[off:off + n].view(t.dtype).as_strided(t.shape, t.stride())
        return dst.copy_(t)

    def reduce(self, tensors: Sequence[Any], single: bool) -> tuple[Any, ...]:
        """Pickle form of ``tensors`` (views of this slot): the main process rebuilds them."""
        self.handed_over[0] = True
        specs = [(t.data_ptr() - self.slot.data_ptr(), t.numel() * t.element_size(),
                  str(t.dtype).removeprefix("torch."), tuple(t.shape), t.stride()) for t in tensors]
        return _rebuild_shared, (*self.where, specs, single)


def _release_unless_handed_over(busy: np.ndarray, k: int, handed_over: list[bool]) -> None:
    if not handed_over[0]:
        busy[k] = 0


class SharedBatch:
    """What a TorchIterableDataset worker yields: torch's ``default_convert`` passes it
    through untouched, and it unpickles in the main process as the tensors themselves."""

    def __init__(self, res: Reservation, tensors: list[Any], single: bool) -> None:
        self.res, self.tensors, self.single = res, tensors, single

    def __reduce__(self) -> tuple[Any, ...]:
        return self.res.reduce(self.tensors, self.single)


class SharedTuple(tuple):
    """What TorchCollate returns in a worker: a plain tuple of slot tensors to any code
    that looks at it, pickled compactly like SharedBatch."""

    res: Reservation

    def __reduce__(self) -> tuple[Any, ...]:
        return self.res.reduce(self, False)


class SlotSender:
    """Worker side: slots for batches, adding a ring of slots when all are held by the main
    process (it never waits for them, so a caller keeping batches cannot deadlock it)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.rings: list[SlotRing] = []

    def reserve(self, tensors: Sequence[Any], first_nbytes: int | None = None) -> Reservation:
        """A slot with room for ``tensors`` (and, when given, ``first_nbytes`` before them)."""
        sizes = ([] if first_nbytes is None else [first_nbytes]) + [t.numel() * t.element_size() for t in tensors]
        offsets, end = [], 0
        for n in sizes:
            offsets.append(end)
            end = _round_up(end + n, _ALIGN)
        for ring in self.rings:
            if ring.slot_bytes >= end:
                free = np.flatnonzero(ring.busy == 0)
                if free.size:
                    return Reservation(ring, int(free[0]), offsets)
        # Rings too small for this batch serve no later one of this size: drop the idle ones.
        self.rings = [r for r in self.rings if r.slot_bytes >= end or r.busy.any()]
        self.rings.append(SlotRing(_SLOTS, end))
        return Reservation(self.rings[-1], 0, offsets)

    def pack(self, batch: Any) -> Any:
        """A tensor or tuple of CPU tensors -> a SharedBatch; anything else as it is."""
        single = isinstance(batch, torch.Tensor)
        parts = [batch] if single else list(batch) if isinstance(batch, tuple) else [None]
        if not all(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in parts):
            return batch  # e.g. string labels or a RaggedBatch: torch's own pickling
        parts = [_dense(t) for t in parts]
        try:
            res = self.reserve(parts)
        except SharedMemoryFull as exc:
            _warn_once_shm(exc)
            return batch
        return SharedBatch(res, [res.place(i, t) for i, t in enumerate(parts)], single)

    def send_all(self, batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            yield self.pack(batch)


_shm_warned = False


def _warn_once_shm(exc: OSError) -> None:
    global _shm_warned
    if not _shm_warned:
        _shm_warned = True
        warnings.warn(f"{exc.strerror}: handing batches to torch's own pickling instead", RuntimeWarning,
                      stacklevel=3)


_sender: SlotSender | None = None


def worker_sender() -> SlotSender:
    """This process's SlotSender (a forked child makes its own)."""
    global _sender
    if _sender is None or _sender.pid != os.getpid():
        _sender = SlotSender()
    return _sender


_mapped: dict[str, tuple[int, Any]] = {}
_mapped_lock = threading.Lock()
_SWEEP_S = 1.0
_swept = 0.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _mapping(name: str, pid: int) -> Any:
    """Main process: the worker segment ``name`` mapped (once; its file unlinked then)."""
    global _swept
    with _mapped_lock:
        now = time.monotonic()
        if now - _swept > _SWEEP_S:
            # Forget segments of workers that have exited (their batches keep the mapping alive).
            _swept = now
            for old in [n for n, (p, _) in _mapped.items() if not _pid_alive(p)]:
                del _mapped[old]
        entry = _mapped.get(name)
        if entry is None:
            seg = Segment(0, name)
            seg.unlink()
            entry = _mapped[name] = (pid, seg.mm)
        return entry[1]


def _release_slot(busy: np.ndarray, slot: int) -> None:
    busy[slot] = 0


def _rebuild_shared(name: str, pid: int, slot_bytes: int, slot: int, specs: list[tuple[Any, ...]],
                    single: bool) -> Any:
    mm = _mapping(name, pid)
    anchor = np.frombuffer(mm, dtype=np.uint8, count=slot_bytes, offset=_HEADER + slot * slot_bytes)
    # Every tensor below views one storage that holds ``anchor``: it dies with the last of them.
    weakref.finalize(anchor, _release_slot, np.frombuffer(mm, dtype=np.uint8, count=slot + 1), slot)
    base = torch.from_numpy(anchor)
    out = tuple(base[off:off + n].view(getattr(torch, dtype)).as_strided(shape, stride)
                for off, n, dtype, shape, stride in specs)
    return out[0] if single else out


def _torch_dtype(dtype: np.dtype | str) -> Any:
    if _is_bf16(dtype):
        return torch.bfloat16
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


class TorchCollate:
    """A ``collate_fn`` for ``torch.utils.data.DataLoader`` built on fastload's collate kernel.

    Samples (arrays or CPU tensors of one shape), or tuples whose first item
    is one (the rest go through torch's ``default_collate``), become one
    batch tensor in one native pass: layout change (``memory_format``, as
    :func:`fastload.collate.choose_layout` for torch), dtype conversion and
    per-channel ``(x - mean) / std * scale``. Inside a torch worker the batch
    is written straight into shared memory, as ``default_collate`` does, so
    handing it to the main process copies nothing.
    """

    def __init__(self, *, layout: str = "HWC", memory_format: str | None = "auto", dtype: Any = None,
                 mean: Any = None, std: Any = None, scale: Any = None, num_threads: int = 0) -> None:
        self.plan = choose_layout(memory_format, layout, "torch")
        self.kernel_args: dict[str, Any] = {
            "layout": layout, "memory_format": memory_format, "dtype": dtype, "mean": mean,
            "std": std, "scale": scale, "num_threads": num_threads, "consumer": "torch",
        }

    def __call__(self, batch: Sequence[Any]) -> Any:
        if len(batch) == 0:
            raise ValueError("TorchCollate: empty batch")
        if isinstance(batch[0], (tuple, list)):
            columns = list(zip(*batch, strict=True))
            rest = [torch.utils.data.default_collate(list(c)) for c in columns[1:]]
            return self._batch(columns[0], rest)
        return self._batch(batch, None)

    def _batch(self, samples: Sequence[Any], rest: list[Any] | None) -> Any:
        arrays = [s.numpy() if isinstance(s, torch.Tensor) else np.asarray(s) for s in samples]
        first = arrays[0]
        args = self.kernel_args
        plan = _plan_batch(len(arrays), first.shape, first.dtype, layout=args["layout"],
                           memory_format=args["memory_format"], consumer="torch", dtype=args["dtype"],
                           mean=args["mean"], std=args["std"], scale=args["scale"],
                           num_threads=args["num_threads"], collate_buffer_size=0, isa="auto")
        nbytes = int(np.prod(plan.out_shape, dtype=np.int64)) * plan.out_dtype.itemsize
        in_worker = torch.utils.data.get_worker_info() is not None
        if in_worker and rest is not None and all(isinstance(r, torch.Tensor) for r in rest):
            # The whole batch in one slot, the kernel writing straight into it.
            rest = [_dense(r) for r in rest]
            try:
                res = worker_sender().reserve(rest, first_nbytes=nbytes)
            except SharedMemoryFull as exc:
                _warn_once_shm(exc)
            else:
                x = self._collate_into(res.slot[:nbytes], arrays, plan)
                out = SharedTuple((x, *[res.place(i + 1, r) for i, r in enumerate(rest)]))
                out.res = res
                return out
        if in_worker:  # shared memory, as default_collate does, so torch need not copy
            raw = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(nbytes))
        else:
            raw = torch.empty(nbytes, dtype=torch.uint8)
        x = self._collate_into(raw, arrays, plan)
        return x if rest is None else (x, *rest)

    def _collate_into(self, raw: Any, arrays: list[np.ndarray], plan: Any) -> Any:
        """Run the kernel into the uint8 tensor ``raw``; the batch tensor viewing it."""
        collate(arrays, out=raw.numpy().view(plan.out_dtype).reshape(plan.out_shape), **self.kernel_args)
        dtype = _torch_dtype(_BF16 if _is_bf16(self.kernel_args["dtype"]) else plan.out_dtype)
        tensor = raw.view(dtype).view(plan.out_shape)
        if self.plan.torch_channels_last and tensor.dim() == 4:
            tensor = tensor.permute(0, 3, 1, 2)
        return tensor


def collate_fn(**kernel_args: Any) -> TorchCollate:
    """``TorchCollate(**kernel_args)``: ``DataLoader(ds, collate_fn=collate_fn(memory_format=...))``."""
    return TorchCollate(**kernel_args)


__all__ = [
    "TorchCollate",
    "TorchIterableDataset",
    "TorchOutput",
    "collate_fn",
    "cuda_usable",
    "guard_copy",
    "pooled_buffer",
    "warn_pin_without_cuda",
]
