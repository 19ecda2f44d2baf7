"""One epoch's bookkeeping (fastload.loop.epoch): the done set, the batches to run, and
what an epoch of millions of batches costs before its first batch."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset


def test_batch_set_is_a_set_of_batch_numbers():
    from fastload.loop.epoch import BatchSet, Progress

    s = BatchSet({5, 1, 3})
    assert len(s) == 3 and 3 in s and 2 not in s and 99 not in s and -1 not in s
    s.add(3)
    s.add(200)  # grows
    assert len(s) == 4 and list(s) == s.tolist() == [1, 3, 5, 200]
    assert s.mask(7).tolist() == [False, True, False, True, False, True, False]
    assert s.missing(7).tolist() == [0, 2, 4, 6]
    assert BatchSet().missing(4).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=">= 0"):
        BatchSet([-2])
    assert isinstance(Progress(0, {1, 2}).done, BatchSet)  # load_state_dict passes a set


@pytest.mark.parametrize("mode", ["sequential", "async_pool"])
def test_resume_with_the_last_short_batch_done(tmp_path, mode):
    (tmp_path / "r.bin").write_bytes(bytes(range(10)))
    ds = RecordDataset(str(tmp_path / "r.bin"), (1,), np.uint8, labels=np.arange(10))
    dl = DataLoader(ds, batch_size=4, loading_mode=mode)
    dl.load_state_dict({**dl.state_dict(), "batches_done": [2]})  # batch 2: samples 8, 9
    assert dl.state_dict()["samples_done"] == 2
    got = sorted(int(v) for _, y in dl for v in y)
    assert got == list(range(8))


def test_an_epoch_of_a_million_batches_costs_arrays_not_objects(tmp_path):
    # batch_size=1 over 10**6 samples: the order (8 MB int64), the batches to run (4 MB)
    # and the done bitmap (1 MB); no Python object per batch (a list of tuples and a list
    # of ints took ~100 MB here, and 10**7 samples 1.76 GiB).
    n = 10**6
    with open(tmp_path / "r.bin", "wb") as f:
        f.truncate(n)
    dl = DataLoader(RecordDataset(str(tmp_path / "r.bin"), (1,), np.uint8), batch_size=1)
    tracemalloc.start()
    try:
        assert len(dl) == n
        it = iter(dl)
        assert next(it).shape == (1, 1)
        peak = tracemalloc.get_traced_memory()[1]
        it.close()
    finally:
        tracemalloc.stop()
    dl.close()
    assert peak < 20 << 20, f"{peak / 2**20:.1f} MiB traced before the first batch"
