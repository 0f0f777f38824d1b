"""MNIST and Fashion-MNIST from their four IDX files, as torchvision lays them out:
DATA_DIR/MNIST/raw/ and DATA_DIR/FashionMNIST/raw/ (the same file names, the same format)."""

import gzip
from pathlib import Path

import numpy as np
import torch

from classic_cnns import ClassicCNNsError

from .base import ImageDataModule

IDX_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (plain or .gz) into an array of its shape."""
    if not path.exists():
        path = path.with_name(path.name + ".gz")
    data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != IDX_UBYTE:
        raise ClassicCNNsError(f"{path} is not an IDX file of unsigned bytes (wrong magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise ClassicCNNsError(
            f"{path} holds {len(data) - header} bytes of data, its header promises {shape}: "
            "the file is truncated or corrupt; delete it and download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


class MNISTDataModule(ImageDataModule):
    name = "MNIST"
    channels = 1
    train_size = 60_000  # images in the official training split
    native_size = (28, 28)
    class_names = tuple(str(digit) for digit in range(10))
    files = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
    files_hint = " (each may also be gzipped, .gz)"
    background = "dark"  # white digits on black

    @property
    def folder(self) -> Path:
        return self.data_dir / "MNIST" / "raw"

    def download_files(self, root: Path) -> None:
        from torchvision.datasets import MNIST

        MNIST(root, train=True, download=True)

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = "train" if train else "t10k"
        images = read_idx(self.folder / f"{prefix}-images-idx3-ubyte")
        labels = read_idx(self.folder / f"{prefix}-labels-idx1-ubyte")
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ClassicCNNsError(
                f"{self.folder}: {prefix} images {images.shape} and labels {labels.shape} do not match"
            )
        if len(labels) and labels.max() >= self.num_classes:  # IDX labels are unsigned bytes: never below 0
            raise ClassicCNNsError(
                f"{self.folder / f'{prefix}-labels-idx1-ubyte'} holds labels up to {labels.max()}, outside 0-{self.num_classes - 1}: "
                f"{self.name} has {self.num_classes} classes; delete the file and download it again"
            )
        return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


class FashionMNISTDataModule(MNISTDataModule):
    """Zalando's Fashion-MNIST: 28x28 grey photographs of clothes, light on a dark background,
    in MNIST's files and format; downloaded by torchvision's FashionMNIST (its mirror and MD5s)."""

    name = "Fashion-MNIST"
    class_names = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )

    @property
    def folder(self) -> Path:
        return self.data_dir / "FashionMNIST" / "raw"

    def download_files(self, root: Path) -> None:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(root, train=True, download=True)
