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
