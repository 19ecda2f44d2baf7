"""Random-input fuzzing of the native layers (file range engine, collate kernel).

Every call must either be byte-exact against a plain Python / numpy reference
or raise a Python exception (ValueError, TypeError, OSError, MemoryError,
OverflowError) -- never crash, hang or return wrong bytes. Run it under a
sanitizer build (README-review: ASan + UBSan) for the most value::

    python tests/fuzz/fuzz_native.py --seconds 60 --seed 1

Not collected by pytest (no test_ prefix); the regressions it found have
their own tests in tests/native/, tests/storage/ and tests/batch/test_collate.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, _ROOT)  # this tree's fastload (and tests.support), not an installed one

import fastload  # noqa: E402
from fastload._native.buffer import AlignedBuffer  # noqa: E402
from fastload.batch.collate import collate_slab  # noqa: E402
from fastload.batch.layout import choose_layout  # noqa: E402
from fastload.storage.engine import RangeEngine  # noqa: E402
from tests.support.collate_reference import reference_collate, reference_ragged  # noqa: E402

I64_MAX = np.iinfo(np.int64).max
EXPECTED_ERRORS = (ValueError, TypeError, OSError, MemoryError, OverflowError)


def _extreme(rng: np.random.Generator, typical: int) -> int:
    """Mostly a sane value, sometimes an edge: 0, negative, int64 extremes, huge."""
    r = rng.random()
    if r < 0.80:
        return int(rng.integers(0, max(typical, 1) + 1))
    return int(
        rng.choice(
            [
                0,
                -1,
                -4096,
                1,
                4095,
                4096,
                4097,
                I64_MAX,
                I64_MAX - 1,
                -I64_MAX - 1,
                1 << 32,
                1 << 62,
                typical + 1,
            ]
        )
    )


class FileFuzz:
    def __init__(self, root: str, rng: np.random.Generator) -> None:
        self.rng = rng
        self.paths = []
        self.data = []
        for i, size in enumerate([0, 1, 4095, 4096, 4097, 3 * 4096 + 17, 70001]):
            p = os.path.join(root, f"f{i}.bin")
            blob = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            with open(p, "wb") as f:
                f.write(blob)
            self.paths.append(p)
            self.data.append(blob)
        self.calls = self.errors = 0

    def one(self) -> None:
        rng = self.rng
        nsrc = int(rng.integers(1, len(self.paths) + 1))
        pick = rng.choice(len(self.paths), nsrc, replace=False)
        scheme = rng.choice(["", "file://", "direct://"])
        uris = [scheme + self.paths[k] for k in pick]
        nrows = int(rng.integers(0, 12))
        rows = []
        dst = 0
        for _ in range(nrows):
            s = int(rng.integers(0, nsrc))
            size = len(self.data[pick[s]])
            off = int(rng.integers(0, size + 1)) if size else 0
            ln = int(rng.integers(1, max(size - off, 1) + 1))
            d = dst + int(rng.integers(0, 9))  # unaligned destinations, gaps
            if rng.random() < 0.03:
                s = _extreme(rng, nsrc)
            if rng.random() < 0.03:
                off = _extreme(rng, size)
            if rng.random() < 0.03:
                ln = _extreme(rng, size)
            if rng.random() < 0.03:
                d = _extreme(rng, dst)
            rows.append((s, off, ln, d))
            if 0 <= ln < 1 << 40 and 0 <= d < 1 << 40:
                dst = max(dst, d + ln)
        table = np.array(rows, dtype=np.int64).reshape(-1, 4)
        out_len = max(dst + int(rng.integers(-8, 9)), 0) if rng.random() < 0.2 else dst
        out_offset = int(rng.integers(0, 8))  # unaligned start of the destination
        base = bytearray(out_len + out_offset)
        out = memoryview(base)[out_offset:]
        part = int(rng.choice([4096, 4097, 8192, 65536, 1 << 20, 1 << 40]))
        engine = RangeEngine(
            part_size=part,
            max_inflight_parts=int(rng.integers(1, 6)),
            page_cache_mode=str(
                rng.choice(["auto", "sequential", "random", "dont_need", "normal"])
            ),
        )
        valid = all(
            0 <= s < nsrc
            and off >= 0
            and ln > 0
            and d >= 0
            and off + ln <= len(self.data[pick[s]])
            and d + ln <= out_len
            for s, off, ln, d in rows
        )
        overlapping = _dst_overlap(table) if valid else False
        self.calls += 1
        try:
            engine.read_into(uris, table, out)
        except EXPECTED_ERRORS as exc:
            self.errors += 1
            if valid:
                raise AssertionError(
                    f"valid table raised {exc!r}: {uris} {rows} out={out_len}"
                ) from exc
            _check_message(exc, rows, uris)
            if os.environ.get("FUZZ_SHOW_ERRORS"):
                print(type(exc).__name__, str(exc)[:160])
            return
        finally:
            engine.close()  # an engine keeps descriptors and threads until closed
        if not valid:
            raise AssertionError(f"invalid table did not raise: {uris} {rows} out={out_len}")
        if overlapping:
            return
        for s, off, ln, d in rows:
            want = self.data[pick[s]][off : off + ln]
            if bytes(out[d : d + ln]) != want:
                raise AssertionError(f"wrong bytes for row {(s, off, ln, d)} of {uris}")


def _dst_overlap(table: np.ndarray) -> bool:
    order = np.argsort(table[:, 3], kind="stable")
    t = table[order]
    return bool(np.any(t[1:, 3] < t[:-1, 3] + t[:-1, 2]))


def _check_message(exc: Exception, rows: list, uris: list) -> None:
    text = str(exc)
    if isinstance(exc, MemoryError):
        return
    if not (
        any(u in text for u in uris)
        or "source" in text
        or "range" in text
        or "buffer" in text
        or "part_size" in text
    ):
        raise AssertionError(f"unclear error {exc!r} for {uris} {rows}")


class CollateFuzz:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.calls = self.errors = 0

    def one(self) -> None:
        rng = self.rng
        src_dt = np.dtype(rng.choice(["uint8", "uint16", "float32", "int64", "float64"]))
        convs = {
            "uint8": [None, "uint8", "uint16", "float32", "float16", "bfloat16"],
            "uint16": [None, "float32", "float16", "bfloat16"],
            "float32": [None, "float32", "float16", "bfloat16"],
        }
        out_dt = rng.choice(convs.get(src_dt.name, [None]))
        rank = int(rng.choice([1, 2, 3, 3, 3]))
        c = int(rng.choice([1, 2, 3, 4, 5, 17, 300]))
        h, w = int(rng.integers(0, 9)), int(rng.integers(0, 40))
        shape = (h, w, c) if rank == 3 else tuple(int(x) for x in rng.integers(0, 30, rank))
        layout = str(rng.choice(["HWC", "CHW"]))
        if rank == 3 and layout == "CHW":
            shape = (c, h, w)
        n = int(rng.integers(0, 7))
        normalised = out_dt not in (None, "uint8", "uint16") and rng.random() < 0.6
        mean = rng.uniform(0, 100, c if rank == 3 else 1).tolist() if normalised else None
        std = rng.uniform(0.5, 50, c if rank == 3 else 1).tolist() if normalised else None
        itemsize = src_dt.itemsize
        nbytes = int(np.prod(shape)) * itemsize
        gaps = rng.integers(0, 5, n)  # unaligned, not overlapping
        offsets = [int(rng.integers(0, 64)) + i * nbytes + int(gaps[:i].sum()) for i in range(n)]
        slab_len = (max(offsets) + nbytes if n else 0) + int(rng.integers(0, 8))
        slab = np.frombuffer(rng.integers(0, 256, slab_len, dtype=np.uint8).tobytes(), np.uint8)
        if src_dt.kind == "f":  # finite values only: the reference needs them
            slab = slab.copy()
            for o in offsets:
                vals = rng.uniform(-300, 300, nbytes // itemsize).astype(src_dt)
                slab[o : o + nbytes] = vals.view(np.uint8)
        bad = rng.random() < 0.15
        if bad:
            k = int(rng.integers(0, 4))
            if k == 0 and n:
                offsets[int(rng.integers(0, n))] = _extreme(rng, slab_len)
            elif k == 1:
                slab = slab[: max(slab_len - int(rng.integers(1, 64)), 0)]
            elif k == 2 and normalised:
                std = [0.0] * len(std)
            elif k == 3:
                mean = [1.0] * (len(mean or []) + 2) if normalised else mean
        fmt = rng.choice(["auto", "channels_first", "channels_last", None])
        consumer = str(rng.choice(["numpy", "torch", "jax"]))
        threads = int(rng.choice([0, 1, 2, 3, 7]))
        unit = int(rng.choice([0, 1, 2, 3, 17, 64, 4096, 1 << 20, 1 << 40, I64_MAX]))
        isa = str(rng.choice(["auto", "generic"]))
        self.calls += 1
        try:
            got = collate_slab(
                slab,
                offsets,
                shape,
                src_dt,
                layout=layout,
                memory_format=fmt,
                dtype=out_dt,
                mean=mean,
                std=std,
                num_threads=threads,
                collate_buffer_size=unit,
                consumer=consumer,
                isa=isa,
            )
        except EXPECTED_ERRORS as exc:
            self.errors += 1
            if not bad:
                raise AssertionError(
                    f"valid collate raised {exc!r}: {shape} {src_dt}->{out_dt}"
                ) from exc
            return
        samples = [slab[o : o + nbytes].view(src_dt).reshape(shape) for o in offsets]
        if n == 0:
            assert got.shape[0] == 0
            return
        kernel = choose_layout(fmt, layout, consumer).kernel_layout if rank == 3 else None
        want, exact, bound = reference_collate(
            samples, stored=layout, kernel_layout=kernel, out_dtype=out_dt, mean=mean, std=std
        )
        if exact is None or not normalised:
            same = (
                np.array_equal(got, want, equal_nan=True)
                if got.dtype.kind == "f"
                else got.tobytes() == np.ascontiguousarray(want).tobytes()
            )
            if got.shape != want.shape or not same:
                raise AssertionError(
                    f"collate differs: {shape} {src_dt}->{out_dt} {fmt} "
                    f"{consumer} threads={threads} unit={unit}"
                )
        else:
            gotf = (got.astype(np.uint32) << 16).view(np.float32) if out_dt == "bfloat16" else got
            tol = (
                bound + np.abs(exact) * (2.0**-7 if out_dt in ("bfloat16", "float16") else 0) + 1e-3
            )
            wantf = (
                (want.astype(np.uint32) << 16).view(np.float32) if out_dt == "bfloat16" else want
            )
            with np.errstate(invalid="ignore"):  # inf - inf where both overflowed
                ok = (np.abs(gotf.astype(np.float64) - exact) <= tol) | (gotf == wantf)
            if not np.all(ok | (np.isnan(gotf) & np.isnan(wantf))):
                worst = np.argmax(np.abs(gotf.astype(np.float64) - exact) - tol)
                raise AssertionError(
                    f"collate out of tolerance: {shape} {src_dt}->{out_dt}: got "
                    f"{gotf.flat[worst]}, exact {exact.flat[worst]}"
                )

    def ragged(self) -> None:
        rng = self.rng
        samples = [
            rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
            for _ in range(int(rng.integers(0, 9)))
        ]
        unit = int(rng.choice([0, 1, 7, 4096, 1 << 40, I64_MAX]))
        packed, offsets = fastload.collate_ragged(
            samples, num_threads=int(rng.integers(0, 4)), collate_buffer_size=unit
        )
        want, want_off = reference_ragged(samples)
        if not (np.array_equal(packed, want) and np.array_equal(offsets, want_off)):
            raise AssertionError(f"ragged differs: unit={unit} lengths={[len(s) for s in samples]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    np.seterr(all="ignore")  # the reference meets garbage floats where offsets were fuzzed
    fds_before = len(os.listdir("/proc/self/fd"))
    with tempfile.TemporaryDirectory() as root:
        files = FileFuzz(root, rng)
        coll = CollateFuzz(rng)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            files.one()
            coll.one()
            coll.ragged()
        AlignedBuffer(1)  # keep the import honest: the buffer type still works
    fds_after = len(os.listdir("/proc/self/fd"))
    print(
        f"file engine: {files.calls} calls, {files.errors} raised; collate: {coll.calls} calls, "
        f"{coll.errors} raised; fds {fds_before} -> {fds_after}"
    )
    return 0 if fds_after <= fds_before else 1


if __name__ == "__main__":
    sys.exit(main())
