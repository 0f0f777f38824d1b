"""The same model, optimizer, schedule and epochs timed three ways (scripts/benchmark.py):

- "seeds loop": a plain PyTorch loop fed the way the seeds feed it: a DataLoader over one
  PIL image at a time through torchvision transforms (the same augmentation as the config);
- "resident loop": the same plain loop on the data module's device-resident batches, with its
  batched transforms;
- "lightning": this project's path, `train(cfg)`, Lightning and Hydra config included.

The two loops share the training step (precision, channels_last, compile), so (a) vs (b)
measures the data pipeline and (b) vs (c) what Lightning adds. Every way validates after each
epoch with the clock stopped: the seconds are training seconds, and "time to target" is the
training time until the first epoch whose validation accuracy reached the target.
"""

import contextlib
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.functional import to_pil_image

from classic_cnns import ClassicCNNsError
from classic_cnns.data import ImageDataModule

WAYS = ("seeds loop", "resident loop", "lightning")


@dataclass
class Result:
    way: str
    epoch_seconds: list[float] = field(default_factory=list)  # training time of each epoch
    val_acc: list[float] = field(default_factory=list)  # after each epoch
    images_per_epoch: int = 0
    test_acc: float = math.nan
    peak_memory_mib: float = math.nan
    fit_seconds: float = math.nan  # lightning only: train.py's whole fit (validation, checkpoints, ...)

    @property
    def steady_epoch_seconds(self) -> float:
        """The median epoch after the first (which also pays for cuDNN autotuning and compiling)."""
        return statistics.median(self.epoch_seconds[1:] or self.epoch_seconds)

    @property
    def images_per_second(self) -> float:
        return self.images_per_epoch / self.steady_epoch_seconds

    def time_to(self, target: float) -> tuple[int, float] | None:
        """(epochs, training seconds) until the validation accuracy first reached `target`."""
        for epoch, accuracy in enumerate(self.val_acc):
            if accuracy >= target:
                return epoch + 1, sum(self.epoch_seconds[: epoch + 1])
        return None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device(cfg: DictConfig) -> torch.device:
    if cfg.trainer.accelerator == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def _autocast(cfg: DictConfig, device: torch.device):
    precision = str(cfg.trainer.precision)
    if precision == "bf16-mixed":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision in ("32-true", "32"):
        return contextlib.nullcontext()
    raise ClassicCNNsError(f"the plain loops run trainer.precision=bf16-mixed or 32-true, not {precision}")


