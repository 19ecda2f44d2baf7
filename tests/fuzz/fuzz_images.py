"""Random-mutation fuzzing of the native image decoder (csrc/fl_jpeg.c, fl_image_batch.c,
fl_resample.c through fastload._native.jpeg) and the image pipeline above it.

Seeds are valid JPEGs of every kind the decoder reads (baseline 4:2:0/4:2:2/4:4:4/4:4:0/4:1:1,
grayscale, CMYK, YCCK, progressive, arithmetic-coded, restart markers, EXIF orientation,
1 x 1 and thin strips); each round mutates one (byte flips, marker-segment fields, cuts,
insertions, segment swaps) and decodes it with random settings (crop boxes, output sizes,
flips, DCT scaling, strictness, orientation, pixel limits, threads). Every call must give a
per-image status (OK, CORRUPT, FORMAT, TOO_LARGE; NOMEM only where the mutation asks for
a huge image with the pixel limit off) with a message -- never crash, hang, print, or raise
anything but the bridge's ValueError for a table it refuses. Unmutated seeds must decode
like Pillow. Run it in a subprocess so a crash is seen as one::

    python tests/fuzz/fuzz_images.py --seconds 120 --seed 1

Not collected by pytest (no test_ prefix); what it found has regression tests in
tests/batch/test_image_attacks.py.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)  # this tree's fastload (and tests.support), not an installed one

from fastload._native import collate as _collate  # noqa: E402
from fastload._native import jpeg  # noqa: E402
from fastload._native.status import Status  # noqa: E402
from fastload.batch import libjpeg  # noqa: E402
from tests.support import images as img  # noqa: E402
from tests.support import jpeg_seeds  # noqa: E402
from tests.support.decode_plans import raw_plan  # noqa: E402

OK_CODES = {Status.OK, Status.CORRUPT, Status.FORMAT, Status.TOO_LARGE}


def seeds() -> dict[str, bytes]:
    rgb = img.picture(37, 45, 1)
    out = dict(img.kinds())
    out.update(jpeg_seeds.ALL)
    out["progressive_444"] = img.encode(rgb, quality=80, progressive=True, subsampling=0)
    out["exif_6"] = img.with_orientation(img.jpeg(20, 28, 2), 6)
    out["strip_1x40"] = img.encode(img.picture(1, 40, 3).reshape(1, 40, 3), quality=80)
    out["strip_40x1"] = img.encode(img.picture(40, 1, 4).reshape(40, 1, 3), quality=80)
    out["gray_progressive"] = img.encode(img.picture(30, 26, 5, channels=1), progressive=True)
    return out


def segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset of its 0xFF, payload length) of the header segments up to the SOS."""
    out, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        m, n = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big")
        out.append((m, pos, n))
        if m == 0xDA:
            break
        pos += 2 + n
    return out


def mutate(rng: np.random.Generator, data: bytes) -> bytes:
    b = bytearray(data)
    segs = segments(data)
    for _ in range(int(rng.integers(1, 5))):
        if len(b) < 4:
            break
        segs = segments(bytes(b))
        r = rng.random()
        if r < 0.35 and segs:  # a byte of a header segment (SOF, DHT, DQT, SOS, APPn ...)
            _, pos, n = segs[int(rng.integers(len(segs)))]
            k = pos + 2 + int(rng.integers(max(n, 1)))
            if k < len(b):
                b[k] = int(rng.choice([0, 1, 0xFF, 0x7F, 0x80, b[k] ^ (1 << int(rng.integers(8)))]))
        elif r < 0.55:  # entropy-coded data (or anywhere)
            k = int(rng.integers(len(b)))
            b[k] = int(rng.integers(256))
        elif r < 0.65:  # a big size in the frame header
            sof = [s for s in segs if s[0] in (0xC0, 0xC1, 0xC2, 0xC9, 0xCA)]
            if sof:
                pos = sof[0][1]
                field = pos + 5 + 2 * int(rng.integers(2))
                v = int(rng.choice([0, 1, 2, 8, 9, 4097, 65500, 65535]))
                b[field : field + 2] = v.to_bytes(2, "big")
        elif r < 0.75:  # cut
            del b[int(rng.integers(2, len(b))) :]
        elif r < 0.85:  # insert bytes (markers among them)
            k = int(rng.integers(2, len(b)))
            ins = rng.integers(0, 256, int(rng.integers(1, 12)), dtype=np.uint8)
            if rng.random() < 0.5:
                ins[0] = 0xFF
            b[k:k] = ins.tobytes()
        elif r < 0.93 and len(segs) > 2:  # repeat or drop a whole segment
            m, pos, n = segs[int(rng.integers(1, len(segs)))]
            seg = bytes(b[pos : pos + 2 + n])
            if rng.random() < 0.5:
                b[pos:pos] = seg
            else:
                del b[pos : pos + 2 + n]
        else:  # a segment length
            if segs:
                _, pos, n = segs[int(rng.integers(len(segs)))]
                v = int(rng.choice([0, 1, 2, 3, n - 1, n + 1, 0xFFFF]))
                b[pos + 2 : pos + 4] = (v & 0xFFFF).to_bytes(2, "big")
    return bytes(b)


