"""Every public knob attacked with bad values: each is refused when it is written, with a
ValueError / TypeError naming the knob and what was wrong (never a bare OverflowError, a
silent clamp, or a failure deep in an epoch), and options round-trip through their dict."""

import asyncio
import dataclasses

import numpy as np
import pytest

import fastload.compat.s3dlio as s3dlio
from fastload.batch.image_pipeline import (
    CenterCrop,
    ImagePipeline,
    RandomResizedCrop,
    Resize,
)
from fastload.checks import check_byte_size, check_choice, check_int, check_number
from fastload.loop.loader import DataLoader
from fastload.plan.datasets import RecordDataset
from fastload.plan.options import FIELD_NAMES, LoaderConfig, LoaderOptions

# A value of each kind that no integer knob may take, and what each must say.
NOT_INTS = ["8", 8.0, None, [8], (8,), float("nan"), float("inf"), b"8"]
HUGE = [2**63, 10**30, 10**400]
INT_KNOBS = [
    "batch_size",
    "num_workers",
    "prefetch",
    "collate_buffer_size",
    "block_size",
    "shard_world_size",
    "num_workers_pytorch",
]


@pytest.mark.parametrize("knob", INT_KNOBS)
@pytest.mark.parametrize("value", HUGE, ids=["2**63", "10**30", "10**400"])
def test_an_integer_knob_past_int64_is_refused_naming_it(knob, value):
    with pytest.raises(ValueError, match=rf"{knob}=.* is invalid: too large"):
        LoaderOptions(**{knob: value})


@pytest.mark.parametrize("knob", ["seed", "generator_seed"])
def test_a_seed_may_be_any_non_negative_int(knob):
    # seeds only reach SeedSequence: torch's uint64 initial_seed() and larger all work
    for seed in (2**64 - 1, 2**64, 10**30):
        opts = LoaderOptions(**{knob: seed})
        assert LoaderOptions.from_dict(opts.to_dict()).get(knob) == seed
    with pytest.raises(ValueError, match=rf"{knob}=True is invalid: must be an integer"):
        LoaderOptions(**{knob: True})
    assert ImagePipeline(seed=2**64).seed == 2**64


@pytest.mark.parametrize(("knob", "value"), [("num_workers", 10**6), ("prefetch", 10**6)])
def test_counts_of_processes_and_threads_have_a_sane_ceiling(knob, value):
    with pytest.raises(ValueError, match=rf"{knob}=1000000 is invalid: too large"):
        LoaderOptions(**{knob: value})


@pytest.mark.parametrize("knob", INT_KNOBS)
@pytest.mark.parametrize("value", [*NOT_INTS, True], ids=repr)
def test_an_integer_knob_refuses_every_other_type(knob, value):
    if value is None and knob in ("shard_world_size", "num_workers_pytorch"):
        return  # None: discovered at run time
    with pytest.raises((ValueError, TypeError), match=knob):
        LoaderOptions(**{knob: value})


@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["10**400", "-10**400"])
def test_a_seconds_knob_given_an_int_past_any_float_names_it(value):
    with pytest.raises(ValueError, match="timeout_seconds=.* is invalid"):
        LoaderOptions(timeout_seconds=value)


@pytest.mark.parametrize("text", ["inf", "-inf", "1e30", "1e400", "infKiB"])
@pytest.mark.parametrize("knob", ["shuffle_buffer", "cache_limit"])
def test_a_byte_size_string_past_int64_is_refused_naming_it(knob, text):
    with pytest.raises(ValueError, match=rf"{knob}='{text}' is invalid"):
        LoaderOptions(**{knob: text, "cache_dir": "/tmp"})


@pytest.mark.parametrize(
    "weights", [["1", "2"], [True, False], [10**400, 1]], ids=["strings", "bools", "10**400"]
)
def test_weights_must_be_numbers(weights):
    with pytest.raises(ValueError, match="weights=.* must be a sequence of numbers"):
        LoaderOptions(sampler_type="weighted_random", weights=weights)


