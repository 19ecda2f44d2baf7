"""ImageFolder and ImageList: classes and labels as torchvision has them, extension filtering,
skipped files counted and named, and every URI form the engine reads."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fastload.plan.image_datasets import IMG_EXTENSIONS, ImageFolder, ImageList
from tests.support import images as img


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "train"
    written = img.write_folder(str(root), {"zebra": 2, "ant": 3, "Bee": 1})
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / "ant" / "UPPER.JPG").write_bytes(img.jpeg(20, 20, 99))
    (root / "Bee" / "pic.PnG").write_bytes(img.encode(img.picture(10, 12), "PNG"))
    (root / "loose.jpg").write_bytes(img.jpeg(10, 10, 98))  # outside any class folder
    (root / "zebra" / "deep").mkdir()
    (root / "zebra" / "deep" / "x.jpeg").write_bytes(img.jpeg(12, 12, 97))
    return root, written


def test_classes_labels_and_samples_as_torchvision(tree):
    root, _ = tree
    ds = ImageFolder(root)
    assert ds.classes == ["Bee", "ant", "zebra"]  # sorted, case-sensitive like os.scandir
    assert ds.class_to_idx == {"Bee": 0, "ant": 1, "zebra": 2}
    names = [os.path.relpath(u, root) for u, _ in ds.samples]
    assert names == [
        "Bee/img000.jpg", "Bee/pic.PnG",
        "ant/UPPER.JPG", "ant/img000.jpg", "ant/img001.jpg", "ant/img002.jpg",
        "zebra/deep/x.jpeg", "zebra/img000.jpg", "zebra/img001.jpg",
    ]  # fmt: skip
    assert ds.targets == [0, 0, 1, 1, 1, 1, 2, 2, 2] and ds.imgs is ds.samples
    assert len(ds) == 9 and ds.uris == [u for u, _ in ds.samples]
    assert ds.skipped == 2 and sorted(os.path.basename(u) for u in ds.skipped_files) == [
        "loose.jpg",
        "notes.txt",
    ]
    assert ds.labels_for(np.array([0, 3, 8])).tolist() == [0, 1, 2]
    assert ds.sizes.tolist() == [os.path.getsize(u) for u in ds.uris]
    assert "9 images in 3 classes, 2 other files skipped" in repr(ds)


def test_extension_filter_is_case_insensitive(tree):
    root, _ = tree
    jpg = ImageFolder(root, extensions=("JPG",))
    assert all(u.lower().endswith(".jpg") for u in jpg.uris) and len(jpg) == 7
    assert jpg.skipped == 4
    assert ".webp" in IMG_EXTENSIONS
    with pytest.raises(ValueError, match="extensions="):
        ImageFolder(root, extensions=[])


def test_a_class_without_images(tree):
    root, _ = tree
    (root / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"classes \['empty'\]"):
        ImageFolder(root)
    ds = ImageFolder(root, allow_empty=True)
    assert ds.classes == ["Bee", "ant", "empty", "zebra"] and ds.class_to_idx["zebra"] == 3


def test_missing_root_and_no_classes(tmp_path):
    with pytest.raises(FileNotFoundError):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(img.jpeg(8, 8))
    with pytest.raises(FileNotFoundError, match="no class folders"):
        ImageFolder(tmp_path / "flat")


def test_direct_uri_root(tree):
    root, _ = tree
    ds = ImageFolder(f"direct://{root}")
    assert len(ds) == 9 and all(u.startswith("direct://") for u in ds.uris)
    assert ds.classes == ["Bee", "ant", "zebra"]


def test_getitem_decodes(tree):
    root, written = tree
    ds = ImageFolder(root)
    image, label = ds[3]
    assert label == 1 and image.dtype == np.uint8
    assert np.array_equal(image, img.pil_rgb(written[ds.uris[3]][1]))


def test_image_list_with_labels(tree):
    root, written = tree
    paths = sorted(written)
    ds = ImageList(paths, labels=np.arange(len(paths)) * 10)
    assert len(ds) == len(paths) and ds.layout == "HWC" and ds.decodes_images
    image, label = ds[2]
    assert label == 20 and np.array_equal(image, img.pil_rgb(written[paths[2]][1]))
    unlabelled = ImageList(paths[:2])
    assert unlabelled[1].shape == img.pil_rgb(written[paths[1]][1]).shape
    with pytest.raises(ValueError, match="labels has 1 entries"):
        ImageList(paths, labels=[1])
