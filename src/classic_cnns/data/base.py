"""The data module: what MNIST and CIFAR-10 (and image folders) share.

A subclass says what the data is and how to download and read it; this class checks the files
(downloading what is missing), splits the training set into a seeded hold-out, and hands the
splits, held whole in memory as uint8, to the batching engine (`batching.py`: on the device as
index slices, or through a DataLoader). Scaling, augmentation, normalization and resizing run
batched on the batch's device (`transforms.py`, from `on_after_batch_transfer`).
"""

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
from filelock import FileLock
from torch.utils.data import DataLoader

from classic_cnns import ClassicCNNsError

from .batching import PLACEMENTS, DeviceBatches, Placement, TensorBatches, check_batch_size, fits_on_device, host_loader
from .transforms import SCALES, TEST_CROPS, BatchTransform, normalization, pixel_statistics

__all__ = ["PLACEMENTS", "SCALES", "TEST_CROPS", "VAL_FROM", "DatasetNotFoundError", "ImageDataModule"]

# Where the validation images come from: "random", a hold-out of `val_size` drawn with
# `split_seed`; "end", the last `val_size` training images in file order (Keras's
# validation_split); "test", the test set itself, with every training image trained on (the
# notebooks that pass validation_data=(x_test, y_test) or test after every epoch; val_size 0).
VAL_FROM = ("random", "end", "test")


class DatasetNotFoundError(ClassicCNNsError):
    pass