@pytest.mark.parametrize(
    ("knob", "value", "suggestion"),
    [
        ("loading_mode", "async-pool", "async_pool"),
        ("reader_mode", "Range", "range"),
        ("sampler_type", "weighted-random", "weighted_random"),
        ("on_error", "skipp", "skip"),
        ("page_cache_mode", "dontneed", "dont_need"),
        ("memory_format", "channels-last", "channels_last"),
    ],
)
def test_a_near_miss_choice_lists_the_choices_and_names_the_closest(knob, value, suggestion):
    with pytest.raises(ValueError) as info:
        LoaderOptions(**{knob: value})
    text = str(info.value)
    assert text.startswith(f"{knob}={value!r} is invalid: must be one of ")
    assert f"did you mean {suggestion!r}?" in text


@pytest.mark.parametrize("value", [np.array(["raise", "skip"]), ["raise"], 1, True])
def test_a_choice_that_is_no_string_is_refused_plainly(value):
    with pytest.raises(ValueError, match="on_error=.* is invalid: must be one of 'raise', 'skip'"):
        LoaderOptions(on_error=value)


def test_check_choice_does_not_take_a_bool_for_a_number_or_the_reverse():
    with pytest.raises(ValueError, match="must be one of 8, 16"):
        check_choice("bits", True, (8, 16, 1))
    with pytest.raises(ValueError, match="must be one of True, False"):
        check_choice("flag", 1, (True, False))
    assert check_choice("bits", 16, (8, 16)) == 16


def test_checks_refuse_what_would_overflow_c():
    with pytest.raises(ValueError, match="n=9223372036854775808 is invalid: too large"):
        check_int("n", 2**63)
    with pytest.raises(ValueError, match="x=.* too large"):
        check_number("x", 10**400)
    with pytest.raises(ValueError, match="b='inf' is invalid"):
        check_byte_size("b", "inf")
    with pytest.raises(ValueError, match="at most 100 bytes"):
        check_byte_size("b", "1KiB", maximum=100)


def test_a_long_refused_value_is_shortened_in_the_message():
    with pytest.raises(ValueError) as info:
        LoaderOptions(batch_size=10**400)
    assert len(str(info.value)) < 200
    assert "401 characters" in str(info.value)


# ---- dict round trip ---------------------------------------------------------------------


def _non_default_config() -> LoaderConfig:
    return LoaderConfig(
        batch_size=7,
        drop_last=True,
        sampler_drop_last=False,
        shuffle="block",
        seed=2**64,
        num_workers=2,
        prefetch=3,
        auto_tune=True,
        loading_mode="async_pool",
        reader_mode="range",
        part_size=8192,
        max_inflight_parts=5,
        shard_rank=1,
        shard_world_size=3,
        worker_id=1,
        num_workers_pytorch=2,
        pin_memory=True,
        persistent_workers=True,
        timeout_seconds=2.5,
        multiprocessing_context="fork",
        sampler_type="random",
        replacement=False,
        weights=None,
        memory_format="channels_last",
        non_blocking=True,
        generator_seed=11,
        enable_transforms=True,
        collate_buffer_size=4096,
        page_cache_mode="dont_need",
        block_size=1 << 16,
        shuffle_buffer="8MiB",
        cache_dir="/tmp/cache",
        cache_limit="1GiB",
        on_error="skip",
    )


def test_from_dict_of_to_dict_round_trips_every_knob():
    cfg = _non_default_config()
    changed = [
        f.name
        for f in dataclasses.fields(cfg)
        if getattr(cfg, f.name) != getattr(LoaderConfig(), f.name)
    ]
    assert set(changed) | {"weights", "replacement"} == set(FIELD_NAMES)  # every knob moved
    opts = LoaderOptions.from_config(cfg)
    assert LoaderOptions.from_dict(opts.to_dict()) == opts
    weighted = LoaderOptions(sampler_type="weighted_random", weights=[1, 2, 3], replacement=True)
    assert LoaderOptions.from_dict(weighted.to_dict()) == weighted


@pytest.mark.parametrize("data", [None, [("batch_size", 3)], "batch_size", 3])
def test_from_dict_of_no_mapping_says_so(data):
    with pytest.raises(TypeError, match="from_dict needs a mapping of knob names"):
        LoaderOptions.from_dict(data)


