"""Datasets of encoded image files: a class-per-folder tree (``ImageFolder``, as torchvision's)
or a list of URIs with labels (``ImageList``).

One sample is one file (its bytes, read by the engine like any object); the DataLoader
decodes them natively (fastload.batch.image_pipeline) into batches. Roots and URIs are
anything the engine reads: a local folder, ``direct://``, ``s3://bucket/prefix/``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fastload.plan.datasets import Dataset, Labels, ObjectDataset, UriSpec
from fastload.storage.engine import RangeEngine, default_engine
from fastload.storage.uri import parse_uri

# torchvision's IMG_EXTENSIONS, and .gif; matched case-insensitively
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def _extensions(extensions: Sequence[str] | str) -> tuple[str, ...]:
    items = (extensions,) if isinstance(extensions, str) else tuple(extensions)
    if not items or not all(isinstance(e, str) and e for e in items):
        raise ValueError(f"extensions={extensions!r} is invalid: must be non-empty strings")
    return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in items)


def decoded_item(dataset: Dataset, item: Any, index: int) -> Any:
    """``dataset[index]`` of encoded image bytes (with its label, when it has labels) as the
    decoded ``(H, W, 3)`` uint8 image (with the label): one sample, by the native decoder."""
    from fastload.batch.image_pipeline import ImagePipeline  # the native decoder, on use

    raw, label = item if dataset.has_labels else (item, None)
    image = ImagePipeline().apply([raw], indices=[index]).sample(0)
    return image if label is None else (image, label)


class ImageList(ObjectDataset):
    """One encoded image file per sample, from a list of URIs (or a prefix), with labels.

    The DataLoader decodes the files (``transform=ImagePipeline(...)`` crops and resizes
    them into fixed-size batches; without one, each batch is a RaggedBatch of the decoded
    images with their shapes). ``dataset[i]`` decodes one image: ``(H, W, 3)`` uint8, with
    its label when there are labels.
    """

    decodes_images = True  # the loader's image path takes these samples

    def __init__(
        self,
        uris: UriSpec,
        *,
        labels: Labels = None,
        sizes: Sequence[int] | np.ndarray | None = None,
        engine: RangeEngine | None = None,
    ) -> None:
        super().__init__(uris, labels=labels, sizes=sizes, engine=engine)
        self.layout = "HWC"  # what the decoder makes of every file

    def __getitem__(self, index: int) -> Any:
        return decoded_item(self, super().__getitem__(index), index)


class ImageFolder(ImageList):
    """Images in one sub-folder per class, as torchvision's ImageFolder reads them.

    ``root``: a local folder, ``direct:///...`` or ``s3://bucket/prefix/``. Classes are the
    sub-folder names, sorted (``classes``, ``class_to_idx``); sample labels are the class
    indices (``targets``; ``samples`` holds (uri, label) pairs). Files whose extension is
    not in ``extensions`` (case-insensitive) and files outside a class folder are skipped
    and counted (``skipped``, named in ``skipped_files``). A class folder without any image
    is an error unless ``allow_empty``. A class folder that is a symlink to a folder is read
    through it (as torchvision reads one); folder links inside the tree are not followed, so
    a link loop cannot recurse.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        extensions: Sequence[str] | str = IMG_EXTENSIONS,
        allow_empty: bool = False,
        engine: RangeEngine | None = None,
    ) -> None:
        engine = engine or default_engine()
        exts = _extensions(extensions)
        text = os.fspath(root)
        prefix = parse_uri(text if text.endswith("/") else text + "/")
        base = prefix.path if prefix.path.endswith("/") else prefix.path + "/"
        listed = engine.list(prefix)
        if prefix.is_local:
            # A class folder that is a symlink to a folder (a tree assembled from links, as
            # torchvision's os.walk(followlinks=True) reads it): listed on its own, as the
            # listing follows no folder link (links inside it stay unfollowed, so a link
            # loop cannot recurse).
            for e in sorted(os.scandir(prefix.path), key=lambda e: e.name):
                if e.is_symlink() and e.is_dir():
                    listed += engine.list(parse_uri(text.rstrip("/") + "/" + e.name + "/"))
        per_class: dict[str, list[str]] = {}
        skipped: list[str] = []
        for uri in listed:
            rel = parse_uri(uri).path[len(base) :] if parse_uri(uri).path.startswith(base) else ""
            cls, sep, name = rel.partition("/")
            if not sep or not name or os.path.splitext(name)[1].lower() not in exts:
                skipped.append(uri)
                continue
            per_class.setdefault(cls, []).append(uri)
        if prefix.is_local:
            classes = sorted(e.name for e in os.scandir(prefix.path) if e.is_dir())
        else:  # an object store has no empty folders: the classes are the key prefixes
            classes = sorted(per_class)
        empty = [c for c in classes if c not in per_class]
        if empty and not allow_empty:
            raise FileNotFoundError(
                f"ImageFolder {text}: found no image file ({', '.join(exts)}) for the "
                f"classes {empty} (allow_empty=True keeps them)"
            )
        if not classes:
            raise FileNotFoundError(f"ImageFolder {text}: no class folders under it")
        self.root = text
        self.extensions = exts
        self.classes: list[str] = classes
        self.class_to_idx: dict[str, int] = {c: i for i, c in enumerate(classes)}
        self.samples: list[tuple[str, int]] = [
            (uri, self.class_to_idx[c]) for c in classes for uri in sorted(per_class.get(c, []))
        ]
        if not self.samples:
            raise FileNotFoundError(f"ImageFolder {text}: no image files under it")
        self.imgs = self.samples  # torchvision's other name for them
        self.targets: list[int] = [label for _, label in self.samples]
        self.skipped = len(skipped)
        self.skipped_files = skipped
        super().__init__(
            [uri for uri, _ in self.samples],
            labels=np.asarray(self.targets, dtype=np.int64),
            engine=engine,
        )

    def __repr__(self) -> str:
        return (
            f"ImageFolder({self.root!r}: {len(self)} images in {len(self.classes)} classes, "
            f"{self.skipped} other files skipped)"
        )


__all__ = ["IMG_EXTENSIONS", "ImageFolder", "ImageList", "decoded_item"]
