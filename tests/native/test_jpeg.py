"""The image kernel (csrc/fl_jpeg.c, fl_resample.c, fl_image_batch.c) through its bridge:
decodes like Pillow, crops and resamples within a stated tolerance of PIL, and turns bad
files into per-image statuses without crashing or printing."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap

import numpy as np
import pytest

from fastload._native import collate as _collate
from fastload._native import jpeg
from fastload._native.status import Status
from fastload.batch import libjpeg
from tests.support import images as img
from tests.support.decode_plans import raw_plan

ORIENTATION = jpeg.INFO_FIELDS.index("orientation")


@pytest.fixture(scope="module", autouse=True)
def bound():
    return libjpeg.load()


def slab_of(blobs):
    lens = np.array([len(b) for b in blobs], dtype=np.int64)
    offs = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offs, lens


def plan(**kw):
    return raw_plan(**kw)


def decode(blobs, boxes=None, sizes=None, flips=None, pixels=None, info=None, **kw):
    """Run the kernel on ``blobs``: uint8 HWC outputs (list), codes, messages, stats."""
    p = plan(**kw)
    slab, offs, lens = slab_of(blobs)
    n = len(blobs)
    if info is None:
        info, codes, msgs = jpeg.probe(slab, offs, lens, True, 0)
        assert not msgs, msgs
    w, h = info[:, 1].astype(np.float64), info[:, 2].astype(np.float64)
    if kw.get("apply_orientation"):
        swap = info[:, ORIENTATION] >= 5
        w, h = np.where(swap, h, w), np.where(swap, w, h)
    if boxes is None:
        boxes = np.stack([np.zeros(n), np.zeros(n), w, h], axis=1)
    boxes = np.ascontiguousarray(boxes, dtype=np.float64)
    if sizes is None:
        sizes = np.stack([h, w], axis=1)
    sizes = np.ascontiguousarray(sizes, dtype=np.int32)
    flips = np.zeros(n, np.uint8) if flips is None else np.asarray(flips, np.uint8)
    nbytes = sizes[:, 0].astype(np.int64) * sizes[:, 1] * 3 * p.dst_itemsize
    dst = np.concatenate(([0], np.cumsum(nbytes)[:-1])).astype(np.int64)
    out = np.zeros(int(nbytes.sum()), dtype=np.uint8)
    codes, msgs, stats = p.run(
        slab, offs, lens, pixels or [None] * n, info, boxes, flips, sizes, dst, out
    )
    arrays = [
        out[dst[i] : dst[i] + nbytes[i]].reshape(int(sizes[i, 0]), int(sizes[i, 1]), -1)
        for i in range(n)
    ]
    return arrays, codes, msgs, stats


# -- the binding ------------------------------------------------------------------------


def test_binds_pillows_libjpeg_turbo(bound):
    assert jpeg.libjpeg_loaded()
    pillow_libs = libjpeg._pillow_libs()
    assert pillow_libs and bound in pillow_libs + libjpeg._mapped()
    assert libjpeg.load() == bound  # once per process
    with pytest.raises(ValueError, match="already bound"):
        libjpeg.load("/nonexistent/libjpeg.so.62")


def test_a_library_that_does_not_bind_names_why(tmp_path):
    """In a fresh process (this one has bound its libjpeg): a file that is no library, and
    one that lacks libjpeg's symbols, are refused with the reason."""
    import sys

    fake = tmp_path / "libjpeg.so.62"
    fake.write_bytes(b"not an ELF file")
    code = "from fastload.batch import libjpeg; libjpeg.load()"
    for path, why in [
        (str(fake), "cannot load libjpeg from"),
        (_libc(), "symbol jpeg_std_error missing"),
    ]:
        env = {**os.environ, "FASTLOAD_LIBJPEG": path}
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert res.returncode != 0 and "no usable libjpeg" in res.stderr and why in res.stderr


def _libc() -> str:
    import ctypes.util

    return ctypes.util.find_library("c") or "libc.so.6"


def test_candidates_order(monkeypatch):
    monkeypatch.setenv("FASTLOAD_LIBJPEG", "/x/libjpeg.so")
    assert libjpeg.candidates() == ["/x/libjpeg.so"]
    assert libjpeg.candidates("/y.so") == ["/y.so"]
    monkeypatch.delenv("FASTLOAD_LIBJPEG")
    found = libjpeg.candidates()
    assert found[-2:] == list(libjpeg.SYSTEM_NAMES)
    assert any("pillow.libs" in c for c in found)


