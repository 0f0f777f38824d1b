"""Rebuild a trained model, and the data it was trained on, from its checkpoint file alone.

A checkpoint is untrusted input: whoever wrote it chose every byte. It is loaded with
`torch.load(weights_only=True)` (tensors and plain containers only), and the config inside it
is never handed to `hydra.utils.instantiate`, which would call any importable callable a
`_target_` names. Instead `read_checkpoint` checks it against an allowlist: the network must be
one of the project's networks and the data one of its data modules, built from plain values
(numbers, strings, booleans, None and lists of them) that are arguments of that class.
The rest of the config (optimizer, scheduler, trainer, callbacks, logger, ...) is never built
from a checkpoint: it must hold plain values only, and its Hydra keys (`_target_`, `_partial_`,
`_args_`, ...) are dropped, so that no one can instantiate it later (`model.hparams.config`).
Top-level keys and hyper-parameters the loaders do not read are dropped too. Callback states
(what Lightning restores on resume, and whose file paths it later deletes) are rebuilt from an
allowlist against the resuming run's checkpoint directory (`rebuild_callback_states`).
Anything else is refused with one line naming the offending key, before anything is built.

Refuse, not drop, for a restored callback's bad state: a state naming a file outside the
run's checkpoint directory is a crafted file or a run moved elsewhere; dropping it would
silently forget which epoch was best (a worse epoch would then be kept), so the user is told
instead. The state of a callback that is not on the list is dropped with a warning: it names
no file Lightning deletes, and that callback simply starts afresh.
"""

import inspect
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classic_cnns import ClassicCNNsError, data, models
from classic_cnns.classifier import ImageClassifier
from classic_cnns.data import ImageDataModule
from classic_cnns.runs.config_checks import CHECKS


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


# Hydra's instantiation keys: dropped from every config node a checkpoint does not rebuild.
HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
# What train() writes at the top of a checkpoint (Lightning's keys, and the mixed-precision
# scaler's state); anything else is dropped, as are hyper-parameters the classifier does not take.
TOP_LEVEL_KEYS = (
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "state_dict",
    "loops",
    "callbacks",
    "optimizer_states",
    "lr_schedulers",
    "hparams_name",
    "hyper_parameters",
    "MixedPrecision",
)
HYPER_PARAMETERS = ("config", "data_info", "label_smoothing", "channels_last", "compile", "compile_options", "seed")
# Sizes a file may declare: larger images, or more classes, would allocate before anything checks them.
MAX_IMAGE_SIDE = 1024
MAX_CLASSES = 1000


class UnsafeCheckpointError(ClassicCNNsError):
    """A checkpoint whose config asks for more than the project's own classes and plain values."""


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", checkpoint_dirs: list[str] | None = None
) -> dict[str, Any]:
    """A checkpoint written by train(), loaded with weights_only=True, its config and data
    description checked and cleaned (see the module docstring). With `checkpoint_dirs` (a
    resuming run's checkpoint directories) its callback states are rebuilt against them;
    without, they are dropped (only a resume restores them). Raises ClassicCNNsError naming
    what is wrong."""
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
        return cleaned(checkpoint, checkpoint_dirs)
    except UnsafeCheckpointError as error:
        raise UnsafeCheckpointError(f"{path}: refused, {error}") from None


def cleaned(checkpoint: dict[str, Any], checkpoint_dirs: list[str] | None) -> dict[str, Any]:
    """`checkpoint` with only what the loaders and a resume read, each part checked (see the
    module docstring); raises UnsafeCheckpointError naming the first bad key."""
    hparams = checkpoint["hyper_parameters"]
    if not isinstance(hparams, dict):
        raise UnsafeCheckpointError(f"hyper_parameters is a {type(hparams).__name__}, not a mapping")
    config, info = hparams.get("config"), hparams.get("data_info")
    _allowed_call(config.get("model"), "config.model", NETWORKS, NETWORK_ARGUMENTS)
    _allowed_call(config.get("data"), "config.data", DATA_MODULES)
    _check_plain(info, "data_info", mappings=True)
    _check_data_info(info)
    rest = {key: without_hydra_keys(value) for key, value in config.items() if key not in ("model", "data")}
    _check_plain(rest, "config", mappings=True)
    kept_hparams = {key: hparams[key] for key in HYPER_PARAMETERS if key in hparams}
    _check_plain(
        {k: v for k, v in kept_hparams.items() if k not in ("config", "data_info")}, "hyper_parameters", mappings=True
    )
    kept_hparams["config"] = {"model": config["model"], "data": config["data"]} | rest
    _check_state_dict(checkpoint["state_dict"])
    kept = {
        key: without_hydra_keys(checkpoint[key]) for key in TOP_LEVEL_KEYS if key in checkpoint and key != "state_dict"
    }
    kept |= {"state_dict": checkpoint["state_dict"], "hyper_parameters": kept_hparams}
    if checkpoint_dirs is None:
        kept.pop("callbacks", None)
    else:
        kept["callbacks"] = rebuild_callback_states(checkpoint.get("callbacks") or {}, checkpoint_dirs)
    return kept


