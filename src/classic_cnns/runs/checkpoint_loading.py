"""Rebuild a trained model, and the data it was trained on, from its checkpoint file alone.

A checkpoint is untrusted input: whoever wrote it chose every byte. It is loaded with
`torch.load(weights_only=True)` (tensors and plain containers only), and the config inside it
is never handed to `hydra.utils.instantiate`, which would call any importable callable a
`_target_` names. Instead `read_checkpoint` checks it against an allowlist: the network must be
one of the project's networks and the data one of its data modules, built from plain values
(numbers, strings, booleans, None and lists of them) that are arguments of that class.
Anything else is refused with one line naming the offending key, before anything is built.
"""

import inspect
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classic_cnns import ClassicCNNsError, data, models
from classic_cnns.classifier import ImageClassifier
from classic_cnns.data import ImageDataModule


def _exported(package, base: type, exclude: tuple[type, ...] = ()) -> dict[str, type]:
    """The classes `package` exports that subclass `base`, by the `_target_` configs write for them."""
    classes = (getattr(package, name) for name in package.__all__)
    return {
        f"{package.__name__}.{cls.__name__}": cls
        for cls in classes
        if isinstance(cls, type) and issubclass(cls, base) and cls not in exclude
    }


# What a checkpoint may rebuild: the networks and data modules the project exports, and the
# one config object a network takes as an argument (model.layers, built from plain values too).
NETWORKS = _exported(models, nn.Module)
DATA_MODULES = _exported(data, ImageDataModule, exclude=(ImageDataModule,))
NETWORK_ARGUMENTS = {"classic_cnns.models.LayerChoices": models.LayerChoices}
PLAIN = (str, int, float, bool, type(None))


