"""TorchIterableDataset in torch's DataLoader with the keywords a drop-in user would
leave as they were: torch's batching of already-whole batches is refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from fastload.plan.datasets import RecordDataset
from tests.support.loader_helpers import write_records

torch = pytest.importorskip("torch")
from fastload.adapters.torch_dataset import TorchIterableDataset  # noqa: E402


@pytest.fixture
def batches(tmp_path):
    write_records(str(tmp_path / "r"), 40, (4,), 2)
    return TorchIterableDataset(RecordDataset(str(tmp_path / "r"), (4,)), batch_size=8)


@pytest.mark.parametrize("kw", [{}, {"batch_size": 4}], ids=["default", "4"])
@pytest.mark.parametrize("workers", [0, 1])
def test_torch_batching_of_whole_batches_is_refused(batches, kw, workers):
    # before: torch's default batch_size=1 gave tensors of shape (1, 8, 4), silently
    tl = torch.utils.data.DataLoader(
        batches, num_workers=workers, multiprocessing_context="fork" if workers else None, **kw
    )
    with pytest.raises(ValueError, match="batch_size=None"):
        next(iter(tl))


def test_batch_size_none_and_a_plain_iter_still_work(batches):
    shapes = {tuple(x.shape) for x in torch.utils.data.DataLoader(batches, batch_size=None)}
    assert shapes == {(8, 4)}
    assert np.asarray(next(iter(batches))).shape == (8, 4)  # no torch fetcher: not checked