@pytest.mark.skipif(
    not (os.path.exists("/usr/include/jpeglib.h") and shutil.which("cc")),
    reason="needs a C compiler and a system jpeglib.h",
)
def test_abi_declarations_match_a_jpeglib_h(tmp_path):
    """Sizes and offsets compiled from csrc/fl_jpeg_abi.h equal those of jpeglib.h (62)."""
    table = jpeg.abi_table()
    lines = []
    for name in table:
        if name.startswith("sizeof "):
            struct = {
                "flj_error_mgr": "jpeg_error_mgr",
                "flj_source_mgr": "jpeg_source_mgr",
                "flj_decompress": "jpeg_decompress_struct",
            }[name.split()[1]]
            expr = f"sizeof(struct {struct})"
        else:
            s, f = name.split(".")
            struct = {
                "flj_error_mgr": "jpeg_error_mgr",
                "flj_decompress": "jpeg_decompress_struct",
            }[s]
            expr = f"offsetof(struct {struct}, {f})"
        lines.append(f'printf("%s %ld\\n", "{name}", (long){expr});')
    src = tmp_path / "abi.c"
    src.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n#include <jpeglib.h>\n"
        "int main(void) {\n"
        "#if JPEG_LIB_VERSION != 62\nreturn 3;\n#endif\n"
        + textwrap.indent("\n".join(lines), "  ")
        + "\n  return 0;\n}\n"
    )
    exe = tmp_path / "abi"
    subprocess.run(["cc", "-o", str(exe), str(src)], check=True, capture_output=True)
    res = subprocess.run([str(exe)], capture_output=True, text=True)
    if res.returncode == 3:
        pytest.skip("the system jpeglib.h is not the 6.2 ABI")
    theirs = {
        line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in res.stdout.splitlines()
    }
    assert theirs == table


# -- decoding like Pillow ---------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(img.kinds()))
def test_uncropped_decode_equals_pillow_bit_for_bit(kind):
    data = img.kinds()[kind]
    (out,), codes, _, _ = decode([data])
    assert codes.tolist() == [0]
    ref = img.pil_rgb(data)
    assert out.shape == ref.shape
    assert np.array_equal(out, ref), f"{kind}: max diff {np.abs(out.astype(int) - ref).max()}"


def test_probe_reads_headers():
    k = img.kinds()
    blobs = [
        k["rgb_420"],
        k["grayscale"],
        k["cmyk"],
        k["progressive"],
        img.encode(img.picture(9, 7), "PNG"),
    ]
    info, codes, msgs = jpeg.probe(*slab_of(blobs), True, 0)
    assert codes.tolist() == [0] * 5 and not msgs
    fields = {f: info[:, i].tolist() for i, f in enumerate(jpeg.INFO_FIELDS)}
    assert fields["format"] == [jpeg.IMG_JPEG] * 4 + [jpeg.IMG_PNG]
    assert fields["width"] == [83, 59, 83, 83, 7] and fields["height"] == [61, 47, 61, 61, 9]
    assert fields["components"][:4] == [3, 1, 4, 3]
    assert fields["progressive"][:4] == [0, 0, 0, 1]


def test_many_images_on_threads_equal_one_thread():
    blobs = [img.jpeg(40 + 7 * i, 50 + 5 * i, i) for i in range(12)]
    one, *_ = decode(blobs, nthreads=1)
    two, _, _, stats = decode(blobs, nthreads=2)
    assert stats["threads"] == 2
    assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))


def test_roi_decode_equals_the_full_decode_cropped():
    """jpeg_crop_scanline/jpeg_skip_scanlines windows give the full decode's pixels."""
    data = img.jpeg(200, 300, 7)
    ref = img.pil_rgb(data)
    boxes = [
        (0, 0, 300, 200),
        (37, 51, 190, 170),
        (64, 16, 128, 80),
        (1, 1, 2, 2),
        (250, 150, 300, 200),
    ]
    sizes = [(b[3] - b[1], b[2] - b[0]) for b in boxes]
    outs, codes, _, stats = decode([data] * len(boxes), boxes=boxes, sizes=sizes)
    assert codes.tolist() == [0] * len(boxes)
    for (x0, y0, x1, y1), out in zip(boxes, outs, strict=True):
        assert np.array_equal(out, ref[y0:y1, x0:x1]), (x0, y0, x1, y1)
    # rows below a box are never decoded, nor iMCU columns left and right of it
    assert stats["decoded_pixels"] < stats["source_pixels"] * len(boxes) * 0.6


