"""Checks of a composed config, run before a job starts (and, in a multirun, before any job starts).

Hydra already refuses unknown keys (struct mode) and unknown options of a group
(`pooling=median`); these checks add the values: types, ranges and layer names set by key.
"""

from collections.abc import Callable
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from classic_cnns import ClassicCNNsError
from classic_cnns.data.base import PLACEMENTS, SCALES
from classic_cnns.models.layers import ACTIVATIONS, NORMS, PADDING_MODES, PADDINGS, POOLS


class ConfigError(ClassicCNNsError):
    pass


def _int(minimum: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum), f"an integer >= {minimum}"


def _optional_int(minimum: int) -> tuple[Callable[[Any], bool], str]:
    check, text = _int(minimum)
    return (lambda v: v is None or check(v)), f"null or {text}"


def _one_of(names) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in names), "one of: " + ", ".join(names)


def _fraction() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, (int, float)) and 0 <= v < 1), "a number in [0, 1)"


CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _optional_int(0),
    "label_smoothing": _fraction(),
    "trainer.max_epochs": _int(1),
    "data.batch_size": _int(1),
    "data.eval_batch_size": _int(1),
    "data.val_size": _int(1),
    "data.split_seed": _int(0),
    "data.image_size": _optional_int(1),
    "data.pad_to": _optional_int(1),
    "data.crop_padding": _int(0),
    "data.num_workers": _int(0),
    "data.placement": _one_of(list(PLACEMENTS)),
    "data.scale": _one_of(list(SCALES)),
    "optimizer.lr": ((lambda v: isinstance(v, (int, float)) and v > 0), "a number > 0"),
    "pooling.name": _one_of(list(POOLS)),
    "pooling.kernel_size": _optional_int(1),
    "pooling.stride": _optional_int(1),
    "padding.value": (lambda v: v in PADDINGS or _int(0)[0](v), "one of: " + ", ".join(PADDINGS) + " or an integer >= 0"),
    "padding.mode": _one_of(PADDING_MODES),
    "activation.name": _one_of(list(ACTIVATIONS)),
    "norm.name": _one_of(list(NORMS)),
    "model.dropout": _fraction(),
    "channels_last": ((lambda v: v in (None, True, False)), "null, true or false"),
    "compile": ((lambda v: isinstance(v, bool)), "true or false"),
    "float32_matmul_precision": _one_of(["highest", "high", "medium"]),
}


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming every bad key, its value and what is allowed."""
    problems = []
    for key, (check, allowed) in CHECKS.items():
        value = OmegaConf.select(cfg, key, default="<absent>", throw_on_resolution_failure=False)
        if value == "<absent>":
            continue
        if not check(value):
            problems.append(f"{key}={value!r} is not allowed: use {allowed}")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def build_network(cfg: DictConfig, datamodule, **kwargs) -> torch.nn.Module:
    """The network of `cfg.model` for the images of `datamodule`. A network that cannot be built
    (layers too large for the input, weights that cannot be loaded) is one clear ClassicCNNsError,
    not Hydra's InstantiationException around it."""
    try:
        return instantiate(
            cfg.model,
            in_channels=datamodule.channels,
            num_classes=datamodule.num_classes,
            input_size=datamodule.input_size,
            **kwargs,
        )
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ClassicCNNsError):
            raise cause from None
        if isinstance(cause, ValueError):
            raise ConfigError(f"the network cannot be built: {cause}") from None
        raise


def check_network_builds(cfg: DictConfig) -> None:
    """Build the job's network on the meta device (shapes only: no memory, no data read, no
    weights loaded), so that layers which shrink the feature maps to nothing fail before any
    job of a sweep starts, with the fix in the message."""
    shapes_only = {"pretrained": False} if "pretrained" in cfg.model else {}  # never download here
    with torch.device("meta"):
        build_network(cfg, instantiate(cfg.data), **shapes_only)