def test_from_dict_with_a_key_that_is_no_string_names_it():
    with pytest.raises(TypeError, match="a knob name must be a str, not 1"):
        LoaderOptions.from_dict({1: 2})


def test_from_dict_with_an_unknown_key_names_it():
    with pytest.raises(ValueError, match="unknown knob 'batch_sise'; did you mean 'batch_size'"):
        LoaderOptions.from_dict({"batch_sise": 3})


# ---- the DataLoader's own keywords ---------------------------------------------------------


@pytest.fixture
def records3(tmp_path):
    path = tmp_path / "r.bin"
    np.arange(8 * 4 * 4 * 3, dtype=np.uint8).tofile(path)
    return RecordDataset(str(path), (4, 4, 3))


def test_cache_limit_without_cache_dir_is_refused_by_the_loader(records3):
    LoaderOptions().cache_limit("1GiB").cache_dir("/tmp")  # the setters' order is free
    with pytest.raises(ValueError, match="cache_limit=100 is invalid: needs cache_dir"):
        DataLoader(records3, batch_size=4, cache_limit=100)


@pytest.mark.parametrize(
    ("kw", "cls", "match"),
    [
        ({"scale": "2"}, TypeError, "scale must be a number"),
        ({"scale": True}, TypeError, "scale must be a number"),
        ({"mean": (True, 0, 0)}, TypeError, "mean must be a number"),
        ({"std": "0.5"}, TypeError, "std must be a number"),
        ({"mean": (10**400, 1, 1)}, TypeError, "mean must be a number"),
        ({"mean": (1e39, 0, 0)}, ValueError, "mean=.* must be finite"),
        ({"std": (-1, 1, 1)}, ValueError, r"std\[0\] is negative"),
        ({"std": (1e-44, 1, 1)}, ValueError, "overflow float32"),
        ({"scale": 0}, ValueError, r"scale\[0\] is 0"),
        ({"scale": (1, 0.0, 1)}, ValueError, r"scale\[1\] is 0"),
    ],
    ids=repr,
)
def test_bad_normalisation_is_refused_when_the_loader_is_made(records3, kw, cls, match):
    with pytest.raises(cls, match=match):
        DataLoader(records3, batch_size=4, dtype=np.float32, **kw)


@pytest.mark.parametrize(
    ("kw", "cls", "match"),
    [
        ({"engine": "s3://bucket"}, TypeError, "engine=str is invalid: must be a fastload"),
        ({"output": 3}, TypeError, "output=int is invalid"),
        ({"progress": "yes"}, ValueError, "progress='yes' is invalid: must be True or False"),
    ],
)
def test_the_loaders_object_keywords_are_checked_at_construction(records3, kw, cls, match):
    with pytest.raises(cls, match=match):
        DataLoader(records3, batch_size=4, **kw)


# ---- image pipeline ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [
        lambda: Resize(2**40),
        lambda: Resize((1, 2**31)),
        lambda: CenterCrop(2**31),
        lambda: RandomResizedCrop(2**33),
    ],
)
def test_a_side_past_the_kernels_int32_is_refused(step):
    with pytest.raises(ValueError, match=r"\.size=.* is invalid: too large \(at most 2147483647\)"):
        step()


@pytest.mark.parametrize(
    "step", [Resize((1, 2**30)), CenterCrop(20_000), RandomResizedCrop(20_000), Resize(20_000)]
)
def test_an_output_larger_than_max_pixels_is_refused_up_front(step):
    with pytest.raises(ValueError, match="steps=.* more than max_pixels=178956970"):
        ImagePipeline(step)
    assert ImagePipeline(step, max_pixels=0).max_pixels == 0  # no limit: the caller's call


def test_a_near_miss_dct_scaling_is_named():
    with pytest.raises(ValueError, match="dct_scaling='Pow2' is invalid: .*did you mean 'pow2'"):
        ImagePipeline(dct_scaling="Pow2")


# ---- fastload.compat.s3dlio ----------------------------------------------------------------


@pytest.fixture
def blob(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 4)
    return str(path)


