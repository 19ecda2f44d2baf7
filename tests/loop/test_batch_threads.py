"""Reader threads that cover the CPUs make each batch on their own thread (no pool
hand-offs), and a loader's large batches are written with streaming stores."""

from __future__ import annotations

import numpy as np
import pytest

from fastload._native import collate as native_collate
from fastload.batch.collate import LOADER_CACHE_BYTES, loader_stores
from fastload.loop.batch_threads import reader_thread_budget
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from tests.support import loader_helpers as H

SHAPE = (128, 128, 3)  # 48 KiB a record; a batch of 32: 1.5 MiB read, 6 MiB of float32


def test_each_reader_gets_its_share_of_the_cpus():
    assert reader_thread_budget(1, cpus=2) == 0  # a lone reader: the kernels' own choice
    assert reader_thread_budget(2, cpus=2) == 1
    assert reader_thread_budget(3, cpus=2) == 1
    assert reader_thread_budget(2, cpus=16) == 8
    assert reader_thread_budget(5, cpus=16) == 3
    assert reader_thread_budget(2) == max(1, native_collate.cpu_count() // 2)


def _epoch(tmp_path, prefetch):
    H.write_records(str(tmp_path / "rec"), 128, SHAPE, 2)
    ds = RecordDataset(str(tmp_path / "rec"), SHAPE)
    # timeout_seconds: every batch is made by a reader thread (never inline, in next());
    # a batch's 32 records are read in 6 parts of 256 KiB
    dl = DataLoader(
        ds,
        batch_size=32,
        dtype=np.float32,
        prefetch=prefetch,
        timeout_seconds=60,
        reader_mode="range",
        part_size=256 << 10,
    )
    want = np.fromfile(str(tmp_path / "rec" / "shard-000.bin"), np.uint8)[: 32 * 49152]
    before = dl.engine.stats()
    got = list(dl)
    after = dl.engine.stats()
    assert np.array_equal(got[0], want.reshape(32, *SHAPE).astype(np.float32))
    reads = after["reads"] - before.get("reads", 0)
    inline = after["inline_starts"] - before.get("inline_starts", 0)
    collate = dl.report()["collate"]  # the latest batch's
    dl.close()
    return reads, inline, collate


def test_readers_that_cover_the_cpus_read_and_collate_each_batch_on_their_own_thread(tmp_path):
    cpus = native_collate.cpu_count()
    reads, inline, collate = _epoch(tmp_path, prefetch=max(2, cpus))
    # 1.5 MiB reads: above the inline size, yet their parts start on the reader alone
    assert reads == 4 and inline == 4
    assert collate["threads"] == 1


@pytest.mark.skipif(native_collate.cpu_count() < 2, reason="one CPU: one thread either way")
def test_a_lone_reader_spreads_each_batch_over_the_cpus(tmp_path):
    reads, inline, collate = _epoch(tmp_path, prefetch=1)
    assert reads == 4 and inline == 0
    assert collate["threads"] == min(native_collate.cpu_count(), (6 << 20) // (256 << 10))


def test_a_loader_streams_a_batch_once_the_batches_in_flight_outgrow_the_cache(tmp_path):
    assert loader_stores(3, 1 << 20, 4 << 20) == "auto"  # 15 MiB in flight: stays cached
    assert loader_stores(3, 4 << 20, 8 << 20) == "stream"  # 36 MiB
    assert loader_stores(1, LOADER_CACHE_BYTES, 1) == "stream"
    H.write_records(str(tmp_path / "big"), 64, (224, 224, 3), 2)
    H.write_records(str(tmp_path / "small"), 64, (32, 32, 3), 2)
    for name, shape, streamed in (("big", (224, 224, 3), True), ("small", (32, 32, 3), False)):
        dl = DataLoader(RecordDataset(str(tmp_path / name), shape), batch_size=32, dtype=np.float32)
        for _ in dl:
            pass
        assert dl.report()["collate"]["streamed"] is streamed, name
        dl.close()


@pytest.mark.skipif(native_collate.cpu_count() < 2, reason="one CPU: one thread either way")
@pytest.mark.parametrize("prefetch", [1, 2])
def test_image_batches_decode_within_their_readers_share_of_the_cpus(tmp_path, prefetch):
    from fastload.batch.image_pipeline import CenterCrop, ImagePipeline, Resize
    from fastload.plan.image_datasets import ImageList
    from tests.support import images as img

    paths = []
    for i in range(32):
        paths.append(str(tmp_path / f"{i}.jpg"))
        with open(paths[-1], "wb") as f:
            f.write(img.jpeg(96, 128, i))
    pipeline = ImagePipeline(Resize(40), CenterCrop(32))
    dl = DataLoader(ImageList(paths), batch_size=16, transform=pipeline, prefetch=prefetch)
    for _ in dl:
        pass
    threads = dl.stats()["images"]["threads"]
    dl.close()
    cpus = native_collate.cpu_count()
    # two readers: each decodes its batches in its own share; a lone reader spreads
    assert threads == (max(1, cpus // 2) if prefetch == 2 else min(cpus, 16))
