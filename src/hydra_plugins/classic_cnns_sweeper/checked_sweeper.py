"""Hydra's grid sweep, made safe for long sweeps (a Hydra plugin: conf/hydra/default.yaml selects it).

- Every job's config is composed and validated, and its network built shapes-only, before the
  first job starts, so a typo or a pooling too large in the third value of a sweep fails in
  seconds, not after two finished jobs.
- A failing job (bad value, NaN loss, out of memory) does not stop the others: its error goes
  to `error.txt` in its own dir, every job's status to `sweep_summary.json` in the sweep dir,
  and the command exits with status 1 at the end, listing the failed jobs.

- `tune` (optional): a small search run before the grid, on validation, whose winners the grid's
  jobs then use: for each combination of the `per` keys' values, the value of the searched keys
  (`params`) with the best mean `optimized_metric` over the grid's other combinations, each search
  job changed by `overrides` (another seed, fewer epochs). A study that compares configurations
  trained at one hand-picked learning rate compares the rate's fit as much as the configurations;
  with `tune` each compared configuration trains at the rate chosen for it. The search's jobs run
  in `search/` of the sweep dir, its choice is `search/choice.json`.

Built on Hydra's public Sweeper plugin API (the same grid as Hydra's basic sweeper: every
combination of the swept values, in batches of `max_batch_size` jobs).
"""

import contextlib
import io
import itertools
import json
import logging
import math
import statistics
import traceback
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from classic_cnns.runs.config_checks import ConfigError, check_network_builds, validate
from classic_cnns.runs.console import print_sweep_end, print_sweep_start

log = logging.getLogger(__name__)

SEARCH_DIR = "search"  # the tune search's jobs, in the sweep dir


def job_error(result: JobReturn) -> BaseException | None:
    """The exception a failed job raised, None for a completed one (through JobReturn's public
    `return_value`, which re-raises it; the "Error executing job" note it prints is dropped)."""
    if result.status == JobStatus.COMPLETED:
        return None
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            _ = result.return_value
    except BaseException as error:  # noqa: BLE001  (the job's own exception, whatever it was)
        return error
    raise AssertionError(f"job {result.overrides} has status {result.status} but no error")


def choose(outcomes: Sequence[tuple[tuple, tuple, Any]], maximize: bool = True) -> dict[tuple, tuple[tuple, dict]]:
    """From (group, candidate, score) triples: for each group, the candidate with the best mean
    score and every candidate's mean. A missing or NaN score (a failed job, a diverged rate)
    counts as the worst, so a candidate with a failed job can only win where every one failed."""
    worst = -math.inf if maximize else math.inf
    scores: dict[tuple, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(list))
    for group, candidate, score in outcomes:
        valid = isinstance(score, int | float) and not math.isnan(score)
        scores[group][candidate].append(float(score) if valid else worst)
    chosen = {}
    for group, candidates in scores.items():
        means = {candidate: statistics.fmean(values) for candidate, values in candidates.items()}
        chosen[group] = ((max if maximize else min)(means, key=means.get), means)
    return chosen


