"""One epoch's shuffled indices for rank 3 of 8 over 10 million samples.

Baselines measured in the same run: torch's ``DistributedSampler`` (what a torch
training loop iterates each epoch) and numpy's ``Generator.permutation`` of the
whole dataset (the floor: one permutation, no rank split).
"""

import numpy as np

from fastload.plan.samplers import DistributedRandomSampler

from .common import interleaved_best

N = 10_000_000
WORLD = 8
RANK = 3


def _samplers():
    fast = DistributedRandomSampler(N, rank=RANK, world_size=WORLD, seed=1)
    fns = {
        "fastload": lambda: fast.indices(1),
        "numpy_permutation": lambda: np.random.default_rng(1).permutation(N),
    }
    try:
        import torch.utils.data as torch_data
    except ImportError:
        return fns
    slow = torch_data.DistributedSampler(
        range(N), num_replicas=WORLD, rank=RANK, shuffle=True, seed=1
    )
    slow.set_epoch(1)
    fns["torch_distributed_sampler"] = lambda: list(slow)
    return fns


class DistributedEpochIndices:
    """Dataset samples ordered per second (N / time for one rank's epoch)."""

    timeout = 300
    params = [["fastload", "torch_distributed_sampler", "numpy_permutation"]]
    param_names = ["sampler"]

    def setup(self, sampler):
        self.fns = _samplers()
        if sampler not in self.fns:
            raise NotImplementedError(f"{sampler} is not installed")
        self.seconds = interleaved_best(self.fns, repeat=3)

    def time_epoch(self, sampler):
        self.fns[sampler]()

    def track_samples_per_s(self, sampler):
        return N / self.seconds[sampler]

    track_samples_per_s.unit = "samples/s"


class DistributedEpochIndicesRatios:
    """fastload's speed over each baseline's, measured together (> 1: fastload faster)."""

    timeout = 300
    params = [["fastload/torch_distributed_sampler", "fastload/numpy_permutation"]]
    param_names = ["ratio"]

    def setup(self, ratio):
        self.fns = _samplers()
        if ratio.split("/")[1] not in self.fns:
            raise NotImplementedError("torch is not installed")
        self.seconds = interleaved_best(self.fns, repeat=3)

    def track_ratio(self, ratio):
        num, den = ratio.split("/")
        return self.seconds[den] / self.seconds[num]

    track_ratio.unit = "ratio"
