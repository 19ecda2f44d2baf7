"""Rank discovery (fastload.plan.distributed): options, then torch.distributed, then the
torchrun environment."""

import pytest

from fastload.plan.distributed import local_rank, rank_and_world_size
from fastload.plan.options import LoaderConfig, LoaderOptions
from fastload.plan.samplers import DistributedRandomSampler, make_sampler


@pytest.fixture
def torchrun_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_rank_from_environment_when_options_say_none(torchrun_env):
    torchrun_env.setenv("RANK", "2")
    torchrun_env.setenv("WORLD_SIZE", "4")
    found = LoaderOptions(shuffle=True).distributed_sampling().config
    assert rank_and_world_size(found) == (2, 4)
    s = make_sampler(found, 40)
    assert (s.rank, s.world_size, len(s)) == (2, 4, 10)
    assert (
        s.indices(0).tolist()
        == DistributedRandomSampler(40, rank=2, world_size=4).indices(0).tolist()
    )
    # one None: only that one is discovered
    assert rank_and_world_size(LoaderConfig(shard_rank=None, shard_world_size=8)) == (2, 8)


def test_explicit_rank_wins_over_environment(torchrun_env):
    torchrun_env.setenv("RANK", "2")
    torchrun_env.setenv("WORLD_SIZE", "4")
    assert rank_and_world_size(LoaderOptions().distributed_sampling(1, 3).config) == (1, 3)


def test_default_options_shard_by_themselves_under_torchrun(torchrun_env):
    torchrun_env.setenv("RANK", "1")
    torchrun_env.setenv("WORLD_SIZE", "2")
    assert rank_and_world_size(LoaderConfig()) == (1, 2)
    # Reading everything on every rank is still possible, by saying so.
    assert rank_and_world_size(LoaderConfig(shard_rank=0, shard_world_size=1)) == (0, 1)
    sampler = make_sampler(LoaderConfig(), 10)
    assert len(sampler) == 5 and list(sampler.indices(0)) == [1, 3, 5, 7, 9]


def test_local_rank_stands_in_for_rank(torchrun_env):
    torchrun_env.setenv("LOCAL_RANK", "1")
    torchrun_env.setenv("WORLD_SIZE", "2")
    assert rank_and_world_size(LoaderConfig(shard_rank=None, shard_world_size=None)) == (1, 2)
    assert local_rank() == 1


def test_no_environment_means_rank_0_of_1(torchrun_env):
    assert rank_and_world_size(LoaderConfig(shard_rank=None, shard_world_size=None)) == (0, 1)
    assert local_rank() == 0


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not an integer"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 / WORLD_SIZE=2 is not a valid rank"),
        ({"RANK": "0"}, "set both"),
    ],
)
def test_bad_environment_is_named(torchrun_env, env, message):
    for k, v in env.items():
        torchrun_env.setenv(k, v)
    with pytest.raises(ValueError, match=message):
        rank_and_world_size(LoaderConfig(shard_rank=None, shard_world_size=None))


@pytest.mark.torch
def test_initialised_process_group_wins_over_environment(torchrun_env, tmp_path):
    dist = pytest.importorskip("torch.distributed")
    torchrun_env.setenv("RANK", "3")
    torchrun_env.setenv("WORLD_SIZE", "8")
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert rank_and_world_size(LoaderConfig(shard_rank=None, shard_world_size=None)) == (0, 1)
    finally:
        dist.destroy_process_group()
    assert rank_and_world_size(LoaderConfig(shard_rank=None, shard_world_size=None)) == (3, 8)
