"""Checks of a composed config, run before a job starts (and, in a multirun, before any job starts).

Hydra already refuses unknown keys (struct mode) and unknown options of a group
(`pooling=median`); these checks add the values: types, ranges and layer names set by key,
arguments added with `+` that the class does not take, and values that must fit the data set.
"""

import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from classic_cnns import ClassicCNNsError
from classic_cnns.data.base import PLACEMENTS, SCALES, VAL_FROM
from classic_cnns.models.alexnet import IMAGENET_NORMALIZATION
from classic_cnns.models.layers import ACTIVATIONS, NORMS, PADDING_MODES, PADDINGS, POOLS
from classic_cnns.runs.config_keys import BUILT, keys_with


class ConfigError(ClassicCNNsError):
    pass


ABSENT = object()


class Rule(NamedTuple):
    """One row of CHECKS: the check, what is allowed (in the error line), and `kind`, what the
    check accepts as data (tests/test_config_properties.py generates wrong values from it, so
    that a new row of a known kind is covered by the property test as it stands)."""

    check: Callable[[Any], bool]
    allowed: str
    kind: tuple


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(minimum: int, maximum: int | None = None, optional: bool = False) -> Rule:
    text = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"
    return Rule(
        lambda v: (optional and v is None) or (_is_int(v) and v >= minimum and (maximum is None or v <= maximum)),
        f"null or {text}" if optional else text,
        ("int", minimum, maximum, optional),
    )


def _optional_int(minimum: int, maximum: int | None = None) -> Rule:
    return _int(minimum, maximum, optional=True)


def _number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False) -> Rule:
    """A finite number between `low` and `high` (`*_open`: the bound itself excluded)."""

    def check(v: Any) -> bool:
        return (
            _is_number(v)
            and (v > low if low_open else v >= low)
            and (high is None or (v < high if high_open else v <= high))
        )

    if high is None:
        text = f"a finite number {'>' if low_open else '>='} {low}"
    else:
        text = f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return Rule(check, text, ("number", low, high, low_open, high_open))


def _fraction() -> Rule:
    return _number(0, 1, high_open=True)


def _numbers(low: float, low_open: bool) -> Rule:
    """A non-empty list of finite numbers above `low` (per-channel values)."""
    item = _number(low, low_open=low_open)
    return Rule(
        lambda v: isinstance(v, (list, ListConfig)) and len(v) > 0 and all(item.check(x) for x in v),
        f"a list of one or more finite numbers {'>' if low_open else '>='} {low}",
        ("numbers", low, low_open),
    )


def _one_of(names) -> Rule:
    names = list(names)
    return Rule(
        lambda v: any(v == name and type(v) is type(name) for name in names),
        "one of: " + ", ".join(map(str, names)),
        ("one_of", tuple(names)),
    )


def _one_of_or_int(names, minimum: int, maximum: int) -> Rule:
    name, number = _one_of(names), _int(minimum, maximum)
    return Rule(
        lambda v: name.check(v) or number.check(v),
        f"{name.allowed} or {number.allowed}",
        ("one_of_or_int", tuple(names), minimum, maximum),
    )


def _boolean(optional: bool = False) -> Rule:
    return Rule(
        lambda v: isinstance(v, bool) or (optional and v is None),
        "null, true or false" if optional else "true or false",
        ("bool", optional),
    )


def _devices() -> Rule:
    """Lightning's `devices`: how many (-1: all) or which GPUs, or auto."""

    def check(v: Any) -> bool:
        if v == "auto" or (_is_int(v) and (v >= 1 or v == -1)):
            return True
        if isinstance(v, (list, ListConfig)):
            return len(v) > 0 and all(_is_int(x) and x >= 0 for x in v)
        return (
            isinstance(v, str) and all(part.strip().isdigit() for part in v.split(",")) and v.strip() not in ("0", "")
        )

    return Rule(check, "auto, an integer >= 1 (-1: all), or a non-empty list of device indices", ("devices",))


def _batch_limit() -> Rule:
    """Lightning's limit_*_batches: null (all), a number of batches, or a fraction of them."""
    return Rule(
        lambda v: v is None or (_is_int(v) and v >= 0) or (isinstance(v, float) and 0.0 <= v <= 1.0),
        "null, an integer >= 0 (batches) or a number in [0.0, 1.0] (a fraction)",
        ("batch_limit",),
    )


PRECISIONS = [
    str(p) for p in ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "32", "16", "bf16")
] + [64, 32, 16]
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range
# Bounds that make a huge value an error, not an allocation: image sides and kernels in pixels,
# counts (epochs, batch sizes, images), worker processes.
MAX_SIDE, MAX_COUNT, MAX_WORKERS = 4096, 10**9, 256

