"""The loader's numbers against ground truth computed here: bytes, requests a real server
logged, node cache hits/misses/evictions against the cache folder, skips, consistency."""

from __future__ import annotations

import json
import math

from fastload.loop.loader import DataLoader
from fastload.plan.datasets import ObjectDataset
from fastload.storage.engine import RangeEngine
from tests.support.servers import payload

SIZES = [3000 + 97 * i for i in range(12)]


def _objects(server, sizes=SIZES):
    names = []
    for i, n in enumerate(sizes):
        server.put(f"o{i}.bin", payload(n, i))
        names.append(server.url(f"o{i}.bin"))
    return names


def _gets(server) -> int:
    return sum(1 for e in server.server.log if e[0] == "GET")


def _walk(stats, path=""):
    if isinstance(stats, dict):
        for k, v in stats.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(stats, list | tuple):
        for i, v in enumerate(stats):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, stats


def _sane(stats):
    json.dumps(stats)
    for path, v in _walk(stats):
        if isinstance(v, float):
            assert math.isfinite(v), path
        if isinstance(v, int | float) and not isinstance(v, bool):
            assert v >= 0, (path, v)


def _epochs(dl, n):
    for _ in range(n):
        for _ in dl:
            pass
    return dl.stats()["epochs"]


def test_bytes_and_requests_match_the_server_log(simple_http_server):
    names = _objects(simple_http_server)
    dl = DataLoader(ObjectDataset(names, sizes=SIZES), batch_size=4, engine=RangeEngine())
    e0, e1 = _epochs(dl, 2)
    assert e0["bytes"] == e1["bytes"] == sum(SIZES)  # the samples' bytes
    assert e0["storage_bytes"] == sum(SIZES)  # what the backends read: no over-read here
    assert e0["requests"] + e1["requests"] == _gets(simple_http_server)
    _sane(dl.stats())


def test_block_reads_and_the_cache_against_the_cache_folder(http_server, tmp_path):
    names = _objects(http_server)
    cdir = tmp_path / "cache"
    dl = DataLoader(
        ObjectDataset(names, sizes=SIZES),
        batch_size=4,
        engine=RangeEngine(),
        cache_dir=str(cdir),
        block_size=1 << 16,
    )
    e0, e1 = _epochs(dl, 2)
    # the epoch's bytes are its samples', never the engine's (which read the cache files too)
    assert e0["bytes"] == e1["bytes"] == sum(SIZES)
    assert e0["storage_bytes"] >= sum(SIZES)  # remote blocks, then their cached copies
    assert e0["cache_misses"] == len(SIZES) and e1["cache_misses"] == 0  # one block each
    assert e1["cache_hits"] >= len(SIZES) and e1["connects"] == 0
    assert e1["cache_bytes_read"] == sum(SIZES) and e0["cache_bytes"] == sum(SIZES)
    gets = (
        sum(1 for e in http_server.server.log if e[0] == "GET")
        if hasattr(http_server.server, "log")
        else None
    )
    if gets is not None:
        assert gets == len(SIZES)
    assert e0["skipped"] == e1["skipped"] == 0
    for e in (e0, e1):
        assert "open_files" not in e and "cache_stored_bytes" not in e  # gauges, not growth
    _sane(dl.stats())


def test_a_running_epoch_counts_its_reads_and_close_never_lowers_a_counter(http_server, tmp_path):
    names = _objects(http_server)
    engine = RangeEngine()
    dl = DataLoader(ObjectDataset(names, sizes=SIZES), batch_size=4, engine=engine)
    it = iter(dl)
    next(it)
    live = dl.stats()["epochs"][-1]
    assert live["running"] and live["requests"] >= 4 and live["storage_bytes"] >= sum(SIZES[:4])
    next(it)
    later = dl.stats()["epochs"][-1]
    for k in ("requests", "storage_bytes", "samples", "bytes", "batches"):
        assert later[k] >= live[k], k
    before = engine.stats()
    engine.close()  # the backends go; what they counted stays
    after = engine.stats()
    for k in ("requests", "bytes", "connects"):
        assert after[k] == before[k] > 0, k
    dl.close()
    closed = dl.stats()["epochs"][-1]
    assert closed["requests"] >= later["requests"] and closed["batches"] >= later["batches"]
    _sane(dl.stats())


def _slow_transform(x):
    import time as _t

    t0 = _t.perf_counter()
    while _t.perf_counter() - t0 < 0.02:  # 20 ms of worker CPU per sample
        pass
    return x


