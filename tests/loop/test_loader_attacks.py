"""A DataLoader handled as a hostile caller would: pickled (with or without an epoch)."""

from __future__ import annotations

import copy
import pickle

import pytest

from fastload.loop.loader import DataLoader


def test_pickling_a_loader_is_refused_by_name(recs):
    ds, _ = recs
    dl = DataLoader(ds, batch_size=10)
    for state in ("idle", "mid-epoch"):
        if state == "mid-epoch":
            it = iter(dl)
            next(it)
        with pytest.raises(TypeError, match="fastload DataLoader cannot be pickled"):
            pickle.dumps(dl)
        with pytest.raises(TypeError, match="cannot be pickled"):
            copy.deepcopy(dl)
    assert sum(1 for _ in it) == 9  # refusing touched nothing
    assert pickle.loads(pickle.dumps(ds)).uris == ds.uris  # the dataset is what travels
    dl.close()
