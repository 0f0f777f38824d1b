"""Resuming a run (`ckpt_path=`): what must match the checkpoint, and what carries over."""

import re
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from classic_cnns import ClassicCNNsError
from classic_cnns.runs.checkpoint_loading import without_hydra_keys
from classic_cnns.runs.config_keys import FREE_ON_RESUME, SAME_ON_RESUME, SCHEDULE_LENGTH, keys_with

SAME_AS_CHECKPOINT = keys_with(SAME_ON_RESUME)
FREE_TO_CHANGE = keys_with(FREE_ON_RESUME)
SCHEDULE_STEPS = keys_with(SCHEDULE_LENGTH)


class ResumeError(ClassicCNNsError):
    pass


def check_resume(
    config: dict[str, Any], checkpoint: dict[str, Any], ckpt_path: str, allow_changes: bool = False
) -> None:
    """Compare the resolved `config` of a run resuming from `checkpoint` (read from `ckpt_path`
    by checkpoint.read_checkpoint) with the config it was trained with."""
    trained = checkpoint["hyper_parameters"]["config"]
    # read_checkpoint dropped the Hydra keys outside model and data: compare like with like
    config = {key: value if key in ("model", "data") else without_hydra_keys(value) for key, value in config.items()}
    if not allow_changes:
        changed = _differences(trained, config, SAME_AS_CHECKPOINT, skip=FREE_TO_CHANGE)
        if changed:
            raise ResumeError(
                f"ckpt_path={ckpt_path} was trained with another model, data or optimizer: {changed}. Resume with "
                "the checkpoint's values (its run's config.yaml), start a new run without ckpt_path, or set "
                "allow_resume_changes=true to continue with the new values"
            )
    if config.get("scheduler"):
        changed = _differences(trained, config, SCHEDULE_STEPS)
        if changed:
            raise ResumeError(
                f"ckpt_path={ckpt_path}: {changed}, but the learning-rate schedule's length was fixed when the "
                "run started (scheduler's total_steps): resume with the checkpoint's values, or start a new run "
                "for the other length"
            )


def _differences(old: dict, new: dict, keys, skip=()) -> str:
    """'key: old -> new' for every dotted key under `keys` whose value differs."""
    before = dict(_flatten({k: old.get(k) for k in {k.split(".")[0] for k in keys}}))
    after = dict(_flatten({k: new.get(k) for k in {k.split(".")[0] for k in keys}}))
    wanted = [k for k in sorted(before.keys() | after.keys()) if any(k == w or k.startswith(w + ".") for w in keys)]
    return ", ".join(
        f"{k}: {before.get(k, '<absent>')} -> {after.get(k, '<absent>')}"
        for k in wanted
        if before.get(k, "<absent>") != after.get(k, "<absent>")
        and not any(k == s or k.startswith(s + ".") for s in skip)
    )


def _flatten(node: Any, prefix: str = ""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


class FitClock(L.Callback):
    """Seconds spent in `trainer.fit`, summed over the segments of a resumed run (kept in
    checkpoints: a killed segment counts up to its last checkpoint, where the run resumed)."""

    def __init__(self) -> None:
        self.before, self._start, self._end = 0.0, None, None

    @property
    def seconds(self) -> float:
        if self._start is None:
            return self.before
        return self.before + ((self._end or time.perf_counter()) - self._start)

    def start(self) -> None:
        """Called just before trainer.fit."""
        self._start, self._end = time.perf_counter(), None

    def on_fit_end(self, trainer, pl_module) -> None:
        self._end = time.perf_counter()

    def state_dict(self) -> dict[str, float]:
        return {"fit_seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.before = state_dict["fit_seconds"]


class StrayCheckpoints(L.Callback):
    """On resume, remove the checkpoints a killed segment left that the restored state does not
    track: a segment killed between saving `epoch_NNN.ckpt` and `last.ckpt` leaves a file no
    callback will ever replace or delete. Only files named by a ModelCheckpoint's own `filename`
    pattern go (never the checkpoint resumed from, nor any file a callback tracks); deleted
    through the checkpoint plugin, which deletes only inside the run's checkpoint directory."""

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.ckpt_path is None or not trainer.is_global_zero:
            return
        callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.dirpath]
        tracked = {Path(trainer.ckpt_path).resolve()}
        for c in callbacks:
            paths = [c.best_model_path, c.kth_best_model_path, c.last_model_path, *c.best_k_models]
            tracked |= {Path(path).resolve() for path in paths if path}
        for c in callbacks:
            pattern = _file_pattern(c)
            for file in Path(c.dirpath).glob("*.ckpt"):
                if file.resolve() not in tracked and pattern.fullmatch(file.name):
                    trainer.strategy.remove_checkpoint(file)


def _file_pattern(callback: ModelCheckpoint) -> re.Pattern:
    """The names `callback` gives its files: its `filename` with every {field} a wildcard,
    Lightning's -vN version suffix, .ckpt (Lightning's default: "{epoch}-{step}")."""
    parts = re.split(r"\{[^}]*\}", callback.filename or "{epoch}-{step}")
    return re.compile(".+?".join(map(re.escape, parts)) + r"(-v\d+)?" + re.escape(callback.FILE_EXTENSION))
