"""What MNIST and CIFAR-10 share: the whole set in memory as uint8, batches as index slices.

Two placements (`placement=`):
- "device": the splits are copied once onto the training device (the GPU: 47 MB for MNIST,
  150 MB for CIFAR-10) and each batch is one index slice there (`DeviceBatches`);
- "dataloader": the splits stay in host memory and a torch DataLoader gathers each batch
  (one gather per batch through `__getitems__`; pinned memory on CUDA, optional workers).
"auto" (the default) picks "device" when the splits take less than half the free device memory;
under DDP rank 0 decides for all ranks, once.

There is no per-sample Python on the hot path either way: scaling, augmentation,
normalization and resizing run batched on the batch's device (`on_after_batch_transfer`).
"""

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from filelock import FileLock
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from classic_cnns import ClassicCNNsError
from classic_cnns.randomness import epoch_order


class DatasetNotFoundError(ClassicCNNsError):
    pass


PLACEMENTS = ("auto", "device", "dataloader")
SCALES = ("standard", "paper")


class TensorBatches(Dataset):
    """Images and labels held as tensors; the DataLoader fetches a whole batch in one gather."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def _whole_batch(batch):
    """`__getitems__` already returns the batch: nothing to collate."""
    return batch


class DeviceBatches:
    """Batches as index slices of tensors that already live on the training device.

    The order of an epoch is `epoch_order(n, seed, epoch)`: every DDP rank draws the same one
    and takes its own share, and a resumed run replays the same order as an uninterrupted one.
    `epoch` says which epoch is starting; without it the object counts its own passes. Under DDP
    training drops the remainder, so that every rank takes the same number of steps; evaluation
    splits the set into disjoint shares without repeats (like Lightning's
    UnrepeatedDistributedSampler), so that each image is counted once: the shares may differ by
    one image, and the ranks' batch counts by one, which is safe because evaluation has no
    per-step collective.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: Callable[[], int] | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = epoch
        self._passes = 0

    def _indices(self) -> torch.Tensor:
        n, device = len(self.labels), self.labels.device
        if self.shuffle:
            epoch = self.epoch() if self.epoch is not None else self._passes
            order = epoch_order(n, self.seed, epoch, device)[: n - n % self.world_size]
        else:
            order = torch.arange(n, device=device)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self.labels)
        per_rank = n // self.world_size if self.shuffle else len(range(self.rank, n, self.world_size))
        return -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices()
        self._passes += 1
        for batch in indices.split(self.batch_size):
            yield self.images[batch], self.labels[batch]


class EpochOrderSampler(DistributedSampler):
    """The DataLoader placement's training order: DeviceBatches' order (from (seed, epoch)
    jointly, each rank its share, the remainder dropped). Lightning keeps a DistributedSampler
    as it is and tells it the epoch (`set_epoch`), also after a resume."""

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(len(self.dataset), self.seed, self.epoch)[: self.total_size]
        return iter(order[self.rank :: self.num_replicas].tolist())


