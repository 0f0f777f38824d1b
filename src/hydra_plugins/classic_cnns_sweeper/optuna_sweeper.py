"""An Optuna search on current Optuna (hparams_search=...), built on CheckedSweeper.

Hydra's own Optuna sweeper pins optuna<3, whose SQLite storage fails with today's SQLAlchemy;
this one speaks its configuration language and runs on current Optuna:

- Search space in hydra-optuna-sweeper's syntax, parsed by Hydra's override grammar, in
  `hydra.sweeper.params` or on the command line: `choice(a, b)` or `a,b` (categorical),
  `range(a, b[, step])` (Hydra's range: b excluded), `interval(a, b)` (float),
  `int(interval(a, b))`, `tag(log, interval(a, b))`; a plain value is fixed.
- `hydra.sweeper.n_jobs` trials (default: as many as the launcher runs at once) are asked
  for, launched as one batch through the configured launcher, and told to the study.
- Sampler (`hydra/sweeper/sampler=tpe|random|cmaes|grid|nsgaii`) seeded from `seed` and the
  number of trials already in the study, so a search repeats and a resumed one goes on
  instead of repeating its first trials; `direction: [maximize, minimize]` with
  `optimized_metric: [val/acc, fit_seconds]` is a multi-objective search (the Pareto front
  goes to optimization_results.yaml).
- Pruning (`hydra/sweeper/pruner=none|median|hyperband`): each job reports its metric per
  epoch (classic_cnns.runs.optuna_trial.ReportToTrial) and stops early when pruned; the trial is PRUNED,
  not a failure.
- The study lives in `storage` (default: the journal file `optuna.journal` in the sweep dir;
  any Optuna storage URL, e.g. PostgreSQL for searches over several machines). The same
  command with the same `hydra.sweep.dir` resumes a killed search: trials it left RUNNING
  run again with their parameters, and `n_trials` counts finished trials.
"""

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from hydra.core.utils import JobReturn
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from classic_cnns.runs.config_checks import ConfigError
from classic_cnns.runs.optuna_trial import PRUNED_AFTER_EPOCH, open_storage

from .checked_sweeper import CheckedSweeper, job_error

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
SYNTAX = "choice(a, b), a,b, range(a, b[, step]), interval(a, b), int(interval(a, b)) or tag(log, interval(a, b))"


def check_not_old_syntax(line: str) -> None:
    """This project's first syntax, float(LOW, HIGH[, log]) and int(LOW, HIGH), would parse as a
    choice of two values in Hydra's grammar (or not at all): stop with the new spelling."""
    value = line.split("=", 1)[-1].strip()
    if value.startswith(("float(", "int(")) and "interval(" not in value and "range(" not in value:
        raise ConfigError(f"{line}: float(LOW, HIGH[, log]) and int(LOW, HIGH) are the old syntax; write "
                          "interval(LOW, HIGH), tag(log, interval(LOW, HIGH)) or int(interval(LOW, HIGH))")  # fmt: skip


def distribution(override: Override) -> BaseDistribution | None:
    """The Optuna distribution of one search-space override; None for a fixed value."""
    text = override.input_line
    check_not_old_syntax(text)
    if not override.is_sweep_override():
        return None
    value = override.value()
    if isinstance(value, ChoiceSweep):
        choices = list(override.sweep_iterator())
        if not all(c is None or isinstance(c, (str, int, float, bool)) for c in choices):
            raise ConfigError(f"{text}: choices must be numbers, strings, booleans or null")
        return CategoricalDistribution(choices)
    log_scale = "log" in getattr(value, "tags", ())
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"{text}: the range is empty (Hydra's range excludes its end)")
        step = value.step
        if all(isinstance(v, int) for v in (value.start, value.stop, step)):
            return IntDistribution(values[0], values[-1], step=1 if log_scale else step, log=log_scale and step == 1)
        if log_scale:
            raise ConfigError(f"{text}: a log scale takes interval(a, b), not a float range")
        return FloatDistribution(values[0], values[-1], step=step)
    if isinstance(value, IntervalSweep):
        if value.start >= value.end:
            raise ConfigError(f"{text}: interval(a, b) needs a < b")
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise ConfigError(f"{text}: not a search space an Optuna search can take; write {SYNTAX}")


