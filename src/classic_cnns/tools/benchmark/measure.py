"""The same model, optimizer, schedule and epochs trained and timed three ways:

- "reference loop": a plain PyTorch loop fed the way the reference notebooks feed it: a
  DataLoader over one PIL image at a time through torchvision transforms (the config's augmentation);
- "resident loop": the same plain loop on the data module's device-resident batches, with its
  batched transforms;
- "lightning": this project's path, `train(cfg)`, Lightning and Hydra config included.

The two loops share the training step (precision, channels_last, compile), so (a) vs (b)
measures the data pipeline and (b) vs (c) what Lightning adds. Every way does the same work under
the same process-wide switches (`set_global_switches`, recorded with each run) and validates after
every epoch with its clock stopped: the seconds are training seconds. `measure` runs every way
`repeats` times, interleaved in alternating order (a b c, c b a, ...), so that a drift of the
machine's speed falls on all ways alike.
"""

import contextlib
import copy
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from classic_cnns.randomness import seed_training_stream
from classic_cnns.runs.config_checks import ConfigError, build_network

REFERENCE_LOOP, RESIDENT_LOOP, LIGHTNING = "reference loop", "resident loop", "lightning"
WAYS = (REFERENCE_LOOP, RESIDENT_LOOP, LIGHTNING)
MIN_REPEATS_TO_PUBLISH = 5


@dataclass
class Result:
    """One run of one way."""

    way: str
    repeat: int = 0
    epoch_seconds: list[float] = field(default_factory=list)  # training time of each epoch
    val_acc: list[float] = field(default_factory=list)  # after each epoch
    images_per_epoch: int = 0
    test_acc: float = math.nan
    peak_memory_mib: float = math.nan
    fit_seconds: float = math.nan  # lightning only: train.py's whole fit (validation, checkpoints, ...)
    switches: dict = field(default_factory=dict)  # the process-wide switches while it trained

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


def check_settings(ways: Sequence[str], repeats: int, doc: str | None) -> None:
    """Known ways, and enough repeats for a figure that is published."""
    unknown = [way for way in ways if way not in WAYS]
    if unknown:
        raise ConfigError(f"benchmark.ways has {unknown}: use some of {list(WAYS)}")
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ConfigError(
            f"benchmark.repeats={repeats!r}: use an integer >= 1 ({MIN_REPEATS_TO_PUBLISH} or more to publish)"
        )
    if doc and repeats < MIN_REPEATS_TO_PUBLISH:
        raise ConfigError(
            f"benchmark.repeats={repeats} is too few to publish in {doc}: use benchmark.repeats="
            f"{MIN_REPEATS_TO_PUBLISH} or more, or benchmark.doc=null to write into the run dir only"
        )


def set_global_switches(cfg: DictConfig) -> dict:
    """Set the process-wide switches that Lightning's Trainer sets from `cfg.trainer` (cuDNN
    benchmark mode, deterministic algorithms) and train() from `cfg` (float32 matmul precision),
    so that the plain loops run under the same ones; returns them as `current_switches` does."""
    deterministic = bool(cfg.trainer.get("deterministic"))
    benchmark = cfg.trainer.get("benchmark")
    if benchmark is None:  # Lightning keeps the session's value, off when deterministic
        benchmark = torch.backends.cudnn.benchmark and not deterministic
    torch.backends.cudnn.benchmark = bool(benchmark)
    torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    return current_switches()


