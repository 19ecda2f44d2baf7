"""Declared image pipelines: checks, torchvision's crop geometry, reproducible draws, other
formats through Pillow, and what happens to bad files (raise naming them, or skip)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from fastload.batch import counter_rng
from fastload.batch.image_pipeline import (
    CenterCrop,
    ImageBatcher,
    ImagePipeline,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
)
from fastload.batch.ragged import RaggedBatch
from fastload.errors import ImageDecodeError, ImageTooLargeError, UnsupportedImageError
from tests.support import images as img

TRAIN = ImagePipeline(RandomResizedCrop(32), RandomHorizontalFlip())


def slab(blobs):
    lens = np.array([len(b) for b in blobs], dtype=np.int64)
    offs = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offs, lens


# -- declarations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,text",
    [
        (lambda: RandomResizedCrop(0), "must be >= 1"),
        (lambda: RandomResizedCrop(8, scale=(0.5, 2)), r"must lie in \(0, 1\]"),
        (lambda: RandomResizedCrop(8, ratio=(2, 1)), "low must be <= high"),
        (lambda: Resize((4, -1)), "must be >= 1"),
        (lambda: RandomHorizontalFlip(1.5), r"must lie in \[0, 1\]"),
        (lambda: ImagePipeline(RandomResizedCrop(8), CenterCrop(4)), "without RandomResizedCrop"),
        (lambda: ImagePipeline(Resize(8), RandomResizedCrop(4)), "takes no other crop"),
        (lambda: ImagePipeline(CenterCrop(4), Resize(8)), "before any CenterCrop"),
        (lambda: ImagePipeline(RandomHorizontalFlip(), RandomHorizontalFlip()), "more than one"),
        (lambda: ImagePipeline(on_error="ignore"), "on_error='ignore' is invalid"),
        (lambda: ImagePipeline(dct_scaling="half"), "dct_scaling='half' is invalid"),
        (lambda: ImagePipeline(max_pixels=-1), "max_pixels=-1 is invalid"),
    ],
)
def test_bad_declarations_name_the_knob(make, text):
    with pytest.raises(ValueError, match=text):
        make()


def test_callables_are_not_steps():
    with pytest.raises(TypeError, match="is not a declared step"):
        ImagePipeline(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a fastload ImagePipeline"):
        ImageBatcher(lambda x: x)  # type: ignore[arg-type]


def test_output_sizes():
    assert ImagePipeline(RandomResizedCrop(224)).output_size == (224, 224)
    assert ImagePipeline(Resize(256), CenterCrop((200, 100))).output_size == (200, 100)
    assert ImagePipeline(Resize((64, 48))).output_size == (64, 48)
    assert ImagePipeline(Resize(64)).output_size is None
    assert ImagePipeline(RandomHorizontalFlip()).output_size is None


# -- geometry: torchvision's, vectorised --------------------------------------------------


def _rrc_reference(W, H, u, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision.transforms.RandomResizedCrop.get_params, one image, given uniforms."""
    area = W * H
    lr = (math.log(ratio[0]), math.log(ratio[1]))
    for a in range(10):
        target = area * (scale[0] + u[a] * (scale[1] - scale[0]))
        aspect = math.exp(lr[0] + u[10 + a] * (lr[1] - lr[0]))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= W and 0 < h <= H:
            i = int(u[20 + a] * (H - h + 1))
            j = int(u[30 + a] * (W - w + 1))
            return j, i, j + w, i + h
    in_ratio = W / H
    if in_ratio < min(ratio):
        w, h = W, int(round(W / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = H, int(round(H * max(ratio)))
    else:
        w, h = W, H
    i, j = (H - h) // 2, (W - w) // 2
    return j, i, j + w, i + h


def test_random_resized_crop_is_torchvisions_algorithm():
    rng = np.random.default_rng(0)
    W = rng.integers(1, 2000, 3000).astype(float)
    H = rng.integers(1, 2000, 3000).astype(float)
    W[:5], H[:5] = [1, 10000, 10, 3, 1000], [1, 10, 10000, 3, 1]  # strips fall back
    u = counter_rng.uniforms(counter_rng.key_from_seed(1), 0, np.arange(3000), 41)
    boxes, sizes, _ = ImagePipeline(RandomResizedCrop(224)).geometry(W, H, u)
    ref = np.array([_rrc_reference(w, h, row) for w, h, row in zip(W, H, u, strict=True)])
    assert np.array_equal(boxes, ref)
    assert (sizes == 224).all()
    assert (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all() and (boxes[:, :2] >= 0).all()


def test_resize_center_crop_is_torchvisions_geometry():
    W, H = np.array([500.0, 375.0, 300.0]), np.array([375.0, 500.0, 300.0])
    boxes, sizes, flips = ImagePipeline(Resize(256), CenterCrop(224)).geometry(
        W, H, np.zeros((3, 41))
    )
    for (w, h), box in zip(zip(W, H, strict=True), boxes, strict=True):
        nw, nh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
        top, left = int(round((nh - 224) / 2.0)), int(round((nw - 224) / 2.0))
        assert np.allclose(
            box, [left * w / nw, top * h / nh, (left + 224) * w / nw, (top + 224) * h / nh]
        )
    assert (sizes == 224).all() and not flips.any()


def test_flip_probability():
    u = counter_rng.uniforms(counter_rng.key_from_seed(2), 0, np.arange(10000), 41)
    W = H = np.full(10000, 50.0)
    assert not ImagePipeline(RandomHorizontalFlip(0)).geometry(W, H, u)[2].any()
    assert ImagePipeline(RandomHorizontalFlip(1)).geometry(W, H, u)[2].all()
    assert 0.27 < ImagePipeline(RandomHorizontalFlip(0.3)).geometry(W, H, u)[2].mean() < 0.33


# -- running a pipeline -------------------------------------------------------------------


def test_draws_depend_on_seed_epoch_and_index_not_on_the_batch():
    blobs = [img.jpeg(60 + 3 * i, 80, i) for i in range(6)]
    whole = TRAIN.apply(blobs, indices=range(100, 106), epoch=2, seed=5)
    part = TRAIN.apply(blobs[3:], indices=range(103, 106), epoch=2, seed=5)
    assert np.array_equal(whole[3:], part)
    assert not np.array_equal(whole, TRAIN.apply(blobs, indices=range(100, 106), epoch=3, seed=5))
    assert not np.array_equal(whole, TRAIN.apply(blobs, indices=range(100, 106), epoch=2, seed=6))
    fixed = ImagePipeline(RandomResizedCrop(32), seed=9)
    assert np.array_equal(fixed.apply(blobs, seed=1), fixed.apply(blobs, seed=2))  # its own seed


def test_eval_pipeline_close_to_pil_resize_then_crop():
    from PIL import Image

    blobs = [img.jpeg(375, 500, 3), img.jpeg(480, 400, 4)]
    x = ImagePipeline(Resize(256), CenterCrop(224), dct_scaling="off").apply(blobs)
    assert x.shape == (2, 224, 224, 3) and x.dtype == np.uint8
    for data, out in zip(blobs, x, strict=True):
        im = Image.open(io.BytesIO(data)).convert("RGB")
        W, H = im.size
        nw, nh = (256, int(256 * H / W)) if W <= H else (int(256 * W / H), 256)
        im = im.resize((nw, nh), Image.BILINEAR)
        t, left = int(round((nh - 224) / 2)), int(round((nw - 224) / 2))
        ref = np.asarray(im.crop((left, t, left + 224, t + 224))).astype(int)
        assert np.abs(out.astype(int) - ref).max() <= 1


def test_output_options_of_the_loader_apply():
    blobs = [img.jpeg(50, 70, 5)] * 2
    x = TRAIN.apply(
        blobs,
        memory_format="channels_first",
        dtype=np.float16,
        mean=img.IMAGENET_MEAN,
        std=img.IMAGENET_STD,
    )
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float16
    assert -3 < float(x.min()) and float(x.max()) < 3
    b = TRAIN.apply(blobs, dtype="bfloat16", scale=1 / 255)
    assert b.dtype == np.uint16 and b.shape == (2, 32, 32, 3)  # bfloat16 bits


def test_without_geometry_images_keep_their_shapes():
    blobs = [img.jpeg(20, 30, 6), img.jpeg(41, 17, 7)]
    r = ImagePipeline().apply(blobs)
    assert isinstance(r, RaggedBatch) and r.shapes.tolist() == [[20, 30, 3], [41, 17, 3]]
    assert np.array_equal(r.sample(1), img.pil_rgb(blobs[1]))
    cf = ImagePipeline().apply(
        blobs, memory_format="channels_first", dtype=np.float32, scale=1 / 255
    )
    assert cf.shapes.tolist() == [[3, 20, 30], [3, 41, 17]]
    assert np.allclose(cf.sample(0), img.pil_rgb(blobs[0]).transpose(2, 0, 1) / 255, atol=1e-6)
    short = ImagePipeline(Resize(10)).apply(blobs)
    assert short.shapes.tolist() == [[10, 15, 3], [24, 10, 3]]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_other_formats_through_pillow(fmt):
    pixels = img.picture(33, 45, 8)
    data = img.encode(pixels, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    batcher = ImageBatcher(ImagePipeline())
    out = batcher.decode(*slab([data]), np.array([0]), 0).batch
    assert np.array_equal(out.sample(0), img.pil_rgb(data))
    assert batcher.stats["pillow_decoded"] == 1
    crop = ImagePipeline(RandomResizedCrop(16)).apply([data, img.jpeg(33, 45, 8)])
    assert crop.shape == (2, 16, 16, 3)


def test_exif_orientation_only_when_asked():
    data = img.with_orientation(img.jpeg(30, 50, 9), 6)
    assert ImagePipeline().apply([data]).shapes.tolist() == [[30, 50, 3]]
    turned = ImagePipeline(apply_exif_orientation=True).apply([data])
    assert turned.shapes.tolist() == [[50, 30, 3]]
    assert np.array_equal(turned.sample(0), img.pil_rgb(data, orient=True))
    png = img.encode(img.picture(10, 20, 1), "PNG")
    assert ImagePipeline(apply_exif_orientation=True).apply([png]).shapes.tolist() == [[10, 20, 3]]


# -- bad files ------------------------------------------------------------------------------


def _bad():
    good = img.jpeg(40, 60, 10)
    return good, {
        "truncated": (good[: len(good) // 2], ImageDecodeError, "truncated JPEG"),
        "empty": (b"", ImageDecodeError, "empty file"),
        "text": (b"this is not an image at all", UnsupportedImageError, "not an image format"),
        "png cut": (img.encode(img.picture(30, 30), "PNG")[:60], ImageDecodeError, "OSError"),
    }


@pytest.mark.parametrize("name", ["truncated", "empty", "text", "png cut"])
def test_a_bad_file_raises_naming_it(name):
    good, bad = _bad()
    data, cls, text = bad[name]
    batcher = ImageBatcher(TRAIN)
    with pytest.raises(cls, match=text) as info:
        batcher.decode(
            *slab([good, data, good]), np.array([7, 8, 9]), 0, uri_of=lambda i: f"/data/f{i}.jpg"
        )
    assert info.value.uri == "/data/f8.jpg" and info.value.sample == 8
    assert str(info.value).startswith("/data/f8.jpg: sample 8: ")


def test_decompression_bomb_is_refused_before_decoding():
    big = img.jpeg(300, 400, 11)
    with pytest.raises(ImageTooLargeError, match="max_pixels=100000"):
        ImagePipeline(max_pixels=100_000).apply([big])
    png = img.encode(img.picture(300, 400), "PNG")
    with pytest.raises(ImageTooLargeError, match="max_pixels=100000"):
        ImagePipeline(max_pixels=100_000).apply([png])
    assert ImagePipeline(max_pixels=0).apply([big]).shapes.tolist() == [[300, 400, 3]]


def test_skip_replaces_bad_samples_by_the_next_good_one():
    good, bad = _bad()
    others = [img.jpeg(40, 60, 20 + i) for i in range(3)]
    blobs = [bad["empty"][0], others[0], bad["truncated"][0], bad["text"][0], others[1], others[2]]
    pipe = ImagePipeline(RandomResizedCrop(16), on_error="skip")
    batcher = ImageBatcher(pipe)
    res = batcher.decode(*slab(blobs), np.arange(10, 16), 0, uri_of=lambda i: f"f{i}")
    assert res.indices.tolist() == [11, 11, 14, 14, 14, 15]
    x = res.batch
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[2], x[4]) and np.array_equal(x[3], x[4])
    clean = ImageBatcher(pipe).decode(*slab(others), np.array([11, 14, 15]), 0).batch
    assert np.array_equal(x[[1, 4, 5]], clean)  # good samples unchanged
    s = batcher.stats
    assert s["skipped"] == 3 and [e["uri"] for e in s["skipped_samples"]] == ["f10", "f12", "f13"]
    assert [e["error"] for e in s["skipped_samples"]] == ["CORRUPT", "CORRUPT", "FORMAT"]
    # the last sample wraps round to the first good one
    wrap = batcher.decode(*slab([others[0], bad["empty"][0]]), np.array([1, 2]), 0)
    assert wrap.indices.tolist() == [1, 1]


def test_skip_in_a_ragged_batch_and_when_every_sample_fails():
    good, bad = _bad()
    pipe = ImagePipeline(on_error="skip")
    res = ImageBatcher(pipe).decode(*slab([bad["empty"][0], good]), np.array([0, 1]), 0)
    assert res.indices.tolist() == [1, 1] and res.batch.shapes.tolist() == [[40, 60, 3]] * 2
    assert np.array_equal(res.batch.sample(0), res.batch.sample(1))
    with pytest.raises(ImageDecodeError, match="every other sample of its batch of 2 failed"):
        ImageBatcher(pipe).decode(*slab([b"", b""]), np.array([0, 1]), 0)


def test_pillow_pool_works_in_a_forked_child():
    import multiprocessing as mp

    from fastload.batch import pillow_decode

    pngs = [img.encode(img.picture(8, 9, s), "PNG") for s in range(3)]
    assert all(code == 0 for _, code, _ in pillow_decode.decode_many(pngs, 0, False))  # pools up
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        shapes = pool.apply_async(_decode_shapes, (pngs,)).get(
            timeout=60
        )  # hangs without a fork hook
    assert shapes == [(8, 9, 3)] * 3


def _decode_shapes(blobs):
    from fastload.batch import pillow_decode

    return [a.shape for a, _, _ in pillow_decode.decode_many(blobs, 0, False)]
