"""Checks of a composed config, run before a job starts (and, in a multirun, before any job starts).

Hydra already refuses unknown keys (struct mode) and unknown options of a group
(`pooling=median`); these checks add the values: types, ranges and layer names set by key,
arguments added with `+` that the class does not take, and values that must fit the data set.
"""

import inspect
from collections.abc import Callable
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from classic_cnns import ClassicCNNsError
from classic_cnns.data.base import PLACEMENTS, SCALES, VAL_FROM
from classic_cnns.runs.config_keys import BUILT, keys_with
from classic_cnns.models.alexnet import IMAGENET_NORMALIZATION
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
    "data.val_size": _int(0),
    "data.val_from": _one_of(list(VAL_FROM)),
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
    "topk": _int(1),  # scripts/predict.py
}

INSTANTIATED = keys_with(BUILT)  # groups whose keys are a class's arguments


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming every bad key, its value and what is allowed."""
    problems = []
    for key, (check, allowed) in CHECKS.items():
        value = OmegaConf.select(cfg, key, default="<absent>", throw_on_resolution_failure=False)
        if value == "<absent>":
            continue
        if not check(value):
            problems.append(f"{key}={value!r} is not allowed: use {allowed}")
    problems += _unknown_arguments(cfg) + _data_set_fit(cfg) + _validation_split(cfg) + _pretrained_normalization(cfg)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def _unknown_arguments(cfg: DictConfig) -> list[str]:
    """Keys such as `+optimizer.lrr=0.1` that the group's `_target_` does not take (found here,
    not when the optimizer is built after training started)."""
    problems = []
    for group in INSTANTIATED:
        node = cfg.get(group)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        try:
            parameters = inspect.signature(get_object(node._target_)).parameters
        except Exception as error:
            problems.append(f"{group}._target_={node._target_!r} cannot be loaded ({type(error).__name__}: {error})")
            continue
        if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            continue
        for key in node:
            if not str(key).startswith("_") and key not in parameters:
                value = OmegaConf.select(node, str(key), throw_on_resolution_failure=False)
                arguments = ", ".join(name for name in parameters if name not in ("self", "params"))
                problems.append(f"{group}.{key}={value!r} is not an argument of {node._target_}: use one of {arguments}")
    return problems


def _data_set_fit(cfg: DictConfig) -> list[str]:
    """Values that must fit the data set: one mean/std per channel (or one for all), and a
    validation hold-out smaller than the official training split (the files are checked at setup)."""
    data = cfg.get("data")
    if not isinstance(data, DictConfig) or "_target_" not in data:
        return []
    try:
        data_set = get_object(data._target_)
    except Exception:
        return []  # reported by _unknown_arguments
    problems, channels = [], getattr(data_set, "channels", None)
    if not isinstance(channels, int):  # known from the images (an image folder): the config's, where it says
        channels = data.get("channels")
    for key in ("mean", "std"):
        value = OmegaConf.select(data, key, throw_on_resolution_failure=False)
        if channels and isinstance(value, ListConfig) and len(value) not in (1, channels):
            problems.append(
                f"data.{key}={list(value)} has {len(value)} values: {data_set.name} images have {channels} "
                f"channels, use {channels} values (one per channel) or 1"
            )
    train_size, val_size = getattr(data_set, "train_size", None), data.get("val_size")
    if train_size and isinstance(val_size, int) and val_size >= train_size:
        problems.append(
            f"data.val_size={val_size} is not allowed: {data_set.name} has {train_size} training images, "
            f"use at most {train_size - 1}"
        )
    return problems


def _validation_split(cfg: DictConfig) -> list[str]:
    """A hold-out needs images; the test set as validation set (data.val_from=test) holds out none,
    and must not choose what is tested: no callback may monitor a val/ metric then."""
    val_from, val_size = OmegaConf.select(cfg, "data.val_from"), OmegaConf.select(cfg, "data.val_size")
    if val_from is None or not isinstance(val_size, int):
        return []
    if val_from != "test":
        return [] if val_size > 0 else ["data.val_size=0 leaves no validation images: use data.val_size >= 1, or data.val_from=test"]
    problems = [] if val_size == 0 else [f"data.val_from=test trains on every training image: set data.val_size=0, not {val_size}"]
    for name, callback in (cfg.get("callbacks") or {}).items():
        monitor = OmegaConf.select(callback, "monitor", default=None) if isinstance(callback, DictConfig) else None
        if isinstance(monitor, str) and monitor.startswith("val/"):
            problems.append(
                f"data.val_from=test validates on the test set, which must not choose the checkpoint or the stop: "
                f"set callbacks.{name}.monitor=null{' (the last epoch is kept)' if name == 'model_checkpoint' else ''} or callbacks.{name}=null"
            )
    return problems


def _pretrained_normalization(cfg: DictConfig) -> list[str]:
    """ImageNet weights (model.pretrained=true) on inputs normalized otherwise see inputs they were
    never trained on. conf/data/cifar10.yaml follows model.pretrained by itself; this catches a
    data set or an explicit data.mean/std/scale that does not."""
    if OmegaConf.select(cfg, "model.pretrained", default=False) is not True or not isinstance(cfg.get("data"), DictConfig):
        return []
    mean, std, scale = (OmegaConf.select(cfg, f"data.{key}", default=None, throw_on_resolution_failure=False) for key in ("mean", "std", "scale"))
    mean, std = ([round(float(v), 4) for v in value] if isinstance(value, ListConfig) else value for value in (mean, std))
    if mean == IMAGENET_NORMALIZATION["mean"] and std == IMAGENET_NORMALIZATION["std"] and scale in (None, "standard"):
        return []
    imagenet = " ".join(f"data.{key}=[{','.join(map(str, value))}]" for key, value in IMAGENET_NORMALIZATION.items())
    return [
        f"model.pretrained=true loads weights trained on ImageNet's normalization, but data.mean={mean} data.std={std} "
        f"data.scale={scale}: use {imagenet}{' data.scale=standard' if scale not in (None, 'standard') else ''}"
    ]


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