def current_switches() -> dict:
    return {
        "cudnn.benchmark": torch.backends.cudnn.benchmark,
        "cudnn.deterministic": torch.backends.cudnn.deterministic,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "detect_anomaly": torch.is_anomaly_enabled(),
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_of(cfg: DictConfig) -> torch.device:
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
    """One image at a time, as a PIL image through torchvision transforms (the reference notebooks' pipeline)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(to_pil_image(self.images[index])), int(self.labels[index])


def reference_transform(datamodule: ImageDataModule) -> T.Compose:
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
    net = build_network(cfg, datamodule).to(device)
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
def accuracy(
    net: nn.Module, datamodule: ImageDataModule, split: str, device: torch.device, cfg: DictConfig, memory_format
) -> float:
    net.eval()
    correct = total = 0
    with _autocast(cfg, device):
        for images, labels in datamodule.device_batches(split, device, shuffle=False):
            x = datamodule.transform(images, train=False).contiguous(memory_format=memory_format)
            correct += (net(x).argmax(1) == labels).sum()
            total += len(labels)
    net.train()
    return float(correct) / total


def plain_loop(
    cfg: DictConfig, datamodule: ImageDataModule, resident: bool, max_batches: int | None, workers: int = 0
) -> Result:
    """(a) with resident=False, (b) with resident=True: cfg.trainer.max_epochs epochs, with
    autograd's anomaly detection on where Lightning's Trainer turns it on (trainer.detect_anomaly)."""
    with torch.autograd.set_detect_anomaly(bool(cfg.trainer.get("detect_anomaly"))):
        return _plain_loop(cfg, datamodule, resident, max_batches, workers)


def _plain_loop(
    cfg: DictConfig, datamodule: ImageDataModule, resident: bool, max_batches: int | None, workers: int
) -> Result:
    device, epochs = device_of(cfg), cfg.trainer.max_epochs
    L.seed_everything(cfg.seed, workers=True)
    if resident:
        batches = datamodule.device_batches("train", device, shuffle=True)
    else:
        train = datamodule.splits["train"]
        batches = DataLoader(
            PILImages(train.images, train.labels, reference_transform(datamodule)),
            batch_size=datamodule.batch_size,
            shuffle=True,
            num_workers=workers,
            pin_memory=device.type == "cuda",
        )
    steps = min(len(batches), max_batches or len(batches))
    net, optimizer, scheduler, memory_format = _build(cfg, datamodule, device, steps * epochs)
    result = Result(RESIDENT_LOOP if resident else REFERENCE_LOOP, switches=current_switches())
    _reset_peak_memory(device)
    for epoch in range(epochs):
        seed_training_stream(cfg.seed, epoch, rank=0)  # augmentation and dropout draw what train()'s do
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
    """Training seconds of every epoch with validation excluded, validation accuracy of every
    epoch and the switches in force while training, as JSON."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.epoch_seconds: list[float] = []
        self.val_acc: list[float] = []
        self.images = 0
        self.switches: dict = {}
        self._start: float | None = None

    def _stop(self, trainer) -> None:
        if self._start is not None:
            _synchronize(trainer.strategy.root_device)
            self.epoch_seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.switches = current_switches()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        _synchronize(trainer.strategy.root_device)
        self._start, self.images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += len(batch[1])

    def on_validation_start(self, trainer, pl_module) -> None:
        # Lightning validates at the end of a training epoch, before on_train_epoch_end (and
        # with trainer.training False): the clock stops here, as the plain loops' does.
        if not trainer.sanity_checking:
            self._stop(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop(trainer)  # an epoch without validation
        self.val_acc.append(float(trainer.callback_metrics.get("val/acc", math.nan)))

    def on_fit_end(self, trainer, pl_module) -> None:
        record = {
            "epoch_seconds": self.epoch_seconds,
            "val_acc": self.val_acc,
            "images_per_epoch": self.images,
            "switches": self.switches,
        }
        self.path.write_text(json.dumps(record))


def lightning_path(cfg: DictConfig, max_batches: int | None) -> Result:
    """(c): train(cfg) with an EpochTimer added, validating after every epoch like the loops;
    the test accuracy is train.py's own."""
    from classic_cnns.runs.train import train

    device = device_of(cfg)
    timings = Path(cfg.paths.output_dir) / "epoch_times.json"
    with open_dict(cfg):
        cfg.trainer.limit_train_batches = max_batches
        cfg.trainer.check_val_every_n_epoch = 1
        cfg.callbacks = cfg.get("callbacks") or {}
        cfg.callbacks.epoch_timer = {"_target_": f"{__name__}.EpochTimer", "path": str(timings)}
    _reset_peak_memory(device)
    train(cfg)
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    record = json.loads(timings.read_text())
    return Result(
        LIGHTNING,
        epoch_seconds=record["epoch_seconds"],
        val_acc=record["val_acc"],
        images_per_epoch=record["images_per_epoch"],
        test_acc=metrics["test/acc"],
        peak_memory_mib=_peak_memory(device),
        fit_seconds=metrics["fit_seconds"],
        switches=record["switches"],
    )


def interleaved(ways: Sequence[str], repeats: int) -> list[tuple[int, str]]:
    """(repeat, way) in running order: the ways in turn, every other repeat in reverse."""
    return [(repeat, way) for repeat in range(repeats) for way in (ways if repeat % 2 == 0 else ways[::-1])]


def measure(
    cfg: DictConfig, ways: Sequence[str], repeats: int, max_batches: int | None, workers: int, run_dir: Path
) -> list[Result]:
    """Every way `repeats` times, interleaved; each run of the lightning way in its own dir."""
    if cfg.seed is None:
        raise ConfigError("seed=null draws a different seed for each way: give the benchmark a seed (e.g. seed=0)")
    datamodule = instantiate(cfg.data, seed=cfg.seed)  # the training order train() draws
    datamodule.prepare_data()
    datamodule.setup()
    results = []
    for repeat, way in interleaved(ways, repeats):
        set_global_switches(cfg)
        if way == LIGHTNING:
            run_cfg = copy.deepcopy(cfg)
            with open_dict(run_cfg):
                run_cfg.paths.output_dir = str(run_dir / f"lightning_{repeat}")
            result = lightning_path(run_cfg, max_batches)
        else:
            result = plain_loop(cfg, datamodule, way == RESIDENT_LOOP, max_batches, workers)
        result.repeat = repeat
        results.append(result)
        print(f"repeat {repeat} {way}: {result.images_per_second:,.0f} images/s", flush=True)
    return results


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan
