"""CIFAR-100 from the standard python files: DATA_DIR/cifar-100-python/{train,test,meta}.

The same pickles as CIFAR-10's, read by the same restricted unpickler (cifar10.py: nothing in
a file can run code). Each image has a fine label (100 classes) and a coarse one (its
superclass, 20); `label` chooses which one is learnt. The class names are fixed here (a model
is built before any file is read) and checked against the names the `meta` file holds.
"""

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from classic_cnns import ClassicCNNsError

from .base import ImageDataModule
from .cifar10 import BatchUnpickler, RefusedGlobal, read_batch

FINE = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)
COARSE = (
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
)
LABELS = {"fine": FINE, "coarse": COARSE}


def read_label_names(path: Path, key: str) -> list[str]:
    """The list of names under `key` in CIFAR-100's pickled `meta` file."""
    try:
        with open(path, "rb") as file:
            names = BatchUnpickler(file, max_bytes=path.stat().st_size, encoding="latin1").load()[key]
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise TypeError(f"'{key}' is not a list of names")
    except RefusedGlobal as error:
        raise ClassicCNNsError(
            f"{path}: refused to unpickle the global {error}; CIFAR-100's meta file holds only lists of names, and "
            "nothing in this file ran: delete it and download the set again"
        ) from None
    except (pickle.UnpicklingError, OSError, EOFError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise ClassicCNNsError(f"{path} is not CIFAR-100's meta file ({type(error).__name__}: {error})") from None
    return names


class CIFAR100DataModule(ImageDataModule):
    """CIFAR-100; `label`: "fine" (100 classes) or "coarse" (the 20 superclasses)."""

    name = "CIFAR-100"
    channels = 3
    train_size = 50_000  # images in the official training split
    native_size = (32, 32)
    files = ("train", "test", "meta")

    def __init__(
        self,
        data_dir: str,
        label: str = "fine",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 0,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        image_size: int | None = None,
        pad_to: int | None = None,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
        download: bool = True,
        placement: str = "auto",
        num_workers: int = 0,
        seed: int = 0,
        scale: str = "standard",
        val_from: str = "random",
    ) -> None:
        if label not in LABELS:
            raise ClassicCNNsError(
                f"data.label={label!r} is not allowed: use fine (100 classes) or coarse (20 superclasses)"
            )
        self.label = label
        super().__init__(
            data_dir,
            batch_size,
            eval_batch_size,
            val_size,
            split_seed,
            mean,
            std,
            image_size,
            pad_to,
            crop_padding,
            horizontal_flip,
            download,
            placement,
            num_workers,
            seed,
            scale,
            val_from,
        )

    @property
    def class_names(self) -> tuple[str, ...]:
        return LABELS[self.label]

    @property
    def folder(self) -> Path:
        return self.data_dir / "cifar-100-python"

    def download_files(self, root: Path) -> None:
        from torchvision.datasets import CIFAR100

        CIFAR100(root, train=True, download=True)

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        meta = self.folder / "meta"
        if read_label_names(meta, f"{self.label}_label_names") != list(self.class_names):
            raise ClassicCNNsError(
                f"{meta}: its {self.label} label names are not CIFAR-100's (this copy's labels would be named wrongly); "
                "delete the folder and download the set again"
            )
        images, labels = read_batch(
            self.folder / ("train" if train else "test"), f"{self.label}_labels", len(self.class_names), self.name
        )
        return torch.from_numpy(images), torch.from_numpy(np.ascontiguousarray(labels))