# key -> Rule. A new key is one row here; the property test covers it by its kind.
CHECKS: dict[str, Rule] = {
    "seed": _optional_int(0, MAX_SEED),
    "label_smoothing": _fraction(),
    "trainer.max_epochs": _int(1, MAX_COUNT),
    "trainer.accelerator": _one_of(["auto", "cpu", "gpu", "cuda", "mps"]),
    "trainer.devices": _devices(),
    "trainer.precision": _one_of(PRECISIONS),
    "trainer.limit_train_batches": _batch_limit(),
    "trainer.limit_val_batches": _batch_limit(),
    "trainer.limit_test_batches": _batch_limit(),
    "data.batch_size": _int(1, MAX_COUNT),
    "data.eval_batch_size": _int(1, MAX_COUNT),
    "data.val_size": _int(0, MAX_COUNT),
    "data.val_from": _one_of(VAL_FROM),
    "data.split_seed": _int(0, MAX_SEED),
    "data.image_size": _optional_int(1, MAX_SIDE),
    "data.pad_to": _optional_int(1, MAX_SIDE),
    "data.crop_padding": _int(0, MAX_SIDE),
    "data.num_workers": _int(0, MAX_WORKERS),
    "data.placement": _one_of(PLACEMENTS),
    "data.scale": _one_of(SCALES),
    "data.mean": _numbers(float("-inf"), low_open=True),
    "data.std": _numbers(0, low_open=True),
    "optimizer.lr": _number(0, low_open=True),
    "optimizer.momentum": _fraction(),
    "optimizer.weight_decay": _number(0),
    "scheduler.max_lr": _number(0, low_open=True),
    "pooling.name": _one_of(POOLS),
    "pooling.kernel_size": _optional_int(1, MAX_SIDE),
    "pooling.stride": _optional_int(1, MAX_SIDE),
    "padding.value": _one_of_or_int(PADDINGS, 0, MAX_SIDE),
    "padding.mode": _one_of(PADDING_MODES),
    "activation.name": _one_of(ACTIVATIONS),
    "norm.name": _one_of(NORMS),
    "model.dropout": _fraction(),
    "channels_last": _boolean(optional=True),
    "compile": _boolean(),
    "float32_matmul_precision": _one_of(["highest", "high", "medium"]),
    "topk": _int(1, MAX_COUNT),  # scripts/predict.py
}

INSTANTIATED = keys_with(BUILT)  # groups whose keys are a class's arguments


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming every bad key, its value and what is allowed."""
    problems = []
    for key, rule in CHECKS.items():
        value = OmegaConf.select(cfg, key, default=ABSENT, throw_on_resolution_failure=False)
        if value is ABSENT:
            continue
        if not rule.check(value):
            shown = OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value
            problems.append(f"{key}={shown!r} is not allowed: use {rule.allowed}")
    problems += _unknown_arguments(cfg) + _data_set_fit(cfg) + _validation_split(cfg) + _pretrained_normalization(cfg)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def require_visible_gpu(cfg: DictConfig) -> None:
    """`trainer.accelerator=gpu` on a machine where no GPU is visible: one line with the fix,
    not Lightning's MisconfigurationException after the config tree and layer table. Checked
    where the job runs (a sweep may be submitted from a machine without one)."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default=None, throw_on_resolution_failure=False)
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but no GPU is visible on this machine (torch.cuda.is_available() is "
            "False; CUDA_VISIBLE_DEVICES, driver): use trainer=cpu, or trainer=default, which takes a GPU when there is one"
        )


def _unknown_arguments(cfg: DictConfig) -> list[str]:
    """Keys such as `+optimizer.lrr=0.1` that the group's `_target_` does not take (found here,
    not when the optimizer is built after training started)."""
    problems = []
    for group in (*INSTANTIATED, "trainer"):  # the trainer's arguments too (`+trainer.foo=1`)
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
                problems.append(
                    f"{group}.{key}={value!r} is not an argument of {node._target_}: use one of {arguments}"
                )
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
        return (
            []
            if val_size > 0
            else ["data.val_size=0 leaves no validation images: use data.val_size >= 1, or data.val_from=test"]
        )
    problems = (
        []
        if val_size == 0
        else [f"data.val_from=test trains on every training image: set data.val_size=0, not {val_size}"]
    )
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
    if OmegaConf.select(cfg, "model.pretrained", default=False) is not True or not isinstance(
        cfg.get("data"), DictConfig
    ):
        return []
    mean, std, scale = (
        OmegaConf.select(cfg, f"data.{key}", default=None, throw_on_resolution_failure=False)
        for key in ("mean", "std", "scale")
    )
    mean, std = (
        [round(float(v), 4) for v in value] if isinstance(value, ListConfig) else value for value in (mean, std)
    )
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