class ImageDataModule(L.LightningDataModule):
    """Base class: subclasses say what the data is (`name`, shape, classes, normalization,
    file names) and how to download and read it; this class splits, batches and transforms.

    `seed` seeds the training order of each epoch (train() passes the run's seed).
    `scale`: "standard" feeds (x - mean) / std with x in [0, 1] (about unit variance);
    "paper" feeds the AlexNet paper's raw pixel values minus the mean image of the training
    split (per pixel), 0-255 units, `mean` and `std` unused; "paper_channel" the same minus the
    per-channel `mean`. `crop_size`, `test_crops` and `lighting` are the paper's patches, ten
    test crops and PCA lighting noise (transforms.BatchTransform; docs/imagenet-protocol.md).
    `val_from` says where the validation images come from (see VAL_FROM)."""

    name: str
    channels: int
    native_size: tuple[int, int]
    class_names: Sequence[str]
    files: Sequence[str]  # relative to `folder`, what must exist to load without a download
    files_hint: str = ""
    train_size: int  # of the official set; a copy may hold fewer (checked when it is read)
    background: str | None = None  # "dark": light strokes on a dark background (MNIST); None: photographs

    def __init__(
        self,
        data_dir: str,
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
        crop_size: int | None = None,
        test_crops: str = "center",
        lighting: float = 0.0,
    ) -> None:
        super().__init__()
        if val_from not in VAL_FROM:
            raise ClassicCNNsError(f"data.val_from={val_from!r} is not allowed: use one of {', '.join(VAL_FROM)}")
        self.val_from = val_from
        self.seed = seed
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed = val_size, split_seed
        self.mean, self.std = normalization(mean, std, scale)  # (1, C, 1, 1), fixed from here on
        self.image_size, self.pad_to = image_size, pad_to
        self.crop_padding, self.horizontal_flip = crop_padding, horizontal_flip
        if crop_size is not None and not (isinstance(crop_size, int) and crop_size >= 1):
            raise ClassicCNNsError(
                f"data.crop_size={crop_size!r} is not allowed: use an integer >= 1, or null for no patches"
            )
        self.crop_size = crop_size
        self.batch_transform = BatchTransform(
            self.mean,
            self.std,
            self.input_size,
            pad_to,
            crop_padding,
            horizontal_flip,
            crop_size=crop_size,
            test_crops=test_crops,
            mean_image=scale == "paper",
            lighting=lighting,
        )
        self.download, self.placement, self.num_workers = download, placement, num_workers
        self._placement = Placement(placement, self._auto_placement)
        self.splits: dict[str, TensorBatches] = {}
        self._on_device: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    # --- what the model needs to know, before any file is read -------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_size(self) -> tuple[int, int]:
        size = self.image_size or self.crop_size or self.pad_to
        return (size, size) if size else self.native_size

    def describe(self) -> dict:
        """What a model trained on this data expects, as plain values (stored in checkpoints)."""
        return {
            "class_names": list(self.class_names),
            "channels": self.channels,
            "input_size": list(self.input_size),
            "native_size": list(self.native_size),
            "pad_to": self.pad_to,
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
        }

    # --- files ---------------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return self.data_dir

    def missing_files(self) -> list[str]:
        return [name for name in self.files if not self._exists(self.folder / name)]

    @staticmethod
    def _exists(path: Path) -> bool:
        return path.exists() or path.with_name(path.name + ".gz").exists()

    def prepare_data(self) -> None:
        """Download what is missing. Jobs preparing the same directory at once take turns (a
        file lock), and a download lands in a temporary directory first, its files moved into
        place only when it completed: an interrupted one leaves nothing that looks complete."""
        if not self.missing_files():
            return
        reason = "data.download=false"
        if self.download:
            made_data_dir = not self.data_dir.exists()
            self.data_dir.mkdir(parents=True, exist_ok=True)
            lock = self.data_dir / f".{self.name}.lock"
            try:
                with FileLock(lock):
                    if not self.missing_files():  # another job finished it while we waited
                        return
                    self._download_atomically()
                if not self.missing_files():
                    return
                reason = "the download did not produce them"
            except Exception as error:  # offline, HTTP errors, bad archives: all end the same way
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
                reason = f"the download failed ({type(error).__name__}: {first_line})"
            # A failed download leaves nothing behind: not its lock file, not a data dir it made.
            # (A job still waiting on the lock goes on safely: downloads land in a scratch dir first.)
            lock.unlink(missing_ok=True)
            if made_data_dir and not any(self.data_dir.iterdir()):
                self.data_dir.rmdir()
        raise DatasetNotFoundError(
            f"{self.name} was not found in {self.folder.resolve()} and {reason}. "
            f"Expected files there: {', '.join(self.files)}{self.files_hint}. "
            f"Offline, copy them into that directory, or point data.data_dir=... (or the "
            f"CLASSIC_CNNS_DATA_DIR environment variable) at a directory that holds them."
        )

    def _download_atomically(self) -> None:
        with tempfile.TemporaryDirectory(dir=self.data_dir, prefix=".download-") as scratch:
            self.download_files(Path(scratch))
            downloaded = Path(scratch) / self.folder.relative_to(self.data_dir)
            self.folder.mkdir(parents=True, exist_ok=True)
            for name in self.files:
                shutil.move(downloaded / name, self.folder / name)

    def download_files(self, root: Path) -> None:
        """Download the set into `root`, in the same layout as under data_dir."""
        raise NotImplementedError

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, C, H, W) and int64 labels (N,) of the train or test split."""
        raise NotImplementedError

    # --- splits --------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Read the splits `stage` needs; fitting reads the test split too, so that a corrupt
        test file is found before the first training step, not after the whole fit."""
        if stage in (None, "fit", "validate") and "train" not in self.splits:
            images, labels = self.load(train=True)
            if self.val_from == "test":
                self.splits["train"] = TensorBatches(images, labels)
            else:
                if not 0 < self.val_size < len(labels):
                    raise ClassicCNNsError(
                        f"data.val_size={self.val_size} must be between 1 and {len(labels) - 1}, "
                        f"the number of {self.name} training images minus one"
                    )
                kept = len(labels) - self.val_size
                if self.val_from == "end":
                    val, train = torch.arange(kept, len(labels)), torch.arange(kept)
                else:
                    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.split_seed))
                    val, train = order[: self.val_size], order[self.val_size :]
                self.splits["train"] = TensorBatches(images[train], labels[train])
                self.splits["val"] = TensorBatches(images[val], labels[val])
        if "test" not in self.splits:
            self.splits["test"] = TensorBatches(*self.load(train=False))
        if self.val_from == "test" and "train" in self.splits:
            self.splits["val"] = self.splits["test"]

    def batch_size_of(self, split: str) -> int:
        """The one batch-size rule: `batch_size` for training, `eval_batch_size` for validation and test."""
        return self.batch_size if split == "train" else self.eval_batch_size

    def _loader(self, split: str, shuffle: bool) -> DataLoader | DeviceBatches:
        strategy = self.trainer.strategy if self.trainer is not None else None
        device = strategy.root_device if strategy else torch.device("cpu")
        rank, world_size = (strategy.global_rank, strategy.world_size) if strategy else (0, 1)
        batch_size = self.batch_size_of(split)
        if shuffle:
            check_batch_size(batch_size, len(self.splits[split]), world_size)
        if self.resolve_placement(device) == "device":
            return self.device_batches(
                split,
                device,
                shuffle=shuffle,
                rank=rank,
                world_size=world_size,
                epoch=(lambda: self.trainer.current_epoch) if self.trainer is not None else None,
            )
        return host_loader(
            self.splits[split], batch_size, shuffle, self.seed, device, rank, world_size, self.num_workers
        )

    def resolve_placement(self, device: torch.device) -> str:
        """ "device" or "dataloader": what `placement` means for `device`, decided once (under DDP by rank 0)."""
        return self._placement.resolve(device, self.trainer.strategy if self.trainer is not None else None)

    def _auto_placement(self, device: torch.device) -> str:
        needed = sum(s.images.nbytes + s.labels.nbytes for s in self.splits.values())
        return fits_on_device(device, needed)

    def device_batches(
        self,
        split: str,
        device: torch.device | str,
        shuffle: bool,
        rank: int = 0,
        world_size: int = 1,
        epoch: Callable[[], int] | None = None,
    ) -> DeviceBatches:
        """The batches of `split` as index slices of a copy of it on `device` (made once)."""
        device = torch.device(device)
        if (split, device) not in self._on_device:
            data = self.splits[split]
            self._on_device[split, device] = (data.images.to(device), data.labels.to(device))
        return DeviceBatches(
            *self._on_device[split, device],
            batch_size=self.batch_size_of(split),
            shuffle=shuffle,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            epoch=epoch,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    # --- batched transforms, on the batch's device ---------------------------------------------
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        return self.transform(images, train=training), labels

    def transform(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        """uint8 (N, C, H, W) -> normalized float, augmented when `train`, resized to `input_size`."""
        if self.batch_transform.needs_statistics:
            self.fit_statistics()
        return self.batch_transform(images, train)

    def fit_statistics(self) -> None:
        """The training split's mean image and pixel covariance, for data.scale=paper and the
        lighting noise: computed once from the stored training images (before augmentation),
        reading the training split first where it was not read (evaluate, predict)."""
        if "train" not in self.splits:
            self.setup("fit")
        self.batch_transform.fit(pixel_statistics(self.splits["train"]))
