"""Opt-in: CLASSIC_CNNS_REAL_DATA=DIR, a directory with MNIST/raw/ (and cifar-10-batches-py/)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


def cifar10_as_image_folder(data_dir: Path, root: Path) -> Path:
    """The CIFAR-10 batches as PNG files (lossless: the very same pixels), root/train/CLASS/*.png
    and root/test/CLASS/*.png; without val/, data=imagefolder holds out 10% of each class."""
    dm = CIFAR10DataModule(str(data_dir), download=False)
    for split, training in (("train", True), ("test", False)):
        images, labels = dm.load(training)
        for index, (image, label) in enumerate(zip(images.numpy(), labels.tolist())):
            folder = root / split / dm.class_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{index:05d}.png", compress_level=1)
    return root


def test_cifar10_as_an_image_folder_reaches_the_accuracy_of_data_cifar10(tmp_path):
    """Issue 25 item 8: the same images through data=imagefolder (files, scan, decode once) and
    data=cifar10 (the batches) give test accuracies within the spread of 3 seeds (1 CPU epoch)."""
    if CIFAR10DataModule(REAL).missing_files():
        pytest.skip(f"no CIFAR-10 in {REAL}")
    folder = cifar10_as_image_folder(Path(REAL), tmp_path / "folder")
    as_cifar10 = ["data.mean=[0.4914,0.4822,0.4465]", "data.std=[0.2470,0.2435,0.2616]", "data.crop_padding=4"]
    accuracies: dict[str, list[float]] = {}
    for data, data_dir, extra in (("cifar10", Path(REAL), []), ("imagefolder", folder, as_cifar10)):
        for seed in range(3):
            run = tmp_path / f"{data}_{seed}"
            train(
                compose_config(
                    ["trainer=cpu", "trainer.max_epochs=1", f"data={data}", f"seed={seed}", *extra], run, data_dir
                )
            )
            accuracies.setdefault(data, []).append(json.loads((run / "metrics.json").read_text())["test/acc"])
    spread = max(max(values) - min(values) for values in accuracies.values())
    gap = abs(np.mean(accuracies["cifar10"]) - np.mean(accuracies["imagefolder"]))
    assert gap <= max(spread, 0.01), accuracies
