"""Learning-rate schedules that stay sound at the edges (fits of a handful of steps)."""

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

from classic_cnns import warn_user


def one_cycle(
    optimizer: torch.optim.Optimizer, total_steps: int, max_lr: float, pct_start: float = 0.25, **options
) -> LRScheduler:
    """torch's OneCycleLR (warm-up to `max_lr`, then annealing), for fits of any length.

    OneCycleLR ends its warm-up at step pct_start * total_steps - 1: at step 0 it divides by zero
    (4 steps at 0.25), before step 0 it skips the warm-up and a 1-step fit trains at max_lr / 25e4.
    So the warm-up ends between steps 1 and total_steps - 2 (longer fits keep `pct_start`), and a
    fit of 1 or 2 steps, too short for a cycle, trains at a constant `max_lr`, with a warning.
    """
    if total_steps < 3:
        warn_user(
            f"scheduler=onecycle needs at least 3 optimizer steps and this fit makes {total_steps}: "
            f"training at the constant max_lr={max_lr:g} instead (scheduler=none avoids this warning)"
        )
        for group in optimizer.param_groups:
            group["lr"] = max_lr
        return LambdaLR(optimizer, lambda step: 1.0)
    warmup_end = min(max(pct_start * total_steps - 1, 1), total_steps - 2)
    return OneCycleLR(optimizer, max_lr, total_steps=total_steps, pct_start=(warmup_end + 1) / total_steps, **options)


def reduce_on_plateau(
    optimizer: torch.optim.Optimizer, total_steps: int, factor: float = 0.1, patience: int = 5, **options
) -> ReduceLROnPlateau:
    """The AlexNet paper's schedule: the learning rate divided by 10 (`factor`) when val/acc
    (the validation error) has not improved for `patience` epochs; `total_steps` is unused.
    The classifier steps it once per epoch on val/acc."""
    return ReduceLROnPlateau(optimizer, mode="max", factor=factor, patience=patience, **options)