def without_hydra_keys(node: Any) -> Any:
    """`node` with Hydra's instantiation keys removed at every depth: data that builds nothing."""
    if isinstance(node, dict):
        return {key: without_hydra_keys(value) for key, value in node.items() if key not in HYDRA_KEYS}
    if isinstance(node, list):
        return [without_hydra_keys(item) for item in node]
    return node


def _check_data_info(info: dict[str, Any]) -> None:
    """The sizes a data description declares are small enough to allocate for."""
    names = info.get("class_names")
    if not (isinstance(names, list) and 1 <= len(names) <= MAX_CLASSES and all(isinstance(n, str) for n in names)):
        raise UnsafeCheckpointError(f"data_info.class_names must be a list of 1 to {MAX_CLASSES} names")
    if info.get("channels") not in (1, 3):
        raise UnsafeCheckpointError(f"data_info.channels={info.get('channels')!r} is not 1 or 3")
    for key in ("input_size", "native_size"):
        size = info.get(key)
        if not (
            isinstance(size, list)
            and len(size) == 2
            and all(
                isinstance(side, int) and not isinstance(side, bool) and 1 <= side <= MAX_IMAGE_SIDE for side in size
            )
        ):
            raise UnsafeCheckpointError(f"data_info.{key}={size!r} is not two sides of 1 to {MAX_IMAGE_SIDE} pixels")


def _check_state_dict(state_dict: dict[str, Any]) -> None:
    for key, value in state_dict.items():
        if not (isinstance(key, str) and isinstance(value, torch.Tensor)):
            raise UnsafeCheckpointError(f"state_dict[{key!r}] is a {type(value).__name__}, not a tensor")


def require_weights_fit(expected: dict[str, torch.Size], held: dict[str, torch.Tensor], source: str) -> None:
    """The weights `held` (a checkpoint's state_dict) have exactly the keys and shapes of the
    network's `expected` ones; else one line naming them (checked before the weights are loaded)."""
    problems = [f"{key} is missing" for key in expected if key not in held]
    problems += [f"{key} is not a weight of this network" for key in held if key not in expected]
    problems += [
        f"{key} is {list(held[key].shape)} in the checkpoint but {list(shape)} in the network"
        for key, shape in expected.items()
        if key in held and tuple(held[key].shape) != tuple(shape)
    ]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ClassicCNNsError(
            f"{source}: the weights do not fit the network: {'; '.join(problems[:3])}{more}. "
            "Use the model settings the checkpoint was trained with (its run's config.yaml)"
        )


