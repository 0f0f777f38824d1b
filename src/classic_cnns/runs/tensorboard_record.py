"""What a run records about itself in TensorBoard: its run name and its HPARAMS record.

- The run name tells runs apart in TensorBoard's lists and legends: in a sweep, the overrides
  that vary across the sweep (`pooling=max,seed=0`); in a single run, the overrides that change
  the experiment (not where it runs: trainer, paths, data dir, loggers, callbacks); shortest
  first, the seed last. The events go to RUN_DIR/RUN_NAME/ (a sweep: SWEEP_DIR/JOB/RUN_NAME/).
- The HPARAMS record holds every group choice (`choices/...`), every config value
  (`config/...`), the seed, the tags and the full override list. The keys a sweep varies are
  marked as differing, which TensorBoard sorts first and shows by default.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import OmegaConf

from classic_cnns.runs.config_keys import NOT_HPARAM, STUDIED, WHERE, keys_with

EXPERIMENT_GROUPS = keys_with(STUDIED)
INFRASTRUCTURE = keys_with(WHERE)  # left out of single runs' names
NOT_HYPERPARAMETERS = keys_with(NOT_HPARAM)


def safe_dirname(name: str, limit: int = 120) -> str:
    """`name` as one directory name: no '/', and a long one cut and suffixed with its hash."""
    name = str(name).replace("/", "_")
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def override_key(override: str) -> str:
    """`+trainer.max_epochs=3` -> `trainer.max_epochs`, `pooling=avg` -> `pooling`."""
    return override.split("=", 1)[0].lstrip("+~")


def _is_infrastructure(key: str) -> bool:
    return any(key == prefix or key.startswith((f"{prefix}.", f"{prefix}/")) for prefix in INFRASTRUCTURE)


def swept_keys() -> set[str]:
    """The keys this job's multirun varies: its sweep overrides on the command line (kept by the
    sweeper in the sweep dir's multirun.yaml) and the `hydra.sweeper.params` that sweep (grid
    values, or an Optuna search space)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return set()
    hydra = HydraConfig.get()
    candidates = [f"{key}={value}" for key, value in (hydra.sweeper.get("params") or {}).items()]
    multirun = Path(hydra.sweep.dir) / "multirun.yaml"
    if multirun.is_file():
        candidates += OmegaConf.to_container(OmegaConf.load(multirun).hydra.overrides.task)
    parser, keys = OverridesParser.create(), set()
    for line in candidates:
        try:
            (override,) = parser.parse_overrides([line])
        except HydraException:  # a search space such as float(0.001, 0.1, log)
            keys.add(override_key(line))
            continue
        if override.is_sweep_override():
            keys.add(override.key_or_group)
    return keys


def run_name(overrides: list[str], swept: set[str]) -> str:
    """The overrides of the swept keys or, without any, those that are not infrastructure;
    shortest first and the seed last, so that a configuration's seeds sit together in
    TensorBoard's sorted run list (`pooling=max,seed=0`); `defaults` when none is left."""
    picked = [o for o in overrides if override_key(o) in swept] or [
        o for o in overrides if not _is_infrastructure(override_key(o))
    ]
    picked = sorted((o.lstrip("+") for o in picked), key=lambda o: (override_key(o) == "seed", len(o), o))
    return safe_dirname(",".join(picked)) if picked else "defaults"


