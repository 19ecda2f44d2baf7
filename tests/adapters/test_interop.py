"""Interop: batches export DLPack and share memory with their consumer; tf.data and JAX
helpers (run where those frameworks are installed, skipped elsewhere)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastload
from fastload.adapters.interop import batch_signature, map_batch
from fastload.batch.ragged import RaggedBatch
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import ObjectDataset, RecordDataset
from tests.support import loader_helpers as H

SHAPE = (8, 6, 3)
N = 40
KDL_CPU = 1


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("interop") / "rec")
    data = H.write_records(folder, N, SHAPE, 2)
    return RecordDataset(folder, SHAPE, labels=np.arange(N)), data


def pool_buffer_at(loader: DataLoader, address: int):
    return next((b for b in loader.pool._buffers if b.address == address), None)


# -- DLPack ----------------------------------------------------------------------------
def test_numpy_batch_to_torch_shares_the_pinned_pooled_buffer(recs):
    torch = pytest.importorskip("torch")
    ds, data = recs
    with DataLoader(ds, batch_size=8, pin_memory=True) as dl:
        x, _ = next(iter(dl))
        assert x.__dlpack_device__() == (KDL_CPU, 0)
        t = torch.from_dlpack(x)
        buf = pool_buffer_at(dl, t.data_ptr())
        assert t.data_ptr() == x.ctypes.data and buf is not None
        assert buf.pin_mode == dl.pin_mode and (buf.pinned or buf.pin_error)
        t[0, 0, 0, 0] = 77  # one memory: a write through torch shows in numpy
        assert x[0, 0, 0, 0] == 77
        assert np.array_equal(x[1:], data[1:8])


def test_torch_batch_to_numpy_and_back_shares_memory(recs):
    torch = pytest.importorskip("torch")
    ds, data = recs
    with DataLoader(ds, batch_size=8, consumer="torch", memory_format="channels_last") as dl:
        x, _ = next(iter(dl))
        a = np.from_dlpack(x)
        assert a.ctypes.data == x.data_ptr() and pool_buffer_at(dl, a.ctypes.data) is not None
        assert a.shape == (8, 3, 8, 6) and a.strides == (144, 1, 18, 3)  # channels_last survives
        back = torch.from_dlpack(a)
        assert back.data_ptr() == x.data_ptr() and back.stride() == x.stride()
        assert np.array_equal(a, data[:8].transpose(0, 3, 1, 2))


def test_a_dlpack_consumer_keeps_its_batch_from_being_reused(recs):
    """Only the DLPack consumers' tensors are kept: the pool must not overwrite them."""
    torch = pytest.importorskip("torch")
    ds, data = recs
    with DataLoader(ds, batch_size=4, prefetch=1) as dl:
        kept = []
        for x, _ in dl:
            kept.append(torch.from_dlpack(x))
            del x
        assert dl.pool.allocations >= len(kept)
    assert np.array_equal(torch.cat(kept).numpy(), data)


# -- helpers ---------------------------------------------------------------------------
def test_batch_signature(recs, tmp_path):
    ds, _ = recs
    with DataLoader(ds, batch_size=8, mean=(1, 2, 3)) as dl:
        assert batch_signature(dl) == (
            ((None, *SHAPE), np.dtype(np.float32)),
            ((None,), np.arange(1).dtype),
        )
    with DataLoader(RecordDataset(ds.uris, SHAPE), memory_format="channels_first") as dl:
        assert batch_signature(dl) == (((None, 3, 8, 6), np.dtype(np.uint8)),)
    (tmp_path / "o").write_bytes(b"abc")
    with (
        DataLoader(ObjectDataset([str(tmp_path / "o")])) as dl,
        pytest.raises(ValueError, match="ragged samples.*output_signature"),
    ):
        batch_signature(dl)


def test_map_batch_reaches_every_array():
    seen = []
    ragged = RaggedBatch(np.arange(3), np.array([0, 1, 3]))
    out = map_batch((ragged, np.array(["a"])), lambda a: seen.append(a.shape) or a.sum())
    assert seen == [(3,), (3,)] and out[0] == RaggedBatch(3, 4) and out[1][0] == "a"


# -- frameworks, where installed -------------------------------------------------------
# Each runs in a child process: JAX and TensorFlow start threads on import, and the fork-based
# tests that share this pytest process must not fork a multithreaded process.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(fastload.__file__)))


def run_with(framework: str, recs, body: str) -> None:
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    ds, _ = recs
    code = (
        "import numpy as np\nfrom fastload import DataLoader, RecordDataset\n"
        "from fastload.adapters.interop import jax_batches, tf_dataset, to_jax\n"
        f"URIS, SHAPE, N = {ds.uris!r}, {SHAPE}, {N}\n"
        "data = np.concatenate([np.fromfile(u, dtype=np.uint8) for u in URIS]).reshape(N, *SHAPE)\n"
        + textwrap.dedent(body)
        + "\nprint('OK')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=REPO),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), (
        r.stdout[-2000:] + r.stderr[-3000:]
    )


def test_jax_batches_share_memory(recs):
    run_with(
        "jax",
        recs,
        """
        ds = RecordDataset(URIS, SHAPE, labels=np.arange(N))
        with DataLoader(ds, batch_size=8) as dl:
            got = [(np.asarray(x), np.asarray(y)) for x, y in jax_batches(dl)]
            assert np.array_equal(np.concatenate([x for x, _ in got]), data)
            assert np.array_equal(np.concatenate([y for _, y in got]), np.arange(N))
            x, _ = next(iter(dl))
            assert to_jax(x).unsafe_buffer_pointer() == x.ctypes.data  # zero-copy on the host
    """,
    )


def test_tf_dataset_yields_every_batch(recs):
    run_with(
        "tensorflow",
        recs,
        """
        ds = RecordDataset(URIS, SHAPE, labels=np.arange(N))
        with DataLoader(ds, batch_size=8, shuffle=True) as dl:
            tfds = tf_dataset(dl)
            assert tfds.element_spec[0].shape.as_list() == [None, *SHAPE]
            xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in tfds], strict=True)
            order = np.concatenate(ys)
            assert sorted(order) == list(range(N))
            assert np.array_equal(np.concatenate(xs), data[order])
        import tensorflow as tf
        with DataLoader(ds, batch_size=8) as dl:
            x, _ = next(iter(dl))
            t = tf.experimental.dlpack.from_dlpack(x.__dlpack__())
            x[0, 0, 0, 0] = 201  # one memory: a write through numpy shows in TF
            assert int(t[0, 0, 0, 0]) == 201 and np.array_equal(t.numpy()[1:], data[1:8])
    """,
    )


def test_tf_dataset_with_string_labels(recs):
    run_with(
        "tensorflow",
        recs,
        """
        import tensorflow as tf
        named = RecordDataset(URIS, SHAPE, labels=[f"s{i}" for i in range(N)])
        with DataLoader(named, batch_size=16) as dl:
            tfds = tf_dataset(dl)
            assert tfds.element_spec[1].dtype == tf.string
            got = [(x.numpy(), y.numpy()) for x, y in tfds]
        assert np.array_equal(np.concatenate([x for x, _ in got]), data)
        assert [s.decode() for _, y in got for s in y] == [f"s{i}" for i in range(N)]
    """,
    )
