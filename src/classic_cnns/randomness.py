"""The random streams of a run, each derived from the run's seed and what it is for, jointly.

numpy's SeedSequence hashes the whole key: seed 1's epoch 0 and seed 0's epoch 1 are unrelated
streams (with `seed + epoch` they would be the same one, and runs of seeds 0, 1, 2 would share
most of their epoch orders). Each epoch has its own streams, so a run resumed at an epoch
boundary draws exactly what an uninterrupted one draws, with no RNG state to carry over.
"""

import numpy as np
import torch

DATA_ORDER, TRAINING = 0, 1  # what a stream is for: the first element of its key


def derived_seed(seed: int, *key: int) -> int:
    """A 64-bit seed for the stream named by (`seed`, `key`); distinct keys, independent streams."""
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64)[0])


def epoch_order(n: int, seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The shuffled order of `n` training images in `epoch`: the same on every DDP rank."""
    generator = torch.Generator(device=device).manual_seed(derived_seed(seed, DATA_ORDER, epoch))
    return torch.randperm(n, device=device, generator=generator)


def seed_training_stream(seed: int, epoch: int, rank: int) -> None:
    """Seed the global torch RNGs (CPU and CUDA), which augmentation and dropout draw from, for
    `epoch` on DDP rank `rank`: every rank draws its own crops, flips and dropout masks."""
    torch.manual_seed(derived_seed(seed, TRAINING, epoch, rank))
