"""The collate_fn for torch's own DataLoader (fastload.adapters.torch_collate): the fused
kernel in place of default_collate, batches from workers through shared slots."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.torch_data import MEAN, STD, mapped_segments

torch = pytest.importorskip("torch")
from fastload.adapters.torch_collate import TorchCollate, collate_fn  # noqa: E402

pytestmark = pytest.mark.torch


class MapRecords(torch.utils.data.Dataset):
    def __init__(self, data: np.ndarray) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.data[i], i


def test_collate_fn_matches_default_collate_and_normalises(recs):
    _, data = recs
    mine = torch.utils.data.DataLoader(MapRecords(data), batch_size=16, collate_fn=collate_fn())
    ref = torch.utils.data.DataLoader(MapRecords(data), batch_size=16)
    for (x, y), (rx, ry) in zip(mine, ref, strict=True):
        assert torch.equal(x, rx.permute(0, 3, 1, 2)) and x.is_contiguous() and torch.equal(y, ry)
    cl = TorchCollate(memory_format="channels_last", mean=MEAN, std=STD)
    x, y = cl([MapRecords(data)[i] for i in range(4)])
    assert x.is_contiguous(memory_format=torch.channels_last) and x.shape == (4, 3, 8, 6)
    want = ((data[:4].astype(np.float64) - MEAN) / STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(x.numpy(), want, rtol=1e-6, atol=1e-5)
    assert y.tolist() == [0, 1, 2, 3]
    bf = TorchCollate(dtype="bfloat16", mean=MEAN, std=STD)([torch.from_numpy(d) for d in data[:4]])
    assert bf.dtype == torch.bfloat16
    np.testing.assert_allclose(bf.float().numpy(), want, rtol=1e-2, atol=1e-2)


def collate_and_unpack(batch):
    """A user's wrapper that unpacks the batch (so torch pickles the tensors itself)."""
    from fastload.adapters.torch_slots import worker_sender

    out = TorchCollate()(batch)
    x, y = out
    return x, y, type(out).__name__, len(worker_sender().rings)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_collate_fn_in_a_worker_writes_batches_into_slots(recs, context):
    _, data = recs
    before = set(mapped_segments())
    assert type(TorchCollate()([MapRecords(data)[0]])) is tuple  # main process: a plain tuple
    tl = torch.utils.data.DataLoader(
        MapRecords(data),
        batch_size=20,
        num_workers=1,
        timeout=60,
        collate_fn=TorchCollate(memory_format="channels_last"),
        multiprocessing_context=context,
    )
    kept = list(tl)
    assert len(set(mapped_segments()) - before) >= 1  # batches came through a worker segment
    for x, y in kept:
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(x, torch.from_numpy(data[y.numpy()]).permute(0, 3, 1, 2))


def test_collate_fn_output_unpacked_by_a_wrapper_frees_its_slot(recs):
    _, data = recs
    tl = torch.utils.data.DataLoader(
        MapRecords(data),
        batch_size=10,
        num_workers=1,
        timeout=60,
        collate_fn=collate_and_unpack,
        multiprocessing_context="fork",
    )
    kept = list(tl)
    assert {k[2] for k in kept} == {"SharedTuple"}
    assert [k[3] for k in kept] == [1] * 10  # slots reused: the worker never needed a second ring
    assert torch.equal(torch.cat([x for x, *_ in kept]), torch.from_numpy(data).permute(0, 3, 1, 2))


def test_collate_fn_errors_name_the_problem(recs):
    _, data = recs
    with pytest.raises(ValueError, match="sample 1 has shape"):
        TorchCollate()([data[0], data[0][:4]])
    with pytest.raises(ValueError, match="memory_format='nhwc'"):
        TorchCollate(memory_format="nhwc")
    with pytest.raises(ValueError, match="empty batch"):
        TorchCollate()([])
