"""The image path under bad and unusual inputs: damaged JPEGs (truncated at every cut,
flipped header and scan bytes), decompression bombs, every JPEG flavour libjpeg-turbo reads
(subsamplings, arithmetic coding, lossless, CMYK/YCCK with and without an Adobe marker),
degenerate sizes, files in the wrong format or no format, and ImageFolder trees with
hidden, non-image, linked, looping and unreadable entries.

Each must end in pixels close to Pillow's decode of the same bytes, or in a named error
naming the sample and what was wrong (with on_error="skip": a counted skip). Cases that could
crash the process run in a child process, so a segfault fails the test instead of the run.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastload._native import jpeg
from fastload._native.status import Status
from fastload.batch import libjpeg
from fastload.batch.image_pipeline import (
    CenterCrop,
    ImageBatcher,
    ImagePipeline,
    RandomResizedCrop,
    Resize,
)
from fastload.errors import (
    ImageDecodeError,
    ImageTooLargeError,
    NotRegularFileError,
    UnsupportedImageError,
)
from fastload.loop.loader import DataLoader
from fastload.plan.image_datasets import ImageFolder
from tests.support import images as img
from tests.support import jpeg_seeds
from tests.support.decode_plans import raw_plan

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMED = (Status.CORRUPT, Status.FORMAT, Status.TOO_LARGE)


@pytest.fixture(scope="module", autouse=True)
def bound():
    return libjpeg.load()


def _child(body: str, memory_gb: int = 6, timeout: float = 300) -> str:
    """Run ``body`` in a fresh interpreter (this tree's fastload, an address-space limit):
    a crash, a hang or a failed assertion there fails here. Returns its stdout."""
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({memory_gb} << 30, {memory_gb} << 30))\n"
        f"sys.path.insert(0, {_ROOT!r})\n" + textwrap.dedent(body)
    )
    env = {**os.environ, "PYTHONPATH": _ROOT}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert res.returncode == 0, f"child exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    assert res.stderr == "", res.stderr  # libjpeg never prints
    return res.stdout


def slab_of(blobs):
    lens = np.array([len(b) for b in blobs], dtype=np.int64)
    offs = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
    return np.frombuffer(b"".join(blobs) or b"\0", dtype=np.uint8), offs, lens


def native(blobs, boxes=None, sizes=None, strict=True, max_pixels=0, **kw):
    """The kernel alone (probe, then decode of what probed as JPEG): per image, its array
    (or None) and its status and message."""
    libjpeg.load()  # (in a child process too)
    slab, offs, lens = slab_of(blobs)
    info, codes, msgs = jpeg.probe(slab, offs, lens, strict, max_pixels)
    out = [None] * len(blobs)
    codes, msgs = codes.tolist(), dict(msgs)
    good = [i for i, c in enumerate(codes) if c == 0 and info[i, 0] == jpeg.IMG_JPEG]
    if not good:
        return out, codes, msgs
    w, h = info[good, 1].astype(float), info[good, 2].astype(float)
    n = len(good)
    b = np.stack([np.zeros(n), np.zeros(n), w, h], 1) if boxes is None else boxes
    s = np.stack([h, w], 1) if sizes is None else sizes
    b = np.ascontiguousarray(b, dtype=np.float64)
    s = np.ascontiguousarray(s, dtype=np.int32)
    nbytes = s[:, 0].astype(np.int64) * s[:, 1] * 3
    dst = np.concatenate(([0], np.cumsum(nbytes)[:-1])).astype(np.int64)
    buf = np.zeros(int(nbytes.sum()), np.uint8)
    dc, dm, _ = raw_plan(strict=strict, max_pixels=max_pixels, **kw).run(
        slab,
        offs[good],
        lens[good],
        [None] * n,
        np.ascontiguousarray(info[good]),
        b,
        np.zeros(n, np.uint8),
        s,
        dst,
        buf,
    )
    for k, i in enumerate(good):
        codes[i] = int(dc[k])
        if dc[k]:
            msgs[i] = dm[k]
        else:
            out[i] = buf[dst[k] : dst[k] + nbytes[k]].reshape(int(s[k, 0]), int(s[k, 1]), 3)
    return out, codes, msgs


def segments(data: bytes) -> dict[int, tuple[int, int]]:
    """marker -> (offset of its 0xFF, payload length) of the first of each header segment."""
    out, pos = {}, 2
    while data[pos] == 0xFF:
        m, n = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.setdefault(m, (pos, n))
        if m == 0xDA:
            return out
        pos += 2 + n
    raise AssertionError("no scan")


def with_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with its frame header (SOF0/SOF2) declaring another size."""
    seg = segments(data)
    pos = seg[0xC0][0] if 0xC0 in seg else seg[0xC2][0]
    b = bytearray(data)
    b[pos + 5 : pos + 7] = height.to_bytes(2, "big")
    b[pos + 7 : pos + 9] = width.to_bytes(2, "big")
    return bytes(b)


# -- damaged JPEGs ------------------------------------------------------------------------

_DAMAGE_KINDS = ("rgb_420", "progressive", "restart_markers", "grayscale", "cmyk")


def _truncations() -> None:
    """(In a child.) Every cut of every kind fails with a named status and message, strict
    or not; what decodes un-strictly has the file's shape."""
    from fastload._native.status import Status
    from tests.batch.test_image_attacks import _DAMAGE_KINDS, native
    from tests.support import images as img

    named = {Status.CORRUPT, Status.FORMAT}
    for kind in _DAMAGE_KINDS:
        data = img.kinds()[kind]
        shape = img.pil_rgb(data).shape
        every = {*range(0, 700, 3), *range(700, len(data), max(1, len(data) // 80))}
        cuts = sorted(c for c in every if c < len(data))
        for strict in (True, False):
            outs, codes, msgs = native([data[:c] for c in cuts], strict=strict)
            for i, c in enumerate(cuts):
                where = f"{kind} cut at {c} strict={strict}"
                if strict or codes[i]:  # strict: no cut passes (no end-of-image marker)
                    assert codes[i] in named and msgs[i], (where, codes[i])
                    assert "JPEG" in msgs[i] or "empty file" in msgs[i], (where, msgs[i])
                else:  # lax: what libjpeg could decode, grey below
                    assert outs[i].shape == shape, where
    print("ok")


def test_truncated_at_every_cut_fails_with_a_named_error():
    assert _child("from tests.batch.test_image_attacks import _truncations; _truncations()")


def _header_flips() -> None:
    """(In a child.) Every byte of the SOF, DHT, DQT and SOS segments, flipped, zeroed or
    set: a named failure, or pixels equal to Pillow's decode of the same bytes."""
    import io

    import numpy as np
    from PIL import Image

    from tests.batch.test_image_attacks import NAMED, native, segments
    from tests.support import images as img

    for kind in ("rgb_420", "progressive", "rgb_444", "cmyk"):
        data = img.kinds()[kind]
        blobs = []
        for marker, (pos, n) in segments(data).items():
            if marker not in (0xC0, 0xC2, 0xC4, 0xDB, 0xDA):
                continue
            for k in range(pos + 2, pos + 2 + n):
                for v in {data[k] ^ 0xFF, data[k] ^ 0x01, 0, 0xFF}:
                    b = bytearray(data)
                    b[k] = v
                    blobs.append(bytes(b))
        for strict in (True, False):
            for start in range(0, len(blobs), 64):
                part = blobs[start : start + 64]
                outs, codes, msgs = native(part, strict=strict)
                for i, blob in enumerate(part):
                    if codes[i]:
                        assert codes[i] in NAMED and msgs[i], (kind, codes[i])
                        continue
                    ref = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
                    assert outs[i].shape == ref.shape and np.array_equal(outs[i], ref), kind
    print("ok")


def test_flipped_header_bytes_fail_by_name_or_decode_like_pillow():
    assert _child("from tests.batch.test_image_attacks import _header_flips; _header_flips()")


def _scan_flips() -> None:
    """(In a child.) Random bytes of the entropy-coded data overwritten: strict decoding
    names the damage (or, when libjpeg saw none, equals Pillow); lax decoding gives pixels."""
    import io

    import numpy as np
    from PIL import Image, ImageFile

    from fastload._native.status import Status
    from tests.batch.test_image_attacks import native, segments
    from tests.support import images as img

    ImageFile.LOAD_TRUNCATED_IMAGES = True
    rng = np.random.default_rng(5)
    for kind in ("rgb_420", "progressive", "restart_markers", "grayscale", "cmyk", "ycck"):
        data = img.kinds()[kind]
        pos, n = segments(data)[0xDA]
        start = pos + 2 + n
        blobs = []
        for _ in range(60):
            b = bytearray(data)
            for k in rng.integers(start, len(data) - 2, int(rng.integers(1, 4))):
                b[int(k)] = int(rng.integers(256))
            blobs.append(bytes(b))
        strict_outs, strict_codes, msgs = native(blobs, strict=True)
        lax_outs, lax_codes, lax_msgs = native(blobs, strict=False)
        for i, blob in enumerate(blobs):
            if strict_codes[i]:
                assert strict_codes[i] == Status.CORRUPT and "JPEG" in msgs[i], kind
            else:
                ref = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
                assert np.array_equal(strict_outs[i], ref), kind
            if lax_codes[i]:  # a marker hit where data should be, or a bogus table
                assert lax_codes[i] == Status.CORRUPT and lax_msgs[i], kind
            else:
                assert lax_outs[i].shape == img.pil_rgb(data).shape
    print("ok")


def test_damaged_scan_data_is_named_when_strict_and_decoded_when_lax():
    assert _child("from tests.batch.test_image_attacks import _scan_flips; _scan_flips()")


# -- sizes from the header: bombs, zero, degenerate ----------------------------------------


def test_a_decompression_bomb_is_refused_from_its_header():
    for data in (img.jpeg(64, 64, 1), img.jpeg(64, 64, 1, progressive=True)):
        bomb = with_size(data, 65500, 65500)
        with pytest.raises(ImageTooLargeError, match="4290250000 pixels is more than max_pix"):
            ImagePipeline(RandomResizedCrop(32)).apply([bomb])
        _, codes, msgs = native([bomb], max_pixels=1 << 27)
        assert codes == [Status.TOO_LARGE] and "decompression bomb" in msgs[0]


def test_a_bomb_with_the_limit_off_fails_by_name_not_by_memory():
    """max_pixels=0 and a progressive 65500 x 65500 frame: libjpeg's whole-image coefficient
    buffer (~13 GB) cannot be had under a 6 GB address space. That is out of memory, said
    so, not "corrupt"; a baseline one decodes only the crop's rows and fails on its data."""
    out = _child(
        """
        from fastload.batch.image_pipeline import ImagePipeline, RandomResizedCrop
        from tests.batch.test_image_attacks import with_size
        from tests.support import images as img

        prog = with_size(img.jpeg(64, 64, 1, progressive=True), 65500, 65500)
        try:
            ImagePipeline(RandomResizedCrop(32), max_pixels=0).apply([prog])
        except MemoryError as exc:
            assert "libjpeg cannot allocate the memory to decode this 65500 x 65500" in str(exc)
            assert "image 0" in str(exc)
        else:
            raise AssertionError("decoded")
        base = with_size(img.jpeg(64, 64, 1), 65500, 65500)
        try:
            ImagePipeline(RandomResizedCrop(32), max_pixels=0).apply([base])
        except ValueError as exc:
            assert "premature end of data segment" in str(exc), exc
        print("ok")
        """,
    )
    assert out.strip() == "ok"


def _many_scans(n: int) -> bytes:
    """A progressive grey 512 x 512 JPEG whose smallest scan (33 bytes) is repeated ``n``
    times before its end-of-image marker: every copy is a pass over all the blocks."""
    data = img.encode(np.full((512, 512), 128, np.uint8), quality=50, progressive=True)
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xDA, 0xC4)]
    ends = [*starts[1:], len(data) - 2]
    scans = [(e - s, s) for s, e in zip(starts, ends, strict=True) if data[s + 1] == 0xDA]
    size, at = min(scans[1:])
    return data[:-2] + data[at : at + size] * n + b"\xff\xd9"


def test_a_progressive_jpeg_of_thousands_of_scans_is_refused():
    """Decoding time, not memory: each scan of a progressive JPEG is a pass over every
    block, and a lax decode lets an inconsistent progression go on, so a 1 MB file of
    33-byte scans kept a thread busy for minutes on a large frame. More than 500 scans
    (TurboJPEG's guard) is refused as a bomb; strict decoding names the bad progression."""
    bomb = _many_scans(2000)
    with pytest.raises(ImageTooLargeError, match="progressive JPEG with more than 500 scans"):
        ImagePipeline(RandomResizedCrop(32), strict=False).apply([bomb])
    with pytest.raises(ImageDecodeError, match="Inconsistent progression sequence"):
        ImagePipeline(RandomResizedCrop(32)).apply([bomb])
    fine = _many_scans(3)  # a few repeats: under the limit, lax decoding goes through
    x = ImagePipeline(RandomResizedCrop(32), strict=False).apply([fine])
    assert x.shape == (1, 32, 32, 3)


@pytest.mark.parametrize("w,h", [(0, 64), (64, 0), (0, 0)])
def test_a_frame_without_width_or_height_is_named(w, h):
    bad = with_size(img.jpeg(16, 16, 2), w, h)
    with pytest.raises(UnsupportedImageError, match="without a width or height") as info:
        ImageBatcher(ImagePipeline()).decode(
            *slab_of([bad]), np.array([4]), 0, uri_of=lambda i: f"/d/{i}.jpg"
        )
    assert info.value.uri == "/d/4.jpg" and info.value.sample == 4


def test_a_thin_strip_resized_by_its_shorter_side_is_refused_not_allocated():
    """Resize(256) alone keeps the aspect: a 30000 x 1 strip would become 7680000 x 256
    (5.9 GB of output) from a 40 KB file. Over max_pixels, it is refused by name (and
    skipped, counted, with on_error="skip"); with a crop after the resize it is fine."""
    strip = img.encode(img.picture(1, 30000, 1).reshape(1, 30000, 3), quality=90)
    png = img.encode(img.picture(1, 30000, 1).reshape(1, 30000, 3), "PNG")
    good = img.jpeg(20, 30, 3)
    for data in (strip, png):
        with pytest.raises(ImageTooLargeError, match=r"7680000 x 256 = 1966080000 pixels") as e:
            ImageBatcher(ImagePipeline(Resize(256))).decode(
                *slab_of([good, data]), np.array([0, 1]), 0, uri_of=lambda i: f"f{i}.jpg"
            )
        assert e.value.uri == "f1.jpg" and "Resize(size=256) makes this 30000 x 1 image" in str(
            e.value
        )
    batcher = ImageBatcher(ImagePipeline(Resize(256), on_error="skip"))
    res = batcher.decode(*slab_of([good, strip]), np.array([0, 1]), 0)
    assert res.indices.tolist() == [0, 0] and res.batch.shapes.tolist() == [[256, 384, 3]] * 2
    assert batcher.stats["skipped"] == 1
    assert batcher.stats["skipped_samples"][0]["error"] == "TOO_LARGE"
    cut = ImagePipeline(Resize(256), CenterCrop(224)).apply([strip])
    assert cut.shape == (1, 224, 224, 3)


@pytest.mark.parametrize(
    "h,w", [(1, 1), (1, 2), (2, 1), (1, 37), (37, 1), (1, 500), (500, 1), (7, 9), (17, 1)]
)
def test_tiny_and_thin_images_decode_and_resize_like_pil(h, w):
    """Images of 1 x 1 to 1 x 500, smaller than the crop output: within 1 of PIL (the
    existing tolerance), for a crop-then-resize and a resize-then-crop."""
    from PIL import Image

    pixels = img.picture(h, w, h * w).reshape(h, w, 3)
    for data in (
        img.encode(pixels, quality=90),
        img.encode(pixels, quality=90, subsampling=0),
        img.encode(pixels, quality=90, progressive=True),
    ):
        ref = img.pil_rgb(data)
        (whole,), codes, _ = native([data])
        assert codes == [0] and np.array_equal(whole, ref)
        boxes = np.array([[0, 0, w, h]], float)
        (up,), codes, _ = native([data], boxes=boxes, sizes=np.array([[24, 32]]))
        want = np.asarray(Image.fromarray(ref).resize((32, 24), Image.BILINEAR)).astype(int)
        assert codes == [0] and np.abs(up.astype(int) - want).max() <= 1
        out = ImagePipeline(Resize(20), CenterCrop(16), dct_scaling="off").apply([data])
        assert out.shape == (1, 16, 16, 3)
        rrc = ImagePipeline(RandomResizedCrop(224)).apply([data])
        assert rrc.shape == (1, 224, 224, 3)


# -- every flavour of JPEG ---------------------------------------------------------------


def _strip_adobe(data: bytes) -> bytes:
    pos, n = segments(data)[0xEE]
    return data[:pos] + data[pos + 2 + n :]


@pytest.mark.parametrize(
    "kind",
    ["arith_420", "arith_progressive", "subsampled_440", "subsampled_411", "cmyk_no_adobe"],
)
def test_flavours_pillow_cannot_write_decode_like_pillow(kind):
    data = _strip_adobe(img.kinds()["cmyk"]) if kind == "cmyk_no_adobe" else jpeg_seeds.ALL[kind]
    (out,), codes, msgs = native([data])
    assert codes == [0], msgs
    assert np.array_equal(out, img.pil_rgb(data))
    crop = ImagePipeline(RandomResizedCrop(12), dct_scaling="off").apply([data])
    assert crop.shape == (1, 12, 12, 3)


@pytest.mark.parametrize("channels", [1, 3])
def test_a_lossless_jpeg_goes_to_pillow_and_crops(channels):
    """libjpeg-turbo 3 decodes lossless (SOF3) frames whole only: no DCT scaling, no
    crop_scanline/skip_scanlines, no grey -> RGB. They used to fail as "corrupt" whenever
    cropped (and always when grey); Pillow decodes them, then the usual crop/resize."""
    from PIL import Image

    pixels = img.picture(20, 30, 3, channels=channels)
    data = jpeg_seeds.lossless(pixels)
    ref = img.pil_rgb(data)
    assert np.array_equal(ref[..., 0] if channels == 1 else ref, pixels)
    batcher = ImageBatcher(ImagePipeline(RandomResizedCrop(8), dct_scaling="off"))
    x = batcher.decode(*slab_of([data]), np.array([0]), 0).batch
    assert x.shape == (1, 8, 8, 3) and batcher.stats["pillow_decoded"] == 1
    whole = ImagePipeline().apply([data])
    assert np.array_equal(whole.sample(0), ref)
    ev = ImagePipeline(Resize(10), CenterCrop(8), dct_scaling="off").apply([data])
    small = Image.fromarray(ref).resize((15, 10), Image.BILINEAR)
    want = np.asarray(small.crop((4, 1, 12, 9))).astype(int)
    assert np.abs(ev[0].astype(int) - want).max() <= 1


def test_dct_scaled_boxes_stay_in_place_on_sizes_off_the_block_grid():
    """At scale k/8, libjpeg's pixel j covers stored pixels [8j/k, 8(j+1)/k): a size that is
    no multiple of 8/k ends in a part pixel. Boxes used to be mapped by the rounded-up
    scaled size over the stored one, stretching them towards the right and bottom by up to
    half a scaled pixel."""
    from PIL import Image

    for h, w, box in [
        (61, 83, (0, 0, 83, 61)),  # 1/2: mean error 3.9 before, 1.0 now
        (61, 83, (5, 11, 70, 61)),  # 4.6, 1.2
        (377, 503, (0, 0, 503, 377)),  # 1/8: 8.5, 1.3
        (901, 1201, (0, 0, 1201, 901)),  # 2.0, 0.3
        (901, 1201, (5, 11, 1188, 901)),  # 2.1, 0.4
    ]:
        data = img.jpeg(h, w, 5)
        ref = Image.fromarray(img.pil_rgb(data))
        boxes = np.array([box], float)
        (out,), codes, _ = native(
            [data], boxes=boxes, sizes=np.array([[24, 24]]), dct_scaling="pow2"
        )
        want = np.asarray(ref.crop(box).resize((24, 24), Image.BILINEAR)).astype(int)
        d = np.abs(out.astype(int) - want)
        assert codes == [0] and d.mean() < 1.4 and d.max() <= 20, (h, w, box, d.mean())


def _without(data: bytes, marker: int) -> bytes:
    while marker in (seg := segments(data)):
        pos, n = seg[marker]
        data = data[:pos] + data[pos + 2 + n :]
    return data


@pytest.mark.parametrize("before", [0, 1, 3])
def test_a_file_without_its_tables_is_refused_whatever_its_thread_decoded_before(before):
    """libjpeg keeps the quantization and Huffman tables of the previous image in a reused
    decompression object: a JPEG without its DQT (refused alone, as by Pillow) decoded
    "fine" after another image on the same thread, with that image's tables."""
    no_dqt = _without(img.jpeg(32, 48, 1), 0xDB)
    others = [img.jpeg(32, 48, 2 + i, quality=30) for i in range(before)]
    _, codes, msgs = native([*others, no_dqt], nthreads=1)
    assert codes == [0] * before + [Status.CORRUPT]
    assert "Quantization table 0x00 was not defined" in msgs[before]
    with pytest.raises(ImageDecodeError, match="sample 9: corrupt JPEG: Quantization table"):
        ImageBatcher(ImagePipeline(RandomResizedCrop(16), num_threads=1)).decode(
            *slab_of([*others, no_dqt]),
            np.arange(9 - before, 10),
            0,
            uri_of=lambda i: f"f{i}.jpg",
        )
    # no DHT at all: libjpeg's standard tables, fresh for every image, as in Pillow
    no_dht = _without(img.jpeg(32, 48, 1), 0xC4)
    (out,), codes, _ = native([no_dht])
    assert codes == [0] and np.array_equal(out, img.pil_rgb(no_dht))
    outs, codes, _ = native([*others, no_dht], nthreads=1)
    assert np.array_equal(outs[-1], img.pil_rgb(no_dht))


def test_exif_orientation_is_not_applied_by_default_as_in_pillow_and_torchvision():
    """PIL.Image.open and torchvision's loaders leave the stored orientation; so does the
    pipeline unless apply_exif_orientation=True, for JPEGs and for Pillow's formats."""
    from PIL import Image

    jpg = img.with_orientation(img.jpeg(30, 50, 9), 6)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(img.picture(30, 50, 9)).save(buf, "PNG", exif=exif.tobytes())
    for data in (jpg, buf.getvalue()):
        assert ImagePipeline().apply([data]).shapes.tolist() == [[30, 50, 3]]
        assert np.array_equal(ImagePipeline().apply([data]).sample(0), img.pil_rgb(data))
        turned = ImagePipeline(apply_exif_orientation=True).apply([data])
        assert turned.shapes.tolist() == [[50, 30, 3]]
        assert np.array_equal(turned.sample(0), img.pil_rgb(data, orient=True))


def _exif_app1(orientation: int, typ: int = 3, le: bool = True) -> bytes:
    """An APP1 Exif segment whose IFD0 holds only the orientation tag, of TIFF type ``typ``."""
    import struct

    e = "<" if le else ">"
    value = struct.pack(e + "H", orientation) + bytes(2)
    if typ == 4:
        value = struct.pack(e + "I", orientation)
    ifd = struct.pack(e + "HHHI", 1, 0x0112, typ, 1) + value + struct.pack(e + "I", 0)
    payload = b"Exif\0\0" + (b"II" if le else b"MM") + struct.pack(e + "HI", 42, 8) + ifd
    return b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload


@pytest.mark.parametrize(
    "segments_",
    [
        [(6, 3, True)],
        [(6, 3, False)],
        [(6, 4, True)],  # LONG: stored so by some writers; Pillow turns the image
        [(6, 4, False)],
        [(1, 3, True), (6, 3, True)],  # a second Exif segment: Pillow reads the first only
        [(5, 3, False), (1, 3, True)],
    ],
)
def test_exif_orientation_is_read_as_pillow_reads_it(segments_):
    """apply_exif_orientation=True turns images as PIL.ImageOps.exif_transpose does. The
    orientation tag as a LONG was ignored, and a later Exif segment overrode the first."""
    base = img.jpeg(30, 50, 9)
    data = base[:2] + b"".join(_exif_app1(*s) for s in segments_) + base[2:]
    got = ImagePipeline(apply_exif_orientation=True).apply([data]).sample(0)
    want = img.pil_rgb(data, orient=True)
    assert got.shape == want.shape and np.array_equal(got, want)


# -- files that are no JPEG ------------------------------------------------------------------


def _wrong_files() -> dict[str, tuple[bytes, type | None, str]]:
    px = img.picture(20, 24, 3)
    return {
        "png.jpg": (img.encode(px, "PNG"), None, ""),
        "webp.jpg": (img.encode(px, "WEBP", lossless=True), None, ""),
        "gif.jpg": (img.encode(px, "GIF"), None, ""),
        "bmp.jpg": (img.encode(px, "BMP"), None, ""),
        "tiff.jpg": (img.encode(px, "TIFF"), None, ""),
        "random.jpg": (
            np.random.default_rng(1).integers(0, 256, 700, dtype=np.uint8).tobytes(),
            UnsupportedImageError,
            "not an image format Pillow reads",
        ),
        "soi_then_noise.jpg": (
            b"\xff\xd8\xff" + bytes(range(256)) * 2,
            ImageDecodeError,
            "JPEG",
        ),
        "empty.jpg": (b"", ImageDecodeError, "empty file"),
    }


@pytest.mark.parametrize("name", list(_wrong_files()))
def test_a_file_in_another_format_or_none_named_jpg(name):
    data, error, text = _wrong_files()[name]
    good = img.jpeg(20, 24, 4)
    batcher = ImageBatcher(ImagePipeline(RandomResizedCrop(16)))
    run = lambda: batcher.decode(  # noqa: E731
        *slab_of([good, data]), np.array([10, 11]), 0, uri_of=lambda i: f"/d/{i}-{name}"
    )
    if error is None:
        x = run().batch
        assert x.shape == (2, 16, 16, 3) and batcher.stats["pillow_decoded"] == 1
        assert np.array_equal(ImagePipeline().apply([data]).sample(0), img.pil_rgb(data))
        return
    with pytest.raises(error, match=text) as info:
        run()
    assert info.value.uri == f"/d/11-{name}" and info.value.sample == 11
    skipping = ImageBatcher(ImagePipeline(RandomResizedCrop(16), on_error="skip"))
    res = skipping.decode(*slab_of([good, data]), np.array([10, 11]), 0)
    assert res.indices.tolist() == [10, 10] and skipping.stats["skipped"] == 1


def test_pillow_decoding_on_threads_leaves_the_warning_filters_alone():
    """Each Pillow decode used warnings.catch_warnings() to hide DecompressionBombWarning,
    on pool threads: their saves and restores of the process-wide filter list interleaved
    and left an "ignore DecompressionBombWarning" filter installed in the user's program."""
    import warnings

    from fastload.batch import pillow_decode

    pngs = [img.encode(img.picture(24, 24, s), "PNG") for s in range(32)]
    before = list(warnings.filters)
    for _ in range(20):
        assert all(c == 0 for _, c, _ in pillow_decode.decode_many(pngs, 0, False, threads=8))
    assert warnings.filters == before


# -- ImageFolder trees -------------------------------------------------------------------


@pytest.fixture
def messy_tree(tmp_path):
    root = tmp_path / "train"
    written = img.write_folder(str(root), {"a": 3, "b": 2, "猫": 2}, h=30, w=30)
    (root / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + bytes(60))
    (root / "a" / "._img000.jpg").write_bytes(b"\0\5\26\7\0\2\0\0Mac OS X" + bytes(60))
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / "png_named.jpg").write_bytes(img.encode(img.picture(20, 20), "PNG"))
    (root / "b" / "random.jpg").write_bytes(os.urandom(300))
    (root / "b" / "empty.jpg").write_bytes(b"")
    (root / "b" / "UPPER.JPEG").write_bytes(img.jpeg(20, 20, 4))
    (root / "猫" / "café\u0301 名前.jpg").write_bytes(img.jpeg(20, 20, 5))
    (root / "b" / "dir.jpg").mkdir()
    os.symlink(root / "a" / "img000.jpg", root / "b" / "link.jpg")
    os.symlink(root, root / "a" / "loop")  # a folder link back to the root
    os.symlink(root / "b", root / "linked")  # a class folder that is a link
    (root / "top.jpg").write_bytes(img.jpeg(20, 20, 6))
    return root, written


def test_image_folder_of_a_messy_tree(messy_tree):
    root, _ = messy_tree
    ds = ImageFolder(root)
    assert ds.classes == ["a", "b", "linked", "猫"]
    names = [os.path.relpath(u, root) for u, _ in ds.samples]
    assert names[:4] == ["a/._img000.jpg", "a/img000.jpg", "a/img001.jpg", "a/img002.jpg"]
    # the linked class has the files of the folder it names; the loop is not followed
    b_files = [n[2:] for n in names if n.startswith("b/")]
    assert [n[7:] for n in names if n.startswith("linked/")] == b_files
    assert not any("loop" in n for n in names) and "猫/café\u0301 名前.jpg" in names
    skipped = sorted(os.path.relpath(u, root) for u in ds.skipped_files)
    assert skipped == ["a/.DS_Store", "a/notes.txt", "top.jpg"] and ds.skipped == 3
    # decoding: the bad files (AppleDouble, random bytes, empty: twice through the link)
    # raise naming the file, or are skipped and counted exactly
    pipe = ImagePipeline(Resize(20), CenterCrop(16))
    with pytest.raises(UnsupportedImageError, match=r"a/\._img000\.jpg: sample 0: not an image"):
        list(DataLoader(ds, batch_size=8, transform=pipe))
    dl = DataLoader(ds, batch_size=8, transform=pipe, on_error="skip")
    labels = [y.tolist() for _, y in dl]
    assert sum(len(y) for y in labels) == len(ds)
    s = dl.stats()["images"]
    bad = sorted(os.path.relpath(e["uri"], root) for e in s["skipped_samples"])
    assert bad == [
        "a/._img000.jpg",
        "b/empty.jpg",
        "b/random.jpg",
        "linked/empty.jpg",
        "linked/random.jpg",
    ]
    assert s["skipped"] == 5


def test_image_folder_entries_that_are_no_files_are_named(messy_tree):
    """An empty class folder is refused unless allow_empty; a broken link and a FIFO (which
    a reader would block on) are refused naming them, before any read."""
    root, _ = messy_tree
    (root / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no image file .* for the classes \['empty_c"):
        ImageFolder(root)
    assert "empty_class" in ImageFolder(root, allow_empty=True).classes
    os.symlink(root / "nowhere.jpg", root / "a" / "broken.jpg")
    with pytest.raises(FileNotFoundError, match=r"a/broken\.jpg"):
        ImageFolder(root, allow_empty=True)
    os.remove(root / "a" / "broken.jpg")
    os.mkfifo(root / "a" / "pipe.jpg")
    with pytest.raises(NotRegularFileError, match=r"a/pipe\.jpg: is a FIFO"):
        ImageFolder(root, allow_empty=True)


# -- the fuzz harness itself -------------------------------------------------------------


def test_the_image_fuzzer_runs_clean_for_a_few_seconds():
    """tests/fuzz/fuzz_images.py (run for minutes by hand): a short run in a child, so the
    harness stays working and its seeds still decode like Pillow."""
    res = subprocess.run(
        [sys.executable, os.path.join(_ROOT, "tests", "fuzz", "fuzz_images.py"), "--seconds", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": _ROOT},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "batches" in res.stdout and res.stderr == ""
