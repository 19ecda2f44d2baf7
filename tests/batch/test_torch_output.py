"""Torch output of the DataLoader (fastload.batch.torch_output): tensors, pinning without
CUDA, and the copy guard that keeps a pooled buffer until its asynchronous copy is done."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastload
from fastload.batch.ragged import RaggedBatch
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import ObjectDataset, RecordDataset
from fastload.storage.buffer_pool import BufferPool
from tests.support import loader_helpers as H
from tests.support.torch_data import MEAN, SHAPE, STD, N

torch = pytest.importorskip("torch")
from fastload.batch.torch_output import guard_copy, pooled_buffer  # noqa: E402

pytestmark = pytest.mark.torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(fastload.__file__)))


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def in_pool(loader: DataLoader, tensor) -> bool:
    """True when ``tensor`` starts at one of the loader's pooled buffers (zero-copy)."""
    return any(b.address == tensor.data_ptr() for b in loader.pool._buffers)


# -- torch stays optional ------------------------------------------------------------


def test_import_fastload_never_imports_torch(recs):
    folder = os.path.dirname(recs[0].uris[0])
    r = run_python(
        "import sys, numpy as np, fastload\n"
        f"dl = fastload.DataLoader(fastload.RecordDataset({folder!r}, {SHAPE}), batch_size=8)\n"
        "n = sum(len(x) for x in dl)\n"
        "print(n, 'torch' in sys.modules)\n"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(N), "False"]


# -- tensors: types, shapes, strides, zero copy -----------------------------------------


def test_torch_consumer_auto_is_nchw_values_exact(recs):
    ds, data = recs
    with DataLoader(ds, batch_size=16, consumer="torch") as dl:
        n = 0
        for x, y in dl:
            assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
            assert x.shape == (len(y), 3, 8, 6) and x.is_contiguous()
            assert torch.equal(x, torch.from_numpy(data[y.numpy()]).permute(0, 3, 1, 2))
            assert in_pool(dl, x)  # the kernel wrote straight into a pooled buffer
            n += len(y)
        assert n == N


def test_channels_last_is_a_strided_view_of_the_read_slab(recs):
    ds, data = recs
    with DataLoader(ds, batch_size=16, consumer="torch", memory_format="channels_last") as dl:
        x, y = next(iter(dl))
        assert x.shape == (16, 3, 8, 6)
        assert x.stride() == (8 * 6 * 3, 1, 6 * 3, 3)
        assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        assert torch.equal(x, torch.from_numpy(data[:16]).permute(0, 3, 1, 2))
        assert in_pool(dl, x)  # NHWC records need no kernel at all: the tensor views the read slab
        assert dl.report()["collate"] is None


def test_chw_records_to_channels_last_transpose_in_the_kernel(tmp_path):
    data = H.write_records(str(tmp_path / "chw"), 20, (3, 8, 6), 1)
    ds = RecordDataset(str(tmp_path / "chw"), (3, 8, 6), layout="CHW")
    with DataLoader(ds, batch_size=10, consumer="torch", memory_format="channels_last") as dl:
        x = next(iter(dl))
        assert x.shape == (10, 3, 8, 6) and x.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(x, torch.from_numpy(data[:10]))
        assert dl.report()["collate"]["transposed"]


def test_normalised_float_and_bfloat16_tensors(recs):
    ds, data = recs
    ref = (data[:16].astype(np.float64) - MEAN) / STD
    with DataLoader(ds, batch_size=16, consumer="torch", mean=MEAN, std=STD) as dl:
        x, _ = next(iter(dl))
        assert x.dtype == torch.float32 and x.shape == (16, 3, 8, 6)
        np.testing.assert_allclose(x.numpy(), ref.transpose(0, 3, 1, 2), rtol=1e-6, atol=1e-5)
    with DataLoader(
        ds, batch_size=16, consumer="torch", mean=MEAN, std=STD, dtype="bfloat16"
    ) as dl:
        x, _ = next(iter(dl))
        assert x.dtype == torch.bfloat16
        np.testing.assert_allclose(
            x.float().numpy(), ref.transpose(0, 3, 1, 2), rtol=1e-2, atol=1e-2
        )


def test_ragged_batches_become_tensors(tmp_path):
    paths = []
    for i in range(5):
        p = tmp_path / f"o{i}"
        p.write_bytes(bytes([i]) * (i + 1))
        paths.append(str(p))
    with DataLoader(ObjectDataset(paths), batch_size=5, consumer="torch") as dl:
        b = next(iter(dl))
        assert isinstance(b, RaggedBatch) and isinstance(b.data, torch.Tensor)
        assert isinstance(b.offsets, torch.Tensor) and in_pool(dl, b.data)
        assert b.offsets.tolist() == [0, 1, 3, 6, 10, 15]
        assert [b.sample(i).tolist() for i in range(5)] == [[i] * (i + 1) for i in range(5)]


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_labels_keep_their_dtype(recs, dtype):
    ds, _ = recs
    labelled = RecordDataset(ds.uris, SHAPE, labels=np.arange(N).astype(dtype))
    with DataLoader(labelled, batch_size=8, consumer="torch") as dl:
        _, y = next(iter(dl))
        assert y.dtype == torch.from_numpy(np.zeros(1, dtype)).dtype and y.tolist() == list(
            range(8)
        )