class ImageDataModule(L.LightningDataModule):
    """Base class: subclasses say what the data is (`name`, shape, classes, normalization,
    file names) and how to download and read it; this class splits, batches and transforms.

    `seed` seeds the training order of each epoch (train() passes the run's seed).
    `scale`: "standard" feeds (x - mean) / std with x in [0, 1] (about unit variance);
    "paper" feeds the AlexNet paper's raw pixel values minus the mean, 0-255 units (here the
    per-channel `mean`, where the paper subtracted a per-pixel mean image), `std` unused."""

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
    ) -> None:
        super().__init__()
        self.seed = seed
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed = val_size, split_seed
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        if scale not in SCALES:
            raise ClassicCNNsError(f"data.scale={scale!r} is not allowed: use one of {', '.join(SCALES)}")
        if scale == "paper":  # (x - mean) * 255: mean-subtracted 0-255 values
            self.std = torch.full_like(self.mean, 1 / 255)
        self.image_size, self.pad_to = image_size, pad_to
        self.crop_padding, self.horizontal_flip = crop_padding, horizontal_flip
        if placement not in PLACEMENTS:
            raise ClassicCNNsError(f"data.placement={placement!r} is not allowed: use one of {', '.join(PLACEMENTS)}")
        self.download, self.placement, self.num_workers = download, placement, num_workers
        self.splits: dict[str, TensorBatches] = {}
        self._on_device: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}
        self._placements: dict[torch.device, str] = {}  # what "auto" resolved to, per device

    # --- what the model needs to know, before any file is read -------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_size(self) -> tuple[int, int]:
        size = self.image_size or self.pad_to
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
            self.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                with FileLock(self.data_dir / f".{self.name}.lock"):
                    if not self.missing_files():  # another job finished it while we waited
                        return
                    self._download_atomically()
                if not self.missing_files():
                    return
                reason = "the download did not produce them"
            except Exception as error:  # offline, HTTP errors, bad archives: all end the same way
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
                reason = f"the download failed ({type(error).__name__}: {first_line})"
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
            if not 0 < self.val_size < len(labels):
                raise ClassicCNNsError(
                    f"data.val_size={self.val_size} must be between 1 and {len(labels) - 1}, "
                    f"the number of {self.name} training images minus one"
                )
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.split_seed))
            val, train = order[: self.val_size], order[self.val_size :]
            self.splits["train"] = TensorBatches(images[train], labels[train])
            self.splits["val"] = TensorBatches(images[val], labels[val])
        if "test" not in self.splits:
            self.splits["test"] = TensorBatches(*self.load(train=False))

    def batch_size_of(self, split: str) -> int:
        """The one batch-size rule: `batch_size` for training, `eval_batch_size` for validation and test."""
        return self.batch_size if split == "train" else self.eval_batch_size

    def _loader(self, split: str, shuffle: bool) -> DataLoader | DeviceBatches:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        strategy = self.trainer.strategy if self.trainer is not None else None
        rank, world_size = (strategy.global_rank, strategy.world_size) if strategy else (0, 1)
        per_rank = len(self.splits[split]) // world_size
        batch_size = self.batch_size_of(split)
        if shuffle and batch_size > per_rank:
            raise ClassicCNNsError(
                f"data.batch_size={batch_size} is larger than the {per_rank} training images "
                f"{'each DDP rank gets' if world_size > 1 else 'left after data.val_size'}: every step "
                f"would see all of them, not a batch of that size. Use data.batch_size <= {per_rank}"
            )
        if self.resolve_placement(device) == "device":
            return self.device_batches(
                split,
                device,
                shuffle=shuffle,
                rank=rank,
                world_size=world_size,
                epoch=(lambda: self.trainer.current_epoch) if self.trainer is not None else None,
            )
        # Evaluation under DDP: disjoint shares without DistributedSampler's padding repeats, so
        # that each image counts once.
        sampler = None
        if shuffle:
            sampler = EpochOrderSampler(self.splits[split], self.seed, rank, world_size)
        elif world_size > 1:
            sampler = UnrepeatedDistributedSampler(self.splits[split], num_replicas=world_size, rank=rank, shuffle=False)
        return DataLoader(
            self.splits[split],
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=_whole_batch,
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=self.num_workers > 0,
        )

    def resolve_placement(self, device: torch.device) -> str:
        """"device" or "dataloader": what `placement` means for `device`, decided once. Under DDP
        rank 0 decides and broadcasts its choice: ranks deciding on their own free memory could
        disagree, and mix a device share with a DistributedSampler share (or hang)."""
        if self.placement != "auto":
            return self.placement
        if device not in self._placements:
            choice = self._auto_placement(device)
            if self.trainer is not None and self.trainer.world_size > 1:
                choice = self.trainer.strategy.broadcast(choice, src=0)
            self._placements[device] = choice
        return self._placements[device]

    def _auto_placement(self, device: torch.device) -> str:
        if device.type != "cuda":
            return "device"  # host memory: the splits are there already
        needed = sum(s.images.nbytes + s.labels.nbytes for s in self.splits.values())
        free, _ = torch.cuda.mem_get_info(device)
        return "device" if needed < free / 2 else "dataloader"

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
        x = images.float().div_(255)
        if self.pad_to:
            top, left = (self.pad_to - x.shape[-2]) // 2, (self.pad_to - x.shape[-1]) // 2
            x = F.pad(x, (left, self.pad_to - x.shape[-1] - left, top, self.pad_to - x.shape[-2] - top))
        if train and self.crop_padding:
            x = random_crop(x, self.crop_padding)
        if train and self.horizontal_flip:
            flip = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
            x = torch.where(flip, x.flip(3), x)
        if self.mean.device != x.device:  # moved once, not every batch
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        x = (x - self.mean) / self.std
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return x


def random_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding) for a whole batch: zero-pad, then cut each image
    at its own random offset with one gather."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, channel, rows, cols]