class PILImages(Dataset):
    """One image at a time, as a PIL image through torchvision transforms (the seeds' pipeline)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(to_pil_image(self.images[index])), int(self.labels[index])


def seeds_transform(datamodule: ImageDataModule) -> T.Compose:
    """torchvision transforms doing what `datamodule.transform(train=True)` does, per image."""
    steps: list[Callable] = []
    if datamodule.pad_to:
        h, w = datamodule.native_size
        top, left = (datamodule.pad_to - h) // 2, (datamodule.pad_to - w) // 2
        steps.append(T.Pad((left, top, datamodule.pad_to - w - left, datamodule.pad_to - h - top)))
    size = datamodule.pad_to or datamodule.native_size[0]
    if datamodule.crop_padding:
        steps.append(T.RandomCrop(size, padding=datamodule.crop_padding))
    if datamodule.horizontal_flip:
        steps.append(T.RandomHorizontalFlip())
    if datamodule.input_size != (size, size):
        steps.append(T.Resize(datamodule.input_size, antialias=True))
    mean, std = datamodule.mean.flatten().tolist(), datamodule.std.flatten().tolist()
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])


def _build(cfg: DictConfig, datamodule: ImageDataModule, device: torch.device, steps: int):
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)  # as train() does
    net = instantiate(
        cfg.model, in_channels=datamodule.channels, num_classes=datamodule.num_classes, input_size=datamodule.input_size
    ).to(device)
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    if channels_last:
        net.to(memory_format=torch.channels_last)
    if cfg.compile:
        net.compile(**OmegaConf.to_container(cfg.compile_options))
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    scheduler = instantiate(cfg.scheduler)(optimizer=optimizer, total_steps=steps) if cfg.get("scheduler") else None
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return net, optimizer, scheduler, memory_format


@torch.no_grad()
def accuracy(net: nn.Module, datamodule: ImageDataModule, split: str, device: torch.device, cfg: DictConfig, memory_format) -> float:
    net.eval()
    correct = total = 0
    with _autocast(cfg, device):
        for images, labels in datamodule.device_batches(split, device, shuffle=False):
            x = datamodule.transform(images, train=False).contiguous(memory_format=memory_format)
            correct += (net(x).argmax(1) == labels).sum()
            total += len(labels)
    net.train()
    return float(correct) / total


def plain_loop(cfg: DictConfig, datamodule: ImageDataModule, resident: bool, epochs: int, max_batches: int | None, workers: int = 0) -> Result:
    """(a) with resident=False, (b) with resident=True."""
    device = _device(cfg)
    L.seed_everything(cfg.seed, workers=True)
    if resident:
        batches = datamodule.device_batches("train", device, shuffle=True)
    else:
        train = datamodule.splits["train"]
        batches = DataLoader(
            PILImages(train.images, train.labels, seeds_transform(datamodule)),
            batch_size=datamodule.batch_size,
            shuffle=True,
            num_workers=workers,
            pin_memory=device.type == "cuda",
        )
    steps = min(len(batches), max_batches or len(batches))
    net, optimizer, scheduler, memory_format = _build(cfg, datamodule, device, steps * epochs)
    result = Result(WAYS[1] if resident else WAYS[0])
    _reset_peak_memory(device)
    for _ in range(epochs):
        _synchronize(device)
        start, images_seen = time.perf_counter(), 0
        for step, (images, labels) in enumerate(batches):
            if step == steps:
                break
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if resident:
                images = datamodule.transform(images, train=True)
            images = images.contiguous(memory_format=memory_format)
            with _autocast(cfg, device):
                loss = F.cross_entropy(net(images), labels, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            images_seen += len(labels)
        _synchronize(device)
        result.epoch_seconds.append(time.perf_counter() - start)
        result.images_per_epoch = images_seen
        result.val_acc.append(accuracy(net, datamodule, "val", device, cfg, memory_format))
    result.test_acc = accuracy(net, datamodule, "test", device, cfg, memory_format)
    result.peak_memory_mib = _peak_memory(device)
    return result


class EpochTimer(L.Callback):
    """Training seconds (validation excluded) and validation accuracy of every epoch, as JSON."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.epoch_seconds: list[float] = []
        self.val_acc: list[float] = []
        self.images = 0
        self._start: float | None = None

    def _stop(self, trainer) -> None:
        if self._start is not None:
            _synchronize(trainer.strategy.root_device)
            self.epoch_seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _synchronize(trainer.strategy.root_device)
        self._start, self.images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += len(batch[1])

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.training and not trainer.sanity_checking:
            self._stop(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop(trainer)
        self.val_acc.append(float(trainer.callback_metrics.get("val/acc", math.nan)))

    def on_fit_end(self, trainer, pl_module) -> None:
        record = {"epoch_seconds": self.epoch_seconds, "val_acc": self.val_acc, "images_per_epoch": self.images}
        self.path.write_text(json.dumps(record))


def lightning_path(cfg: DictConfig) -> Result:
    """(c): train(cfg) with an EpochTimer added; the test accuracy is train.py's own."""
    from classic_cnns.train import train

    device = _device(cfg)
    timings = Path(cfg.paths.output_dir) / "epoch_times.json"
    with open_dict(cfg):
        cfg.callbacks = cfg.get("callbacks") or {}
        cfg.callbacks.epoch_timer = {"_target_": f"{__name__}.EpochTimer", "path": str(timings)}
    _reset_peak_memory(device)
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    record = json.loads(timings.read_text())
    return Result(
        WAYS[2],
        epoch_seconds=record["epoch_seconds"],
        val_acc=record["val_acc"],
        images_per_epoch=record["images_per_epoch"],
        test_acc=metrics["test/acc"],
        peak_memory_mib=_peak_memory(device),
        fit_seconds=metrics["fit_seconds"],
    )


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan


def machine(cfg: DictConfig) -> str:
    device = _device(cfg)
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return f"{what}; torch {torch.__version__}, lightning {L.__version__}, precision {cfg.trainer.precision}"


def to_markdown(results: list[Result], target: float | None) -> str:
    """One row per way, with the ratios to the resident loop."""
    by_way = {r.way: r for r in results}
    base = by_way.get(WAYS[1])
    head = ["way", "images/s", "s/epoch", "train s", f"epochs, s to val {target}" if target else None,
            "final val acc", "test acc", "peak GPU MiB", "images/s vs resident loop"]
    head = [h for h in head if h]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        reached = r.time_to(target) if target else None
        row = [
            r.way,
            f"{r.images_per_second:,.0f}",
            f"{r.steady_epoch_seconds:.3f}",
            f"{sum(r.epoch_seconds):.2f}",
            *([f"{reached[0]}, {reached[1]:.2f}" if reached else "not reached"] if target else []),
            f"{r.val_acc[-1]:.4f}",
            f"{r.test_acc:.4f}",
            "n/a" if math.isnan(r.peak_memory_mib) else f"{r.peak_memory_mib:,.0f}",
            f"{r.images_per_second / base.images_per_second:.2f}x" if base else "",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def bar_chart(results: list[Result], title: str, path: Path) -> None:
    from classic_cnns.plotting import bars_figure, save

    save(bars_figure([r.way for r in results], [r.images_per_second for r in results], "training images/s (steady epochs)", title), path, dpi=120)


def write_section(doc: Path, name: str, body: str) -> None:
    """Put `body` between this benchmark's markers in `doc`, replacing an earlier run of it."""
    start, end = f"<!-- benchmark: {name} -->", f"<!-- end of benchmark: {name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def section(name: str, results: list[Result], cfg: DictConfig, command: str, target: float | None, chart: str) -> str:
    lightning = next((r for r in results if r.way == WAYS[2]), None)
    notes = [
        f"### {name}",
        "",
        f"Measured {date.today().isoformat()} on {machine(cfg)}.",
        "",
        f"Command: `{command}`",
        "",
        to_markdown(results, target),
        "",
        "s/epoch is the median training epoch after the first; train s sums all epochs; "
        "validation runs after every epoch with the clock stopped.",
    ]
    if lightning is not None and not math.isnan(lightning.fit_seconds):
        notes.append(f"The whole `train.py` fit of the lightning way took {lightning.fit_seconds:.2f} s "
                     "(everything in trainer.fit: validation, checkpoints, logging).")
    notes += ["", f"![{name}]({chart})"]
    return "\n".join(notes)


def results_json(results: list[Result]) -> str:
    return json.dumps([asdict(r) | {"images_per_second": r.images_per_second} for r in results], indent=2)