def test_state_dict_resumes_a_torch_loader_at_the_next_batch(recs):
    ds, data = recs
    with DataLoader(ds, batch_size=10, shuffle=True, seed=2, consumer="torch") as dl:
        it = iter(dl)
        seen = [next(it)[1] for _ in range(3)]
        state = dl.state_dict()
        rest = [y for _, y in it]
    with DataLoader(ds, batch_size=10, shuffle=True, seed=2, consumer="torch") as again:
        again.load_state_dict(state)
        resumed = list(again)
    assert [y.tolist() for _, y in resumed] == [y.tolist() for y in rest]
    assert all(
        torch.equal(x, torch.from_numpy(data[y.numpy()]).permute(0, 3, 1, 2)) for x, y in resumed
    )
    assert sorted(torch.cat(seen + [y for _, y in resumed]).tolist()) == list(range(N))


def test_device_knob_checks(recs):
    ds, _ = recs
    with pytest.raises(ValueError, match="device='cpu' needs consumer='torch'"):
        DataLoader(ds, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device='cuda'.*no CUDA"):
            DataLoader(ds, consumer="torch", device="cuda")
    with DataLoader(ds, batch_size=8, consumer="torch", device="cpu") as dl:
        x, y = next(iter(dl))
        assert x.device.type == "cpu" and y.device.type == "cpu" and in_pool(dl, x)


# -- pinning -------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_pin_memory_without_cuda_warns_once_and_keeps_loading(recs):
    folder = os.path.dirname(recs[0].uris[0])
    r = run_python(
        "import warnings, numpy as np, fastload\n"
        "warnings.simplefilter('always')\n"
        f"ds = fastload.RecordDataset({folder!r}, {SHAPE})\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    a = fastload.DataLoader(ds, batch_size=8, consumer='torch', pin_memory=True)\n"
        "    b = fastload.DataLoader(ds, batch_size=8, consumer='torch', pin_memory=True)\n"
        "    c = fastload.DataLoader(ds, batch_size=8, consumer='torch')\n"
        "    n = sum(len(x) for x in a) + sum(len(x) for x in b)\n"
        "pins = [str(m.message) for m in w if 'pin_memory' in str(m.message)]\n"
        "print(len(pins), n, a.report()['pin_mode'], a.report()['pin_memory'])\n"
        "print(pins[0])\n"
    )
    assert r.returncode == 0, r.stderr
    first, message = r.stdout.splitlines()
    count, n, mode, asked = first.split()
    assert (count, n, asked) == ("1", str(2 * N), "True")
    assert mode in ("mlock", "none")  # what was really done, never "cuda" here
    assert "no CUDA device" in message


# -- the busy hook that guards an asynchronous copy ------------------------------------


def test_pool_keeps_a_buffer_until_its_copy_has_finished():
    """A real copy on another thread that, like a DMA engine, reads the pooled buffer by
    address (no Python reference keeps it alive), gated by a real condition: the buffer
    must not be handed out and overwritten until the copy is done."""
    pool = BufferPool(keep=8)
    buf = pool.acquire(4096)
    src = np.frombuffer(buf, dtype=np.uint8, count=4096)
    src[:] = np.arange(4096) % 251
    expected = src.copy()
    pool.release(buf)
    gate, finished = threading.Event(), threading.Event()
    dst = torch.empty(4096, dtype=torch.uint8)

    def copy(address: int) -> None:
        gate.wait(10)
        ctypes.memmove(dst.data_ptr(), address, 4096)
        finished.set()

    worker = threading.Thread(target=copy, args=(buf.address,))
    worker.start()
    assert guard_copy(pool, [src], finished.is_set) == 1
    del src  # like the loader once the device tensor is handed out: no view is left
    other = pool.acquire(4096)
    assert other is not buf  # the copy has not run: its source must stay intact
    np.frombuffer(other, dtype=np.uint8)[:] = 255
    pool.release(other)
    gate.set()
    worker.join(10)
    assert finished.is_set()
    assert np.array_equal(dst.numpy(), expected)
    assert pool.acquire(4096) is buf  # once the copy finished the buffer is reused, not leaked


def test_pooled_buffer_finds_the_buffer_behind_a_batch(recs):
    ds, _ = recs
    with DataLoader(ds, batch_size=8) as dl:
        x, _ = next(iter(dl))
        buf = pooled_buffer(x)
        assert buf is not None and buf.address == x.ctypes.data and buf in dl.pool._buffers
    assert pooled_buffer(np.zeros(3)) is None
