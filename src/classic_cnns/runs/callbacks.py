"""Callbacks of the project's own, for what Lightning's do not cover."""

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from classic_cnns import ClassicCNNsError
from classic_cnns.models.layers import lrn_divisor_spread


class TrainingDivergedError(ClassicCNNsError):
    pass


def diverged_advice(what: str) -> str:
    return (
        f"{what}. Lower optimizer.lr, train in full precision (trainer.precision=32-true) or clip "
        "gradients (+trainer.gradient_clip_val=1.0)"
    )


class DivergenceGuard(L.Callback):
    """Stop a run whose training loss became NaN or infinite; never save a checkpoint of it.

    Every step folds `isfinite(loss)` into one flag on the device (no GPU sync); the flag and
    the weights are read once before every checkpoint is written and at the end of every
    epoch (one sync each, agreed across DDP ranks). A diverged run stops with an error there, and the checkpoints written before stay
    as they were.
    """

    def __init__(self) -> None:
        self._finite: torch.Tensor | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        finite = torch.isfinite(loss.detach()).all()
        self._finite = finite if self._finite is None else self._finite & finite

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._check(trainer, pl_module, weights=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(trainer, pl_module, weights=False)

    def _check(self, trainer, pl_module, weights: bool) -> None:
        flags = [self._finite] if self._finite is not None else []
        if weights:
            flags += [t.isfinite().all() for t in pl_module.state_dict().values() if t.is_floating_point()]
        finite = bool(torch.stack([f.to(flags[0].device) for f in flags]).all()) if flags else True
        if trainer.strategy.reduce_boolean_decision(finite, all=True):  # every DDP rank stops, or none
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        raise TrainingDivergedError(
            diverged_advice(
                f"training diverged in epoch {trainer.current_epoch} (by step {trainer.global_step}, "
                f"learning rate {lr:.3g}): the loss or the weights became NaN or infinite, so no "
                "checkpoint of it is written"
            )
            + ". The checkpoints written before this point are kept"
        )


def require_finite(metrics: dict) -> None:
    """A NaN or infinite final metric means the run diverged: an error, never a result."""
    bad = {k: v for k, v in metrics.items() if isinstance(v, float) and not torch.isfinite(torch.tensor(v))}
    if bad:
        raise TrainingDivergedError(
            diverged_advice(f"the run diverged: {', '.join(f'{k}={v}' for k, v in bad.items())}")
            + "; no metrics.json is written"
        )


class FirstTrainingLoss(L.Callback):
    """The first epoch's training loss of this fit, for the closing line's "first -> last"
    (the last is the trainer's `train/loss` when the fit ends)."""

    def __init__(self) -> None:
        self.value: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._note(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._note(trainer)

    def _note(self, trainer) -> None:
        if self.value is None and "train/loss" in trainer.callback_metrics:
            self.value = float(trainer.callback_metrics["train/loss"])


class LRNDivisorSpread(L.Callback):
    """Was LRN more than a constant factor? After the final validation (the kept weights), the
    spread of each LRN layer's divisor on 64 validation images (models.layers.lrn_divisor_spread)
    goes into metrics.json as lrn1/divisor_median, lrn1/divisor_max, ... The LRN study switches
    it on (conf/experiment/study_lrn.yaml); train() adds every callback's `final_metrics`."""

    def __init__(self, images: int = 64) -> None:
        self.images = images
        self.final_metrics: dict[str, float] = {}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn != TrainerFn.VALIDATING:  # the validations during fit see weights that are not kept
            return
        datamodule = trainer.datamodule
        images = datamodule.splits["val"].images[: self.images].to(pl_module.device)
        self.final_metrics = lrn_divisor_spread(pl_module, datamodule.transform(images))
