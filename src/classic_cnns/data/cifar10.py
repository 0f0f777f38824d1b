"""CIFAR-10 from the standard python batches: DATA_DIR/cifar-10-batches-py/.

The files are read directly, without torchvision's checksum test, so re-encoded copies of the
set in the same format load too (see README: where to put data offline).
"""

import pickle
from pathlib import Path

import numpy as np
import torch

from classic_cnns import ClassicCNNsError

from .base import ImageDataModule

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch -> uint8 images (N, 3, 32, 32) and labels (N,)."""
    try:
        with open(path, "rb") as file:
            batch = pickle.load(file, encoding="latin1")  # as torchvision: str keys for Python 2 pickles too
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except Exception as error:
        raise ClassicCNNsError(
            f"{path} is not a readable CIFAR-10 batch ({type(error).__name__}: {error}); "
            "delete it and download it again"
        ) from None
    if len(images) != len(labels):
        raise ClassicCNNsError(f"{path} holds {len(images)} images but {len(labels)} labels")
    return images, labels


class CIFAR10DataModule(ImageDataModule):
    name = "CIFAR-10"
    channels = 3
    train_size = 50_000  # images in the official training split
    native_size = (32, 32)
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    files = (*TRAIN_BATCHES, "test_batch")

    @property
    def folder(self) -> Path:
        return self.data_dir / "cifar-10-batches-py"

    def download_files(self, root: Path) -> None:
        from torchvision.datasets import CIFAR10

        CIFAR10(root, train=True, download=True)

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        batches = [read_batch(self.folder / name) for name in (TRAIN_BATCHES if train else ("test_batch",))]
        images = np.concatenate([images for images, _ in batches])
        labels = np.concatenate([labels for _, labels in batches])
        return torch.from_numpy(images), torch.from_numpy(labels)