def test_flip_mirrors():
    data = img.jpeg(64, 96, 3)
    box = [(10, 5, 90, 60)] * 2
    (a, b), *_ = decode([data, data], boxes=box, sizes=[(55, 80)] * 2, flips=[0, 1])
    assert np.array_equal(a[:, ::-1], b)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_pillow(orientation):
    data = img.with_orientation(img.jpeg(30, 50, 9), orientation)
    info, _, _ = jpeg.probe(*slab_of([data]), True, 0)
    assert info[0, ORIENTATION] == orientation
    (out,), codes, _, _ = decode([data], apply_orientation=True)
    ref = img.pil_rgb(data, orient=True)
    assert out.shape == ref.shape and np.array_equal(out, ref)
    (stored,), *_ = decode([data], apply_orientation=False)
    assert np.array_equal(stored, img.pil_rgb(data))
    # a box in displayed coordinates, and a flip, compose with the orientation
    h, w = ref.shape[:2]
    box = [(3, 2, w - 5, h - 4)]
    (cut,), *_ = decode(
        [data], boxes=box, sizes=[(h - 6, w - 8)], flips=[1], apply_orientation=True
    )
    assert np.array_equal(cut, ref[2 : h - 4, 3 : w - 5][:, ::-1])


# -- resampling: close to PIL's bilinear with antialias ---------------------------------


def _pil_resized(data, box, size):
    from PIL import Image

    pil = Image.fromarray(img.pil_rgb(data)).crop(box).resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(pil).astype(int)


# Pinned: with the decode at full size (dct_scaling="off") every pixel is within 1 of PIL's
# bilinear+antialias (PIL rounds between its two passes; fastload keeps floats), mean < 0.3.
def test_resize_within_one_of_pil():
    data = img.jpeg(375, 500, 11)
    boxes = [(0, 0, 500, 375), (40, 30, 440, 330), (100, 50, 180, 140), (0, 0, 5, 7)]
    sizes = [(224, 224), (224, 224), (224, 224), (32, 48)]  # shrink, shrink, grow, grow
    outs, codes, *_ = decode([data] * 4, boxes=boxes, sizes=sizes)
    for box, size, out in zip(boxes, sizes, outs, strict=True):
        d = np.abs(out.astype(int) - _pil_resized(data, box, size))
        assert d.max() <= 1 and d.mean() < 0.3, (box, d.max(), d.mean())


# Pinned, on grainy photo-like images: DCT-domain downscaling at 1/2, 1/4, 1/8 (the default,
# "pow2") then the antialiased resize stays within 8 (max) and 1.2 (mean) of PIL's full decode
# + resize (measured 5-6 and 0.74-0.93); any k/8 ("any": 3/8 here) within 40 and 4 (measured
# 28 and 3.5: libjpeg's small odd-size IDCTs are coarser; "any" is also slower: no SIMD).
@pytest.mark.parametrize("mode,worst,mean", [("pow2", 8, 1.2), ("any", 40, 4.0)])
def test_dct_scaled_decode_close_to_pil(mode, worst, mean):
    data = img.jpeg(900, 1200, 12)
    boxes = [(0, 0, 1200, 900), (100, 100, 1100, 800)]
    outs, codes, _, stats = decode(
        [data] * 2, boxes=boxes, sizes=[(224, 224)] * 2, dct_scaling=mode
    )
    assert stats["dct_scaled"] == 2  # 1/2 (pow2) or 2/8 .. 3/8 (any) keeps >= 224
    assert stats["decoded_pixels"] < stats["source_pixels"] / 3
    for box, out in zip(boxes, outs, strict=True):
        d = np.abs(out.astype(int) - _pil_resized(data, box, (224, 224)))
        assert d.max() <= worst and d.mean() < mean, (mode, box, d.max(), d.mean())


def test_dct_scaling_off_decodes_at_full_size():
    data = img.jpeg(900, 1200, 12)
    _, _, _, stats = decode([data], sizes=[(224, 224)], dct_scaling="off")
    assert stats["dct_scaled"] == 0 and stats["decoded_pixels"] == 900 * 1200


