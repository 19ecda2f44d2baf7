"""An ImageFolder on S3 (rclone serve s3): listed by prefix, classes from the key prefixes,
decoded into the same batches as the same folder on local disk."""

from __future__ import annotations

import numpy as np
import pytest

from fastload.batch.image_pipeline import ImagePipeline, RandomHorizontalFlip, RandomResizedCrop
from fastload.errors import ImageDecodeError
from fastload.loop.loader import DataLoader
from fastload.plan.image_datasets import ImageFolder
from fastload.storage.engine import RangeEngine
from tests.support import images as img
from tests.support.servers import start_rclone, stop

pytestmark = pytest.mark.s3


@pytest.fixture(scope="module")
def s3_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3img")
    local = root / "bucket" / "train"
    img.write_folder(str(local), {"cat": 5, "dog": 4, "eel": 3}, h=36, w=44)
    (local / "cat" / "README.md").write_text("skip me")
    (local / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    server = start_rclone(str(root))  # after writing: rclone's listing cache sees everything
    engine = RangeEngine(**server.options)
    yield engine, str(local)
    engine.close()
    stop(server)


def test_s3_image_folder_matches_the_local_one(s3_images):
    engine, local = s3_images
    remote = ImageFolder("s3://bucket/train", engine=engine)
    here = ImageFolder(local)
    assert remote.classes == here.classes == ["cat", "dog", "eel"]
    assert remote.targets == here.targets and remote.skipped == here.skipped == 1
    assert [u.removeprefix("s3://bucket/train/") for u in remote.uris] == [
        u.removeprefix(local + "/") for u in here.uris
    ]
    assert remote.sizes.tolist() == here.sizes.tolist()
    pipe = ImagePipeline(RandomResizedCrop(20), RandomHorizontalFlip(), on_error="skip")
    kw = dict(
        batch_size=6,
        shuffle=True,
        seed=4,
        dtype=np.float32,
        mean=img.IMAGENET_MEAN,
        std=img.IMAGENET_STD,
    )
    a = [(x.copy(), y.copy()) for x, y in DataLoader(remote, engine=engine, transform=pipe, **kw)]
    b = [(x.copy(), y.copy()) for x, y in DataLoader(here, transform=pipe, **kw)]
    assert len(a) == len(b) == 3  # 13 files (one broken: replaced) in batches of 6
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert np.array_equal(ya, yb) and np.array_equal(xa, xb)


def test_a_broken_object_is_named_by_its_s3_uri(s3_images):
    engine, _ = s3_images
    ds = ImageFolder("s3://bucket/train/", engine=engine)
    with pytest.raises(ImageDecodeError, match=r"s3://bucket/train/dog/broken\.jpg: sample 5"):
        list(
            DataLoader(
                ds, batch_size=12, engine=engine, transform=ImagePipeline(RandomResizedCrop(8))
            )
        )
