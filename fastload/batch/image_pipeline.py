"""Declared image augmentations, and the policy that turns a batch of encoded image files
into one model-ready batch.

A pipeline is data, not Python callables: ``ImagePipeline(RandomResizedCrop(224),
RandomHorizontalFlip())`` for training, ``ImagePipeline(Resize(256), CenterCrop(224))`` for
evaluation. Per batch, Python draws each sample's crop box and flip (a pure function of
(seed, epoch, sample index): :mod:`fastload.batch.counter_rng`) from the image sizes in
the file headers; the native kernel (``fastload._native.jpeg``, csrc/fl_image_batch.c)
then decodes only what each box needs (ROI rows and iMCU columns, the largest DCT
downscale that keeps the box at least the output size), resamples once (bilinear,
antialiased when shrinking), flips and converts (dtype, layout, per-channel mean/std:
the loader's collate options) straight into the batch, on native threads with the GIL
released. JPEGs are decoded by libjpeg-turbo; other formats by Pillow on a thread pool,
then the same native path.

Without a geometric step (or with ``Resize(shorter_side)`` alone) images keep their own
sizes and come back as a :class:`~fastload.batch.ragged.RaggedBatch` whose ``shapes`` hold
each sample's (H, W, C) (or (C, H, W)).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from fastload._native import collate as _collate_native
from fastload._native import jpeg as _jpeg
from fastload._native.status import Status
from fastload.batch import counter_rng, libjpeg, pillow_decode
from fastload.batch.collate import CollatePlan, plan_collate
from fastload.batch.ragged import RaggedBatch
from fastload.checks import (
    INT32_MAX,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_seed,
    fail,
)
from fastload.errors import FastloadError, ImageDecodeError, raise_native_error

ON_ERROR = ("raise", "skip")
DCT_SCALING = tuple(_jpeg.DCT_SCALING)
DCT_METHODS = tuple(_jpeg.DCT_METHODS)
# Pillow's own limit before it refuses an image (Image.MAX_IMAGE_PIXELS x 2).
DEFAULT_MAX_PIXELS = 178_956_970
# Image errors that on_error="skip" skips; others (out of memory, bugs) always raise.
_SKIPPABLE = (Status.CORRUPT, Status.TOO_LARGE, Status.FORMAT)
_DRAWS = 41  # per sample: 10 crop attempts x 4 uniforms, and one for the flip
_INFO = {name: i for i, name in enumerate(_jpeg.INFO_FIELDS)}


def _size(knob: str, value: Any) -> tuple[int, int]:
    """An int (square) or (height, width) of positive ints."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        h, w = (check_int(knob, v, 1, INT32_MAX) for v in value)  # the kernel's int32 sides
        return h, w
    s = check_int(knob, value, 1, INT32_MAX)
    return s, s


