"""CIFAR-10 from the standard python batches: DATA_DIR/cifar-10-batches-py/.

The files are read directly, without torchvision's checksum test, so re-encoded copies of the
set in the same format load too (see README: where to put data offline). They are pickles, which
can call any importable function while they load: they are read with an unpickler that allows
only what the official files hold (dicts, lists, strings, bytes, numpy integer arrays).
"""

import codecs
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
    """Unpickles what a CIFAR-10 batch holds and refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[module, name]
        raise RefusedGlobal(f"{module}.{name}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch -> uint8 images (N, 3, 32, 32) and labels (N,)."""
    try:
        with open(path, "rb") as file:
            batch = BatchUnpickler(file, encoding="latin1").load()  # as torchvision: str keys for Python 2 pickles too
        if not isinstance(batch["data"], np.ndarray) or batch["data"].dtype.kind not in "ui":
            raise TypeError(f"'data' is a {type(batch['data']).__name__}, not a numpy integer array")
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except RefusedGlobal as error:
        raise ClassicCNNsError(
            f"{path}: refused to unpickle the global {error}; a CIFAR-10 batch holds only dicts, lists, strings, "
            "bytes and numpy integer arrays, and nothing in this file ran. It is not a CIFAR-10 batch (perhaps "
            "one crafted to run code): delete it and download the set again"
        ) from None
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