def tensorboard_run_name() -> str:
    """`run_name` of the current Hydra job (the `${tensorboard_run_name:}` resolver)."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return run_name(overrides, swept_keys())


def _choices() -> dict[str, str]:
    if not HydraConfig.initialized():
        return {}
    return {
        group: str(option)
        for group, option in HydraConfig.get().runtime.choices.items()
        if not group.startswith("hydra") and option is not None
    }


def _without_targets(node: Any) -> Any:
    """A config without `_target_`/`_partial_`: constants that the group choice already says."""
    if isinstance(node, dict):
        return {k: _without_targets(v) for k, v in node.items() if k not in ("_target_", "_partial_")}
    return node


def hyperparameters(config: dict[str, Any], seed: int) -> dict[str, Any]:
    """The run's record: group choices, seed, tags, every override, the config values."""
    choices = _choices()
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return {
        "choices": {g: o for g, o in choices.items() if g in EXPERIMENT_GROUPS},
        "run": {g: o for g, o in choices.items() if g not in EXPERIMENT_GROUPS},  # trainer, logger, debug, ...
        "seed": seed,
        "tags": ",".join(map(str, config.get("tags") or [])),
        "overrides": " ".join(overrides),
        "config": _without_targets({k: v for k, v in config.items() if k not in NOT_HYPERPARAMETERS}),
    }


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"config": {"optimizer": {"lr": 0.1}}}` -> `{"config/optimizer/lr": 0.1}`; values that
    TensorBoard cannot show (None, lists) as text."""
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}/")
        elif value is None or isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def hparam_name(key: str, record: dict[str, Any]) -> str:
    """The HPARAMS column of an override key: a group choice, the seed, or a config value."""
    for section in ("choices", "run"):
        if key in record[section]:
            return f"{section}/{key}"
    return key if key in record else "config/" + key.replace(".", "/")


def log_hparams(loggers, config: dict[str, Any], seed: int, metrics: dict[str, Any]) -> None:
    """One HPARAMS record per run with its final metrics (`hp/val_acc`, ...), written to every
    logger (none under fast_dev_run, where Lightning swaps them for a DummyLogger), and the
    record as `hparams.yaml` in each logger's dir."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.loggers.logger import DummyLogger

    loggers = [logger for logger in loggers if not isinstance(logger, DummyLogger)]
    record = hyperparameters(config, seed)
    flat = flatten(record)
    # the kept checkpoint's scores (not the last epoch's train/), accuracies first: TensorBoard keeps this order
    scores = sorted(
        (k for k in metrics if "/" in k and not k.startswith("train/")),
        key=lambda k: (not k.endswith("/acc"), not k.startswith("val/"), k),
    )
    final = {f"hp/{k.replace('/', '_')}": metrics[k] for k in scores}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            differing = {hparam_name(key, record) for key in swept_keys()}
            _write_tensorboard_hparams(logger, flat, final, differing)
        else:
            logger.log_hyperparams(flat)
            logger.log_metrics(final)
        logger.save()
        if getattr(logger, "log_dir", None):
            (Path(logger.log_dir) / "hparams.yaml").write_text(yaml.safe_dump(record, sort_keys=False))


def _write_tensorboard_hparams(logger, flat: dict[str, Any], final: dict[str, float], differing: set[str]) -> None:
    """TensorBoard's hparams summaries (what `SummaryWriter.add_hparams` writes, but into this
    run instead of a new one). TensorBoard's table shows the first five hparam columns (`differs`
    first, then by name) before any metric, about 160 pixels each: so a sweep's table lists only
    the keys the sweep varies (marked `differs`), and its metrics follow them on screen. Every
    value stays in each run's record (hparams.yaml, the session's hparams); a single run lists
    its group choices."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    from torch.utils.tensorboard.summary import hparams

    # ints as text: TensorBoard shows every number with four decimals (seed 0.0000)
    flat = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in flat.items()}
    experiment, session_start, session_end = hparams(flat, final)
    plugin_data = experiment.value[0].metadata.plugin_data
    content = HParamsPluginData.FromString(plugin_data.content)
    listed = [
        info
        for info in content.experiment.hparam_infos
        if info.name in differing or not differing and info.name.startswith("choices/")
    ]
    del content.experiment.hparam_infos[:]
    content.experiment.hparam_infos.extend(listed)
    for info in content.experiment.hparam_infos:
        info.differs = info.name in differing
    plugin_data.content = content.SerializeToString()
    writer = logger.experiment._get_file_writer()  # SummaryWriter has no public way to add a raw summary
    for summary in (experiment, session_start, session_end):
        writer.add_summary(summary)
    logger.log_metrics(final, step=0)


def tensorboard_logdir(trainer, output_dir: Path) -> Path | None:
    """The directory to point `tensorboard --logdir` at, if this run wrote TensorBoard events."""
    from lightning.pytorch.loggers import TensorBoardLogger

    return output_dir if any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers) else None
