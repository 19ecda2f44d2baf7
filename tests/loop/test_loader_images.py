"""DataLoader over image folders with a declared pipeline: fixed-shape batches in every output
form, the right labels, and every LoaderOptions knob still acting (order, resume, sharding,
prefetch, timeout, pinning); bad files raise naming them or are skipped and counted."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastload.batch.image_pipeline import (
    CenterCrop,
    ImagePipeline,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
)
from fastload.batch.ragged import RaggedBatch
from fastload.errors import ImageDecodeError
from fastload.loop.loader import DataLoader
from fastload.plan.image_datasets import ImageFolder, ImageList
from fastload.plan.options import LoaderOptions
from tests.support import images as img

TRAIN = ImagePipeline(RandomResizedCrop(24), RandomHorizontalFlip())
EVAL = ImagePipeline(Resize(28), CenterCrop(24))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs") / "train"
    written = img.write_folder(str(root), {"a": 7, "b": 6, "c": 7}, h=40, w=50)
    return str(root), written


@pytest.fixture(scope="module")
def indexed(folder):
    """ImageList whose labels are the dataset indices (so a batch row names its file)."""
    root, written = folder
    paths = sorted(written)
    return ImageList(paths, labels=np.arange(len(paths))), [written[p][1] for p in paths]


def _expected(pipe, blobs, index, epoch, seed, **out):
    return pipe.apply([blobs[index]], indices=[index], epoch=epoch, seed=seed, **out)[0]


def test_train_batches_are_the_pipeline_of_each_labelled_file(indexed):
    ds, blobs = indexed
    opts = LoaderOptions(batch_size=8, shuffle=True, seed=3)
    dl = DataLoader(ds, opts, transform=TRAIN)
    seen = []
    for epoch in range(2):
        dl.set_epoch(epoch)
        for x, y in dl:
            assert x.shape[1:] == (24, 24, 3) and x.dtype == np.uint8
            for row, i in zip(x, y, strict=True):
                assert np.array_equal(row, _expected(TRAIN, blobs, int(i), epoch, 3))
            seen.extend(y.tolist())
    assert sorted(seen) == sorted(list(range(len(ds))) * 2)
    assert dl.stats()["images"]["images"] == 2 * len(ds) and dl.report()["images"]["skipped"] == 0


@pytest.mark.parametrize(
    "dtype,memory_format,shape",
    [
        (np.float32, "channels_first", (3, 24, 24)),
        (np.float16, "channels_last", (24, 24, 3)),
        ("bfloat16", "channels_first", (3, 24, 24)),
        (np.uint8, "channels_first", (3, 24, 24)),
    ],
)
def test_output_dtypes_and_layouts(indexed, dtype, memory_format, shape):
    ds, blobs = indexed
    norm = {} if dtype == np.uint8 else {"mean": img.IMAGENET_MEAN, "std": img.IMAGENET_STD}
    dl = DataLoader(
        ds, batch_size=5, memory_format=memory_format, dtype=dtype, transform=EVAL, **norm
    )
    x, y = next(iter(dl))
    assert x.shape == (5, *shape) and x.dtype == (np.uint16 if dtype == "bfloat16" else dtype)
    want = _expected(EVAL, blobs, int(y[2]), 0, 0, memory_format=memory_format, dtype=dtype, **norm)
    assert np.array_equal(x[2], want)


def test_torch_consumer_channels_last_pinned(indexed):
    torch = pytest.importorskip("torch")
    ds, _ = indexed
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        dl = DataLoader(
            ds,
            batch_size=4,
            consumer="torch",
            memory_format="channels_last",
            pin_memory=True,
            dtype=np.float32,
            mean=img.IMAGENET_MEAN,
            std=img.IMAGENET_STD,
            transform=TRAIN,
        )
    x, y = next(iter(dl))
    assert isinstance(x, torch.Tensor) and tuple(x.shape) == (4, 3, 24, 24)
    assert x.is_contiguous(memory_format=torch.channels_last) and y.dtype == torch.int64
    assert dl.pin_mode in ("cuda", "mlock", "none")
    nchw = DataLoader(
        ds, batch_size=4, consumer="torch", dtype="bfloat16", scale=1 / 255, transform=EVAL
    )
    xb, _ = next(iter(nchw))
    assert xb.dtype == torch.bfloat16 and tuple(xb.shape) == (4, 3, 24, 24) and xb.is_contiguous()


def test_resume_gives_the_rest_of_the_epoch_exactly(indexed):
    ds, _ = indexed
    opts = LoaderOptions(batch_size=4, shuffle=True, seed=11)
    full = [(x.copy(), y.copy()) for x, y in DataLoader(ds, opts, transform=TRAIN)]
    first = DataLoader(ds, opts, transform=TRAIN)
    it = iter(first)
    for _ in range(2):
        next(it)
    state = first.state_dict()
    again = DataLoader(ds, opts, transform=TRAIN)
    again.load_state_dict(state)
    rest = list(again)
    assert len(rest) == len(full) - 2
    for (xa, ya), (xb, yb) in zip(full[2:], rest, strict=True):
        assert np.array_equal(ya, yb) and np.array_equal(xa, xb)


def test_prefetch_and_loading_mode_do_not_change_the_samples(indexed):
    ds, _ = indexed

    def run(**kw):
        out = {}
        for x, y in DataLoader(ds, batch_size=3, shuffle=True, seed=2, transform=TRAIN, **kw):
            out.update({int(i): row.copy() for i, row in zip(y, x, strict=True)})
        return out

    base = run(prefetch=1)
    for kw in ({"prefetch": 4}, {"loading_mode": "async_pool", "prefetch": 3}):
        other = run(**kw)
        assert other.keys() == base.keys() and all(np.array_equal(other[k], base[k]) for k in base)
    with pytest.warns(UserWarning, match="no worker process is started"):
        DataLoader(ds, batch_size=3, num_workers=2, transform=TRAIN)


def test_distributed_ranks_split_the_images(indexed):
    ds, _ = indexed
    got = []
    for rank in range(2):
        dl = DataLoader(
            ds, batch_size=4, shuffle=True, shard_rank=rank, shard_world_size=2, transform=EVAL
        )
        got.append([int(i) for _, y in dl for i in y])
    assert not set(got[0]) & set(got[1]) and sorted(got[0] + got[1]) == list(range(len(ds)))
    weighted = DataLoader(
        ds,
        batch_size=5,
        sampler_type="weighted_random",
        weights=[1.0] + [0.0] * (len(ds) - 1),
        replacement=True,
        transform=EVAL,
    )
    _, y = next(iter(weighted))
    assert y.tolist() == [0] * 5


def test_drop_last_and_timeout(indexed, tmp_path):
    ds, _ = indexed
    assert [len(y) for _, y in DataLoader(ds, batch_size=6, drop_last=True, transform=EVAL)] == [
        6,
        6,
        6,
    ]
    # big files, so the batch takes far longer to decode than the timeout (no race with it)
    big = [str(tmp_path / f"big{i}.jpg") for i in range(4)]
    for i, path in enumerate(big):
        with open(path, "wb") as f:
            f.write(img.jpeg(1500, 2000, i))
    with pytest.raises(TimeoutError, match="timeout_seconds"):
        next(iter(DataLoader(ImageList(big), batch_size=4, timeout_seconds=1e-6, transform=EVAL)))


def test_folder_without_pipeline_gives_decoded_images_with_shapes(folder):
    root, written = folder
    ds = ImageFolder(root)
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    assert isinstance(x, RaggedBatch) and x.count == 4 and y.tolist() == [0, 0, 0, 0]
    for i in range(4):
        assert np.array_equal(x.sample(i), img.pil_rgb(written[ds.uris[i]][1]))
    f, _ = next(
        iter(
            DataLoader(
                ds, batch_size=2, memory_format="channels_first", dtype=np.float32, scale=1 / 255
            )
        )
    )
    assert f.data.dtype == np.float32 and f.shapes[0].tolist() == [3, *x.shapes[0][:2].tolist()]


def test_a_python_transform_still_gets_the_file_bytes(folder):
    root, written = folder

    class Folder(ImageFolder):
        pass

    ds = Folder(root)
    ds.transform = lambda raw: np.frombuffer(raw.tobytes()[:4], np.uint8)
    x, _ = next(iter(DataLoader(ds, batch_size=2, enable_transforms=True)))
    assert x.tolist() == [[0xFF, 0xD8, 0xFF, 0xE0]] * 2


def test_bad_files_raise_naming_them_or_are_skipped(tmp_path):
    root = tmp_path / "bad"
    written = img.write_folder(str(root), {"a": 4, "b": 4}, h=30, w=30)
    paths = sorted(written)
    with open(paths[1], "r+b") as f:
        f.truncate(300)
    open(paths[5], "wb").close()  # zero bytes
    ds = ImageFolder(root)
    with pytest.raises(ImageDecodeError, match=r"img001\.jpg: sample 1: truncated JPEG") as info:
        list(DataLoader(ds, batch_size=8, transform=EVAL))
    assert info.value.uri == paths[1] and info.value.sample == 1
    dl = DataLoader(
        ds, batch_size=8, transform=ImagePipeline(Resize(28), CenterCrop(24), on_error="skip")
    )
    ((x, y),) = list(dl)
    assert y.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]  # replacements keep their own labels
    s = dl.stats()["images"]
    assert s["skipped"] == 2 and {e["uri"] for e in s["skipped_samples"]} == {paths[1], paths[5]}
    assert np.array_equal(x[1], x[2]) and np.array_equal(x[5], x[6])


def test_fixed_records_are_refused(tmp_path):
    from fastload.plan.datasets import RecordDataset

    np.zeros((4, 2, 2, 3), np.uint8).tofile(tmp_path / "r.bin")
    with pytest.raises(ValueError, match="holds fixed-size records"):
        DataLoader(RecordDataset(str(tmp_path / "r.bin"), (2, 2, 3)), transform=EVAL)