def test_resize_then_crop_reads_beyond_the_box():
    """clip_to_box=False: the filter sees pixels outside the box (a resize, then a crop)."""
    data = img.jpeg(100, 100, 13)
    box = [(25, 25, 75, 75)]
    (clipped,), *_ = decode([data], boxes=box, sizes=[(10, 10)], clip_to_box=True)
    (spread,), *_ = decode([data], boxes=box, sizes=[(10, 10)], clip_to_box=False)
    from PIL import Image

    ref = np.asarray(Image.fromarray(img.pil_rgb(data)).resize((20, 20), Image.BILINEAR))[
        5:15, 5:15
    ]
    assert np.abs(spread.astype(int) - ref).max() <= 1
    assert not np.array_equal(clipped, spread)


# -- conversion into the slot -----------------------------------------------------------


@pytest.mark.parametrize(
    "dtype,code,size",
    [
        ("float32", _collate.DT_F32, 4),
        ("float16", _collate.DT_F16, 2),
        ("bfloat16", _collate.DT_BF16, 2),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_float_outputs_equal_collating_the_uint8_result(dtype, code, size, channels_last):
    import fastload

    data = img.jpeg(80, 120, 14)
    box, sz = [(5, 7, 105, 77)], [(32, 48)]
    (u8,), *_ = decode([data], boxes=box, sizes=sz, flips=[1])
    mean, std = np.array(img.IMAGENET_MEAN), np.array(img.IMAGENET_STD)
    scale = (1 / std).astype(np.float32)
    shift = (-mean / std).astype(np.float32)
    (raw,), codes, _, _ = decode(
        [data],
        boxes=box,
        sizes=sz,
        flips=[1],
        convert=True,
        dst_dtype=code,
        dst_channels_last=channels_last,
        dst_itemsize=size,
        scale=scale,
        shift=shift,
    )
    ref = fastload.collate(
        [u8],
        memory_format="channels_last" if channels_last else "channels_first",
        dtype=dtype,
        mean=mean,
        std=std,
    )
    assert np.array_equal(raw.reshape(-1).view(ref.dtype), ref.reshape(-1))


def test_uint8_channels_first_is_the_transposed_result():
    data = img.jpeg(40, 60, 15)
    (u8,), *_ = decode([data])
    (cf,), *_ = decode([data], convert=True, dst_dtype=_collate.DT_RAW, dst_channels_last=False)
    assert np.array_equal(cf.reshape(3, 40, 60), u8.transpose(2, 0, 1))


def test_decoded_pixels_take_the_same_path():
    """Images decoded elsewhere (Pillow) go through crop/resize/flip like JPEGs."""
    pix = img.picture(50, 70, 16)
    info = np.array([[jpeg.IMG_PIXELS, 70, 50, 3, 1, 0]], dtype=np.int32)
    data = img.encode(pix, quality=95)
    (a,), *_ = decode([b""], boxes=[(10, 5, 60, 45)], sizes=[(20, 25)], pixels=[pix], info=info)
    ref = np.asarray(
        __import__("PIL.Image", fromlist=["Image"])
        .fromarray(pix)
        .crop((10, 5, 60, 45))
        .resize((25, 20), 2)
    )
    assert np.abs(a.astype(int) - ref).max() <= 1
    del data


# -- bad input ----------------------------------------------------------------------------


def _bad_files():
    good = img.jpeg(64, 80, 17)
    sof = good.find(b"\xff\xc0")
    bomb = bytearray(good)
    bomb[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    deep = bytearray(good)
    deep[sof + 4] = 12
    app0 = 4 + int.from_bytes(good[4:6], "big")  # the end of the first segment
    png_bomb = bytearray(img.encode(img.picture(8, 8), "PNG"))
    png_bomb[16:24] = (100000).to_bytes(4, "big") * 2
    return good, {
        "truncated": (good[: len(good) // 2], Status.CORRUPT, "truncated JPEG"),
        "header cut": (good[:30], Status.CORRUPT, "truncated JPEG"),
        "zero bytes": (b"", Status.CORRUPT, "empty file"),
        "bomb": (bytes(bomb), Status.TOO_LARGE, "3600000000 pixels"),
        "png bomb": (bytes(png_bomb), Status.TOO_LARGE, "10000000000 pixels"),
        "12-bit": (bytes(deep), Status.FORMAT, "12-bit"),
        "garbage marker": (
            good[:app0] + b"\x00\x01\x02" + good[app0:],
            Status.CORRUPT,
            "no marker",
        ),
    }


def test_probe_names_what_is_wrong_with_each_file():
    good, bad = _bad_files()
    blobs = [good] + [b for b, _, _ in bad.values()]
    info, codes, msgs = jpeg.probe(*slab_of(blobs), True, 1 << 28)
    assert codes[0] == 0 and 0 not in msgs
    for k, (name, (_, code, text)) in enumerate(bad.items(), start=1):
        assert codes[k] == code, name
        assert text in msgs[k], (name, msgs[k])


def test_corrupt_scan_data_fails_only_its_image_and_prints_nothing(capfd):
    good = img.jpeg(256, 256, 18)
    sos = good.find(b"\xff\xda")
    mid = len(good) // 2
    bad = good[:mid] + bytes(3000) + good[mid + 3000 :]  # scan data wiped in the middle
    info, codes, _ = jpeg.probe(*slab_of([good, bytes(bad)]), True, 0)
    assert codes.tolist() == [0, 0] and sos > 0  # the header is fine
    outs, codes, msgs, stats = decode([good, bytes(bad)], info=info)
    assert codes.tolist() == [0, Status.CORRUPT] and "Corrupt JPEG data" in msgs[1]
    assert stats["failed"] == 1 and np.array_equal(outs[0], img.pil_rgb(good))
    lax, codes, _, _ = decode([bytes(bad)], info=info[1:], strict=False)
    assert codes.tolist() == [0] and lax[0].shape == (256, 256, 3)  # what libjpeg could decode
    assert capfd.readouterr().err == ""  # libjpeg's messages never reach stderr


def test_pixel_limit_is_checked_again_at_decode():
    data = img.jpeg(100, 100, 19)
    info, _, _ = jpeg.probe(*slab_of([data]), True, 0)
    _, codes, msgs, _ = decode([data], info=info, max_pixels=9999)
    assert codes.tolist() == [Status.TOO_LARGE] and "max_pixels=9999" in msgs[0]


def test_bridge_refuses_tables_that_would_reach_out_of_bounds():
    data = img.jpeg(20, 30, 20)
    slab, offs, lens = slab_of([data])
    info, _, _ = jpeg.probe(slab, offs, lens, True, 0)
    p = plan()
    out = np.zeros(20 * 30 * 3, np.uint8)
    ok = dict(
        info=info,
        boxes=np.array([[0, 0, 30, 20]], float),
        flips=np.zeros(1, np.uint8),
        out_size=np.array([[20, 30]], np.int32),
        dst_offsets=np.zeros(1, np.int64),
        out=out,
    )

    def run(**change):
        a = {**ok, **change}
        return p.run(
            slab,
            change.pop("offsets", offs),
            change.pop("lengths", lens),
            [None],
            a["info"],
            a["boxes"],
            a["flips"],
            a["out_size"],
            a["dst_offsets"],
            a["out"],
        )

    for change, text in [
        ({"boxes": np.array([[0, 0, 31, 20]], float)}, "not inside"),
        ({"boxes": np.array([[5, 0, 5, 20]], float)}, "not inside"),
        ({"boxes": np.array([[np.nan, 0, 3, 2]], float)}, "not inside"),
        ({"dst_offsets": np.array([1], np.int64)}, "outside out"),
        ({"out_size": np.array([[21, 30]], np.int32)}, "outside out"),
        ({"out_size": np.array([[0, 30]], np.int32)}, "empty"),
        ({"lengths": lens + 1}, "outside the slab"),
        ({"info": np.array([[jpeg.IMG_PNG, 30, 20, 3, 1, 0]], np.int32)}, "not a probed JPEG"),
    ]:
        with pytest.raises(ValueError, match=text):
            run(**change)
    assert not out.any()  # nothing was written
    codes, msgs, _ = run()
    assert codes.tolist() == [0] and out.any()


def test_entropy_only_decodes_without_idct():
    data = img.jpeg(64, 64, 21)
    jpeg.entropy_only(data)
    with pytest.raises(ValueError, match="corrupt JPEG"):
        jpeg.entropy_only(b"\xff\xd8\xff\xe0\x00\x02")
