"""Opt-in: CLASSIC_CNNS_REAL_DATA=DIR, a directory with MNIST/raw/ (and cifar-10-batches-py/)."""

import json
import os
from pathlib import Path

import pytest

from classic_cnns.data import CIFAR10DataModule, MNISTDataModule
from classic_cnns.runs.train import train

from .conftest import compose_config

REAL = os.environ.get("CLASSIC_CNNS_REAL_DATA")
pytestmark = [pytest.mark.real_data, pytest.mark.skipif(not REAL, reason="set CLASSIC_CNNS_REAL_DATA=DIR")]


def test_real_sets_have_their_official_sizes():
    for module, sizes in ((MNISTDataModule, (55_000, 5_000, 10_000)), (CIFAR10DataModule, (45_000, 5_000, 10_000))):
        dm = module(REAL, download=False)
        if dm.missing_files():
            continue
        dm.setup()
        assert tuple(len(dm.splits[s]) for s in ("train", "val", "test")) == sizes


def test_one_cpu_epoch_of_lenet5_reaches_97_percent_on_mnist(tmp_path):
    if MNISTDataModule(REAL).missing_files():
        pytest.skip(f"no MNIST in {REAL}")
    cfg = compose_config(["trainer=cpu", "trainer.max_epochs=1"], tmp_path, Path(REAL))
    train(cfg)
    assert json.loads((tmp_path / "metrics.json").read_text())["test/acc"] >= 0.97
