"""The default one-cycle schedule at the edges: fits of a handful of steps."""

import pytest
import torch
from hydra.utils import instantiate


def _lrs(scheduler_node, total_steps: int) -> list[float]:
    """The learning rate of every optimizer step of a fit of `total_steps` steps."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.05, momentum=0.9)
    scheduler = instantiate(scheduler_node)(optimizer=optimizer, total_steps=total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_one_cycle_reaches_its_peak_in_fits_of_any_length(make_cfg):
    node = make_cfg().scheduler  # the default: scheduler=onecycle, max_lr = optimizer.lr
    for total_steps in (3, 4, 5, 8, 9, 430):  # 4: torch's OneCycleLR divided by zero
        lrs = _lrs(node, total_steps)
        assert max(lrs) == pytest.approx(0.05, rel=0.05), total_steps  # warm-up, then annealing
        assert lrs[0] < 0.05 / 10 and lrs[-1] < 0.05 / 1000
    assert _lrs(node, 430)[107] == pytest.approx(0.05, rel=1e-3)  # long fits keep pct_start=0.25


@pytest.mark.parametrize("total_steps", [1, 2])
def test_a_fit_too_short_for_a_cycle_trains_at_max_lr_and_says_so(make_cfg, total_steps):
    with pytest.warns(
        UserWarning, match=f"at least 3 optimizer steps and this fit makes {total_steps}: .*constant max_lr=0.05"
    ) as caught:
        assert _lrs(make_cfg().scheduler, total_steps) == [0.05] * total_steps  # not torch's 2e-7
    assert caught[0].filename == __file__  # the caller's code, not Hydra's instantiate that called one_cycle