def _range(knob: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise fail(knob, value, "must be a (low, high) pair")
    lo, hi = (check_number(knob, v) for v in value)
    if lo > hi:
        raise fail(knob, value, "low must be <= high")
    return lo, hi


@dataclass(frozen=True)
class RandomResizedCrop:
    """A random box of ``scale`` x the image's area and aspect ratio in ``ratio``, resized to
    ``size`` (torchvision's RandomResizedCrop: 10 tries, then a centre crop)."""

    size: int | tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        _size("RandomResizedCrop.size", self.size)
        lo, hi = _range("RandomResizedCrop.scale", self.scale)
        if hi > 1:
            raise fail("RandomResizedCrop.scale", self.scale, "must lie in (0, 1]")
        _range("RandomResizedCrop.ratio", self.ratio)


@dataclass(frozen=True)
class Resize:
    """An int: the shorter side becomes ``size`` (aspect kept, the longer side truncated as
    torchvision does); (height, width): exactly that size."""

    size: int | tuple[int, int]

    def __post_init__(self) -> None:
        _size("Resize.size", self.size)


@dataclass(frozen=True)
class CenterCrop:
    """The centred ``size`` box (after a Resize: of the resized image). A box larger than the
    image is clamped to it and stretched to ``size`` (no zero padding)."""

    size: int | tuple[int, int]

    def __post_init__(self) -> None:
        _size("CenterCrop.size", self.size)


@dataclass(frozen=True)
class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    p: float = 0.5

    def __post_init__(self) -> None:
        p = check_number("RandomHorizontalFlip.p", self.p, positive=False)
        if not 0 <= p <= 1:
            raise fail("RandomHorizontalFlip.p", self.p, "must lie in [0, 1]")


Step = RandomResizedCrop | Resize | CenterCrop | RandomHorizontalFlip


class ImagePipeline:
    """Decode + crop/resize + flip, declared; the loader's dtype/mean/std/memory_format finish it.

    steps: at most one geometric recipe, ``RandomResizedCrop`` or ``Resize`` and/or
        ``CenterCrop`` (in that order), and at most one ``RandomHorizontalFlip``.
    seed: of the crop and flip draws (None: the loader's ``seed``).
    apply_exif_orientation: turn images as their EXIF orientation says (as
        ``PIL.ImageOps.exif_transpose``) before cropping.
    max_pixels: refuse (``ImageTooLargeError``) an image whose header declares more pixels
        (a decompression bomb); 0 = no limit.
    on_error: "raise" (an ``ImageDecodeError`` subclass naming the URI) or "skip" (the
        sample is replaced by the next good one of its batch; ``loader.stats()["images"]``
        counts and names them).
    strict: corrupt-data warnings of libjpeg (and a missing end-of-image marker) are errors;
        False decodes what it can, as libjpeg does (grey where data is missing).
    dct_scaling: "pow2" (1/2, 1/4, 1/8: libjpeg-turbo's SIMD IDCTs; default), "any" (k/8) or
        "off"; dct_method "islow" (libjpeg's and Pillow's default), "ifast" or "float";
        fancy_upsampling (libjpeg's and Pillow's default). With "islow" and fancy upsampling,
        an uncropped, unresized decode equals Pillow's bit for bit.
    antialias: widen the bilinear filter when shrinking (as PIL and torchvision do).
    num_threads: native decode threads per batch (0 = one per CPU).
    pillow_threads: threads decoding other formats with Pillow (0 = one per CPU).
    timing: measure the kernel's stages (decode, resample, convert) into the stats.
    """

    def __init__(
        self,
        *steps: Step,
        seed: int | None = None,
        apply_exif_orientation: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        on_error: str = "raise",
        strict: bool = True,
        dct_scaling: str = "pow2",
        dct_method: str = "islow",
        fancy_upsampling: bool = True,
        antialias: bool = True,
        num_threads: int = 0,
        pillow_threads: int = 0,
        timing: bool = False,
    ) -> None:
        crop: RandomResizedCrop | None = None
        resize: Resize | None = None
        center: CenterCrop | None = None
        flip: RandomHorizontalFlip | None = None
        for step in steps:
            if isinstance(step, RandomHorizontalFlip):
                if flip is not None:
                    raise fail("steps", steps, "more than one RandomHorizontalFlip")
                flip = step
            elif isinstance(step, RandomResizedCrop):
                if crop or resize or center:
                    raise fail("steps", steps, "RandomResizedCrop takes no other crop or resize")
                crop = step
            elif isinstance(step, Resize):
                if crop or resize or center:
                    raise fail("steps", steps, "one Resize, before any CenterCrop")
                resize = step
            elif isinstance(step, CenterCrop):
                if crop or center:
                    raise fail("steps", steps, "one CenterCrop, without RandomResizedCrop")
                center = step
            else:
                raise fail(
                    "steps",
                    steps,
                    f"{type(step).__name__} is not a declared step (RandomResizedCrop, Resize, "
                    "CenterCrop, RandomHorizontalFlip)",
                    TypeError,
                )
        self.steps = tuple(steps)
        self.crop, self.resize, self.center, self.flip = crop, resize, center, flip
        self.seed = check_seed("seed", seed, optional=True)
        self.apply_exif_orientation = check_bool("apply_exif_orientation", apply_exif_orientation)
        self.max_pixels = check_int("max_pixels", max_pixels, 0)
        self.on_error = check_choice("on_error", on_error, ON_ERROR)
        self.strict = check_bool("strict", strict)
        self.dct_scaling = check_choice("dct_scaling", dct_scaling, DCT_SCALING)
        self.dct_method = check_choice("dct_method", dct_method, DCT_METHODS)
        self.fancy_upsampling = check_bool("fancy_upsampling", fancy_upsampling)
        self.antialias = check_bool("antialias", antialias)
        self.num_threads = check_int("num_threads", num_threads, 0, 1024)
        self.pillow_threads = check_int("pillow_threads", pillow_threads, 0, 1024)
        self.timing = check_bool("timing", timing)
        fixed = self.output_size
        if fixed is None and self.resize is not None:  # the shorter side: at least side x side
            fixed = _size("Resize.size", self.resize.size)
        if fixed is not None and self.max_pixels and fixed[0] * fixed[1] > self.max_pixels:
            # every image would be refused, one by one, deep in the epoch: say so now
            raise fail(
                "steps",
                self.crop or self.center or self.resize,
                f"makes every image at least {fixed[0]} x {fixed[1]} = {fixed[0] * fixed[1]} "
                f"pixels, more than max_pixels={self.max_pixels}",
            )

    def __repr__(self) -> str:
        return f"ImagePipeline({', '.join(map(repr, self.steps))})"

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every output, or None when images keep their own sizes."""
        if self.crop is not None:
            return _size("size", self.crop.size)
        if self.center is not None:
            return _size("size", self.center.size)
        if self.resize is not None and isinstance(self.resize.size, (tuple, list)):
            return _size("size", self.resize.size)
        return None

    @property
    def crop_then_resize(self) -> bool:
        """True: the filter sees only the box (a crop, then a resize); False: the whole image
        (a resize, then a crop)."""
        return self.resize is None

    def geometry(
        self, width: np.ndarray, height: np.ndarray, draws: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (n, 4: x0, y0, x1, y1), output sizes (n, 2: h, w) and flips (n,) for images
        of (displayed) ``width`` x ``height``, from ``draws`` ((n, 41) uniforms)."""
        W = np.asarray(width, dtype=np.float64)
        H = np.asarray(height, dtype=np.float64)
        n = W.size
        boxes = np.stack([np.zeros(n), np.zeros(n), W, H], axis=1)
        size = np.stack([H, W], axis=1)
        if self.crop is not None:
            boxes = _random_resized_crop(W, H, draws[:, :40], self.crop.scale, self.crop.ratio)
            size = np.tile(np.array(_size("size", self.crop.size), dtype=np.float64), (n, 1))
        else:
            sw, sh = W, H  # the image the centre crop sees
            if self.resize is not None:
                sh, sw = _resized(W, H, self.resize.size)
                size = np.stack([sh, sw], axis=1)
            if self.center is not None:
                ch, cw = _size("size", self.center.size)
                top = np.round((sh - ch) / 2.0)
                left = np.round((sw - cw) / 2.0)
                fx, fy = W / sw, H / sh  # resized -> stored pixels
                boxes = np.stack(
                    [
                        np.clip(left * fx, 0, W),
                        np.clip(top * fy, 0, H),
                        np.clip((left + cw) * fx, 0, W),
                        np.clip((top + ch) * fy, 0, H),
                    ],
                    axis=1,
                )
                size = np.tile(np.array([ch, cw], dtype=np.float64), (n, 1))
        flips = draws[:, 40] < self.flip.p if self.flip is not None else np.zeros(n, dtype=bool)
        return (
            np.ascontiguousarray(boxes, dtype=np.float64),
            np.ascontiguousarray(size, dtype=np.int32),
            np.ascontiguousarray(flips, dtype=np.uint8),
        )

    def apply(
        self,
        images: Sequence[Any],
        *,
        indices: Sequence[int] | np.ndarray | None = None,
        epoch: int = 0,
        seed: int = 0,
        **collate_options: Any,
    ) -> Any:
        """Run the pipeline on encoded files (bytes-like, one per image) outside a loader.

        ``indices`` key each image's draws (default 0..n-1); ``collate_options`` are the
        loader's output options (dtype, mean, std, scale, memory_format, consumer). Returns
        the batch (array, or RaggedBatch without a fixed size); errors raise as in a loader
        (with on_error="skip", use :class:`ImageBatcher` to learn the replacements)."""
        blobs = [memoryview(b).cast("B") for b in images]
        lengths = np.array([len(b) for b in blobs], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
        slab = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        idx = np.arange(len(blobs)) if indices is None else np.asarray(indices, dtype=np.int64)
        batcher = ImageBatcher(self, seed=seed, **collate_options)
        return batcher.decode(slab, offsets, lengths, idx, epoch).batch


def _resized(W: np.ndarray, H: np.ndarray, size: Any) -> tuple[np.ndarray, np.ndarray]:
    """(height, width) after Resize(size), as torchvision computes them."""
    if isinstance(size, (tuple, list)):
        h, w = _size("Resize.size", size)
        return np.full(W.shape, float(h)), np.full(W.shape, float(w))
    s = float(size)
    portrait = W <= H
    short = np.minimum(W, H)
    long_ = np.floor(s * np.maximum(W, H) / short)
    return np.where(portrait, long_, s), np.where(portrait, s, long_)


def _random_resized_crop(
    W: np.ndarray,
    H: np.ndarray,
    u: np.ndarray,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> np.ndarray:
    """torchvision's RandomResizedCrop.get_params for every image at once: the first of ten
    tries that fits, else the whole image clamped to the ratio range, centred."""
    n = W.size
    area = (W * H)[:, None]
    target = area * (scale[0] + u[:, 0:10] * (scale[1] - scale[0]))
    lr0, lr1 = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(lr0 + u[:, 10:20] * (lr1 - lr0))
    w = np.round(np.sqrt(target * aspect))
    h = np.round(np.sqrt(target / aspect))
    ok = (w > 0) & (w <= W[:, None]) & (h > 0) & (h <= H[:, None])
    first = np.argmax(ok, axis=1)
    rows = np.arange(n)
    cw, ch = w[rows, first], h[rows, first]
    top = np.floor(u[rows, 20 + first] * (H - ch + 1))
    left = np.floor(u[rows, 30 + first] * (W - cw + 1))
    # fallback: the whole image, clamped to the ratio range
    in_ratio = W / H
    fw = np.where(in_ratio > max(ratio), np.round(H * max(ratio)), W)
    fh = np.where(in_ratio < min(ratio), np.round(W / min(ratio)), H)
    fw, fh = np.clip(fw, 1, W), np.clip(fh, 1, H)
    hit = ok.any(axis=1)
    cw, ch = np.where(hit, cw, fw), np.where(hit, ch, fh)
    top = np.where(hit, top, np.floor((H - fh) / 2))
    left = np.where(hit, left, np.floor((W - fw) / 2))
    return np.stack([left, top, left + cw, top + ch], axis=1)


class ImageBatch(NamedTuple):
    """A decoded batch and the dataset indices its samples came from (after replacements)."""

    batch: Any
    indices: np.ndarray


Allocator = Callable[[int], Any]


def _numpy_alloc(nbytes: int) -> Any:
    return np.empty(max(nbytes, 1), dtype=np.uint8)


class ImageBatcher:
    """An ImagePipeline bound to one output (a loader's dtype, mean/std/scale, layout): the
    native plan, checked once, and the statistics of every batch it made.

    Thread-safe: a loader's reader threads share one batcher.
    """

    def __init__(
        self,
        pipeline: ImagePipeline,
        *,
        seed: int = 0,
        memory_format: str | None = "auto",
        consumer: str = "numpy",
        dtype: Any = None,
        mean: Any = None,
        std: Any = None,
        scale: Any = None,
        layout: str = "HWC",
        collate_buffer_size: int = 0,
        libjpeg_path: str | None = None,
        on_error: str = "raise",
    ) -> None:
        if not isinstance(pipeline, ImagePipeline):
            raise TypeError(
                f"transform={pipeline!r}: the image path takes a fastload ImagePipeline "
                "(declared steps); Python callables go on the dataset with enable_transforms"
            )
        if layout != "HWC":
            raise fail("layout", layout, "decoded images are HWC")
        self.pipeline = pipeline
        # bad files are skipped when the pipeline or the loader (its on_error knob) says so
        skip = "skip" in (pipeline.on_error, check_choice("on_error", on_error, ON_ERROR))
        self.on_error = "skip" if skip else "raise"
        self.key = counter_rng.key_from_seed(pipeline.seed if pipeline.seed is not None else seed)
        h, w = pipeline.output_size or (1, 1)
        self.collate: CollatePlan = plan_collate(
            (h, w, 3),
            np.dtype(np.uint8),
            layout="HWC",
            memory_format=memory_format,
            consumer=consumer,
            dtype=dtype,
            mean=mean,
            std=std,
            scale=scale,
            collate_buffer_size=collate_buffer_size,
        )
        cp = self.collate
        assert cp.layout is not None
        self.channels_last = cp.layout.kernel_layout == "NHWC"
        convert = cp.convert
        src_code, dst_code = cp.kernel_dtypes
        affine = cp.affine
        self.libjpeg = libjpeg.load(libjpeg_path)
        self.native = _jpeg.DecodePlan(
            apply_orientation=pipeline.apply_exif_orientation,
            clip_to_box=pipeline.crop_then_resize,
            antialias=pipeline.antialias,
            dct_scaling=pipeline.dct_scaling,
            dct_method=pipeline.dct_method,
            fancy_upsampling=pipeline.fancy_upsampling,
            strict=pipeline.strict,
            max_pixels=pipeline.max_pixels,
            convert=convert,
            dst_dtype=dst_code if src_code != _collate_native.DT_RAW else _collate_native.DT_RAW,
            dst_channels_last=self.channels_last,
            dst_itemsize=cp.out_dtype.itemsize,
            scale=None if affine is None else affine[0],
            shift=None if affine is None else affine[1],
            nthreads=pipeline.num_threads,
            timing=pipeline.timing,
        )
        self._lock = threading.Lock()
        self.stats: dict[str, Any] = {
            "batches": 0,
            "images": 0,
            "pillow_decoded": 0,
            "dct_scaled": 0,
            "threads": 0,
            "skipped": 0,
            "skipped_samples": [],
            "decode_s": 0.0,
            "resample_s": 0.0,
            "convert_s": 0.0,
        }

    @property
    def out_dtype(self) -> np.dtype:
        return self.collate.out_dtype

    def _pillow(
        self,
        slab: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
        which: np.ndarray,
        info: np.ndarray,
        codes: np.ndarray,
        messages: dict[int, str],
    ) -> list[Any]:
        """Decode the non-JPEG images ``which`` with Pillow; fills their info rows (as decoded
        pixels), codes and messages. Returns the pixels list (None for JPEGs)."""
        p = self.pipeline
        pixels: list[Any] = [None] * len(offsets)
        blobs = [slab[offsets[i] : offsets[i] + lengths[i]] for i in which]
        for i, (arr, code, why) in zip(
            which,
            pillow_decode.decode_many(
                blobs, p.max_pixels, p.apply_exif_orientation, p.pillow_threads
            ),
            strict=True,
        ):
            if code != Status.OK:
                codes[i], messages[int(i)] = code, why
                continue
            assert arr is not None
            pixels[i] = np.ascontiguousarray(arr)
            info[i] = (_jpeg.IMG_PIXELS, arr.shape[1], arr.shape[0], 3, 1, 0)
        return pixels

    def decode(
        self,
        slab: Any,
        offsets: np.ndarray,
        lengths: np.ndarray,
        indices: np.ndarray,
        epoch: int,
        alloc: Allocator = _numpy_alloc,
        uri_of: Callable[[int], str] | None = None,
        member_of: Callable[[int], str | None] | None = None,
    ) -> ImageBatch:
        """Encoded images at ``offsets`` of ``slab`` (dataset ``indices``) -> one batch in
        memory from ``alloc(nbytes)``. Raises an ImageDecodeError naming the URI
        (``uri_of(index)``) and, where one source holds many images (a tar shard), the
        member (``member_of(index)``), or with on_error="skip" replaces failed samples."""
        p = self.pipeline
        offs = np.ascontiguousarray(offsets, dtype=np.int64)
        lens = np.ascontiguousarray(lengths, dtype=np.int64)
        idx = np.asarray(indices, dtype=np.int64)
        n = len(offs)
        info, codes, messages = _jpeg.probe(slab, offs, lens, p.strict, p.max_pixels)
        fmt = info[:, _INFO["format"]]
        others = np.flatnonzero((codes == 0) & (fmt != _jpeg.IMG_JPEG))
        pixels: list[Any] = [None] * n
        if others.size:
            pixels = self._pillow(np.asarray(slab), offs, lens, others, info, codes, messages)
        good = np.flatnonzero(codes == 0)
        # displayed sizes: EXIF orientations 5..8 swap the axes
        w, h = info[:, _INFO["width"]], info[:, _INFO["height"]]
        if p.apply_exif_orientation:
            swap = (info[:, _INFO["orientation"]] >= 5) & (fmt == _jpeg.IMG_JPEG)
            w, h = np.where(swap, h, w), np.where(swap, w, h)
        draws = counter_rng.uniforms(self.key, epoch, idx[good], _DRAWS)
        boxes, sizes, flips = p.geometry(w[good], h[good], draws)
        if p.max_pixels:
            # Resize(shorter_side) of a thin strip (1 x 30000 -> 256 x 7680000) would make
            # an output far larger than its file: refused as an image over the limit is
            out_px = sizes[:, 0].astype(np.int64) * sizes[:, 1]
            big = np.flatnonzero(out_px > p.max_pixels)
            for k in big:
                i = int(good[k])
                codes[i] = Status.TOO_LARGE
                messages[i] = (
                    f"{p.center or p.crop or p.resize or 'decoding'} makes this {int(w[i])} x "
                    f"{int(h[i])} image {int(sizes[k, 1])} x {int(sizes[k, 0])} = "
                    f"{int(out_px[k])} pixels, more than max_pixels={p.max_pixels}"
                )
            if big.size:
                keep = np.ones(good.size, dtype=bool)
                keep[big] = False
                good, boxes, sizes, flips = (
                    good[keep],
                    np.ascontiguousarray(boxes[keep]),
                    np.ascontiguousarray(sizes[keep]),
                    np.ascontiguousarray(flips[keep]),
                )
        x, slot_of = self._allocate(n, good, sizes, alloc)
        stats: dict[str, Any] = {}
        if good.size:
            dc, dmsg, stats = self.native.run(
                slab,
                offs[good],
                lens[good],
                [pixels[i] for i in good],
                np.ascontiguousarray(info[good]),
                boxes,
                flips,
                sizes,
                slot_of[good],
                x.data if isinstance(x, RaggedBatch) else x,
            )
            for k in np.flatnonzero(dc):
                codes[good[k]] = dc[k]
                messages[int(good[k])] = dmsg[int(k)]
        failed = np.flatnonzero(codes != 0)
        with self._lock:
            s = self.stats
            s["batches"] += 1
            s["images"] += n
            s["pillow_decoded"] += int(others.size)
            s["dct_scaled"] += int(stats.get("dct_scaled", 0))
            s["threads"] = int(stats.get("threads", 0))  # the latest batch's decode threads
            for stage in ("decode_s", "resample_s", "convert_s"):
                s[stage] += float(stats.get(stage, 0.0))
        if failed.size:
            x, idx = self._failures(x, idx, failed, codes, messages, uri_of, member_of)
        return ImageBatch(x, idx)

    def _allocate(
        self, n: int, good: np.ndarray, sizes: np.ndarray, alloc: Allocator
    ) -> tuple[Any, np.ndarray]:
        """The output (array, or RaggedBatch) and each sample's byte offset in it."""
        dt = self.out_dtype
        elems = sizes[:, 0].astype(np.int64) * sizes[:, 1] * 3
        fixed = self.pipeline.output_size
        slot_of = np.zeros(n, dtype=np.int64)
        if fixed is not None:
            per = fixed[0] * fixed[1] * 3
            buf = alloc(n * per * dt.itemsize)
            flat = np.frombuffer(buf, dtype=dt, count=n * per)  # type: ignore[call-overload]
            slot_of[:] = np.arange(n, dtype=np.int64) * per * dt.itemsize
            return flat.reshape(self.collate.out_shape(n)), slot_of
        start = np.zeros(n + 1, dtype=np.int64)
        counts = np.zeros(n, dtype=np.int64)
        counts[good] = elems
        start[1:] = np.cumsum(counts)
        buf = alloc(int(start[-1]) * dt.itemsize)
        data = np.frombuffer(buf, dtype=dt, count=int(start[-1]))  # type: ignore[call-overload]
        slot_of[:] = start[:-1] * dt.itemsize
        shapes = np.zeros((n, 3), dtype=np.int64)
        hw = sizes.astype(np.int64)
        shapes[good] = (
            np.column_stack([hw[:, 0], hw[:, 1], np.full(len(good), 3)])
            if self.channels_last
            else np.column_stack([np.full(len(good), 3), hw[:, 0], hw[:, 1]])
        )
        return RaggedBatch(data, start, shapes), slot_of

    def _failures(
        self,
        x: Any,
        idx: np.ndarray,
        failed: np.ndarray,
        codes: np.ndarray,
        messages: dict[int, str],
        uri_of: Callable[[int], str] | None,
        member_of: Callable[[int], str | None] | None = None,
    ) -> tuple[Any, np.ndarray]:
        """Raise for the first failure, or replace each failed sample by the next good one."""
        describe = uri_of or (lambda i: f"image {i}")
        member = member_of or (lambda i: None)
        first = int(failed[0])
        skippable = all(int(codes[i]) in _SKIPPABLE for i in failed)
        n = len(idx)
        ok = np.ones(n, dtype=bool)
        ok[failed] = False
        if self.on_error == "raise" or not skippable or not ok.any():
            why = messages.get(first, "decode failed")
            if self.on_error == "skip" and skippable:
                why += f" (and every other sample of its batch of {n} failed too)"
            at = int(idx[first])
            _raise(int(codes[first]), describe(at), at, why, member(at))
        good = np.flatnonzero(ok)
        # the next good sample in batch order (wrapping round)
        nxt = good[np.searchsorted(good, failed) % good.size]
        with self._lock:
            self.stats["skipped"] += int(failed.size)
            log = self.stats["skipped_samples"]
            for i in failed:
                entry = {
                    "index": int(idx[i]),
                    "uri": describe(int(idx[i])),
                    "error": Status(int(codes[i])).name,
                    "message": messages.get(int(i), ""),
                }
                name = member(int(idx[i]))
                if name is not None:  # a member of a shard: the uri alone is not the file
                    entry["member"] = name
                log.append(entry)
            del log[:-1000]  # the latest thousand
        new_idx = idx.copy()
        new_idx[failed] = idx[nxt]
        if not isinstance(x, RaggedBatch):
            x[failed] = x[nxt]
            return x, new_idx
        # ragged: rebuild from the good samples, each failed one as a copy of its replacement
        src = np.arange(n)
        src[failed] = nxt
        pieces = [x.data[x.offsets[s] : x.offsets[s + 1]] for s in src]
        shapes = x.shapes[src]
        data = np.concatenate(pieces) if pieces else x.data[:0]
        offsets = np.concatenate(([0], np.cumsum([len(q) for q in pieces]))).astype(np.int64)
        return RaggedBatch(data, offsets, shapes), new_idx


def image_batcher_for(
    dataset: Any,
    transform: Any,
    kernel_args: dict[str, Any],
    seed: int,
    transforms_on: bool,
    on_error: str = "raise",
) -> ImageBatcher | None:
    """The loader's image path, or None: ``transform`` (an ImagePipeline) decodes any dataset
    of encoded files; an image dataset (``decodes_images``) without one decodes each file
    whole (a RaggedBatch with shapes), unless its own Python transform runs instead.
    ``on_error="skip"`` (the loader's knob) skips bad files as the pipeline's own would."""
    if transform is None:
        if not getattr(dataset, "decodes_images", False) or transforms_on:
            return None
        transform = ImagePipeline()
    if dataset.sample_shape is not None:
        raise ValueError(
            f"transform={transform!r} decodes files: {type(dataset).__name__} holds fixed-size "
            "records (use ImageFolder, ImageList or ObjectDataset)"
        )
    return ImageBatcher(transform, seed=seed, on_error=on_error, **kernel_args)


def _raise(code: int, uri: str, index: int, why: str, member: str | None = None) -> None:
    where = f"member {member} (sample {index})" if member is not None else f"sample {index}"
    try:
        raise_native_error(code, uri, message=why if uri == f"image {index}" else f"{where}: {why}")
    except FastloadError as exc:
        if isinstance(exc, ImageDecodeError):
            exc.sample = index
            exc.member = member
        raise


__all__ = [
    "CenterCrop",
    "ImageBatch",
    "ImageBatcher",
    "ImagePipeline",
    "RandomHorizontalFlip",
    "image_batcher_for",
    "RandomResizedCrop",
    "Resize",
]