class CheckedSweeper(Sweeper):
    def __init__(
        self, max_batch_size: int | None = None, params: DictConfig | None = None, tune: DictConfig | None = None
    ) -> None:
        self.max_batch_size = max_batch_size
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.tune = tune

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def validate_batch_is_legal(self, batch, first_job: int = 0, label: str = "job ") -> None:
        """Compose, validate and build (shapes only) the network of every job of `batch`, whose
        first job is number `first_job`."""
        loader = self.hydra_context.config_loader
        for number, overrides in enumerate(batch, start=first_job):
            cfg = loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            try:
                validate(cfg)
                check_network_builds(cfg)
            except ConfigError as error:
                raise ConfigError(f"{label}{number} ({' '.join(overrides)}): {error}") from None

    def parse(self, arguments: Sequence[str], sweeper_params: bool = True):
        """`hydra.sweeper.params` (unless sweeper_params=False) and the command line's overrides,
        parsed by Hydra's grammar; of a key given twice (with or without + or ++), the last counts,
        in the first's place, as in Hydra's BasicSweeper: `seed=3,4` on the command line replaces a
        study's seeds instead of running each of them once per seed of the study."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        params = [f"{k}={v}" for k, v in self.params.items()] if sweeper_params else []
        overrides = parser.parse_overrides([*params, *arguments])
        last = {o.get_key_element().lstrip("+"): o for o in overrides}  # `++seed=` sets what `seed=` sets
        return list(last.values())

    def make_sweep_dir(self) -> Path:
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        return sweep_dir

    def sweep(self, arguments: list[str]) -> Any:
        """Print the sweep's config once (its jobs print one line each), run the jobs; a config
        error found before they start is one line and exit 1."""
        print_sweep_start(self.config)
        try:
            return self.run_jobs(arguments)
        except ConfigError as error:
            log.error("%s", error)
            raise SystemExit(1) from None

    def grid(self, arguments: Sequence[str], sweeper_params: bool = True) -> list[list[str]]:
        """For each override, the list of its values as `key=value` strings."""
        choices = []
        for override in self.parse(arguments, sweeper_params):
            key = override.get_key_element()
            if not override.is_sweep_override():
                choices.append([f"{key}={override.get_value_element_as_str()}"])
            elif override.is_discrete_sweep():
                choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
            else:
                raise ConfigError(
                    f"{override.input_line}: a grid sweep takes lists, choice(...) or range(...); "
                    "intervals are for an Optuna search (hparams_search=...)"
                )
        return choices

    def run_jobs(self, arguments: list[str]) -> Any:
        choices = self.grid(arguments)
        jobs = [list(job) for job in itertools.product(*choices)]
        search = self.search_jobs(choices) if self.tune else []
        self.validate_batch_is_legal(search, label="search job ")
        self.validate_batch_is_legal(jobs)
        self.make_sweep_dir()
        if search:
            chosen = self.run_search(search)
            jobs = [job + chosen[self.group(job)] for job in jobs]
        results = self.launch_in_batches(jobs)
        self.finish(results)
        return [results]

    def launch_in_batches(self, jobs: list[list[str]]) -> list[JobReturn]:
        batch_size = self.max_batch_size or len(jobs)
        results: list[JobReturn] = []
        for start in range(0, len(jobs), batch_size):
            results.extend(self.launcher.launch(jobs[start : start + batch_size], initial_job_idx=start))
        return results

    def group(self, job: Sequence[str]) -> tuple[str, ...]:
        """The values of the tune's `per` keys in a job's overrides."""
        values = dict(override.split("=", 1) for override in job)
        return tuple(values[key] for key in self.tune.per)

    def search_jobs(self, choices: list[list[str]]) -> list[list[str]]:
        """The grid with the searched keys' values instead of its own and the search's overrides
        (seed, epochs) instead of the grid's values of the same keys."""
        keys = [values[0].split("=", 1)[0] for values in choices]
        if missing := [key for key in self.tune.per if key not in keys]:
            raise ConfigError(
                f"hydra.sweeper.tune.per: {', '.join(missing)} is not a key of the sweep ({', '.join(keys)})"
            )
        # the tune's own values only: with the sweep's params again, their keys (the compared seeds)
        # would be searched too, and every search job run once per seed
        searched = self.grid([f"{key}={values}" for key, values in self.tune.params.items()], sweeper_params=False)
        overrides = [[str(override)] for override in self.tune.overrides]
        replaced = {values[0].split("=", 1)[0] for values in searched + overrides}
        kept = [values for key, values in zip(keys, choices) if key not in replaced]
        return [list(job) for job in itertools.product(*kept, *searched, *overrides)]

    def run_search(self, jobs: list[list[str]]) -> dict[tuple[str, ...], list[str]]:
        """Run the search's jobs in search/ and choose, for each group of the `per` keys' values,
        the searched values (as overrides) with the best mean metric; write search/choice.json."""
        search_dir = Path(self.config.hydra.sweep.dir) / SEARCH_DIR
        search_dir.mkdir(exist_ok=True)
        subdir = f"hydra.sweep.subdir={SEARCH_DIR}/${{hydra.job.num}}"
        entries = [self.job_entry(result) for result in self.launch_in_batches([[*job, subdir] for job in jobs])]
        (search_dir / "sweep_summary.json").write_text(json.dumps(entries, indent=2, default=str) + "\n")
        maximize = self.tune.get("direction", "maximize") == "maximize"
        outcomes = []
        for job, entry in zip(jobs, entries):
            values = dict(override.split("=", 1) for override in job)
            candidate = tuple(f"{key}={values[key]}" for key in self.tune.params)
            outcomes.append(
                (self.group(job), candidate, entry.get("result") if entry["status"] == "completed" else None)
            )
        choices, record = {}, []
        for group, (best, means) in choose(outcomes, maximize).items():
            if not math.isfinite(means[best]):
                raise ConfigError(
                    f"search: every value failed for {self.describe(group)} (see {search_dir}/*/error.txt)"
                )
            choices[group] = list(best)
            others = ", ".join(f"{' '.join(c)}: {m:.4f}" for c, m in means.items() if c != best)
            print(
                f"search: {self.describe(group)}: {' '.join(best)} ({self.config.optimized_metric} {means[best]:.4f}; {others})"
            )
            scores = {" ".join(c): m if math.isfinite(m) else None for c, m in means.items()}
            record.append({"group": dict(zip(self.tune.per, group)), "chosen": list(best), "mean_scores": scores})
        choice = {"metric": str(self.config.optimized_metric), "maximize": maximize, "choices": record}
        (search_dir / "choice.json").write_text(json.dumps(choice, indent=2) + "\n")
        return choices

    def describe(self, group: tuple[str, ...]) -> str:
        return " ".join(f"{key}={value}" for key, value in zip(self.tune.per, group))

    def finish(self, results: Sequence[JobReturn], entries: Sequence[dict] | None = None) -> None:
        """Write sweep_summary.json (and error.txt of every failed job); exit 1 if any failed."""
        entries = entries or [self.job_entry(result) for result in results]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        (sweep_dir / "sweep_summary.json").write_text(json.dumps(list(entries), indent=2, default=str) + "\n")
        failed = [
            f"  job {e['job']} ({' '.join(e['overrides'])}): {e['error']}" for e in entries if e["status"] == "failed"
        ]
        print_sweep_end(sweep_dir, len(entries) - len(failed), len(failed))
        if failed:
            log.error("%d of %d jobs failed:\n%s", len(failed), len(entries), "\n".join(failed))
            raise SystemExit(1)

    @staticmethod
    def job_entry(result: JobReturn, error: BaseException | None = None) -> dict:
        """One job's line of sweep_summary.json; a failed job's traceback goes to its error.txt."""
        job_dir = Path(result.hydra_cfg.hydra.runtime.output_dir)
        entry = {"job": result.hydra_cfg.hydra.job.num, "overrides": list(result.overrides), "dir": str(job_dir)}
        error = error or job_error(result)
        if error is None:
            return entry | {"status": "completed", "result": result.return_value}
        (job_dir / "error.txt").write_text("".join(traceback.format_exception(error)))
        return entry | {"status": "failed", "error": f"{type(error).__name__}: {error}"}
