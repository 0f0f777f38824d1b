"""ImageClassifier: the one LightningModule, wrapping any of the networks."""

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from classic_cnns.randomness import seed_training_stream

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


STAGES = ("train", "val", "test")


def epochs_done(trainer: L.Trainer) -> int:
    """The epochs trained when a metric is logged, the x of TensorBoard's charts: during the fit
    the epoch being finished counts (1 for the first); afterwards, all of them."""
    return trainer.current_epoch + (trainer.state.fn == "fit")


class ImageClassifier(L.LightningModule):
    """Cross-entropy training of `net`; logs loss and accuracy per epoch for train/val/test.

    The metrics are torchmetrics, updated every step on the device and computed (summed over
    the DDP ranks) once per epoch: no step reads a value back to the host, and there is no
    per-step `self.log`, whose bookkeeping takes longer than a whole LeNet-5 step on a GPU.

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

    `top5`: also log `{stage}/acc_top5` and the paper's `{stage}/top1_error` and
    `{stage}/top5_error` ("the fraction of test images for which the correct label is not among
    the five labels considered most probable by the model"). A batch of crops (N, K, C, H, W),
    the paper's ten test patches, is one prediction per image: the softmax averaged over its K
    crops (returned as its log, a logit vector whose softmax is that average). A
    ReduceLROnPlateau scheduler is stepped once per epoch on val/acc.
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
        top5: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.label_smoothing = label_smoothing
        self.seed, self.top5 = seed, top5
        self.channels_last, self.compile_net, self.compile_options = channels_last, compile, compile_options or {}
        # Not in checkpoints (torchmetrics states are not persistent). No per-step host read:
        # nan_strategy="disable" (the NaN check reads a value every step; DivergenceGuard watches
        # the loss) and validate_args=False. MeanMetric gets each image's loss, not a batch mean
        # with a weight: with "disable", torchmetrics 1.9 drops the weight (Lightning-AI/torchmetrics#3434).
        classes = len(data_info["class_names"]) if data_info else 2  # micro accuracy does not depend on it
        self.metrics = nn.ModuleDict()  # "train_loss", "train_acc", "val_loss", ...
        for stage in STAGES:
            self.metrics[f"{stage}_loss"] = MeanMetric(nan_strategy="disable")
            self.metrics[f"{stage}_acc"] = MulticlassAccuracy(num_classes=classes, average="micro", validate_args=False)
            if top5:
                self.metrics[f"{stage}_acc_top5"] = MulticlassAccuracy(
                    num_classes=classes, top_k=min(5, classes), average="micro", validate_args=False
                )

    def setup(self, stage: str) -> None:
        if self.channels_last is None:
            self.channels_last = self.trainer.strategy.root_device.type == "cuda"
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_net and stage == "fit":
            self.net.compile(**self.compile_options)
            self.compile_net = False  # once

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        crops = x.shape[1] if x.dim() == 5 else 0
        if crops:
            x = x.flatten(0, 1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self.net(x)
        if not crops:
            return logits
        # "averaging the predictions made by the network's softmax layer on the ten patches"
        log_probabilities = logits.float().log_softmax(1).view(-1, crops, logits.shape[1])
        return log_probabilities.logsumexp(1) - math.log(crops)

    def _step(self, batch, stage: str) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = self(images)
        smoothing = self.label_smoothing if stage == "train" else 0.0
        losses = F.cross_entropy(logits, labels, label_smoothing=smoothing, reduction="none")
        self.metrics[f"{stage}_loss"].update(losses.detach())
        self.metrics[f"{stage}_acc"].update(logits.detach(), labels)
        if self.top5:
            self.metrics[f"{stage}_acc_top5"].update(logits.detach(), labels)
        return {"loss": losses.mean(), "logits": logits.detach()}  # the logits feed the TensorBoard views

    def _log_epoch(self, stage: str) -> None:
        """Loss and accuracy of the epoch over all DDP ranks. The final validation of the kept
        checkpoint (trainer.validate) goes to metrics.json and the hparams, not the curves."""
        if not self.metrics[f"{stage}_acc"].update_called:
            return
        logged = self.trainer.state.fn != "validate"
        for name in ("loss", "acc", "acc_top5") if self.top5 else ("loss", "acc"):
            metric = self.metrics[f"{stage}_{name}"]
            value = metric.compute()
            # the bar shows the training loss (what debug=overfit watches fall) and the val metrics
            shown = (stage != "train" or name == "loss") and name != "acc_top5"
            self.log(f"{stage}/{name}", value, prog_bar=shown, logger=logged)
            if name != "loss" and self.top5:
                self.log(f"{stage}/top{5 if name == 'acc_top5' else 1}_error", 1 - value, logger=logged)
            metric.reset()
        # Lightning takes a logged "step" as the x of the charts: epochs, not optimizer steps
        # (and then adds no `epoch` chart of its own).
        self.log("step", float(epochs_done(self.trainer)), logger=logged)

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
        if isinstance(scheduler, ReduceLROnPlateau):  # the paper's "when the validation error rate stopped improving"
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val/acc"},
            }
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
