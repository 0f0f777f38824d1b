"""Images/s of the whole input pipeline of a training epoch on a folder of JPEGs (issue 25 item 6).

Three ways, the same folder, workers and batch size, one epoch each, interleaved `--repeats` times:
- project, streamed: `data=imagefolder data.decode=stream`: DataLoader workers read, decode and
  resize each image to 256x256 (shorter side to 256, central square), the main process takes each
  batch through the batched transform (random 224x224 crops, flips, float, normalization);
- project, cached: `data.decode=cache`: the 256x256 images decoded once into a uint8 file
  (before the repeats; how long that took is reported), each epoch gathers its batches from
  that file's memory map and takes them through the same batched transform;
- project, decoded by the device: `data.decode_on=device`: the workers only read each JPEG's
  bytes, the main process decodes each batch with torchvision's `decode_jpeg` on the training
  device (here the CPU; on a GPU, nvJPEG: scripts/gpu_acceptance.py measures it there) and
  resizes it there, then the same batched transform;
- torchvision: `datasets.ImageFolder` + `transforms.v2` per image in the workers (Resize(256),
  RandomCrop(224), RandomHorizontalFlip, PILToTensor, ToDtype, Normalize), torch's collate.
An epoch is timed from creating its DataLoader (worker start included) to its last normalized
batch; the folder's scan (project) and listing (torchvision) before it are not timed. The main
process runs torch on `--main-threads` threads (default 1: the workers take one core each, and
on a small loaded machine more intra-op threads in the main process only fight them).

    python scripts/folder_throughput.py                      # 2,000 JPEGs of 400x300 in a temp dir
    python scripts/folder_throughput.py --dir /tmp/jpegs --workers 2 --batch-size 128 --repeats 5

The folder (DIR/train/CLASS/*.jpg, a few DIR/val/ images the project's module wants) is
generated once and reused when DIR already holds it.
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from classic_cnns.data import ImageFolderDataModule
from classic_cnns.data.folder import EncodedBatch

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as torchvision's reference scripts
SIZE, CROP = 256, 224
CLASSES = 4


def make_folder(root: Path, images: int, width: int, height: int) -> None:
    """`images` photo-like JPEGs (smooth colour fields plus grain, quality 90) in CLASSES class
    folders under root/train, 2 per class under root/val; skipped when root already holds them."""
    done = root / f".generated-{images}-{width}x{height}"
    if done.exists():
        return
    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("val", 2 * CLASSES)):
        for i in range(count):
            folder = root / split / f"class{i % CLASSES}"
            folder.mkdir(parents=True, exist_ok=True)
            coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
                (width, height), Image.BICUBIC
            )
            grain = rng.normal(0, 12, (height, width, 3))
            pixels = np.clip(np.asarray(coarse, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    done.touch()


def project_module(
    root: Path, workers: int, batch_size: int, decode: str, decode_on: str = "workers"
) -> ImageFolderDataModule:
    return ImageFolderDataModule(
        str(root),
        image_size=SIZE,
        resize="shorter_side",
        crop_size=CROP,
        channels=3,
        mean=MEAN,
        std=STD,
        batch_size=batch_size,
        decode=decode,
        cache_dir=str(root / "cache"),
        decode_on=decode_on,
        num_workers=workers,
        horizontal_flip=True,
    )


def project_epoch(
    root: Path, workers: int, batch_size: int, decode: str = "stream", decode_on: str = "workers", device: str = "cpu"
) -> tuple[int, float]:
    """One epoch's images and seconds: each batch decoded (if not yet), moved to `device` and
    through the batched transform there."""
    device = torch.device(device)
    data = project_module(root, workers, batch_size, decode, decode_on)
    data.setup("fit")  # the scan (and a cache's reading of its entry): not timed
    start, images = time.perf_counter(), 0
    for batch in data.train_dataloader():
        pixels = data.decode_batch(batch, device)[0] if isinstance(batch, EncodedBatch) else batch[0].to(device)
        images += len(data.transform(pixels, train=True))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images, time.perf_counter() - start


def build_cache(root: Path, workers: int, batch_size: int) -> float:
    """Seconds to scan the folder and decode it into the cache (once, before the repeats)."""
    shutil.rmtree(root / "cache", ignore_errors=True)
    start = time.perf_counter()
    project_module(root, workers, batch_size, "cache").setup("fit")
    return time.perf_counter() - start


def torchvision_epoch(root: Path, workers: int, batch_size: int) -> tuple[int, float]:
    transform = v2.Compose(
        [
            v2.Resize(SIZE),
            v2.RandomCrop(CROP),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)  # the listing: not timed
    start, images = time.perf_counter(), 0
    for pixels, _ in DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers):
        images += len(pixels)
    return images, time.perf_counter() - start


WAYS = {
    "project (data=imagefolder, streamed)": project_epoch,
    "project (data=imagefolder, decode=cache)": lambda *args: project_epoch(*args, decode="cache"),
    "project (data=imagefolder, decode_on=device: the CPU)": lambda *args: project_epoch(*args, decode_on="device"),
    "torchvision ImageFolder + transforms.v2": torchvision_epoch,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="the JPEG folder (generated there once); default: a temp dir")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--height", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--main-threads", type=int, default=1, help="torch threads of the main process")
    args = parser.parse_args()
    torch.set_num_threads(args.main_threads)
    with tempfile.TemporaryDirectory(prefix="folder-throughput-") as scratch:
        root = args.dir or Path(scratch)
        make_folder(root, args.images, args.width, args.height)
        for path in root.rglob("*.jpg"):
            path.read_bytes()  # into the page cache: both ways read from memory
        rates: dict[str, list[float]] = {name: [] for name in WAYS}
        load_before = os.getloadavg()
        build_seconds = build_cache(root, args.workers, args.batch_size)
        for _ in range(args.repeats):
            for name, epoch in WAYS.items():
                images, seconds = epoch(root, args.workers, args.batch_size)
                rates[name].append(images / seconds)
        load_after = os.getloadavg()
    print(report(args, rates, load_before, load_after, build_seconds))


def report(args, rates: dict[str, list[float]], load_before, load_after, build_seconds: float) -> str:
    *projects, reference = rates
    lines = [
        f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"machine: {platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"Pillow {PIL.__version__}",
        f"load average (1, 5, 15 min): before {', '.join(f'{x:.1f}' for x in load_before)}; "
        f"after {', '.join(f'{x:.1f}' for x in load_after)}",
        f"command: python {' '.join(sys.argv)}",
        f"{args.images} JPEGs of {args.width}x{args.height}, {args.workers} workers, batch {args.batch_size}, "
        f"{args.main_threads} torch thread(s) in the main process, {args.repeats} interleaved repeats of one epoch each",
        "",
        "| way | images/s, median | min - max |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {statistics.median(r):.0f} | {min(r):.0f} - {max(r):.0f} |" for name, r in rates.items()]
    for name in projects:
        ratios = [a / b for a, b in zip(rates[name], rates[reference])]  # each repeat's pair, run back to back
        lines.append(
            f"| ratio {name} / torchvision (per repeat) | {statistics.median(ratios):.2f} | "
            f"{min(ratios):.2f} - {max(ratios):.2f} |"
        )
    lines.append(f"\nthe cache, written once before the repeats (scan and decode): {build_seconds:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