class ImageFuzz:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.seeds = list(seeds().items())
        self.calls = self.decoded = self.failed = 0
        self.codes: dict[str, int] = {}

    def plan(self) -> tuple[jpeg.DecodePlan, dict]:
        rng = self.rng
        kw = dict(
            apply_orientation=bool(rng.random() < 0.3),
            clip_to_box=bool(rng.random() < 0.7),
            antialias=bool(rng.random() < 0.8),
            dct_scaling=str(rng.choice(["off", "pow2", "any"])),
            dct_method=str(rng.choice(["islow", "ifast", "float"])),
            fancy_upsampling=bool(rng.random() < 0.8),
            strict=bool(rng.random() < 0.5),
            max_pixels=int(rng.choice([0, 1 << 20, 1 << 26])),
            convert=False,
            dst_dtype=_collate.DT_RAW,
            dst_channels_last=True,
            dst_itemsize=1,
            nthreads=int(rng.integers(1, 3)),
        )
        return jpeg.DecodePlan(**kw), kw

    def one(self) -> None:
        rng = self.rng
        n = int(rng.integers(1, 4))
        blobs = []
        for _ in range(n):
            _, data = self.seeds[int(rng.integers(len(self.seeds)))]
            blobs.append(mutate(rng, data) if rng.random() < 0.9 else data)
        lens = np.array([len(b) for b in blobs], dtype=np.int64)
        offs = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
        slab = np.frombuffer(b"".join(blobs) or b"\0", dtype=np.uint8)
        p, kw = self.plan()
        strict = kw["strict"]
        info, codes, msgs = jpeg.probe(slab, offs, lens, strict, kw["max_pixels"])
        self.calls += 1
        for i in range(n):
            self._check(int(codes[i]), msgs.get(i, ""))
        good = [i for i in range(n) if codes[i] == 0 and info[i, 0] == jpeg.IMG_JPEG]
        if not good:
            return
        info = np.ascontiguousarray(info[good])
        boxes, sizes = [], []
        for row in info:
            w, h = int(row[1]), int(row[2])
            if kw["apply_orientation"] and row[4] >= 5:
                w, h = h, w
            x0 = float(rng.uniform(0, w - 0.5)) if rng.random() < 0.5 else 0.0
            y0 = float(rng.uniform(0, h - 0.5)) if rng.random() < 0.5 else 0.0
            x1 = float(rng.uniform(x0 + 0.25, w)) if rng.random() < 0.5 else float(w)
            y1 = float(rng.uniform(y0 + 0.25, h)) if rng.random() < 0.5 else float(h)
            boxes.append((x0, y0, x1, y1))
            sizes.append((int(rng.integers(1, 40)), int(rng.integers(1, 40))))
        boxes_a = np.ascontiguousarray(boxes, dtype=np.float64)
        sizes_a = np.ascontiguousarray(sizes, dtype=np.int32)
        nbytes = sizes_a[:, 0].astype(np.int64) * sizes_a[:, 1] * 3
        dst = np.concatenate(([0], np.cumsum(nbytes)[:-1])).astype(np.int64)
        out = np.zeros(int(nbytes.sum()), dtype=np.uint8)
        flips = rng.integers(0, 2, len(good)).astype(np.uint8)
        dcodes, dmsgs, _ = p.run(
            slab,
            offs[good],
            lens[good],
            [None] * len(good),
            info,
            boxes_a,
            flips,
            sizes_a,
            dst,
            out,
        )
        for k in range(len(good)):
            self._check(int(dcodes[k]), dmsgs.get(k, ""), huge_ok=kw["max_pixels"] == 0)
            self.decoded += int(dcodes[k]) == 0

    def _check(self, code: int, msg: str, huge_ok: bool = False) -> None:
        name = Status(code).name
        self.codes[name] = self.codes.get(name, 0) + 1
        if code == Status.NOMEM and huge_ok:
            return
        if code not in OK_CODES:
            raise AssertionError(f"status {name}: {msg}")
        if code != Status.OK:
            self.failed += 1
            if not msg:
                raise AssertionError(f"status {name} without a message")

    def pristine(self) -> None:
        """Every seed, unmutated and uncropped, decodes like Pillow (bit for bit)."""
        for name, data in self.seeds:
            lens = np.array([len(data)], dtype=np.int64)
            slab = np.frombuffer(data, dtype=np.uint8)
            info, codes, msgs = jpeg.probe(slab, np.zeros(1, np.int64), lens, True, 0)
            assert codes[0] == 0, (name, msgs)
            w, h = int(info[0, 1]), int(info[0, 2])
            p = raw_plan()
            out = np.zeros(w * h * 3, np.uint8)
            dcodes, dmsgs, _ = p.run(
                slab,
                np.zeros(1, np.int64),
                lens,
                [None],
                info,
                np.array([[0, 0, w, h]], np.float64),
                np.zeros(1, np.uint8),
                np.array([[h, w]], np.int32),
                np.zeros(1, np.int64),
                out,
            )
            assert dcodes[0] == 0, (name, dmsgs)
            ref = img.pil_rgb(data)
            if not np.array_equal(out.reshape(h, w, 3), ref):
                raise AssertionError(f"seed {name} decodes unlike Pillow")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory-gb", type=float, default=8.0, help="address-space limit")
    args = ap.parse_args()
    limit = int(args.memory_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    libjpeg.load()
    rng = np.random.default_rng(args.seed)
    fuzz = ImageFuzz(rng)
    fuzz.pristine()
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        fuzz.one()
    print(
        f"images: {fuzz.calls} batches, {fuzz.decoded} decoded, {fuzz.failed} refused; "
        f"statuses {fuzz.codes}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
