"""Two ranks under torchrun (gloo, CPU) over one dataset: disjoint shares that cover it,
equal batch counts, and set_epoch reshuffling the same way on every rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastload
from fastload.plan.samplers import RandomSampler
from tests.support import loader_helpers as H

pytest.importorskip("torch.distributed.run")
pytestmark = [pytest.mark.torch, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(fastload.__file__)))
N = 101  # odd: the ranks' shares need DistributedSampler's padding
WORLD = 2
WAYS = ("env", "group", "adapter")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchrun")
    H.write_records(str(root / "data"), N, (4, 4, 3), 3)
    out = root / "out"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        os.path.join(REPO, "tests", "support", "torchrun_worker.py"),
        str(root / "data"),
        str(out),
    ]
    try:
        r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun did not finish in 240 s: {exc.stderr!r}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return [json.loads((out / f"rank-{k}.json").read_text()) for k in range(WORLD)]


def test_rank_and_world_size_come_from_torchrun_and_the_process_group(ranks):
    for k, r in enumerate(ranks):
        assert (r["rank_env"], r["world_env"], r["rank_group"]) == (k, WORLD, k)


@pytest.mark.parametrize("way", WAYS)
def test_every_rank_has_the_same_number_of_batches(ranks, way):
    per_rank = -(-N // WORLD)
    for r in ranks:
        assert r[f"{way}_len"] == -(-per_rank // 8)
        assert [len(e) for e in r[way]] == [per_rank] * 2


@pytest.mark.parametrize("way", WAYS)
def test_shares_are_disjoint_and_cover_the_dataset(ranks, way):
    for epoch in range(2):
        shares = [r[way][epoch] for r in ranks]
        everything = sorted(shares[0] + shares[1])
        # ceil(101 / 2) * 2 = 102: exactly one index repeats (DistributedSampler's padding)
        assert set(everything) == set(range(N)) and len(everything) == N + 1
        assert len(set(shares[0]) & set(shares[1])) == 1


@pytest.mark.parametrize("way", WAYS)
def test_set_epoch_reshuffles_the_same_way_on_every_rank(ranks, way):
    for epoch in range(2):
        # Rank r holds positions r, r + 2, ... of ONE permutation of the epoch, padded.
        order = RandomSampler(N, seed=3).indices(epoch)
        padded = np.concatenate([order, order[:1]])
        for k, r in enumerate(ranks):
            assert r[way][epoch] == padded[k::WORLD].tolist()
    assert ranks[0][way][0] != ranks[0][way][1]


def test_the_three_ways_agree(ranks):
    for r in ranks:
        assert r["env"] == r["group"] == r["adapter"]
