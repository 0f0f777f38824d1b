"""Your own images: `data=imagefolder data.data_dir=DIR`, a folder of class folders.

Two layouts (docs/own-images.md):
- DIR/train/CLASS/*, DIR/val/CLASS/* and optionally DIR/test/CLASS/* (ImageNet's): without
  test/, the test metrics are those of val/;
- DIR/CLASS/* (or DIR/train/CLASS/* alone): validation and test images are held out of each
  class, seeded by `split_seed`.
Class names are the folder names, sorted; they go into the checkpoint with the model.

Before training a scan lists every file and opens each image's header: unreadable files (not
an image, corrupt, over Pillow's decompression-bomb limit, symlink loops, FIFOs and other
non-files, which are never opened), empty class folders and class sets that differ between
train/ and val/ are reported in a short summary, then skipped or refused (`on_bad_file`).
Images are decoded, converted to `channels` and resized to `image_size` x `image_size` (as
scripts/predict.py does), either once into memory as uint8, where they then take CIFAR-10's
path (`decode=once`), or every epoch in the DataLoader's workers (`decode=stream`), or once into
files on disk that every epoch reads as memory maps (`decode=cache`, folder_cache.py); `auto`
decodes once when the decoded images take less than a quarter of the free memory, else streams.
"""

import errno
import os
import shutil
import stat
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from classic_cnns import ClassicCNNsError

from .base import DatasetNotFoundError, ImageDataModule
from .batching import TensorBatches
from .folder_cache import entry_for, read_entry, remove_other_entries, write_entry

ON_BAD_FILE = ("skip", "error")
DECODE = ("auto", "once", "stream", "cache")
DECODE_ON = ("workers", "device")  # streamed: who decodes a batch's JPEGs
JPEG = b"\xff\xd8\xff"  # the first bytes of every JPEG file
# How an image becomes image_size x image_size: "stretch", resized to it whatever its aspect;
# "shorter_side", the AlexNet paper's: shorter side resized to image_size, then the central square.
RESIZE = ("stretch", "shorter_side")
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"}
THREADS = min(8, os.cpu_count() or 1)
CHUNK = 256  # files per task: a future per file cost more than reading a small PNG


def in_threads(function: Callable, items: list) -> list:
    """[function(item) for item in items], in THREADS threads, handed out CHUNK items at a time."""
    chunks = [items[start : start + CHUNK] for start in range(0, len(items), CHUNK)]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return [
            result
            for results in pool.map(lambda chunk: [function(item) for item in chunk], chunks)
            for result in results
        ]


CHANNELS_SAMPLE = 64  # images (spread over the classes) whose modes decide `channels` when it is not configured


def _listing(folder: Path, ancestors: frozenset) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The regular files under `folder` (recursively, following symlinks, sorted) and the entries
    that are not readable files, with why. Nothing is opened: a FIFO would block a reader."""
    files: list[Path] = []
    bad: list[tuple[Path, str]] = []
    try:
        entries = sorted(folder.iterdir(), key=os.fspath)
    except OSError as error:
        return files, [(folder, f"folder cannot be read ({error.strerror})")]
    for entry in entries:
        if entry.name.startswith("."):
            continue  # hidden files: .DS_Store, editors' and sync tools' leftovers
        try:
            info = entry.stat()  # follows symlinks
        except OSError as error:
            if error.errno == errno.ELOOP:
                bad.append((entry, "symlink loop"))
            elif entry.is_symlink():
                bad.append((entry, f"broken symlink (to {os.readlink(entry)})"))
            else:
                bad.append((entry, f"cannot be read ({error.strerror})"))
            continue
        if stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in ancestors:
                bad.append((entry, "symlink loop (a folder inside itself)"))
            else:
                more_files, more_bad = _listing(entry, ancestors | {(info.st_dev, info.st_ino)})
                files += more_files
                bad += more_bad
        elif stat.S_ISREG(info.st_mode):
            files.append(entry)
        else:
            kind = "FIFO" if stat.S_ISFIFO(info.st_mode) else "socket" if stat.S_ISSOCK(info.st_mode) else "device"
            bad.append((entry, f"not a regular file ({kind}; not opened)"))
    return files, bad


def list_files(folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    top = folder.stat()
    return _listing(folder, frozenset({(top.st_dev, top.st_ino)}))


def class_folders(folder: Path) -> list[str]:
    """The class names under `folder`: its visible subfolders (symlinks followed), sorted."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())