@pytest.mark.parametrize(
    ("offset", "length", "cls", "match"),
    [
        ("5", 3, TypeError, "offset='5' is invalid"),
        (1.5, 3, TypeError, "offset=1.5 is invalid"),
        (True, 3, TypeError, "offset=True is invalid"),
        (0, 2.7, TypeError, "length=2.7 is invalid"),
        (-1, 3, ValueError, "offset=-1 is invalid: must be >= 0"),
        (0, -3, ValueError, "length=-3 is invalid: must be >= 0"),
    ],
)
def test_get_range_refuses_what_it_would_truncate(blob, offset, length, cls, match):
    with pytest.raises(cls, match=match):
        s3dlio.get_range(blob, offset, length)


@pytest.mark.parametrize("value", ["x", 1.5, True, 0])
def test_get_many_checks_max_in_flight(blob, value):
    with pytest.raises((ValueError, TypeError), match="max_in_flight="):
        s3dlio.get_many([blob], value)


def test_list_names_a_bad_pattern_and_recursive(blob):
    folder = blob.rsplit("/", 1)[0]
    with pytest.raises(ValueError, match="pattern='\\(' is invalid: is not a regular expression"):
        s3dlio.list(folder, pattern="(")
    with pytest.raises(ValueError, match="recursive='no' is invalid"):
        s3dlio.list(folder, recursive="no")


def test_configure_s3_refuses_a_bad_value_and_keeps_working(blob):
    with pytest.raises(ValueError, match="endpoint_url='ftp://x' is invalid"):
        s3dlio.configure_s3(endpoint_url="ftp://x")
    with pytest.raises(ValueError, match="endpoint_url=5 is invalid"):
        s3dlio.configure_s3(endpoint_url=5)
    assert len(s3dlio.get(blob)) == 1024  # the bad values were not kept


def test_pydataset_refuses_an_unknown_option_naming_the_closest(blob):
    with pytest.raises(ValueError, match="'batch_sise'; did you mean 'batch_size'"):
        s3dlio.PyDataset(blob, {"batch_sise": 3})
    with pytest.raises(ValueError, match="'batch_sise'"):
        s3dlio.PyDataset.from_uris([blob], {"batch_sise": 3})


@pytest.mark.parametrize("n", [0, -1, "2", 1.5])
def test_collect_batch_checks_n(blob, n):
    items = s3dlio.create_async_loader(blob, {"batch_size": 1}).items()
    with pytest.raises((ValueError, TypeError), match="n="):
        items.collect_batch(n)


@pytest.mark.parametrize("index", [True, "0", 0.0])
def test_get_item_refuses_what_is_no_index(blob, index):
    with pytest.raises(TypeError, match="index=.* must be an integer"):
        asyncio.run(s3dlio.PyDataset(blob).get_item(index))


# ---- a caller's sampler ----------------------------------------------------------------


@pytest.mark.parametrize("order", [[0, 1.5], [0, True], ["1"]], ids=repr)
def test_a_sampler_index_that_is_no_integer_is_refused_not_truncated(records3, order):
    with pytest.raises(TypeError, match="sampler gave .* at position .*: an index must be an"):
        list(DataLoader(records3, batch_size=2, sampler=order))


def test_a_sampler_index_past_int64_is_out_of_range(records3):
    with pytest.raises(IndexError, match="sampler gave an index past int64"):
        list(DataLoader(records3, batch_size=2, sampler=[2**70]))


def test_numpy_integers_are_sampler_indices(records3):
    batches = list(DataLoader(records3, batch_size=2, sampler=[np.int32(3), np.int64(1)]))
    assert [b.shape for b in batches] == [(2, 4, 4, 3)]


def test_weights_may_come_from_a_generator():
    opts = LoaderOptions().weighted_sampling(w for w in [1, 2, 3])
    assert opts.get("weights") == (1.0, 2.0, 3.0)


@pytest.mark.parametrize("shuffle", [True, "block"])
def test_a_loader_shuffles_with_a_seed_past_int64(records3, shuffle):
    dl = DataLoader(records3, batch_size=4, shuffle=shuffle, seed=2**64)
    assert sum(len(b) for b in dl) == 8