def test_retries_equal_the_faults_queued(http_server, fault_proxy_http):
    from tests.support.servers import Fault

    http_server.put("r.bin", payload(40_000, 3))
    ds = ObjectDataset([f"{fault_proxy_http.endpoint}/r.bin"] * 4, sizes=[40_000] * 4)
    dl = DataLoader(ds, batch_size=4, engine=RangeEngine(backoff_base=0.01, backoff_cap=0.02))
    fault_proxy_http.queue(Fault("slowdown", retry_after=0), Fault("status", status=500))
    fault_proxy_http.queue(Fault("reset", after=100))
    dl.set_epoch(0)
    e0 = _epochs(dl, 1)[-1]
    assert fault_proxy_http.pending() == 0
    assert e0["retries"] == 3
    dl.set_epoch(0)  # the same epoch again: no faults, no retries
    e1 = _epochs(dl, 1)[-1]
    assert e1["retries"] == 0 and e1["epoch"] == 0
    assert (
        e1["requests"] == sum(1 for e in fault_proxy_http.log if e[0] == "GET") - (e0["requests"])
    )
    _sane(dl.stats())


def test_skipped_images_are_counted_per_epoch_in_tar_shards_and_folders(tmp_path):
    from fastload.batch.image_pipeline import CenterCrop, ImagePipeline, Resize
    from fastload.plan.image_datasets import ImageFolder
    from fastload.plan.tar_shards import TarShardDataset
    from tests.support import images as img
    from tests.support.tar_data import write_image_shards

    blobs = [img.jpeg(30, 30, i) for i in range(20)]
    bad = (3, 6, 13)  # planted: truncated JPEGs
    for b in bad:
        blobs[b] = blobs[b][:300]
    shards = write_image_shards(str(tmp_path / "tars"), blobs, [i % 2 for i in range(20)], 5)
    written = img.write_folder(str(tmp_path / "folder"), {"a": 4, "b": 4}, h=30, w=30)
    paths = sorted(written)
    for p in (paths[2], paths[7]):
        open(p, "wb").close()
    for ds, planted in (
        (TarShardDataset(shards, field="jpg", label="cls"), len(bad)),
        (ImageFolder(str(tmp_path / "folder")), 2),
    ):
        pipe = ImagePipeline(Resize(28), CenterCrop(24))
        dl = DataLoader(ds, batch_size=5, transform=pipe, on_error="skip")
        for epoch in (0, 1):
            dl.set_epoch(epoch)
            for _ in dl:
                pass
        e0, e1 = dl.stats()["epochs"]
        assert e0["skipped"] == e1["skipped"] == planted  # each epoch's own, not cumulative
        assert e0["image_skipped"] == e1["image_skipped"] == planted
        assert dl.stats()["images"]["skipped"] == dl.report()["images"]["skipped"] == 2 * planted
        _sane(dl.stats())


def test_cache_evictions_equal_the_entries_that_left_the_cache_folder(http_server, tmp_path):
    names = _objects(http_server)
    cdir = tmp_path / "cache"
    dl = DataLoader(
        ObjectDataset(names, sizes=SIZES),
        batch_size=4,
        engine=RangeEngine(),
        cache_dir=str(cdir),
        cache_limit=4 * (1 << 13) + 4 * 5000,  # room for a few of the 12 entries
        block_size=1 << 16,
    )
    seen: set[str] = set()
    for epoch in (0, 1):
        dl.set_epoch(epoch)
        for _ in dl:
            seen |= {p.name for p in (cdir / "blocks").rglob("*") if p.is_file()}
    left = {p.name for p in (cdir / "blocks").rglob("*") if p.is_file()}
    e0, e1 = dl.stats()["epochs"]
    stored = e0["cache_misses"] + e1["cache_misses"]  # every miss stored one entry
    assert e0["cache_evictions"] + e1["cache_evictions"] == stored - len(left) > 0
    assert dl.stats()["cache"]["evictions"] == stored - len(left)
    assert len(seen) <= len(SIZES)
    _sane(dl.stats())


def test_worker_transform_time_is_in_the_stage_table(tmp_path):
    import numpy as np

    from fastload.plan.datasets import RecordDataset
    from tests.support.loader_helpers import write_records

    write_records(str(tmp_path / "rec"), 20, (4,), 2)
    ds = RecordDataset(str(tmp_path / "rec"), (4,), labels=np.arange(20), transform=_slow_transform)
    dl = DataLoader(
        ds, batch_size=5, num_workers=2, enable_transforms=True, multiprocessing_context="fork"
    )
    for epoch in (0, 1):
        dl.set_epoch(epoch)
        for _ in dl:
            pass
    for e in dl.stats()["epochs"]:
        # 20 samples x 20 ms of worker CPU each: the workers' time is the transform stage's
        assert e["stages"]["transform"]["total_s"] >= 20 * 0.02 * 0.9, e["stages"]
        assert e["samples"] == 20 and e["batches"] == 4
    dl.close()
    _sane(dl.stats())