def search_space(overrides: Sequence[Override]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The swept keys as Optuna distributions, and the fixed overrides; for a key given twice the
    last one counts (the command line's over hydra.sweeper.params: `data.batch_size=32` fixes it)."""
    space, fixed = {}, []
    last = {override.get_key_element(): override for override in overrides}
    for override in last.values():
        dist = distribution(override)
        if dist is None:
            fixed.append(override.input_line)
        else:
            space[override.get_key_element()] = dist
    return space, fixed


def override_value(value: Any) -> str:
    """`value` as a Hydra override value: strings quoted, dicts and lists in Hydra's grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if re.fullmatch(r"[A-Za-z_][\w\-]*", value) and value.lower() not in ("null", "true", "false", "nan", "inf"):
        return value  # a plain name (pooling=max) stays unquoted, as a user would type it
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def launcher_parallelism(launcher: DictConfig) -> int:
    """How many jobs the configured launcher runs at once: joblib's n_jobs (-1: every core),
    submitit's array_parallelism, 1 for Hydra's basic launcher."""
    n_jobs = launcher.get("n_jobs", launcher.get("array_parallelism", 1))
    if n_jobs is None or n_jobs < 1:
        import joblib

        return joblib.cpu_count() if n_jobs == -1 else 1
    return int(n_jobs)


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for ask-and-tell: the base class calls `study.stop()` once the
    grid is done, which works only inside `study.optimize`; the sweeper checks `is_exhausted`."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


class OptunaSweeper(CheckedSweeper):
    def __init__(
        self,
        params: DictConfig | None = None,
        n_trials: int = 20,
        n_jobs: int | None = None,
        direction: str | Sequence[str] = "maximize",
        study_name: str = "search",
        storage: str | None = None,
        seed: int = 0,
        sampler: DictConfig | None = None,
        pruner: DictConfig | None = None,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.n_trials, self.n_jobs, self.study_name, self.storage, self.seed = n_trials, n_jobs, study_name, storage, seed
        self.directions = [str(d) for d in direction] if isinstance(direction, (list, ListConfig)) else [str(direction)]
        self.sampler_cfg = sampler or OmegaConf.create({"_target_": "optuna.samplers.TPESampler"})
        self.pruner_cfg = pruner or OmegaConf.create({"_target_": "optuna.pruners.NopPruner"})

    def parse(self, arguments: Sequence[str]) -> list[Override]:
        for line in [*(f"{k}={v}" for k, v in self.params.items()), *arguments]:
            check_not_old_syntax(line)
        return super().parse(arguments)

    def run_jobs(self, arguments: list[str]) -> Any:
        space, fixed = search_space(self.parse(arguments))
        if not space:
            raise ConfigError(f"an Optuna search needs a search space in hydra.sweeper.params: {SYNTAX}")
        multi = len(self.directions) > 1
        metric = self.config.get("optimized_metric")
        if multi and (not isinstance(metric, ListConfig) or len(metric) != len(self.directions)):
            raise ConfigError(f"hydra.sweeper.direction={list(self.directions)} needs optimized_metric to list "
                              f"as many metrics, e.g. [val/acc, fit_seconds] (got {metric})")  # fmt: skip
        pruner = instantiate(self.pruner_cfg)
        if multi and not isinstance(pruner, optuna.pruners.NopPruner):
            raise ConfigError("Optuna prunes single-objective searches only: use hydra/sweeper/pruner=none")
        sweep_dir = self.make_sweep_dir().resolve()
        storage_url = str(self.storage or sweep_dir / "optuna.journal")
        storage = open_storage(storage_url)
        study = optuna.create_study(storage=storage, study_name=self.study_name, directions=self.directions, load_if_exists=True)
        self._rerun_killed_trials(study, sweep_dir)
        sampler_args = {"search_space": self._grid(space)} if self.sampler_cfg.get("_target_", "").endswith("GridSampler") else {}
        sampler = instantiate(self.sampler_cfg, seed=self.seed + len(study.trials), **sampler_args)
        study = optuna.load_study(study_name=self.study_name, storage=storage, sampler=sampler, pruner=pruner)
        n_jobs = self.n_jobs or launcher_parallelism(self.config.hydra.launcher)
        if self._finished(study):
            log.info("study %r in %s: %d of %d trials finished", self.study_name, storage_url, self._finished(study), self.n_trials)

        results, entries = [], []
        while (left := self.n_trials - self._finished(study)) > 0:
            if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study):
                break
            trials = [study.ask(space) for _ in range(min(n_jobs, left))]
            batch = []
            for trial in trials:
                trial.set_user_attr("sweep_dir", str(sweep_dir))
                report = None if multi else self._report_override(storage_url, trial.number, str(metric))
                batch.append([*fixed, *(f"{k}={override_value(v)}" for k, v in trial.params.items()), *filter(None, [report])])
            try:
                self.validate_batch_is_legal(batch, first_job=trials[0].number)
            except ConfigError:  # a bad value: the trials fail, the search stops with one line
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL)
                raise
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            pruned = {t.number for t in study.get_trials(deepcopy=False) if PRUNED_AFTER_EPOCH in t.user_attrs}
            for trial, result in zip(trials, returns):  # told as the batch comes back
                entries.append(self._tell(study, trial, trial.number in pruned, result))
            results.extend(returns)

        self._write_results(study, sweep_dir, storage_url)
        self.finish(results, entries)
        return [results]

    def _report_override(self, storage: str, number: int, metric: str) -> str:
        """The callback that reports this trial's metric per epoch and lets the pruner stop it."""
        callback = {
            "_target_": "classic_cnns.runs.optuna_trial.ReportToTrial",
            "storage": storage,
            "study_name": self.study_name,
            "trial": number,
            "monitor": metric,
            "pruner": OmegaConf.to_container(self.pruner_cfg),
        }
        return f"+callbacks.optuna_trial={override_value(callback)}"

    def _tell(self, study: optuna.Study, trial: optuna.Trial, pruned: bool, result: JobReturn) -> dict:
        error = job_error(result)
        if error is None and pruned:  # the job stopped early
            study.tell(trial, state=TrialState.PRUNED)
            return self.job_entry(result) | {"status": "pruned", "trial": trial.number}
        values = None if error else result.return_value
        values = list(values) if isinstance(values, (list, tuple, ListConfig)) else [values]
        if error is None and (len(values) != len(self.directions) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
            error = ValueError(f"the job returned {values}, not {len(self.directions)} finite metric value(s)")
        study.tell(trial, state=TrialState.FAIL) if error else study.tell(trial, values)
        return self.job_entry(result, error) | {"trial": trial.number}

    def _finished(self, study: optuna.Study) -> int:
        """Finished trials, less the ones a killed search left that ran again."""
        trials = study.get_trials(deepcopy=False)
        rerun = {t.user_attrs["rerun_of"] for t in trials if "rerun_of" in t.user_attrs}
        return sum(t.state in FINISHED and t.number not in rerun for t in trials)

    @staticmethod
    def _rerun_killed_trials(study: optuna.Study, sweep_dir: Path) -> None:
        """Trials that a killed search of this sweep dir left RUNNING (or one killed between
        asking for it and marking it): closed as FAIL, and the same parameters queued to run first.
        Trials of searches in other sweep dirs sharing the study are left alone."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get("sweep_dir", str(sweep_dir)) == str(sweep_dir):
                log.warning("trial %d was left running by a killed search: running it again", trial.number)
                study.tell(trial.number, state=TrialState.FAIL)
                study.enqueue_trial(trial.params, user_attrs={"rerun_of": trial.number})

    @staticmethod
    def _grid(space: dict[str, BaseDistribution]) -> dict[str, list]:
        grid = {}
        for key, dist in space.items():
            if isinstance(dist, CategoricalDistribution):
                grid[key] = list(dist.choices)
            elif isinstance(dist, IntDistribution) and not dist.log:
                grid[key] = list(range(dist.low, dist.high + 1, dist.step))
            else:
                raise ConfigError(f"{key}: the grid sampler takes choice(...), lists and int range(...), not intervals")
        return grid

    def _write_results(self, study: optuna.Study, sweep_dir: Path, storage_url: str) -> None:
        counts = {state.name: len(study.get_trials(deepcopy=False, states=(state,))) for state in FINISHED}
        if not counts["COMPLETE"]:
            return
        if len(self.directions) == 1:
            best = {"best_value": study.best_value, "best_params": study.best_params, "best_trial": study.best_trial.number}
        else:
            front = [{"trial": t.number, "values": t.values, "params": t.params} for t in study.best_trials]
            best = {"directions": self.directions, "pareto_front": front}
        results = best | {"trials": counts, "storage": storage_url, "study_name": self.study_name}
        (sweep_dir / "optimization_results.yaml").write_text(yaml.safe_dump(results, sort_keys=False))
        log.info("search done: %s", best)