def read_header(path: Path) -> tuple[str, str]:
    """(the image's mode, "") from its header, or ("", why it is not a usable image)."""
    try:
        with Image.open(path) as image:
            (width, height), mode = image.size, image.mode
    except Image.DecompressionBombError as error:
        return "", f"over Pillow's decompression-bomb limit ({error})"
    except UnidentifiedImageError:
        return "", "not an image (Pillow does not know its format)"
    except Exception as error:  # OSError (truncated headers), SyntaxError and ValueError (malformed ones)...
        first_line = (str(error).strip().splitlines() or [""])[0][:120]
        return "", f"not an image Pillow can read ({type(error).__name__}: {first_line})"
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        return (
            "",
            f"over Pillow's decompression-bomb limit ({width}x{height} pixels, more than {Image.MAX_IMAGE_PIXELS})",
        )
    return mode, ""


def read_headers(paths: list[Path]) -> list[tuple[str, str]]:
    """`read_header` of each path, in threads (the reads wait on the disk, not on Python). Pillow's
    warning for images over its limit is silenced: they are reported as problems instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return in_threads(read_header, paths)


def decode_image(path: Path, channels: int, size: int, resize: str = "stretch") -> np.ndarray:
    """uint8 (C, size, size): the image converted to grey or RGB and resized (bilinear), as
    scripts/predict.py converts an image for a model trained on it; resize="shorter_side"
    keeps the aspect (see `square`)."""
    with Image.open(path) as image:
        image = square(image.convert("L" if channels == 1 else "RGB"), size, resize)
        pixels = np.asarray(image, dtype=np.uint8)
    return np.ascontiguousarray(pixels[None] if channels == 1 else pixels.transpose(2, 0, 1))  # a writable copy


def square(image: Image.Image, size: int, resize: str) -> Image.Image:
    """`image` as size x size: stretched, or (the paper's "rescaled the image such that the
    shorter side was of length 256, and then cropped out the central 256x256 patch") its
    shorter side resized to `size` and the central square cut (offsets rounded down)."""
    if resize == "stretch":
        return image.resize((size, size), Image.BILINEAR)
    width, height = image.size
    scale = size / min(width, height)
    width, height = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (width - size) // 2, (height - size) // 2
    return image.resize((width, height), Image.BILINEAR).crop((left, top, left + size, top + size))


@dataclass
class FolderScan:
    """What the scan found: the files of each split folder with their labels, and the problems."""

    root: Path
    split_folders: dict[str, Path]  # the split folders found: train (always), val and test if present
    class_names: list[str]
    files: dict[str, list[tuple[Path, int]]] = field(default_factory=dict)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    empty_classes: list[Path] = field(default_factory=list)
    class_differences: list[str] = field(default_factory=list)
    modes: Counter = field(default_factory=Counter)
    undecodable: set[Path] = field(default_factory=set)  # good headers, bad data: found when decoded (also in `bad`)

    @property
    def problems(self) -> int:
        return len(self.bad) + len(self.empty_classes) + len(self.class_differences)

    def summary(self, shown: int = 10) -> str:
        counts = {name: sum(path not in self.undecodable for path, _ in files) for name, files in self.files.items()}
        images = sum(counts.values())
        where = ", ".join(f"{name}/ {count}" for name, count in counts.items())
        if self.split_folders["train"] == self.root:
            where = "in class folders"
        modes = ", ".join(f"{mode} {count}" for mode, count in self.modes.most_common())
        lines = [f"{self.root}: {images} images ({where}), {len(self.class_names)} classes; modes: {modes or 'none'}"]
        if self.bad:
            lines.append(
                f"{len(self.bad)} unreadable file{'s' if len(self.bad) != 1 else ''} (skipped unless data.on_bad_file=error):"
            )
            lines += [f"  {path}: {reason}" for path, reason in self.bad[:shown]]
            if len(self.bad) > shown:
                lines.append(f"  ... and {len(self.bad) - shown} more")
        lines += [
            f"empty class folder (a class no image teaches; add images or remove it): {folder}"
            for folder in self.empty_classes
        ]
        lines += self.class_differences
        return "\n".join(lines)


def scan_folder(root: Path, class_names: Sequence[str]) -> FolderScan:
    """List and check every file of `root` (see the module docstring); labels follow `class_names`."""
    split_folders = {"train": root}
    if (root / "train").is_dir():
        split_folders = {name: root / name for name in ("train", "val", "test") if (root / name).is_dir()}
    scan = FolderScan(root, split_folders, list(class_names))
    for split, folder in split_folders.items():
        scan.files[split] = []
        found = class_folders(folder)
        if split != "train":
            missing, extra = sorted(set(class_names) - set(found)), sorted(set(found) - set(class_names))
            if extra:
                scan.class_differences.append(f"{split}/ has classes that train/ lacks, left out: {', '.join(extra)}")
            if missing:
                scan.class_differences.append(f"{split}/ has no folder for: {', '.join(missing)}")
        listed = []
        for label, name in enumerate(class_names):
            if name in found:
                files, bad = list_files(folder / name)
                scan.bad += bad
                listed.append((folder / name, label, files))
        headers = iter(read_headers([path for _, _, files in listed for path in files]))
        for class_folder, label, files in listed:
            readable = 0
            for path in files:
                mode, problem = next(headers)
                if problem:
                    scan.bad.append((path, problem))
                    continue
                scan.modes[mode] += 1
                scan.files[split].append((path, label))
                readable += 1
            if not readable:
                scan.empty_classes.append(class_folder)
    if not any(scan.files.values()):
        raise ClassicCNNsError(f"{root} holds no readable images:\n{scan.summary()}")
    return scan


def hold_out(
    files: list[tuple[Path, int]], fractions: Sequence[float], seed: int
) -> tuple[list[tuple[Path, int]], ...]:
    """Split `files` into the kept rest and one part per fraction, class by class (each class
    gives round(fraction x its images) to each part), drawn with `seed`; the result depends on
    the set of files, not on the order they were found in."""
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for item in sorted(files):
        by_class.setdefault(item[1], []).append(item)
    parts: list[list[tuple[Path, int]]] = [[] for _ in range(len(fractions) + 1)]
    for label in sorted(by_class):
        items = by_class[label]
        order = torch.randperm(len(items), generator=generator).tolist()
        start = 0
        for part, fraction in enumerate(fractions, start=1):
            count = int(len(items) * fraction + 0.5)
            parts[part] += [items[i] for i in order[start : start + count]]
            start += count
        parts[0] += [items[i] for i in order[start:]]
    return tuple(parts)


class FolderImages(Dataset):
    """A split decoded in the DataLoader's workers, every epoch (`decode=stream`). An image that
    cannot be decoded gives label -1, and the module leaves it out of its batch (or, with
    on_bad_file=error, stops with its path)."""

    def __init__(
        self, files: list[tuple[Path, int]], channels: int, size: int, on_bad_file: str, resize: str = "stretch"
    ) -> None:
        self.files, self.channels, self.size, self.on_bad_file, self.resize = files, channels, size, on_bad_file, resize

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        path, label = self.files[index]
        try:
            return torch.from_numpy(decode_image(path, self.channels, self.size, self.resize)), label, ""
        except Exception as error:
            if self.on_bad_file == "error":
                raise ClassicCNNsError(f"{path} cannot be decoded ({type(error).__name__}: {error})") from None
            return (
                torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8),
                -1,
                f"{path}: {type(error).__name__}",
            )

    @property
    def images(self) -> "_Decoded":
        """`images[:n]`: the first n images decoded, for code that looks at a few of a split's images."""
        return _Decoded(self)


class _Decoded:
    def __init__(self, dataset: FolderImages) -> None:
        self.dataset = dataset

    def __getitem__(self, index: slice) -> torch.Tensor:
        return torch.stack([self.dataset[i][0] for i in range(len(self.dataset))[index]])


class EncodedFolderImages(FolderImages):
    """A split streamed with `decode_on=device`: the workers read each JPEG's bytes and leave
    its decoding to the training device (`decode_jpeg` in batches: nvJPEG on a GPU); other
    formats, and JPEGs whose header Pillow cannot read back, are decoded in the workers as
    before. A batch is one `EncodedBatch`, assembled in the worker."""

    def __getitems__(self, indices: list[int]) -> "EncodedBatch":
        items, labels, problems = [], [], []
        for index in indices:
            path, label = self.files[index]
            encoded = jpeg_bytes(path)
            if encoded is None:  # not a JPEG, or unreadable: the workers' way, which reports a problem
                encoded, label, problem = self[index]
            else:
                problem = ""
            items.append(encoded)
            labels.append(label)
            problems.append(problem)
        paths = [self.files[index][0] for index in indices]
        return EncodedBatch(items, torch.tensor(labels, dtype=torch.int64), problems, paths)


def jpeg_bytes(path: Path) -> torch.Tensor | None:
    """A JPEG file's bytes as a 1-D uint8 tensor; None for other files and unreadable ones."""
    try:
        with open(path, "rb") as file:
            start = file.read(3)
            return torch.frombuffer(bytearray(start + file.read()), dtype=torch.uint8) if start == JPEG else None
    except OSError:
        return None


@dataclass
class EncodedBatch:
    """Images (a JPEG's bytes: 1-D, or decoded: C x S x S uint8), labels, problems, and the
    files they came from (for the message about a JPEG that fails to decode)."""

    items: list[torch.Tensor]
    labels: torch.Tensor
    problems: list[str]
    paths: list[Path]


def decode_on(batch: EncodedBatch, device: torch.device, channels: int, size: int, resize: str):
    """(images, labels, problems) with every JPEG of `batch` decoded on `device` (one
    `decode_jpeg` call for the batch; where it fails, one per image to find the bad one) and
    resized there as `square` does; the images stacked on `device`."""
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    encoded = [i for i, item in enumerate(batch.items) if item.dim() == 1]
    labels, problems = batch.labels.clone(), list(batch.problems)
    try:
        decoded = decode_jpeg([batch.items[i] for i in encoded], mode=mode, device=device) if encoded else []
    except RuntimeError:
        decoded = []
        for i in encoded:
            try:
                decoded.append(decode_jpeg(batch.items[i], mode=mode, device=device))
            except RuntimeError as error:
                decoded.append(None)
                labels[i] = -1
                problems[i] = f"{batch.paths[i]}: {type(error).__name__}"
    images = [item.to(device) for item in batch.items]
    for i, image in zip(encoded, decoded):
        images[i] = (
            torch.zeros(channels, size, size, dtype=torch.uint8, device=device)
            if image is None
            else square_tensor(image, size, resize)
        )
    return torch.stack(images), labels.to(device), problems


def square_tensor(image: torch.Tensor, size: int, resize: str) -> torch.Tensor:
    """`square` for a decoded C x H x W uint8 tensor, on its device (antialiased bilinear)."""
    if resize == "stretch":
        return TF.resize(image, [size, size], antialias=True)
    height, width = image.shape[-2:]
    scale = size / min(width, height)
    width, height = max(size, round(width * scale)), max(size, round(height * scale))
    top, left = (height - size) // 2, (width - size) // 2
    return TF.resize(image, [height, width], antialias=True)[..., top : top + size, left : left + size]


@rank_zero_only
def say(text: str) -> None:
    """Print once (rank 0 under DDP), before any progress bar: what the scan found is for the user."""
    print(text, flush=True)


def _available_memory() -> int:
    """Free physical memory in bytes (Linux); 4 GiB where the system does not say."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


class ImageFolderDataModule(ImageDataModule):
    """A folder of class folders (see the module docstring). `channels`: 1 (grey) or 3 (RGB);
    null: 1 when the first images are all grey, else 3. `val_fraction`/`test_fraction`: what
    each class gives to validation and test where the folder has no val/ (test/). `resize`: see
    RESIZE. `crop_size`: the patches fed to the network (image_size when null), see
    transforms.BatchTransform. `download` is every data module's argument; a folder has nothing
    to download."""

    name = "image folder"

    def __init__(
        self,
        data_dir: str,
        image_size: int = 32,
        channels: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.25,),
        crop_padding: int = 0,
        horizontal_flip: bool = True,
        decode: str = "auto",
        cache_dir: str = "data/folder_cache",
        decode_on: str = "workers",
        on_bad_file: str = "skip",
        download: bool = False,
        placement: str = "auto",
        num_workers: int = 0,
        seed: int = 0,
        scale: str = "standard",
        resize: str = "stretch",
        crop_size: int | None = None,
        test_crops: str = "center",
        lighting: float = 0.0,
    ) -> None:
        if resize not in RESIZE:
            raise ClassicCNNsError(f"data.resize={resize!r} is not allowed: use one of {', '.join(RESIZE)}")
        if decode not in DECODE:
            raise ClassicCNNsError(f"data.decode={decode!r} is not allowed: use one of {', '.join(DECODE)}")
        if decode_on not in DECODE_ON:
            raise ClassicCNNsError(f"data.decode_on={decode_on!r} is not allowed: use one of {', '.join(DECODE_ON)}")
        if decode_on == "device" and decode in ("once", "cache"):
            raise ClassicCNNsError(
                f"data.decode_on=device decodes the batches of a streamed folder; with data.decode={decode} every "
                "image is decoded once before training: use data.decode=stream (or auto), or leave decode_on=workers"
            )
        if on_bad_file not in ON_BAD_FILE:
            raise ClassicCNNsError(
                f"data.on_bad_file={on_bad_file!r} is not allowed: use one of {', '.join(ON_BAD_FILE)}"
            )
        if not isinstance(image_size, int) or image_size < 1:
            raise ClassicCNNsError(
                f"data.image_size={image_size!r} is not allowed: every image is resized to it, use an integer >= 1"
            )
        if channels not in (None, 1, 3):
            raise ClassicCNNsError(
                f"data.channels={channels!r} is not allowed: use 1 (grey), 3 (RGB) or null (detected)"
            )
        for key, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 <= fraction < 1:
                raise ClassicCNNsError(f"data.{key}={fraction!r} is not allowed: use a number in [0, 1)")
        self.configured_channels, self.val_fraction, self.test_fraction = channels, val_fraction, test_fraction
        self.decode, self.on_bad_file, self.resize = decode, on_bad_file, resize
        self.cache_dir = Path(cache_dir).expanduser()
        self.decode_on = decode_on
        super().__init__(
            data_dir,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            split_seed=split_seed,
            mean=mean,
            std=std,
            image_size=image_size,
            crop_padding=crop_padding,
            horizontal_flip=horizontal_flip,
            download=download,
            placement=placement,
            num_workers=num_workers,
            seed=seed,
            scale=scale,
            crop_size=crop_size,
            test_crops=test_crops,
            lighting=lighting,
        )
        self.scan: FolderScan | None = None
        self.streaming = False
        self.skipped: set[str] = set()  # streamed images that could not be decoded

    @property
    def native_size(self) -> tuple[int, int]:
        return (self.image_size, self.image_size)  # every image is resized to it when decoded

    @property
    def input_size(self) -> tuple[int, int]:
        size = self.crop_size or self.image_size  # image_size is the decoded size, not a resize on the device
        return (size, size)

    @property
    def folder(self) -> Path:
        return self.data_dir

    @property
    def train_folder(self) -> Path:
        return self.data_dir / "train" if (self.data_dir / "train").is_dir() else self.data_dir

    @cached_property
    def class_names(self) -> list[str]:
        self._check_folder()
        names = class_folders(self.train_folder)
        if not names:
            raise ClassicCNNsError(
                f"{self.train_folder} has no class folders: put each class's images in a folder named after "
                f"the class, {self.data_dir}/CLASS/*.jpg or {self.data_dir}/train/CLASS/*.jpg (+ val/CLASS/*)"
            )
        return names

    @cached_property
    def channels(self) -> int:
        """The configured channels, or 1 when the first images of each class are all grey."""
        channels = self.configured_channels or self._detect_channels()
        if self.mean.shape[1] not in (1, channels):
            raise ClassicCNNsError(
                f"data.mean has {self.mean.shape[1]} values but the images of {self.data_dir} have {channels} channel(s): "
                f"use 1 value or {channels}, or set data.channels"
            )
        return channels

    def _detect_channels(self) -> int:
        modes = []
        per_class = max(1, CHANNELS_SAMPLE // len(self.class_names))
        for name in self.class_names:
            sample = list_files(self.train_folder / name)[0][:per_class]
            modes += [mode for mode, problem in read_headers(sample) if not problem]  # the scan reports the others
        return 1 if modes and all(mode in GREY_MODES for mode in modes) else 3

    def _check_folder(self) -> None:
        if not self.data_dir.is_dir():
            raise DatasetNotFoundError(
                f"the image folder {self.data_dir} does not exist: point data.data_dir=DIR at a folder of class "
                "folders (DIR/CLASS/*.jpg, or DIR/train/CLASS/* and DIR/val/CLASS/*)"
            )

    def prepare_data(self) -> None:
        """Nothing to download: the folder must exist."""
        self._check_folder()

    def split_files(self, scan: FolderScan) -> dict[str, list[tuple[Path, int]]]:
        """The files of train, val and test: the split folders where they exist, else held out of train."""
        files = dict(scan.files)
        held_out = [split for split in ("val", "test") if split not in files]
        if held_out == ["test"]:  # train/ and val/: ImageNet's layout, reported on val/
            files["test"] = files["val"]
        elif held_out:
            fractions = [getattr(self, f"{split}_fraction") for split in held_out]
            files["train"], *parts = hold_out(files["train"], fractions, self.split_seed)
            files |= dict(zip(held_out, parts))
        return files

    def setup(self, stage: str | None = None) -> None:
        """Scan the folder (once), decode the splits `stage` needs into memory (or prepare them
        for streaming), then report what was found: one summary, decoding failures included."""
        first = self.scan is None
        if first:
            self.scan = scan_folder(self.data_dir, self.class_names)
        files = self.split_files(self.scan)
        if first:
            self.streaming = self._streams(files)
        for split in ("train", "val", "test") if stage in (None, "fit", "validate") else ("test",):
            if split in self.splits:
                continue
            if not files[split]:
                raise ClassicCNNsError(f"{self.data_dir}: no {split} images ({self._split_source(split)})")
            if self.streaming:
                streamed = EncodedFolderImages if self.decode_on == "device" else FolderImages
                self.splits[split] = streamed(
                    files[split], self.channels, self.image_size, self.on_bad_file, self.resize
                )
            elif split == "test" and files["test"] is files["val"] and "val" in self.splits:
                self.splits["test"] = self.splits["val"]  # no test/: the test metrics are val/'s
            else:
                decode = self._from_cache if self.decode == "cache" else self._decode_once
                self.splits[split], failed = decode(split, files[split])
                self.scan.bad += failed
                self.scan.undecodable |= {path for path, _ in failed}
        if first:
            self._report(self.scan)

    def _split_source(self, split: str) -> str:
        if split in self.scan.split_folders:
            return f"{split}/ holds no readable image"
        return f"data.{split}_fraction={getattr(self, f'{split}_fraction')} of each class rounds to none: raise it"

    def _streams(self, files: dict[str, list]) -> bool:
        if self.decode != "auto":
            return self.decode == "stream"
        images = len({path for split in files.values() for path, _ in split})
        return images * self.channels * self.image_size**2 > _available_memory() / 4

    def _report(self, scan: FolderScan) -> None:
        channels = "data.channels" if self.configured_channels else "detected; data.channels=1 or 3 to choose"
        how = {
            "cache": f"decoded once into {self.cache_dir}, read from there",
            "stream": "streamed: decoded every epoch"
            + (
                ", JPEGs on the training device (data.decode_on=device)"
                if self.decode_on == "device"
                else " (data.decode=cache: once, into data.cache_dir)"
            ),
        }.get("stream" if self.streaming else self.decode, "decoded once, held in memory")
        say(
            f"{scan.summary()}\nchannels: {self.channels} ({channels}); every image resized to "
            f"{self.image_size}x{self.image_size}, {how}"
        )
        if scan.problems and self.on_bad_file == "error":
            raise ClassicCNNsError(
                f"{self.data_dir}: {scan.problems} problem(s) found (above); fix them or set data.on_bad_file=skip"
            )

    def _decode_files(self, paths: list[Path]) -> list[np.ndarray | str]:
        """Each image decoded (threads: Pillow decodes outside the GIL), or why it failed."""

        def one(path: Path) -> np.ndarray | str:
            try:
                return decode_image(path, self.channels, self.image_size, self.resize)
            except Exception as error:
                return f"cannot be decoded ({type(error).__name__}: {error})"

        return in_threads(one, paths)

    def _decode_once(self, split: str, files: list[tuple[Path, int]]) -> tuple[TensorBatches, list[tuple[Path, str]]]:
        """Every image of a split decoded into memory, and the ones that fail only now
        (truncated, corrupt data after a good header), with why."""
        decoded = self._decode_files([path for path, _ in files])
        failed = [(path, result) for (path, _), result in zip(files, decoded) if isinstance(result, str)]
        kept = [(result, label) for (_, label), result in zip(files, decoded) if not isinstance(result, str)]
        size = (self.channels, self.image_size, self.image_size)
        images = np.stack([pixels for pixels, _ in kept]) if kept else np.zeros((0, *size), np.uint8)
        labels = torch.tensor([label for _, label in kept], dtype=torch.int64)
        return TensorBatches(torch.from_numpy(images), labels), failed

    def _from_cache(self, split: str, files: list[tuple[Path, int]]) -> tuple[TensorBatches, list[tuple[Path, str]]]:
        """The split from its cache entry, decoded into one first where there is none (or the
        one there is not valid); the failed files are the ones that failed when it was written."""
        entry = entry_for(self.cache_dir, self.data_dir, split, files, self.channels, self.image_size, self.resize)
        shape = (self.channels, self.image_size, self.image_size)
        cached = read_entry(entry, len(files), shape, self.num_classes)
        if cached is None:
            say(f"decoding the {len(files)} {split} images into the cache {entry}")
            shutil.rmtree(entry, ignore_errors=True)  # not what write_entry writes: replaced
            try:
                write_entry(entry, files, shape, self._decode_files)
            except OSError as error:
                raise ClassicCNNsError(
                    f"cannot write the image cache in {self.cache_dir} ({error.strerror}): "
                    "set data.cache_dir to a writable folder with room for it, or use data.decode=stream"
                ) from None
            remove_other_entries(entry)
            cached = read_entry(entry, len(files), shape, self.num_classes)
            if cached is None:
                raise ClassicCNNsError(f"the image cache {entry} was written but cannot be read back")
        return cached

    def resolve_placement(self, device: torch.device) -> str:
        return "dataloader" if self.streaming else super().resolve_placement(device)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """decode_on=device: the batch's JPEGs decoded on the training device (decode_jpeg takes
        the bytes from host memory, so this runs before the transfer)."""
        if isinstance(batch, EncodedBatch):
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            return self.decode_batch(batch, device)
        return batch

    def decode_batch(self, batch: EncodedBatch, device: torch.device):
        """(images, labels, problems) of an EncodedBatch, its JPEGs decoded on `device`."""
        images, labels, problems = decode_on(batch, device, self.channels, self.image_size, self.resize)
        if self.on_bad_file == "error" and (bad := [problem for problem in problems if problem]):
            raise ClassicCNNsError(f"{bad[0]}: cannot be decoded")
        return images, labels, problems

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if len(batch) == 3:  # streamed: leave out the images that could not be decoded
            images, labels, problems = batch
            if any(problems):
                for problem in set(problems) - self.skipped - {""}:
                    self.skipped.add(problem)
                    say(f"skipped an image that cannot be decoded ({problem}); {len(self.skipped)} so far")
                good = labels >= 0
                images, labels = images[good], labels[good]
            batch = (images, labels)
        return super().on_after_batch_transfer(batch, dataloader_idx)
