"""Callbacks of the project's own, for what Lightning's do not cover."""

import lightning as L
import torch

from classic_cnns import ClassicCNNsError


class TrainingDivergedError(ClassicCNNsError):
    pass


class DivergenceGuard(L.Callback):
    """Stop a run whose training loss became NaN or infinite, before the next checkpoint.

    The loss is read every `check_every_n_steps` steps only (one GPU sync each): once the
    weights are NaN the loss stays NaN, so the delay costs nothing but a few wasted steps.
    The best checkpoint, chosen on validation accuracy, is never replaced by a diverged model.
    """

    def __init__(self, check_every_n_steps: int = 50) -> None:
        self.check_every_n_steps = check_every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.check_every_n_steps:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not torch.isfinite(loss).item():
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            raise TrainingDivergedError(
                f"the training loss became {loss.item()} at step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}, learning rate {lr:.3g}). Lower optimizer.lr, train in full "
                f"precision (trainer.precision=32-true) or clip gradients (+trainer.gradient_clip_val=1.0). "
                f"The checkpoints written before this point are kept."
            )
