"""A small Optuna sweeper on current Optuna (hparams_search=...), built on CheckedSweeper.

Hydra's own Optuna sweeper pins optuna<3, whose SQLite storage fails with today's SQLAlchemy;
this one asks current Optuna for trials and runs each as a Hydra job:

- the study lives in `storage` (default: an SQLite file in the sweep dir): the same command
  with `hydra.sweep.dir=` set to that dir resumes a killed search where it stopped;
- a failed job is a FAILED trial and the study goes on; a trial left RUNNING by a killed
  search is marked FAILED on resume;
- every trial's config is validated before it runs; `optimization_results.yaml` holds the
  best parameters, `sweep_summary.json` the trials of this invocation.

Search spaces, in `hydra.sweeper.params`: `float(LOW, HIGH)`, `float(LOW, HIGH, log)`,
`int(LOW, HIGH)` or a comma-separated list of choices.
"""

import logging
import math
import re
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from omegaconf import DictConfig, OmegaConf

from .checked_sweeper import CheckedSweeper

log = logging.getLogger(__name__)
RANGE = re.compile(r"^(float|int)\(\s*([^,]+),\s*([^,)]+)\s*(?:,\s*(log)\s*)?\)$")


def _choice(value: str) -> Any:
    return yaml.safe_load(value)  # "0.1" -> 0.1, "max" -> "max", "null" -> None


class OptunaSweeper(CheckedSweeper):
    def __init__(
        self,
        params: DictConfig | None = None,
        n_trials: int = 20,
        direction: str = "maximize",
        study_name: str = "search",
        storage: str | None = None,
        seed: int = 0,
        max_batch_size: int | None = None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=None)
        self.space = {str(k): str(v) for k, v in (params or {}).items()}
        self.n_trials, self.direction, self.study_name = n_trials, direction, study_name
        self.storage, self.seed = storage, seed

    def _suggest(self, trial: optuna.Trial) -> list[str]:
        overrides = []
        for key, spec in self.space.items():
            match = RANGE.match(spec.strip())
            if match:
                kind, low, high, log_scale = match.groups()
                cast = float if kind == "float" else int
                suggest = trial.suggest_float if kind == "float" else trial.suggest_int
                value = suggest(key, cast(low), cast(high), log=bool(log_scale))
            else:
                value = trial.suggest_categorical(key, [_choice(v) for v in spec.split(",")])
            overrides.append(f"{key}={'null' if value is None else value}")
        return overrides

    def sweep(self, arguments: list[str]) -> Any:
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        fixed = [o.input_line for o in parser.parse_overrides(arguments)]

        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage or f"sqlite:///{sweep_dir.resolve() / 'optuna.db'}",
            direction=self.direction,
            sampler=optuna.samplers.TPESampler(seed=self.seed),
            load_if_exists=True,
        )
        for stale in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # left by a killed search
        done = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)))
        if done:
            log.info("resuming study %r: %d of %d trials done", self.study_name, done, self.n_trials)

        self.launcher_returns = []
        for _ in range(max(self.n_trials - done, 0)):
            trial = study.ask()
            overrides = [*fixed, *self._suggest(trial)]
            self.validate_batch_is_legal([overrides])
            (result,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
            self.launcher_returns.append(result)
            value = result.return_value if result.status == JobStatus.COMPLETED else None
            if value is None or not math.isfinite(value):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, value)

        failed = self._write_summary()
        completed = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if completed:
            best = {"best_value": study.best_value, "best_params": study.best_params, "trials": len(study.trials)}
            (sweep_dir / "optimization_results.yaml").write_text(yaml.safe_dump(best, sort_keys=False))
            log.info("best trial (%s): %s", self.direction, best)
        if failed:
            log.error("%d of %d trials failed:\n%s", len(failed), len(self.launcher_returns), "\n".join(failed))
            raise SystemExit(1)
        return [self.launcher_returns]