def weight_shapes(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict of a checkpoint (read by read_checkpoint before) as meta tensors: shapes
    only, nothing read into memory."""
    try:
        return torch.load(path, map_location="meta", weights_only=True, mmap=True)["state_dict"]
    except RuntimeError:  # a file in torch's legacy (non-zip) format cannot be memory-mapped
        return torch.load(path, map_location="meta", weights_only=True)["state_dict"]


def load_classifier(path: str | Path, map_location: str = "cpu") -> ImageClassifier:
    """The ImageClassifier of a checkpoint written by train(), in eval mode.

    `model.hparams.data_info` says how inputs must look (size, channels, normalization);
    `model.hparams.config` is the run's config, as data (see `build_datamodule`).
    The network is first built on the meta device (shapes only, no memory) and its weights'
    shapes compared with the tensors the file holds: a size the file declares but does not
    hold (hidden_features=1e9) is refused before anything is allocated.
    """
    checkpoint = read_checkpoint(path, map_location)
    hparams = checkpoint["hyper_parameters"]
    config, info = hparams["config"], hparams["data_info"]
    cls, arguments = _allowed_call(config["model"], "config.model", NETWORKS, NETWORK_ARGUMENTS)
    no_download = {"pretrained": False} if "pretrained" in arguments else {}  # the checkpoint holds the weights
    arguments |= no_download | {
        "in_channels": info["channels"],
        "num_classes": len(info["class_names"]),
        "input_size": info["input_size"],
    }
    try:
        with torch.device("meta"):
            shapes = {f"net.{key}": value.shape for key, value in cls(**arguments).state_dict().items()}
        require_weights_fit(shapes, checkpoint["state_dict"], str(path))
        model = ImageClassifier(net=cls(**arguments), optimizer=None, config=config, data_info=info)
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ClassicCNNsError(
            f"{path}: the model in it cannot be rebuilt ({type(error).__name__}: {first_line})"
        ) from None
    return model.eval()


def default_data_dir() -> str:
    """Where data lives unless the command line says otherwise (as conf/data/*.yaml)."""
    return os.environ.get("CLASSIC_CNNS_DATA_DIR") or "data"


def build_datamodule(config: dict[str, Any], data_dir: str | None = None) -> ImageDataModule:
    """The data module of a checkpoint's config (as `model.hparams.config`): the same set, split,
    normalization and input size. Where the data is comes from the caller (`data_dir`, else
    the default), never from the file, and nothing is downloaded or created on its word: the
    data must be there (scripts/prepare_data.py fetches it). Workers are not started either
    (the data is in memory)."""
    cls, arguments = _allowed_call(config["data"], "config.data", DATA_MODULES)
    for key in ("image_size", "pad_to"):
        size = arguments.get(key)
        if size is not None and not (isinstance(size, int) and 1 <= size <= MAX_IMAGE_SIDE):
            raise UnsafeCheckpointError(f"config.data.{key}={size!r} is not null or 1 to {MAX_IMAGE_SIDE} pixels")
    for key, value in arguments.items():  # the training config's own checks (eval_batch_size=0, std=[0], ...)
        rule = CHECKS.get(f"data.{key}")
        if rule and not rule.check(value):
            raise UnsafeCheckpointError(
                f"the checkpoint's config.data.{key}={value!r} is not allowed: it must be {rule.allowed}"
            )
    arguments |= {"data_dir": data_dir or default_data_dir(), "download": False, "num_workers": 0}
    try:
        return cls(**arguments)
    except (TypeError, ValueError, RuntimeError) as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ClassicCNNsError(
            f"the checkpoint's config.data cannot be rebuilt ({type(error).__name__}: {first_line})"
        ) from None


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
        raise UnsafeCheckpointError(
            f"{key} is a mapping; only plain values (numbers, strings, lists) are allowed there"
        )
    raise UnsafeCheckpointError(
        f"{key} is a {type(value).__name__}; only plain values (numbers, strings, lists) are allowed there"
    )


# Callback states a resume restores: the class (the part of Lightning's state key before "{"),
# and for each key it may hold, what its value must be. Paths are checked on their own.
SCORE = "score"  # None, a number, or a one-element tensor
PATH = "path"  # "" or a .ckpt file in the run's checkpoint directory
CALLBACK_STATES: dict[str, dict[str, Any]] = {
    "ModelCheckpoint": {
        "monitor": (str, type(None)),
        "best_model_score": SCORE,
        "best_model_path": PATH,
        "current_score": SCORE,
        "dirpath": "dirpath",
        "best_k_models": "best_k_models",
        "kth_best_model_path": PATH,
        "kth_value": SCORE,
        "last_model_path": PATH,
    },
    "EarlyStopping": {
        "wait_count": int,
        "stopped_epoch": int,
        "best_score": SCORE,
        "patience": int,
        "stopping_reason": int,
        "stopping_reason_message": (str, type(None)),
    },
    "FitClock": {"fit_seconds": SCORE},
    "Timer": {"time_elapsed": "scores"},  # trainer.max_time
}


def rebuild_callback_states(states: Any, checkpoint_dirs: list[str]) -> dict[str, dict[str, Any]]:
    """The callback states of a checkpoint, rebuilt for a resume into `checkpoint_dirs` (the
    run's ModelCheckpoint directories): known callbacks and keys only (another callback's state
    is dropped with a warning: that callback starts afresh), plain values only, and
    every file path, resolved (`..`, symlinks), a .ckpt file inside one of those directories, whichever keys are present or missing (Lightning deletes the files these paths
    name when it replaces them). Anything else raises UnsafeCheckpointError naming the key."""
    if not isinstance(states, dict):
        raise UnsafeCheckpointError(f"callbacks is a {type(states).__name__}, not a mapping")
    own = {os.path.realpath(directory) for directory in checkpoint_dirs}
    rebuilt = {}
    for state_key, state in states.items():
        name = state_key.split("{")[0] if isinstance(state_key, str) else repr(state_key)
        allowed = CALLBACK_STATES.get(name)
        if allowed is None:  # restoring it is not needed to resume safely: it starts afresh
            warnings.warn(
                f"the state of callback {str(state_key)[:80]!r} in the checkpoint is not restored "
                f"(not one of {', '.join(CALLBACK_STATES)})",
                stacklevel=2,
            )
            continue
        if not isinstance(state, dict):
            raise UnsafeCheckpointError(f"callbacks.{name} is a {type(state).__name__}, not a mapping")
        rebuilt[state_key] = {
            key: _state_value(value, allowed.get(key), f"callbacks.{name}.{key}", own) for key, value in state.items()
        }
    return rebuilt


def _state_value(value: Any, kind: Any, key: str, own: set[str]) -> Any:
    """`value` checked as `kind` (see CALLBACK_STATES); paths come back resolved."""
    if kind is None:
        raise UnsafeCheckpointError(f"{key} is not a key of that callback's state")
    if kind == SCORE:
        if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            return value
        if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
            return value
        raise UnsafeCheckpointError(
            f"{key} is a {type(value).__name__}; a score must be a number, a one-element tensor or null"
        )
    if kind == PATH:
        return "" if value == "" else _own_checkpoint_file(value, key, own)
    if kind == "dirpath":
        if not (isinstance(value, str) and inside(os.path.realpath(value), own, or_equal=True)):
            raise UnsafeCheckpointError(
                f"{key}={value!r} is not this run's checkpoint directory ({', '.join(sorted(own))}): "
                "resume a run in its own directory (hydra.run.dir=the run's folder), or start a new run"
            )
        return os.path.realpath(value)
    if kind == "scores":
        if not (isinstance(value, dict) and all(isinstance(name, str) for name in value)):
            raise UnsafeCheckpointError(f"{key} is not a mapping of names to numbers")
        return {name: _state_value(score, SCORE, f"{key}.{name}", own) for name, score in value.items()}
    if kind == "best_k_models":
        if not isinstance(value, dict):
            raise UnsafeCheckpointError(f"{key} is a {type(value).__name__}, not a mapping")
        return {
            _own_checkpoint_file(file, key, own): _state_value(score, SCORE, key, own) for file, score in value.items()
        }
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise UnsafeCheckpointError(f"{key}={value!r} is not an integer >= 0")
    if isinstance(value, kind):
        return value
    raise UnsafeCheckpointError(f"{key} is a {type(value).__name__}, not one of the plain values that key holds")


def _own_checkpoint_file(file: Any, key: str, own: set[str]) -> str:
    """`file` resolved, when it is a .ckpt file (or not there yet) inside one of the `own` directories."""
    resolved = os.path.realpath(file) if isinstance(file, str) and file else None
    if not (
        resolved
        and resolved.endswith(".ckpt")
        and inside(resolved, own)
        and (not os.path.lexists(resolved) or os.path.isfile(resolved))
    ):
        raise UnsafeCheckpointError(
            f"{key}={file!r} is not a .ckpt file in this run's checkpoint directory ({', '.join(sorted(own))}); "
            "on resume it could be deleted. Resume a run in its own directory (hydra.run.dir=the run's folder), or start a new run"
        )
    return resolved


def inside(path: str, directories: set[str], or_equal: bool = False) -> bool:
    """Whether the resolved `path` lies inside one of the resolved `directories`."""
    return any(path.startswith(directory + os.sep) or (or_equal and path == directory) for directory in directories)


def checkpoint_dirs(cfg) -> list[str]:
    """The directories the run's ModelCheckpoint callbacks write to, as configured; the run's
    output dir when none is configured (Lightning's default one writes under its logger's
    folder there). A resume may name .ckpt files inside them only."""
    dirs = []
    for node in (cfg.get("callbacks") or {}).values():
        if node is not None and str(node.get("_target_", "")).endswith(".ModelCheckpoint"):
            dirs.append(str(node.get("dirpath") or cfg.paths.output_dir))
    return dirs or [str(cfg.paths.output_dir)]
