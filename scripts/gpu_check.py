#!/usr/bin/env python3
"""fastload on a real CUDA machine: pinned buffers, non_blocking copies that overlap
compute, the copy guard on pooled buffers, channels_last batches on the GPU.

Run from a fastload checkout after building it (well under 2 minutes):

    python setup.py build_ext --inplace -q && python scripts/gpu_check.py

Prints one PASS / FAIL / SKIP line per check and exits 1 if anything failed.
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import sys
import tempfile
import time

faulthandler.enable()  # a crash prints where it happened
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX beside torch on one GPU
sys.path.insert(0, os.getcwd())

import numpy as np  # noqa: E402
import torch  # noqa: E402

import fastload  # noqa: E402
from fastload import DataLoader, LoaderOptions, RecordDataset  # noqa: E402
from fastload.adapters.torch_dataset import TorchIterableDataset  # noqa: E402
from fastload.batch.torch_output import TorchOutput  # noqa: E402
from fastload.storage.buffer_pool import BufferPool  # noqa: E402

N, SHAPE, BATCH = 512, (224, 224, 3), 64
BIG = 512 << 20  # bytes of the copy-timing buffer
SLEEP = int(3e8)  # GPU cycles of torch.cuda._sleep: ~0.15 s at 2 GHz
HOLD = int(2e9)  # ~1 s: holds a copy back while the host checks the pool
MEAN = torch.tensor([0.485, 0.456, 0.406]) * 255
STD = torch.tensor([0.229, 0.224, 0.225]) * 255
failures = 0


def check(name: str, ok: bool | None, detail: str = "") -> None:
    global failures
    word = "SKIP" if ok is None else "PASS" if ok else "FAIL"
    failures += ok is False
    print(f"{word}  {name}" + (f"  [{detail}]" if detail else ""), flush=True)


def cuda_says_host_pinned(address: int) -> bool | None:
    """cudaPointerGetAttributes(address).type == cudaMemoryTypeHost, through the runtime
    torch loaded; None when no runtime library can be opened."""
    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so"):
        try:
            rt = ctypes.CDLL(name)
        except OSError:
            continue
        # Room to spare: the struct has grown across CUDA versions (type is its first int).
        attrs = ctypes.create_string_buffer(1024)
        rc = rt.cudaPointerGetAttributes(attrs, ctypes.c_void_p(address))
        return rc == 0 and ctypes.c_int.from_buffer(attrs).value == 1
    return None


def wait_until(pred, limit: float = 5.0) -> None:
    end = time.perf_counter() + limit
    while not pred() and time.perf_counter() < end:
        time.sleep(0.0002)


def main() -> int:
    if not torch.cuda.is_available():
        print("FAIL  torch sees no CUDA device")
        return 1
    dev = torch.device("cuda", 0)
    torch.cuda.init()
    print(
        f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}; "
        f"fastload.cuda_available() = {fastload.cuda_available()}",
        flush=True,
    )
    tmp = tempfile.mkdtemp()
    data = np.random.default_rng(0).integers(0, 256, (N, *SHAPE), dtype=np.uint8)
    path = os.path.join(tmp, "shard.rec")
    data.tofile(path)
    ds = RecordDataset(path, SHAPE, labels=np.arange(N))
    ref_all = torch.from_numpy(data).to(dev)

    # -- 1. pinned memory ------------------------------------------------------------
    buf = fastload.AlignedBuffer(1 << 20, pin=True)
    check(
        "AlignedBuffer(pin=True).pin_mode == 'cuda' (cudaHostRegister)",
        buf.pin_mode == "cuda",
        f"pin_mode={buf.pin_mode!r} pin_error={buf.pin_error!r}",
    )
    with DataLoader(
        ds, batch_size=BATCH, consumer="torch", pin_memory=True, memory_format="channels_last"
    ) as dl:
        x, _ = next(iter(dl))
        check("DataLoader(pin_memory=True).pin_mode == 'cuda'", dl.pin_mode == "cuda", dl.pin_mode)
        check("host batch is pinned: torch.Tensor.is_pinned()", x.is_pinned())
        check(
            "host batch is pinned: cudaPointerGetAttributes type == host",
            cuda_says_host_pinned(x.data_ptr()),
        )

    # -- 2. batches on the GPU, channels_last and normalised NCHW ---------------------
    with DataLoader(
        ds,
        batch_size=BATCH,
        consumer="torch",
        device="cuda",
        non_blocking=True,
        pin_memory=True,
        memory_format="channels_last",
    ) as dl:
        ok, n, t0 = True, 0, time.perf_counter()
        for x, y in dl:
            ok &= x.is_cuda and y.is_cuda and tuple(x.shape) == (len(y), 3, 224, 224)
            ok &= x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
            ok &= torch.equal(x, ref_all[y].permute(0, 3, 1, 2))
            n += len(y)
        rate = n / (time.perf_counter() - t0)
        check(
            "channels_last batches on the GPU: NCHW shape, channels_last strides, exact values",
            bool(ok) and n == N,
            f"{n} samples, {rate:.0f} samples/s",
        )
        batches = len(dl)
        check(
            "pooled host buffers reused once their copies finished",
            dl.pool.allocations < batches,
            f"{dl.pool.allocations} buffers for {batches} batches",
        )
    with DataLoader(
        ds,
        batch_size=BATCH,
        consumer="torch",
        device="cuda",
        non_blocking=True,
        pin_memory=True,
        mean=MEAN.tolist(),
        std=STD.tolist(),
    ) as dl:
        x, y = next(iter(dl))
        want = ((ref_all[y].float() - MEAN.to(dev)) / STD.to(dev)).permute(0, 3, 1, 2)
        check(
            "normalised float32 NCHW batch on the GPU",
            x.is_contiguous() and x.dtype == torch.float32 and torch.allclose(x, want, atol=1e-4),
        )

    # -- 3. non_blocking copies: host returns at once, copy overlaps compute, guard -----
    cfg = LoaderOptions(pin_memory=True, non_blocking=True).config
    out = TorchOutput(cfg, "", None, "cuda")
    pool = BufferPool(pin=True)
    big = pool.acquire(BIG)
    arr = np.frombuffer(big, dtype=np.uint8)
    arr[:] = 7
    check("the copy-timing buffer is CUDA-pinned", big.pin_mode == "cuda", big.pin_mode)
    out(arr, None, pool)  # warm-up: stream, events, the device allocator's block
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    moved = out(arr, None, pool)
    host_s = time.perf_counter() - t0
    torch.cuda.synchronize()
    all_s = time.perf_counter() - t0
    check(
        "non_blocking: the call returns before the copy has finished",
        host_s < 0.5 * all_s,
        f"returned after {host_s * 1e3:.2f} ms, copy done after {all_s * 1e3:.2f} ms "
        f"({BIG / all_s / 1e9:.1f} GB/s)",
    )
    check("the device copy is exact", bool((moved == 7).all()))
    del moved

    # the guard the copy registered: (buffer, is_busy), dropped once the copy has finished
    busy = lambda: (entry := pool._hooks.get(id(big))) is not None and entry[1]()  # noqa: E731
    torch.cuda.synchronize()
    torch.cuda._sleep(SLEEP)  # compute on the consumer stream
    compute_done = torch.cuda.Event()
    compute_done.record()
    moved = out(arr, None, pool)
    wait_until(lambda: not busy())
    check(
        "the copy overlaps compute: it finished while a kernel on the consumer stream ran",
        not busy() and not compute_done.query(),
    )
    torch.cuda.synchronize()
    del moved

    arr[:] = 9
    with torch.cuda.stream(out.copy_stream):
        torch.cuda._sleep(HOLD)  # hold the next copy back
    t0 = time.perf_counter()
    moved = out(arr, None, pool)
    pool.release(big)
    del arr
    other = pool.acquire(BIG)  # no CUDA call in between: nothing can wait for the copy
    took = time.perf_counter() - t0
    check(
        "a pooled buffer is not handed out while its copy is in flight",
        other is not big,
        f"asked {took * 1e3:.1f} ms after the call, copy held back ~1 s",
    )
    np.frombuffer(other, dtype=np.uint8)[:] = 0
    pool.release(other)
    total = moved[: 1 << 24].sum(dtype=torch.int64)  # consumer stream: must wait for the copy
    torch.cuda.synchronize()
    print(
        f"      held copy finished {(time.perf_counter() - t0) * 1e3:.0f} ms after the call",
        flush=True,
    )
    check(
        "work on the consumer stream waited for the copy",
        int(total) == 9 * (1 << 24),
        str(int(total)),
    )
    check("the device batch holds the bytes as they were when copied", bool((moved == 9).all()))
    check("after its copy finished the buffer is reused", pool.acquire(BIG) is big)

    # -- 4. torch's DataLoader over the adapter, pinned by torch, to the GPU ------------
    context = os.environ.get("FASTLOAD_CHECK_MP", "fork")  # torch's default on Linux
    print(f"torch DataLoader over TorchIterableDataset, 2 workers ({context}) ...", flush=True)
    it = TorchIterableDataset(ds, batch_size=BATCH, memory_format="channels_last")
    tl = torch.utils.data.DataLoader(
        it,
        batch_size=None,
        num_workers=2,
        pin_memory=True,
        timeout=120,
        multiprocessing_context=context,
    )
    ok, n = True, 0
    for x, y in tl:
        ok &= x.is_pinned()
        x = x.to(dev, non_blocking=True)
        ok &= x.is_contiguous(memory_format=torch.channels_last)
        ok &= torch.equal(x, ref_all[y.to(dev)].permute(0, 3, 1, 2))
        n += len(y)
    check(
        "TorchIterableDataset in torch's DataLoader(pin_memory=True, 2 workers) -> GPU",
        bool(ok) and n == N,
    )

    # -- 5. JAX on the GPU through DLPack -------------------------------------------------
    try:
        import jax

        from fastload.adapters.interop import jax_batches

        gpu = jax.devices("gpu")[0]
    except Exception as exc:  # noqa: BLE001  JAX is optional here
        check("JAX batches on the GPU", None, f"no JAX GPU: {exc}")
    else:
        with DataLoader(ds, batch_size=BATCH, pin_memory=True) as dl:
            got = [(np.asarray(x), np.asarray(y)) for x, y in jax_batches(dl, device=gpu)]
        ok = all(np.array_equal(x, data[y]) for x, y in got) and sum(len(y) for _, y in got) == N
        check("JAX batches on the GPU (DLPack, then device_put)", ok)

    print(f"{'ALL PASSED' if failures == 0 else f'{failures} FAILED'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        import traceback

        traceback.print_exc()
        print("FAIL  the check script raised", flush=True)
        sys.exit(1)
