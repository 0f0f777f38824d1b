"""CIFAR-10 from the standard python batches: DATA_DIR/cifar-10-batches-py/.

The files are read directly, without torchvision's checksum test, so re-encoded copies of the
set in the same format load too (see README: where to put data offline). They are pickles, which
can call any importable function while they load: they are read with an unpickler that allows
only what the official files hold (dicts, lists, strings, bytes, numpy integer arrays). An array
may not declare more bytes than the file holds (an unfilled array of any shape costs only its
declaration), labels must be a flat list of integers in 0-9, one per image, checked before
they are turned into an array (shared sub-lists would multiply their cost).
"""

import codecs
import math
import pickle
from pathlib import Path

import numpy as np
import torch

from classic_cnns import ClassicCNNsError

from .base import ImageDataModule

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """How Python 3 pickles bytes at protocol 2 (`_codecs.encode(text, "latin1")`), and only that."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, encoding, errors)


def _integer_dtype(spec, *args) -> np.dtype:
    dtype = np.dtype(spec, *args)
    if dtype.kind not in "ui":
        raise pickle.UnpicklingError(f"a numpy array of dtype {dtype} (only integer arrays are allowed)")
    return dtype


_EMPTY = np.zeros(0, np.uint8)
_RECONSTRUCT, _FROMBUFFER = _EMPTY.__reduce__()[0], _EMPTY.__reduce_ex__(5)[0]
# The globals that pickled numpy arrays need, under the module names numpy 1 and numpy 2 write.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _integer_dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RefusedGlobal(pickle.UnpicklingError):
    pass


class BatchUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR-10 batch holds and refuses every other global; no array it
    builds may be larger than `max_bytes` (the file's size)."""

    def __init__(self, file, max_bytes: int, **kwargs) -> None:
        super().__init__(file, **kwargs)
        self.max_bytes = max_bytes

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise RefusedGlobal(f"{module}.{name}")
        found = ALLOWED_GLOBALS[module, name]
        return self._reconstruct if found is _RECONSTRUCT else found

    def _reconstruct(self, subtype, shape, dtype):
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        itemsize = _integer_dtype(dtype.decode("latin1") if isinstance(dtype, bytes) else dtype).itemsize
        if not all(isinstance(side, int) and side >= 0 for side in shape):
            raise pickle.UnpicklingError(f"an array of shape {shape}")
        declared = math.prod(shape) * itemsize
        if declared > self.max_bytes:
            raise pickle.UnpicklingError(
                f"an array of shape {shape} declares {declared} bytes but the file holds {self.max_bytes}"
            )
        return _RECONSTRUCT(subtype, shape, dtype)


def read_batch(
    path: Path, label_key: str = "labels", num_classes: int = 10, set_name: str = "CIFAR-10"
) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch -> uint8 images (N, 3, 32, 32) and the labels (N,) under
    `label_key` (CIFAR-100: fine_labels or coarse_labels), each in 0 to num_classes - 1."""
    try:
        with open(path, "rb") as file:
            # as torchvision: str keys for Python 2 pickles too
            batch = BatchUnpickler(file, max_bytes=path.stat().st_size, encoding="latin1").load()
        if not isinstance(batch["data"], np.ndarray) or batch["data"].dtype.kind not in "ui":
            raise TypeError(f"'data' is a {type(batch['data']).__name__}, not a numpy integer array")
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = batch[label_key]
        if (
            not isinstance(labels, list)
            or len(labels) != len(images)
            or not all(type(label) is int for label in labels)
        ):
            raise TypeError(f"'{label_key}' is not a list of {len(images)} integers, one per image")
        labels = np.asarray(labels, dtype=np.int64)
    except RefusedGlobal as error:
        raise ClassicCNNsError(
            f"{path}: refused to unpickle the global {error}; a {set_name} batch holds only dicts, lists, strings, "
            f"bytes and numpy integer arrays, and nothing in this file ran. It is not a {set_name} batch (perhaps "
            "one crafted to run code): delete it and download the set again"
        ) from None
    except Exception as error:
        raise ClassicCNNsError(
            f"{path} is not a readable {set_name} batch ({type(error).__name__}: {error}); "
            "delete it and download it again"
        ) from None
    if len(labels) and not (0 <= labels.min() and labels.max() < num_classes):
        raise ClassicCNNsError(
            f"{path} holds labels outside 0-{num_classes - 1} ({labels.min()} to {labels.max()}): {set_name} has "
            f"{num_classes} classes; delete it and download it again"
        )
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
