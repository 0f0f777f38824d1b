"""data=fashion_mnist and data=cifar100: torchvision's own formats, read by the project's loaders."""

import shutil

import numpy as np
import pytest
import torchvision.datasets

from classic_cnns.data import DatasetNotFoundError, FashionMNISTDataModule

from .conftest import image_ids, write_mnist

# The label table of Fashion-MNIST's README (github.com/zalandoresearch/fashion-mnist).
FASHION_MNIST_LABELS = """
0 T-shirt/top
1 Trouser
2 Pullover
3 Dress
4 Coat
5 Sandal
6 Shirt
7 Sneaker
8 Bag
9 Ankle boot
"""


def write_fashion_mnist(root, n_train: int = 60, n_test: int = 20):
    """MNIST's four IDX files (the same format), where torchvision puts Fashion-MNIST's."""
    write_mnist(root, n_train, n_test)
    shutil.move(root / "MNIST", root / "FashionMNIST")
    return root


def test_fashion_mnist_reads_its_idx_files_with_its_class_names(tmp_path):
    write_fashion_mnist(tmp_path)
    dm = FashionMNISTDataModule(str(tmp_path), val_size=10, download=False)
    dm.prepare_data()
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [50, 10, 20]
    assert dm.splits["train"].images.shape[1:] == (1, 28, 28) and len(image_ids(dm.splits["test"].images)) == 20
    table = [line.split(" ", 1) for line in FASHION_MNIST_LABELS.strip().splitlines()]
    assert list(dm.class_names) == [name for _, name in table] and dm.describe()["class_names"][9] == "Ankle boot"


def test_fashion_mnist_downloads_through_torchvision_into_its_own_folder(tmp_path, monkeypatch):
    def download(root, train, download):  # torchvision's FashionMNIST (its mirror, its MD5s) writes root/FashionMNIST/raw/
        assert download
        write_fashion_mnist(root)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", download)
    dm = FashionMNISTDataModule(str(tmp_path))
    dm.prepare_data()
    assert (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file() and not dm.missing_files()
    with pytest.raises(DatasetNotFoundError, match=r"Fashion-MNIST was not found in .*FashionMNIST/raw and data.download=false"):
        FashionMNISTDataModule(str(tmp_path / "elsewhere"), download=False).prepare_data()
