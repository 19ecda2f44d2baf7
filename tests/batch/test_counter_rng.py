"""Philox4x32-10 in numpy: the published known answers, and draws that depend only on
(key, epoch, sample index)."""

from __future__ import annotations

import numpy as np
import pytest

from fastload.batch import counter_rng


@pytest.mark.parametrize(
    "counter,key,expected",
    [  # the Random123 known-answer vectors for philox4x32-10
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_known_answers(counter, key, expected):
    out = counter_rng.philox4x32(np.array([counter], dtype=np.uint32), key)
    assert tuple(int(w) for w in out[0]) == expected


def test_draws_are_a_function_of_key_epoch_and_index_only():
    key = counter_rng.key_from_seed(7)
    a = counter_rng.uniforms(key, 3, np.array([5, 9, 2**40 + 1]), 41)
    b = counter_rng.uniforms(key, 3, np.array([2**40 + 1, 5]), 41)
    assert a.shape == (3, 41) and np.array_equal(a[0], b[1]) and np.array_equal(a[2], b[0])
    assert not np.array_equal(a, counter_rng.uniforms(key, 4, np.array([5, 9, 2**40 + 1]), 41))
    other = counter_rng.uniforms(counter_rng.key_from_seed(8), 3, np.array([5]), 41)
    assert not np.array_equal(a[0], other[0])
    assert ((a > 0) & (a < 1)).all()


def test_uniforms_look_uniform():
    u = counter_rng.uniforms(counter_rng.key_from_seed(0), 0, np.arange(20000), 4).ravel()
    hist, _ = np.histogram(u, bins=10, range=(0, 1))
    assert abs(u.mean() - 0.5) < 0.005 and (np.abs(hist / u.size - 0.1) < 0.005).all()