class UnsafeCheckpointError(ClassicCNNsError):
    """A checkpoint whose config asks for more than the project's own classes and plain values."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by train(), loaded with weights_only=True, its config and data
    description checked (see the module docstring) and its callbacks' file paths confined to
    the checkpoint's own directory; raises ClassicCNNsError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ClassicCNNsError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        hparams = checkpoint["hyper_parameters"]
        config, info = hparams["config"], hparams["data_info"]
        if not (isinstance(config, dict) and isinstance(info, dict) and isinstance(checkpoint["state_dict"], dict)):
            raise TypeError("config, data_info and state_dict must be mappings")
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ClassicCNNsError(
            f"{path} is not a checkpoint written by classic-cnns' train ({type(error).__name__}: {first_line})"
        ) from None
    try:
        _allowed_call(config.get("model"), "config.model", NETWORKS, NETWORK_ARGUMENTS)
        _allowed_call(config.get("data"), "config.data", DATA_MODULES)
        _check_plain(info, "data_info", mappings=True)
        _check_callback_paths(checkpoint.get("callbacks") or {})
    except UnsafeCheckpointError as error:
        raise UnsafeCheckpointError(f"{path}: refused, {error}") from None
    return checkpoint


def load_classifier(path: str | Path, map_location: str = "cpu") -> ImageClassifier:
    """The ImageClassifier of a checkpoint written by train(), in eval mode.

    `model.hparams.data_info` says how inputs must look (size, channels, normalization);
    `model.hparams.config` is the run's config, as data (see `build_datamodule`).
    """
    checkpoint = read_checkpoint(path, map_location)
    hparams = checkpoint["hyper_parameters"]
    config, info = hparams["config"], hparams["data_info"]
    cls, arguments = _allowed_call(config["model"], "config.model", NETWORKS, NETWORK_ARGUMENTS)
    try:
        no_download = {"pretrained": False} if "pretrained" in arguments else {}  # the checkpoint holds the weights
        net = cls(
            **(arguments | no_download), in_channels=info["channels"], num_classes=len(info["class_names"]), input_size=info["input_size"]
        )
        model = ImageClassifier(net=net, optimizer=None, config=config, data_info=info)
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ClassicCNNsError(f"{path}: the model in it cannot be rebuilt ({type(error).__name__}: {first_line})") from None
    return model.eval()


def build_datamodule(config: dict[str, Any], data_dir: str | None = None) -> ImageDataModule:
    """The data module of a checkpoint's config (as `model.hparams.config`): the same set, split,
    normalization and input size; `data_dir` replaces the directory it was trained from."""
    cls, arguments = _allowed_call(config["data"], "config.data", DATA_MODULES)
    if data_dir:
        arguments["data_dir"] = data_dir
    try:
        return cls(**arguments)
    except (TypeError, ValueError, RuntimeError) as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ClassicCNNsError(f"the checkpoint's config.data cannot be rebuilt ({type(error).__name__}: {first_line})") from None


def _allowed_call(
    spec: Any, key: str, allowed: dict[str, type], nested: dict[str, type] | None = None
) -> tuple[type, dict[str, Any]]:
    """The class and keyword arguments that `spec` (a config node with `_target_`) asks for,
    when the class is in `allowed` and every argument is one of its parameters with a plain value,
    or a node of a class in `nested` with plain values (built here: a LayerChoices runs no code)."""
    if not isinstance(spec, dict):
        raise UnsafeCheckpointError(f"{key} is a {type(spec).__name__}, not a config node with a _target_")
    target = spec.get("_target_")
    if target not in allowed:
        raise UnsafeCheckpointError(
            f"{key}._target_={target!r} is not one of the project's classes ({', '.join(allowed)})"
        )
    cls = allowed[target]
    parameters = inspect.signature(cls).parameters
    arguments = {}
    for name, value in spec.items():
        if name == "_target_":
            continue
        if name.startswith("_") or name not in parameters:
            raise UnsafeCheckpointError(f"{key}.{name} is not an argument of {target}")
        if nested and isinstance(value, dict) and value.get("_target_") in nested:
            inner_cls, inner_arguments = _allowed_call(value, f"{key}.{name}", nested)
            try:
                value = inner_cls(**inner_arguments)
            except (TypeError, ValueError) as error:
                raise UnsafeCheckpointError(f"{key}.{name} cannot be built ({error})") from None
        else:
            _check_plain(value, f"{key}.{name}")
        arguments[name] = value
    return cls, arguments


def _check_plain(value: Any, key: str, mappings: bool = False) -> None:
    """`value` is a plain value or a list of them (with `mappings`, also string-keyed dicts of them)."""
    if isinstance(value, PLAIN):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{key}[{index}]", mappings)
        return
    if isinstance(value, dict):
        if "_target_" in value:
            raise UnsafeCheckpointError(
                f"{key} holds a nested _target_ ({value['_target_']!r}); only plain values are allowed there"
            )
        if mappings:
            for name, item in value.items():
                if not isinstance(name, str):
                    raise UnsafeCheckpointError(f"{key} has a key of type {type(name).__name__}")
                _check_plain(item, f"{key}.{name}", mappings)
            return
        raise UnsafeCheckpointError(f"{key} is a mapping; only plain values (numbers, strings, lists) are allowed there")
    raise UnsafeCheckpointError(f"{key} is a {type(value).__name__}; only plain values (numbers, strings, lists) are allowed there")


def _check_callback_paths(states: dict[str, Any]) -> None:
    """On resume Lightning's ModelCheckpoint takes the file paths in its saved state and later
    deletes the ones it replaces: each must name a .ckpt file directly inside its `dirpath`."""
    for name, state in states.items():
        if not isinstance(state, dict) or "dirpath" not in state:
            continue
        dirpath = state["dirpath"]
        files = [(key, state.get(key)) for key in ("best_model_path", "kth_best_model_path", "last_model_path")]
        files += [("best_k_models", file) for file in state.get("best_k_models") or {}]
        for key, file in files:
            if file in (None, ""):
                continue
            if not (
                isinstance(file, str)
                and isinstance(dirpath, str)
                and file.endswith(".ckpt")
                and ".." not in Path(file).parts
                and os.path.dirname(os.path.normpath(file)) == os.path.normpath(dirpath)
            ):
                raise UnsafeCheckpointError(
                    f"callbacks.{name.split('{')[0]}.{key}={file!r} is not a .ckpt file in its checkpoint directory "
                    f"{dirpath!r} (on resume it could be deleted)"
                )
