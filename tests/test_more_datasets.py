"""data=fashion_mnist and data=cifar100: torchvision's own formats, read by the project's loaders."""

import os
import pickle
import shutil

import numpy as np
import pytest
import torchvision.datasets

from classic_cnns import ClassicCNNsError
from classic_cnns.data import CIFAR100DataModule, DatasetNotFoundError, FashionMNISTDataModule

from .conftest import fake_images, image_ids, write_mnist

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
    def download(
        root, train, download
    ):  # torchvision's FashionMNIST (its mirror, its MD5s) writes root/FashionMNIST/raw/
        assert download
        write_fashion_mnist(root)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", download)
    dm = FashionMNISTDataModule(str(tmp_path))
    dm.prepare_data()
    assert (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file() and not dm.missing_files()
    with pytest.raises(
        DatasetNotFoundError, match=r"Fashion-MNIST was not found in .*FashionMNIST/raw and data.download=false"
    ):
        FashionMNISTDataModule(str(tmp_path / "elsewhere"), download=False).prepare_data()


# The names in the official cifar-100-python/meta file (fine_label_names, coarse_label_names).
CIFAR100_FINE = """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel
can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant
flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree
motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel
streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale
willow_tree wolf woman worm""".split()
CIFAR100_COARSE = """aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices
household_furniture insects large_carnivores large_man-made_outdoor_things large_natural_outdoor_scenes
large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people reptiles small_mammals trees vehicles_1
vehicles_2""".split()


def write_cifar100(root, n_train: int = 40, n_test: int = 20, fine_names=CIFAR100_FINE):
    """cifar-100-python/{train,test,meta} as the official files hold them (pickled dicts)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, first_id in (("train", n_train, 0), ("test", n_test, 10_000)):
        images, _ = fake_images(n, 3, 32, first_id, seed=first_id)
        fine = np.random.default_rng(first_id).integers(0, 100, n)
        batch = {
            "filenames": [f"{i}.png" for i in range(n)],
            "batch_label": name,
            "data": images.reshape(n, -1),
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"fine_label_names": fine_names, "coarse_label_names": CIFAR100_COARSE}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return root


def test_cifar100_reads_fine_labels_and_coarse_ones_as_an_option(tmp_path):
    write_cifar100(tmp_path)
    fine = CIFAR100DataModule(str(tmp_path), val_size=10, download=False)
    fine.setup()
    assert [len(fine.splits[s]) for s in ("train", "val", "test")] == [30, 10, 20]
    assert fine.splits["test"].images.shape[1:] == (3, 32, 32) and len(image_ids(fine.splits["test"].images)) == 20
    assert list(fine.class_names) == CIFAR100_FINE and fine.num_classes == 100
    coarse = CIFAR100DataModule(str(tmp_path), val_size=10, label="coarse")
    coarse.setup()
    assert list(coarse.class_names) == CIFAR100_COARSE and coarse.describe()["class_names"][14] == "people"
    assert coarse.splits["test"].labels.tolist() == (fine.splits["test"].labels // 5).tolist()  # the same images
    with pytest.raises(ClassicCNNsError, match="data.label='superclass' is not allowed: use fine"):
        CIFAR100DataModule(str(tmp_path), label="superclass")


def test_cifar100_files_that_are_not_cifar100_are_refused(tmp_path):
    write_cifar100(tmp_path, fine_names=["x"] * 100)
    with pytest.raises(ClassicCNNsError, match="meta: its fine label names are not CIFAR-100's"):
        CIFAR100DataModule(str(tmp_path)).setup("test")
    (tmp_path / "cifar-100-python" / "meta").write_bytes(pickle.dumps({"fine_label_names": os.system}))
    with pytest.raises(ClassicCNNsError, match="refused to unpickle the global posix.system"):
        CIFAR100DataModule(str(tmp_path)).setup("test")


def test_cifar100_downloads_through_torchvision(tmp_path, monkeypatch):
    def download(root, train, download):  # torchvision's CIFAR100 (its URL and MD5s) writes root/cifar-100-python/
        assert download
        write_cifar100(root)

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", download)
    dm = CIFAR100DataModule(str(tmp_path))
    dm.prepare_data()
    assert not dm.missing_files() and (tmp_path / "cifar-100-python" / "meta").is_file()
