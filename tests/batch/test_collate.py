"""The collate kernel (fastload.batch.collate) against the numpy reference
(tests/support/collate_reference.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastload
from fastload._native import collate as native_collate
from fastload.batch.collate import collate_slab
from fastload.batch.layout import choose_layout
from tests.support.collate_reference import (
    bf16_bits,
    bf16_to_float,
    make_samples,
    reference_collate,
    reference_ragged,
)

I64_MAX = np.iinfo(np.int64).max


ISAS = ["auto", "generic"] if native_collate.best_isa() == "avx2" else ["auto"]


CONVERSIONS = {
    np.dtype(np.uint8): [np.uint8, np.uint16, np.float32, np.float16, "bfloat16"],
    np.dtype(np.uint16): [np.uint16, np.float32, np.float16, "bfloat16"],
    np.dtype(np.float32): [np.float32, np.float16, "bfloat16"],
}


FAST = settings(
    max_examples=int(os.environ.get("COLLATE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def as_float(arr, out_dtype):
    if isinstance(out_dtype, str):
        return bf16_to_float(arr).astype(np.float64)
    return arr.astype(np.float64)


def out_ulp(exact, out_dtype):
    mag = np.abs(exact)
    if isinstance(out_dtype, str):  # bfloat16: 8 significant bits
        return np.spacing(mag.astype(np.float32)).astype(np.float64) * 65536
    return np.spacing(mag.astype(out_dtype)).astype(np.float64)


def assert_batch(
    actual, samples, *, stored, kernel_layout, out_dtype, mean=None, std=None, scale=None
):
    expected, exact, bound = reference_collate(
        samples,
        stored=stored,
        kernel_layout=kernel_layout,
        out_dtype=out_dtype,
        mean=mean,
        std=std,
        scale=scale,
    )
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    if exact is None or (mean is None and std is None and scale is None):
        # copies, integer outputs and plain conversions are exact
        np.testing.assert_array_equal(actual, expected)
        return
    if out_dtype is None:
        out_dtype = expected.dtype.type
    assert np.all(np.isfinite(exact)), "test data must keep the results finite"
    got = as_float(actual, out_dtype)
    slack = bound
    if isinstance(out_dtype, str) or np.dtype(out_dtype) != np.float32:
        slack = bound + out_ulp(exact, out_dtype)  # one more rounding, to the output type
    err = np.abs(got - exact)
    worst = np.unravel_index(np.argmax(err - slack), err.shape) if err.size else None
    assert np.all(err <= slack), f"at {worst}: got {got[worst]}, exact {exact[worst]}"


# ---- property tests: kernel == reference -----------------------------------------------


@st.composite
def image_cases(draw):
    src = np.dtype(draw(st.sampled_from([np.uint8, np.uint16, np.float32])))
    out_dtype = draw(st.sampled_from(CONVERSIONS[src]))
    float_out = isinstance(out_dtype, str) or np.dtype(out_dtype).kind == "f"
    channels = draw(st.sampled_from([1, 2, 3, 4, 5, 7, 16, 300]))
    max_px = 40 if channels < 100 else 6
    return dict(
        src=src,
        out_dtype=out_dtype,
        channels=channels,
        n=draw(st.integers(1, 5)),
        h=draw(st.integers(1, max_px)),
        w=draw(st.integers(1, max_px)),
        stored=draw(st.sampled_from(["HWC", "CHW"])),
        memory_format=draw(st.sampled_from(["auto", "channels_first", "channels_last", None])),
        consumer=draw(st.sampled_from(["numpy", "torch", "tensorflow", "jax"])),
        normalise=float_out and draw(st.booleans()),
        threads=draw(st.sampled_from([0, 1, 2, 3])),
        unit=draw(st.sampled_from([0, 1, 7, 64, 1000, 4096, 1 << 20])),
        isa=draw(st.sampled_from(ISAS)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


def image_args(case, rng):
    c = case["channels"]
    shape = (case["h"], case["w"], c) if case["stored"] == "HWC" else (c, case["h"], case["w"])
    samples = make_samples(rng, case["n"], shape, case["src"])
    norm = {}
    if case["normalise"]:
        half = case["out_dtype"] is np.float16
        # float16 results must stay finite (|x| < 65504) for the tolerance to mean anything
        norm = dict(
            mean=rng.uniform(-50, 200, c).tolist(),
            std=rng.uniform(1.0 if half else 0.1, 80, c).tolist(),
        )
        if rng.random() < 0.5:
            norm["scale"] = float(rng.uniform(0.001, 1 if half else 3))
        if half and case["src"] == np.uint16:
            norm["scale"] = 1e-3
    plan = choose_layout(case["memory_format"], case["stored"], case["consumer"])
    kw = dict(
        layout=case["stored"],
        memory_format=case["memory_format"],
        consumer=case["consumer"],
        dtype=case["out_dtype"],
        num_threads=case["threads"],
        collate_buffer_size=case["unit"],
        isa=case["isa"],
        **norm,
    )
    return samples, plan, kw, norm


@FAST
@given(image_cases())
def test_collate_images_match_reference(case):
    rng = np.random.default_rng(case["seed"])
    samples, plan, kw, norm = image_args(case, rng)
    stats = {}
    got = fastload.collate(samples, stats=stats, **kw)
    assert_batch(
        got,
        samples,
        stored=case["stored"],
        kernel_layout=plan.kernel_layout,
        out_dtype=case["out_dtype"],
        **norm,
    )
    assert stats["kernel_layout"] == plan.kernel_layout
    assert stats["transposed"] == (plan.transpose and case["channels"] > 1)


@FAST
@given(image_cases(), st.integers(0, 7))
def test_collate_slab_at_unaligned_offsets_matches_reference(case, misalign):
    rng = np.random.default_rng(case["seed"])
    samples, plan, kw, norm = image_args(case, rng)
    # samples at odd byte offsets, in shuffled order, with gaps between them
    order = rng.permutation(len(samples))
    offsets = np.zeros(len(samples), dtype=np.int64)
    slab = bytearray(misalign)
    for i in order:
        slab += bytes(int(rng.integers(0, 5)))
        offsets[i] = len(slab)
        slab += samples[i].tobytes()
    got = collate_slab(bytes(slab), offsets, samples[0].shape, case["src"], **kw)
    assert_batch(
        got,
        samples,
        stored=case["stored"],
        kernel_layout=plan.kernel_layout,
        out_dtype=case["out_dtype"],
        **norm,
    )


@FAST
@given(
    dtype=st.sampled_from(["u1", "i2", "<f4", "i8", "c16", "V3", "?"]),
    channels=st.sampled_from([1, 3, 4, 6]),
    stored=st.sampled_from(["HWC", "CHW"]),
    memory_format=st.sampled_from(["channels_first", "channels_last"]),
    hw=st.tuples(st.integers(1, 30), st.integers(1, 30)),
    threads=st.sampled_from([1, 2]),
    unit=st.sampled_from([0, 5, 333]),
    seed=st.integers(0, 2**32 - 1),
)
def test_same_dtype_copies_any_element_size(
    dtype, channels, stored, memory_format, hw, threads, unit, seed
):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    shape = (*hw, channels) if stored == "HWC" else (channels, *hw)
    samples = [
        rng.integers(0, 256, (*shape, dt.itemsize), dtype=np.uint8).view(dt).reshape(shape)
        for _ in range(3)
    ]
    got = fastload.collate(
        samples,
        layout=stored,
        memory_format=memory_format,
        num_threads=threads,
        collate_buffer_size=unit,
    )
    want = choose_layout(memory_format, stored).kernel_layout
    expected, _, _ = reference_collate(samples, stored=stored, kernel_layout=want)
    assert got.dtype == dt
    assert got.tobytes() == expected.tobytes()


@FAST
@given(
    shape=st.sampled_from([(), (1,), (17,), (5, 9), (2, 3, 4, 5), (3, 1, 2, 1, 2)]),
    src=st.sampled_from([np.uint8, np.uint16, np.float32]),
    normalise=st.booleans(),
    unit=st.sampled_from([0, 1, 9]),
    seed=st.integers(0, 2**32 - 1),
)
def test_other_ranks_are_stacked_without_layout_change(shape, src, normalise, unit, seed):
    rng = np.random.default_rng(seed)
    samples = make_samples(rng, 4, shape, src)
    norm = dict(mean=3.0, std=[2.5]) if normalise else {}
    got = fastload.collate(
        samples, memory_format="channels_first", consumer="torch", collate_buffer_size=unit, **norm
    )
    assert_batch(got, samples, stored="HWC", kernel_layout=None, out_dtype=None, **norm)


def test_f32_to_half_and_bfloat16_round_like_numpy_and_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 50, 3)) * 2.0 ** rng.integers(-30, 20, (64, 50, 3))
    x = x.astype(np.float32)
    x.flat[:10] = [65504, 65519, 65520, 1e9, -np.inf, np.inf, 0.0, 2**-24, 2**-25, 6e-8]
    for isa in ISAS:
        half = fastload.collate([x, x[::-1].copy()], dtype=np.float16, isa=isa)
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(half, np.stack([x, x[::-1]]).astype(np.float16))
        bits = fastload.collate([x], dtype="bfloat16", isa=isa)
        want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        np.testing.assert_array_equal(bits[0], want)
        np.testing.assert_array_equal(bits[0], bf16_bits(x))


def test_float16_conversion_is_bit_exact_over_the_float32_range():
    # every sign/exponent/top-mantissa pattern, with low bits below, at and above the tie
    top = np.arange(1 << 20, dtype=np.uint32) << 12
    x = np.concatenate([top | low for low in (0, 0x7FF, 0x800, 0x801, 0xFFF)]).view(np.float32)
    x = x[~np.isnan(x)]
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    for isa in ISAS:
        got = fastload.collate([x], dtype=np.float16, isa=isa)[0].view(np.uint16)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(
            fastload.collate([x], dtype="bfloat16", isa=isa)[0], bf16_bits(x)
        )


def test_nan_stays_nan():
    x = np.array([[[np.nan, 1.0, -np.nan]]], dtype=np.float32)
    for dtype in (np.float16, np.float32):
        assert np.isnan(fastload.collate([x], dtype=dtype, mean=1.0)[0, 0, 0, [0, 2]]).all()
    assert (fastload.collate([x], dtype="bfloat16")[0, 0, 0, [0, 2]] == 0x7FC0).all()


@pytest.mark.parametrize(
    "shape,stored",
    [((2, 3, 5000), "HWC"), ((5000, 2, 3), "CHW"), ((90, 70, 1), "HWC"), ((1, 90, 70), "CHW")],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.uint8])
def test_extreme_channel_counts(shape, stored, dtype):
    # C = 5000: blocks of the 16-pixel minimum; C = 1: 6300 pixels span two blocks
    samples = make_samples(np.random.default_rng(9), 3, shape, np.uint8)
    norm = dict(mean=7.0, std=3.0) if dtype != np.uint8 else {}
    for fmt in ("channels_first", "channels_last"):
        plan = choose_layout(fmt, stored)
        got = fastload.collate(
            samples,
            layout=stored,
            memory_format=fmt,
            dtype=dtype,
            num_threads=2,
            collate_buffer_size=5000,
            **norm,
        )
        assert_batch(
            got, samples, stored=stored, kernel_layout=plan.kernel_layout, out_dtype=dtype, **norm
        )


def test_empty_batches_and_empty_dimensions():
    out = collate_slab(
        b"",
        np.zeros(0, np.int64),
        (4, 4, 3),
        np.uint8,
        memory_format="channels_first",
        dtype=np.float32,
        mean=1.0,
    )
    assert out.shape == (0, 3, 4, 4) and out.dtype == np.float32
    out = fastload.collate([np.zeros((0, 5, 3), np.uint8)] * 2, memory_format="channels_first")
    assert out.shape == (2, 3, 0, 5)


# ---- ragged -----------------------------------------------------------------------------


@FAST
@given(
    lengths=st.lists(st.integers(0, 3000), min_size=0, max_size=30),
    threads=st.sampled_from([0, 1, 2, 4]),
    unit=st.sampled_from([0, 1, 13, 4096]),
    seed=st.integers(0, 2**32 - 1),
)
def test_collate_ragged_matches_reference(lengths, threads, unit, seed):
    rng = np.random.default_rng(seed)
    samples = []
    for i, n in enumerate(lengths):
        raw = rng.integers(0, 256, n, dtype=np.uint8)
        kind = i % 4
        samples.append(
            [raw.tobytes(), bytearray(raw.tobytes()), memoryview(raw.tobytes()), raw][kind]
        )
    packed, offsets = fastload.collate_ragged(
        samples, num_threads=threads, collate_buffer_size=unit
    )
    want_packed, want_offsets = reference_ragged(samples)
    assert packed.dtype == np.uint8 and offsets.dtype == np.int64
    np.testing.assert_array_equal(offsets, want_offsets)
    assert packed.tobytes() == want_packed.tobytes()


def test_collate_ragged_takes_arrays_in_c_order():
    arr = np.arange(24, dtype=np.int16).reshape(4, 6)
    packed, offsets = fastload.collate_ragged([arr.T, arr[:, ::2], b"xy"])
    want, want_offsets = reference_ragged([arr.T, arr[:, ::2], b"xy"])
    assert packed.tobytes() == want.tobytes()
    assert offsets.tolist() == want_offsets.tolist() == [0, 48, 72, 74]


@pytest.mark.parametrize("unit", [1 << 40, I64_MAX])
def test_ragged_unit_larger_than_the_batch(unit):
    """The ragged unit count overflowed the same way: an uninitialised array came back."""
    samples = [bytes([i]) * (17 * i + 1) for i in range(9)]
    packed, offsets = fastload.collate_ragged(samples, num_threads=2, collate_buffer_size=unit)
    assert packed.tobytes() == b"".join(samples)
    assert offsets.tolist() == [0, *np.cumsum([len(s) for s in samples]).tolist()]


def test_ragged_rejects_object_arrays():
    """numpy exports object arrays as PyObject pointers: they were packed as 'bytes'."""
    with pytest.raises(TypeError, match="sample 1 has dtype object: it holds Python objects"):
        fastload.collate_ragged([b"ab", np.array([object(), "x"], dtype=object)])


# ---- knobs: each one changes what the kernel does -----------------------------------------


def test_collate_buffer_size_sets_the_work_units():
    samples = make_samples(np.random.default_rng(3), 4, (32, 32, 3), np.uint8)
    results = {}
    for unit in (1 << 20, 12288, 4096, 1):
        stats = {}
        results[unit] = fastload.collate(
            samples,
            memory_format="channels_first",
            dtype=np.float32,
            collate_buffer_size=unit,
            stats=stats,
        )
        results[unit] = (results[unit], stats)
    # a sample is 32*32*3 floats = 12288 bytes
    assert results[1 << 20][1]["work_units"] == 1  # all 4 samples in one unit
    assert results[12288][1]["work_units"] == 4  # one sample per unit
    assert results[4096][1]["work_units"] == 4 * 4  # 336-pixel pieces of 1024 pixels
    assert results[4096][1]["unit_bytes"] == 336 * 12
    assert results[1][1]["work_units"] == 4 * 1024  # one pixel per unit
    for arr, _ in results.values():
        np.testing.assert_array_equal(arr, results[1 << 20][0])


def test_collate_unit_larger_than_any_batch_is_one_unit():
    """collate_buffer_size near 2**63 overflowed the unit count: nothing was written."""
    rng = np.random.default_rng(3)
    samples = [rng.integers(0, 256, (5, 7, 3), dtype=np.uint8) for _ in range(4)]
    for isa in ("auto", "generic"):
        stats: dict = {}
        got = fastload.collate(
            samples,
            memory_format="channels_first",
            dtype=np.float32,
            collate_buffer_size=I64_MAX,
            num_threads=3,
            stats=stats,
            isa=isa,
        )
        want = np.stack(samples).transpose(0, 3, 1, 2).astype(np.float32)
        np.testing.assert_array_equal(got, want)
        assert stats["work_units"] == 1 and stats["unit_bytes"] == want.nbytes


def test_num_threads_sets_the_threads_that_run():
    samples = make_samples(np.random.default_rng(4), 8, (16, 16, 3), np.uint8)
    for threads in (1, 2, 3):
        stats = {}
        fastload.collate(
            samples, dtype=np.float32, num_threads=threads, collate_buffer_size=1024, stats=stats
        )
        assert stats["threads"] == threads
    stats = {}
    fastload.collate(
        samples, dtype=np.float32, num_threads=3, collate_buffer_size=1 << 20, stats=stats
    )
    assert stats["threads"] == 1  # one work unit: one thread
    stats = {}
    fastload.collate(samples, dtype=np.float32, stats=stats)
    assert stats["threads"] == 1  # 24 KiB batch: automatic keeps it on one thread
    big = make_samples(np.random.default_rng(4), 8, (128, 128, 3), np.uint8)
    fastload.collate(big, dtype=np.float32, stats=stats)
    assert stats["threads"] == min(native_collate.cpu_count(), 8 * 128 * 128 * 12 // (256 << 10))


def test_isa_generic_is_used_when_forced():
    samples = make_samples(np.random.default_rng(6), 2, (8, 8, 3), np.uint8)
    stats = {}
    a = fastload.collate(samples, dtype=np.float16, mean=5, isa="generic", stats=stats)
    assert stats["isa"] == "generic"
    b = fastload.collate(samples, dtype=np.float16, mean=5, stats=stats)
    assert stats["isa"] == native_collate.best_isa()
    np.testing.assert_array_equal(a, b)


def test_out_is_filled_and_returned():
    samples = make_samples(np.random.default_rng(7), 3, (5, 6, 3), np.uint8)
    out = np.full((3, 3, 5, 6), -1.0, np.float32)
    got = fastload.collate(samples, memory_format="channels_first", dtype=np.float32, out=out)
    assert got is out
    np.testing.assert_array_equal(out, np.stack(samples).transpose(0, 3, 1, 2))


def test_slab_from_an_aligned_buffer():
    samples = make_samples(np.random.default_rng(8), 5, (7, 9, 4), np.uint16)
    buf = fastload.AlignedBuffer(4096)
    raw = np.frombuffer(buf, dtype=np.uint8)
    offsets = np.arange(5, dtype=np.int64) * 600 + 3
    for i, s in enumerate(samples):
        raw[offsets[i] : offsets[i] + s.nbytes] = s.reshape(-1).view(np.uint8)
    got = collate_slab(
        buf,
        offsets,
        (7, 9, 4),
        np.uint16,
        memory_format="channels_first",
        dtype=np.float32,
        mean=100,
        std=[1, 2, 3, 4],
    )
    assert_batch(
        got,
        samples,
        stored="HWC",
        kernel_layout="NCHW",
        out_dtype=np.float32,
        mean=100,
        std=[1, 2, 3, 4],
    )


# ---- bad input: a clear error before any native work ------------------------------------


U8 = [np.zeros((4, 4, 3), np.uint8) for _ in range(3)]


BAD_COLLATE = [
    (
        dict(samples=[U8[0], U8[1], np.zeros((4, 4, 4), np.uint8)]),
        ValueError,
        r"sample 2 has shape \(4, 4, 4\), sample 0 has \(4, 4, 3\)",
    ),
    (
        dict(samples=[U8[0], U8[1].astype(np.uint16)]),
        TypeError,
        "sample 1 has dtype uint16, sample 0 has uint8",
    ),
    (dict(mean=[1, 2]), ValueError, "mean has 2 values but the samples have 3 channel"),
    (dict(std=[1, 2, 3, 4]), ValueError, "std has 4 values"),
    (dict(mean=[[1, 2, 3]]), ValueError, "mean has 3 values"),
    (dict(std=[1, 0, 2]), ValueError, r"std\[1\] is 0"),
    (dict(mean=float("nan")), ValueError, "mean=nan must be finite"),
    (dict(std="abc"), TypeError, "std must be a number"),
    (dict(dtype=np.int32), TypeError, "cannot collate uint8 samples into int32"),
    (dict(dtype=np.uint8, mean=1), TypeError, "need a float output dtype"),
    (dict(dtype=np.uint16, std=2), TypeError, "need a float output dtype"),
    (
        dict(samples=[u.astype(np.float32) for u in U8], dtype=np.uint8),
        TypeError,
        "cannot collate float32 samples into uint8",
    ),
    (
        dict(samples=[u.astype(np.uint16) for u in U8], dtype=np.uint8),
        TypeError,
        "cannot collate uint16 samples into uint8",
    ),
    (
        dict(samples=[u.astype(np.float16) for u in U8], dtype=np.float32),
        TypeError,
        "cannot collate float16 samples into float32",
    ),
    (dict(samples=[np.zeros(3, object)]), TypeError, "Python objects"),
    (dict(dtype="nonsense"), TypeError, "is not a dtype"),
    (dict(memory_format="NCHW"), ValueError, "memory_format='NCHW' is invalid: must be one of"),
    (dict(layout="WHC"), ValueError, "layout='WHC' is invalid: must be one of"),
    (dict(consumer="mxnet"), ValueError, "consumer='mxnet' is invalid: must be one of"),
    (dict(num_threads=-1), ValueError, "num_threads=-1 is invalid: must be >= 0"),
    (dict(num_threads=1.5), TypeError, "num_threads=1.5 is invalid: must be an integer"),
    (dict(collate_buffer_size=-5), ValueError, "collate_buffer_size=-5 is invalid: must be >= 0"),
    (dict(isa="neon"), ValueError, "isa='neon' is invalid: must be one of"),
    (dict(samples=[]), ValueError, "at least one sample"),
    (dict(samples=b"abc"), TypeError, "sequence of arrays"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_COLLATE)
def test_bad_input_raises_before_native_work(kwargs, exc, match):
    kwargs = dict(kwargs)
    samples = kwargs.pop("samples", U8)
    with pytest.raises(exc, match=match):
        fastload.collate(samples, **kwargs)


BAD_OUT = [
    (np.zeros((3, 4, 4, 4), np.float32), ValueError, r"out has shape \(3, 4, 4, 4\), the batch is"),
    (np.zeros((3, 3, 4, 4), np.float64), TypeError, "out has dtype float64, the batch is float32"),
    (np.zeros((3, 3, 4, 8), np.float32)[..., ::2], ValueError, "C-contiguous"),
    (bytearray(3 * 48 * 4), TypeError, "out must be a numpy array"),
]


@pytest.mark.parametrize("out,exc,match", BAD_OUT)
def test_bad_out(out, exc, match):
    with pytest.raises(exc, match=match):
        fastload.collate(U8, memory_format="channels_first", dtype=np.float32, out=out)


def test_bad_input_leaves_out_untouched():
    out = np.full((3, 3, 4, 4), 7.0, np.float32)
    for bad in (dict(std=[1, 0, 1]), dict(mean=[1, 2])):
        with pytest.raises(ValueError):
            fastload.collate(U8, memory_format="channels_first", out=out, **bad)
    with pytest.raises(ValueError, match="sample 2"):
        fastload.collate([*U8[:2], np.zeros((4, 5, 3), np.uint8)], dtype=np.float32, out=out)
    assert (out == 7.0).all()


def test_read_only_and_overlapping_out():
    out = np.zeros((3, 4, 4, 3), np.uint8)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        fastload.collate(U8, out=out)
    batch = np.zeros((3, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="out overlaps sample 1"):
        fastload.collate([np.zeros((4, 4, 3), np.uint8), batch[1], batch[2]], out=batch)
    slab = np.zeros(3 * 48, np.uint8)
    with pytest.raises(ValueError, match="out overlaps src"):
        collate_slab(slab, [0, 48, 96], (4, 4, 3), np.uint8, out=slab.reshape(3, 4, 4, 3))


BAD_SLAB = [
    (
        dict(offsets=[0, 48, 97]),
        ValueError,
        r"sample 2 at byte offset 97 \(\+48 bytes\) lies outside src \(144 bytes\)",
    ),
    (dict(offsets=[0, -1, 48]), ValueError, "sample 1 at byte offset -1"),
    (dict(offsets=[[0, 48]]), TypeError, "offsets must be a 1-D array of integers"),
    (dict(offsets=[0.0, 48.0]), TypeError, "offsets must be a 1-D array of integers"),
    (dict(src=12345), TypeError, "src must support the buffer protocol"),
    (dict(src=np.zeros((144, 2), np.uint8)[:, 0]), ValueError, "src must be a C-contiguous"),
    (dict(src_dtype="nonsense"), TypeError, "src_dtype='nonsense' is not a dtype"),
    (dict(sample_shape=(4, -4, 3)), ValueError, "negative dimension"),
    (dict(sample_shape=None), TypeError, "sample_shape must be a sequence of ints"),
]


@pytest.mark.parametrize("kwargs,exc,match", BAD_SLAB)
def test_bad_slab(kwargs, exc, match):
    args = dict(src=bytes(144), offsets=[0, 48, 96], sample_shape=(4, 4, 3), src_dtype=np.uint8)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        collate_slab(
            args.pop("src"),
            args.pop("offsets"),
            args.pop("sample_shape"),
            args.pop("src_dtype"),
            **args,
        )


def test_bad_ragged():
    with pytest.raises(TypeError, match=r"sample 1 \(int\) is not a contiguous bytes-like"):
        fastload.collate_ragged([b"ab", 7])
    with pytest.raises(TypeError, match="sequence of bytes-like objects, not bytes"):
        fastload.collate_ragged(b"abc")
    with pytest.raises(ValueError, match="num_threads=-2"):
        fastload.collate_ragged([b"a"], num_threads=-2)


@pytest.mark.parametrize("knob,value", [("num_threads", 2**31), ("collate_buffer_size", 2**63)])
def test_collate_counts_too_large_name_the_knob(knob, value):
    """They used to raise a bare OverflowError from the bridge."""
    with pytest.raises(ValueError, match=f"{knob}={value} is invalid: too large"):
        fastload.collate([np.zeros(3, np.uint8)], **{knob: value})
    with pytest.raises(ValueError, match=f"{knob}={value} is invalid: too large"):
        fastload.collate_ragged([b"abc"], **{knob: value})


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
@pytest.mark.parametrize("hw", [(256, 256), (250, 250)])  # planes of whole lines, and not
def test_large_batch_streaming_stores_match_small_batches(isa, dtype, fmt, hw):
    # Over 64 MiB of output takes the streaming-store path; one sample at a time does
    # not. Both must give the same bits, into an `out` that starts 4 bytes past a
    # 32-byte boundary (unaligned heads and tails) and from a ragged plane size.
    size = np.dtype(dtype).itemsize
    n = 96 * 4 // size
    samples = make_samples(np.random.default_rng(9), n, (*hw, 3), np.uint8)
    norm = dict(mean=[120.0, 110.0, 100.0], std=[60.0, 55.0, 50.0])
    kw = dict(memory_format=fmt, dtype=dtype, isa=isa, num_threads=2, **norm)
    plan = choose_layout(fmt, "HWC")
    count = n * 3 * hw[0] * hw[1]
    raw = np.empty(count + 32, dtype)
    skip = ((-raw.ctypes.data % 32) + 4) // size
    shape = (n, 3, *hw) if fmt == "channels_first" else (n, *hw, 3)
    out = raw[skip : skip + count].reshape(shape)
    assert out.nbytes > 64 << 20 and out.ctypes.data % 32 == 4
    fastload.collate(samples, out=out, **kw)
    for i, x in enumerate(samples):
        np.testing.assert_array_equal(out[i], fastload.collate([x], **kw)[0])
    assert_batch(
        out[:2],
        samples[:2],
        stored="HWC",
        kernel_layout=plan.kernel_layout,
        out_dtype=dtype,
        **norm,
    )
