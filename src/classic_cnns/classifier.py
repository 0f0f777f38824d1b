"""ImageClassifier: the one LightningModule, wrapping any of the networks."""

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from classic_cnns.randomness import seed_training_stream

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class ImageClassifier(L.LightningModule):
    """Cross-entropy training of `net`; logs loss and accuracy per epoch for train/val/test.

    `optimizer` is called with the parameters, `scheduler` (optional) with the optimizer and
    `total_steps`, the number of optimizer steps of the whole fit; it is stepped every step.
    `config` is the run's resolved config and `data_info` what the model was trained on
    (class names, input size, normalization), as plain containers: checkpoints load with
    `torch.load(weights_only=True)` and say how to rebuild the model (see checkpoint.py).
    `seed` (the run's) seeds each epoch's augmentation and dropout on each DDP rank from
    (seed, epoch, rank): the ranks draw different crops, flips and masks, and a run resumed
    from an epoch's checkpoint draws what an uninterrupted one draws.

    Speed: `channels_last` (None: on CUDA, where cuDNN's convolutions and bf16 prefer it) stores
    weights and inputs NHWC; `compile` compiles the network in place (`nn.Module.compile`, so
    checkpoint keys stay the same; `compile_options` are torch.compile's keyword arguments),
    leaving the logging and the metrics outside the graph.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None,  # None: inference only (checkpoint.load_classifier)
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        config: dict[str, Any] | None = None,
        data_info: dict[str, Any] | None = None,
        channels_last: bool | None = None,
        compile: bool = False,
        compile_options: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.label_smoothing = label_smoothing
        self.seed = seed
        self.channels_last, self.compile_net, self.compile_options = channels_last, compile, compile_options or {}
        self._sums: dict[str, torch.Tensor] = {}  # per stage: loss sum and correct count, on the device
        self._counts: dict[str, int] = {}

    def setup(self, stage: str) -> None:
        if self.channels_last is None:
            self.channels_last = self.trainer.strategy.root_device.type == "cuda"
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_net and stage == "fit":
            self.net.compile(**self.compile_options)
            self.compile_net = False  # once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _step(self, batch, stage: str) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing if stage == "train" else 0.0)
        # Sums of loss and correct predictions stay on the device and are read once per epoch:
        # no GPU sync per step, and no per-step self.log, whose bookkeeping takes longer than
        # a whole LeNet-5 step on a GPU.
        with torch.no_grad():
            sums = torch.stack([loss.detach().float() * len(labels), (logits.argmax(1) == labels).sum().float()])
        self._sums[stage] = self._sums[stage] + sums if stage in self._sums else sums
        self._counts[stage] = self._counts.get(stage, 0) + len(labels)
        return {"loss": loss, "logits": logits.detach()}  # the logits feed the TensorBoard views

    def _log_epoch(self, stage: str) -> None:
        """Loss and accuracy of the epoch, summed over all DDP ranks. The final validation of the
        kept checkpoint (trainer.validate) goes to metrics.json and the hparams, not the curves."""
        if stage not in self._sums:
            return
        sums, count = self._sums.pop(stage), self._counts.pop(stage)
        totals = torch.cat([sums, sums.new_tensor([count])])
        loss_sum, correct, count = self.trainer.strategy.reduce(totals, reduce_op="sum")
        options = dict(prog_bar=stage != "train", logger=self.trainer.state.fn != "validate")
        self.log(f"{stage}/loss", loss_sum / count, **options)
        self.log(f"{stage}/acc", correct / count, **options)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def on_train_epoch_start(self) -> None:
        if self.seed is not None:
            seed_training_stream(self.seed, self.current_epoch, self.global_rank)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
