"""JPEGs in tar shards through the loader's native image path: the same batches as the same
images in an ImageFolder (same seed, same pipeline), labels from ``.cls`` or ``.json``, every
loader knob acting (block shuffle, shuffle_buffer, ranks, resume, prefetch), over local
disk, direct://, http:// and the rclone S3 server; a corrupt member is named by shard and
member, or skipped and counted."""

from __future__ import annotations

import os

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
from fastload.plan.image_datasets import ImageFolder
from fastload.plan.tar_shards import TarShardDataset
from fastload.storage.engine import RangeEngine
from tests.support import images as img
from tests.support.servers import start_rclone, stop
from tests.support.tar_data import write_image_shards

TRAIN = ImagePipeline(RandomResizedCrop(24), RandomHorizontalFlip())
EVAL = ImagePipeline(Resize(28), CenterCrop(24))
CLASSES = {"a": 9, "b": 8, "c": 9}  # 26 images
N = sum(CLASSES.values())
PER_SHARD = 7
NORM = {"dtype": np.float32, "mean": img.IMAGENET_MEAN, "std": img.IMAGENET_STD}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """An ImageFolder and the same JPEGs in tar shards, in the folder's sample order."""
    root = tmp_path_factory.mktemp("tarimg")
    written = img.write_folder(str(root / "folder"), CLASSES, h=40, w=50)
    folder = ImageFolder(str(root / "folder"))
    blobs = [written[u][1] for u in folder.uris]
    shards = write_image_shards(str(root / "tars"), blobs, folder.targets, PER_SHARD)
    return folder, blobs, shards


def batches(dl, epoch=0):
    dl.set_epoch(epoch)
    return [(x.copy(), y.copy()) for x, y in dl]


def expected(pipe, blobs, i, epoch, seed, **out):
    return pipe.apply([blobs[i]], indices=[i], epoch=epoch, seed=seed, **out)[0]


def check_rows(out, blobs, pipe, epoch, seed):
    """Every row of batches ``out`` (labels: the dataset index) is its image's pipeline."""
    for x, y in out:
        for row, i in zip(x, y, strict=True):
            assert np.array_equal(row, expected(pipe, blobs, int(i), epoch, seed))


def rank_loader(ds, rank, world, **kw):
    return DataLoader(
        ds, shuffle="block", shard_rank=rank, shard_world_size=world, transform=EVAL, **kw
    )


def test_tar_batches_equal_the_image_folder_batches(images):
    folder, blobs, shards = images
    ds = TarShardDataset(shards, field="jpg", label="cls")
    assert ds.decodes_images and ds.layout == "HWC" and len(ds) == N
    kw = dict(batch_size=8, shuffle=True, seed=5, transform=TRAIN, **NORM)
    for epoch in range(2):
        a = batches(DataLoader(ds, **kw), epoch)
        b = batches(DataLoader(folder, **kw), epoch)
        assert len(a) == len(b) == 4
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert xa.dtype == np.float32 and xa.shape[1:] == (24, 24, 3)
            assert np.array_equal(ya, yb) and np.array_equal(xa, xb)
    dl = DataLoader(ds, **kw)
    list(dl)
    assert dl.stats()["images"]["images"] == N and dl.report()["images"]["skipped"] == 0


def test_json_labels_and_block_shuffle_exactly_once(images):
    folder, blobs, shards = images
    ds = TarShardDataset(shards, field="jpg", label="json:meta.index")
    assert ds.labels_for(np.arange(N)).tolist() == list(range(N))  # label = folder index
    orders = []
    for epoch in range(2):
        dl = DataLoader(ds, batch_size=5, shuffle="block", block_size=4096, seed=7, transform=TRAIN)
        out = batches(dl, epoch)
        check_rows(out, blobs, TRAIN, epoch, 7)
        seen = [int(i) for _, y in out for i in y]
        assert sorted(seen) == list(range(N)) and seen != sorted(seen)
        orders.append(seen)
    assert orders[0] != orders[1]
    # block size and the shuffle buffer act on the order, never on what a sample decodes to
    small = DataLoader(
        ds, batch_size=5, shuffle="block", block_size=4096, shuffle_buffer=3, seed=7, transform=EVAL
    )
    seen = [int(i) for _, y in small for i in y]
    assert sorted(seen) == list(range(N)) and seen != orders[0]


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_the_shards_exactly_once_with_equal_batches(images, world):
    _, blobs, shards = images
    ds = TarShardDataset(shards, field="jpg", label="json:meta.index")
    got, counts = [], []
    for rank in range(world):
        out = batches(rank_loader(ds, rank, world, batch_size=4, block_size=4096, seed=1))
        counts.append(len(out))
        check_rows(out, blobs, EVAL, 0, 1)
        got.append([int(i) for _, y in out for i in y])
    assert len(set(counts)) == 1  # DDP never waits on a rank with fewer batches
    flat = [i for g in got for i in g]
    assert set(flat) == set(range(N)) and len(flat) - N < world * 4  # padding only


def test_two_ranks_resume_on_three_covering_the_rest_exactly_once(images):
    _, blobs, shards = images
    ds = TarShardDataset(shards, field="jpg", label="json:meta.index")

    def rank(r, world):
        return rank_loader(ds, r, world, batch_size=2, block_size=8192, seed=9)

    old = [rank(r, 2) for r in range(2)]
    seen, its = [], []
    for dl in old:
        it = iter(dl)
        for _ in range(3):  # ranks step together
            seen += next(it)[1].tolist()
        its.append(it)
    state = old[0].state_dict()
    shares = []
    for r in range(3):
        dl = rank(r, 3)
        dl.load_state_dict(state)
        out = batches(dl)
        check_rows(out, blobs, EVAL, 0, 9)
        shares.append([int(i) for _, y in out for i in y])
    assert len({len(s) for s in shares}) == 1  # equal batch counts on the new ranks
    rest = [i for s in shares for i in s]
    assert set(seen) | set(rest) == set(range(N)) and not set(seen) & set(rest)
    assert len(rest) - (N - len(seen)) < 3  # padding only


def test_resume_prefetch_and_workers_keep_the_samples(images):
    _, _, shards = images
    ds = TarShardDataset(shards, field="jpg", label="cls")
    opts = dict(batch_size=4, shuffle="block", block_size=8192, seed=11, transform=TRAIN)
    full = batches(DataLoader(ds, **opts))
    first = DataLoader(ds, **opts)
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    again = DataLoader(ds, **opts)
    again.load_state_dict(state)
    rest = batches(again)
    assert len(rest) == len(full) - 3
    for (xa, ya), (xb, yb) in zip(full[3:], rest, strict=True):
        assert np.array_equal(ya, yb) and np.array_equal(xa, xb)
    # async_pool hands batches on as they complete: compare sample by sample
    indexed = TarShardDataset(shards, field="jpg", label="json:meta.index")

    def by_index(**kw):
        out = batches(DataLoader(indexed, **opts, **kw))
        return {int(i): r for x, y in out for i, r in zip(y, x, strict=True)}

    base = by_index(prefetch=1)
    assert sorted(base) == list(range(N))
    for kw in ({"prefetch": 4}, {"loading_mode": "async_pool", "prefetch": 3}):
        other = by_index(**kw)
        assert other.keys() == base.keys() and all(np.array_equal(other[k], base[k]) for k in base)
    with pytest.warns(UserWarning, match="no worker process is started"):
        DataLoader(ds, num_workers=2, **opts)  # decoded on native threads, as ImageFolder's


def test_without_pipeline_images_are_decoded_whole_or_kept_as_bytes(images):
    folder, blobs, shards = images
    ds = TarShardDataset(shards, field="jpg", label="cls")
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    assert isinstance(x, RaggedBatch) and y.tolist() == folder.targets[:4]
    for k in range(4):
        assert np.array_equal(x.sample(k), img.pil_rgb(blobs[k]))
    image, label = ds[9]
    assert np.array_equal(image, img.pil_rgb(blobs[9])) and label == folder.targets[9]
    raw = TarShardDataset(shards, field="jpg", label="cls", decode=False)
    assert not raw.decodes_images and raw.image_format == "jpeg"
    x, _ = next(iter(DataLoader(raw, batch_size=4)))
    assert [x.sample(k).tobytes() for k in range(4)] == blobs[:4]
    assert raw[9][0].tobytes() == blobs[9]
    with pytest.raises(ValueError, match="decode=True is invalid"):
        TarShardDataset(shards, field="cls", decode=True)
    with pytest.raises(ValueError, match="decode='yes' is invalid"):
        TarShardDataset(shards, field="jpg", decode="yes")  # type: ignore[arg-type]


def test_png_and_jpeg_members_mixed(tmp_path):
    pics = [img.picture(30 + i, 40, i) for i in range(6)]
    blobs = [img.encode(p, "PNG" if i % 2 else "JPEG", quality=95) for i, p in enumerate(pics)]
    exts = ["png" if i % 2 else "jpg" for i in range(6)]
    shards = write_image_shards(str(tmp_path), blobs, list(range(6)), 4, exts=exts)
    ds = TarShardDataset(shards, field="jpg;png", label="cls")
    assert ds.image_format == "mixed" and ds.decodes_images
    x, y = next(iter(DataLoader(ds, batch_size=6)))
    for k in range(6):
        assert np.array_equal(x.sample(k), img.pil_rgb(blobs[int(y[k])]))
    assert DataLoader(ds, batch_size=6).stats()["images"] is not None


def test_a_corrupt_member_is_named_by_shard_and_member_or_skipped(tmp_path):
    blobs = [img.jpeg(30, 30, i) for i in range(10)]
    blobs[6] = blobs[6][:300]  # truncated
    blobs[8] = b"\xff\xd8\xff\xe0 not a jpeg at all"
    shards = write_image_shards(str(tmp_path), blobs, [i % 2 for i in range(10)], 5)
    ds = TarShardDataset(shards, field="jpg", label="cls")
    with pytest.raises(ImageDecodeError, match=r"shard-000001\.tar: member k000006\.jpg ") as info:
        list(DataLoader(ds, batch_size=10, transform=EVAL))
    assert info.value.uri == shards[1] and info.value.member == "k000006.jpg"
    assert info.value.sample == 6
    dl = DataLoader(ds, batch_size=10, transform=EVAL, on_error="skip")
    ((x, y),) = list(dl)
    s = dl.stats()["images"]
    assert s["skipped"] == 2
    assert {(e["uri"], e["member"]) for e in s["skipped_samples"]} == {
        (shards[1], "k000006.jpg"),
        (shards[1], "k000008.jpg"),
    }
    assert np.array_equal(x[6], x[7]) and np.array_equal(x[8], x[9])  # replaced by the next
    assert y.tolist() == [0, 1, 0, 1, 0, 1, 1, 1, 1, 1]  # replacements keep their own labels


def test_direct_and_http_shards_give_the_local_batches(images, http_server):
    _, _, shards = images
    kw = dict(batch_size=8, shuffle="block", block_size=8192, seed=2, transform=TRAIN, **NORM)
    want = batches(DataLoader(TarShardDataset(shards, field="jpg", label="cls"), **kw))
    folder = os.path.dirname(shards[0])
    direct = TarShardDataset(
        f"direct://{folder}/shard-{{000000..000003}}.tar", field="jpg", label="cls"
    )
    for p in shards:
        with open(p, "rb") as f:
            http_server.put(f"timg/{os.path.basename(p)}", f.read())
    eng = RangeEngine()
    http = TarShardDataset(
        http_server.url("timg/shard-{000000..000003}.tar"), field="jpg", label="cls", engine=eng
    )
    for ds, engine in ((direct, None), (http, eng)):
        got = batches(DataLoader(ds, engine=engine, **kw))
        assert len(got) == len(want)
        for (xa, ya), (xb, yb) in zip(want, got, strict=True):
            assert np.array_equal(ya, yb) and np.array_equal(xa, xb)
    eng.close()


# -- S3 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_images(tmp_path_factory, images):
    _, blobs, _ = images
    root = tmp_path_factory.mktemp("s3tarimg")
    bad = list(blobs)
    bad[3] = bad[3][:200]
    folder = images[0]
    write_image_shards(str(root / "bucket" / "good"), blobs, folder.targets, PER_SHARD)
    write_image_shards(str(root / "bucket" / "bad"), bad, list(range(N)), PER_SHARD)
    server = start_rclone(str(root))  # after writing: rclone's listing cache sees everything
    engine = RangeEngine(**server.options)
    yield engine
    engine.close()
    stop(server)


@pytest.mark.s3
def test_s3_shards_give_the_image_folder_batches(images, s3_images, tmp_path):
    folder, blobs, _ = images
    engine = s3_images
    ds = TarShardDataset("s3://bucket/good/", field="jpg", label="cls", engine=engine)
    assert ds.decodes_images and len(ds) == N
    kw = dict(batch_size=8, shuffle=True, seed=4, transform=TRAIN, **NORM)
    a = batches(DataLoader(ds, engine=engine, **kw))
    b = batches(DataLoader(folder, **kw))
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert np.array_equal(ya, yb) and np.array_equal(xa, xb)
    # block shuffle through the node-local cache: epoch 2 from disk, the same images
    ds = TarShardDataset("s3://bucket/good/", field="jpg", label="json:meta.index", engine=engine)
    block = dict(batch_size=8, shuffle="block", block_size=8192, seed=4, transform=EVAL)
    dl = DataLoader(ds, engine=engine, cache_dir=str(tmp_path / "cache"), **block)
    for epoch in range(2):
        out = batches(dl, epoch)
        check_rows(out, blobs, EVAL, epoch, 4)
        seen = [int(i) for _, y in out for i in y]
        assert sorted(seen) == list(range(N))
    cache = dl.stats()["cache"]
    assert cache["hits"] > 0 and cache["misses"] > 0


@pytest.mark.s3
def test_s3_corrupt_member_is_named_or_skipped(s3_images):
    engine = s3_images
    ds = TarShardDataset("s3://bucket/bad/", field="jpg", label="cls", engine=engine)
    with pytest.raises(ImageDecodeError, match=r"s3://bucket/bad/shard-000000\.tar: member ") as e:
        list(DataLoader(ds, engine=engine, batch_size=8, transform=EVAL))
    assert e.value.member == ds.member_name(3) and e.value.sample == 3
    dl = DataLoader(
        ds, engine=engine, batch_size=8, shuffle="block", transform=EVAL, on_error="skip"
    )
    seen = [int(i) for _, y in dl for i in y]
    assert len(seen) == N and set(seen) == set(range(N)) - {3}
    (entry,) = dl.stats()["images"]["skipped_samples"]
    assert entry["uri"] == "s3://bucket/bad/shard-000000.tar" and entry["member"] == ds.member_name(
        3
    )
