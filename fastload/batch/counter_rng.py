"""Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11), in numpy.

A draw is a pure function of a key and a counter, with no state: the random crop and
flip of sample ``i`` in epoch ``e`` are the same whichever thread, worker process or
resumed run computes them, and a whole batch is drawn in a few vectorised numpy passes
(one Generator per sample would cost ~35 us each). The key comes from the loader's seed
through numpy's SeedSequence; the counter is (sample index, epoch, block).
"""

from __future__ import annotations

import numpy as np

_MASK = np.uint64(0xFFFFFFFF)
_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_ROUNDS = 10


def philox4x32(counters: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 of each row of ``counters`` ((n, 4) uint32) under ``key`` (two 32-bit
    words): (n, 4) uint32."""
    c = np.asarray(counters, dtype=np.uint64)
    c0, c1, c2, c3 = (c[:, i].copy() for i in range(4))
    k0, k1 = np.uint64(key[0] & 0xFFFFFFFF), np.uint64(key[1] & 0xFFFFFFFF)
    for _ in range(_ROUNDS):
        p0 = c0 * _M0  # < 2**64: exact in uint64
        p1 = c2 * _M1
        c0, c1, c2, c3 = (
            (p1 >> np.uint64(32)) ^ c1 ^ k0,
            p1 & _MASK,
            (p0 >> np.uint64(32)) ^ c3 ^ k1,
            p0 & _MASK,
        )
        k0 = (k0 + _W0) & _MASK
        k1 = (k1 + _W1) & _MASK
    return np.stack([c0, c1, c2, c3], axis=1).astype(np.uint32)


def key_from_seed(seed: int) -> tuple[int, int]:
    """The Philox key of a loader seed (numpy's SeedSequence spreads any int over 64 bits)."""
    words = np.random.SeedSequence(int(seed)).generate_state(2, dtype=np.uint32)
    return int(words[0]), int(words[1])


def uniforms(key: tuple[int, int], epoch: int, indices: np.ndarray, count: int) -> np.ndarray:
    """(n, count) float64 in (0, 1): ``count`` draws for each sample index, in epoch ``epoch``.

    Row i depends only on (key, epoch, indices[i]), never on the other rows."""
    idx = np.asarray(indices, dtype=np.uint64).reshape(-1)
    blocks = (count + 3) // 4
    n = idx.size
    ctr = np.empty((n, blocks, 4), dtype=np.uint64)
    ctr[:, :, 0] = (idx & _MASK)[:, None]
    ctr[:, :, 1] = (idx >> np.uint64(32))[:, None]
    ctr[:, :, 2] = np.uint64(epoch & 0xFFFFFFFF)
    ctr[:, :, 3] = np.arange(blocks, dtype=np.uint64)[None, :]
    words = philox4x32(ctr.reshape(-1, 4), key).reshape(n, blocks * 4)[:, :count]
    return (words.astype(np.float64) + 0.5) * (1.0 / 2**32)
