"""An Optuna search on current Optuna (hparams_search=...), built on CheckedSweeper.

Hydra's own Optuna sweeper pins optuna<3, whose SQLite storage fails with today's SQLAlchemy;
this one speaks its configuration language and runs on current Optuna:

- Search space in hydra-optuna-sweeper's syntax, parsed by Hydra's override grammar, in
  `hydra.sweeper.params` or on the command line: `choice(a, b)` or `a,b` (categorical),
  `range(a, b[, step])` (Hydra's range: b excluded), `interval(a, b)` (float),
  `int(interval(a, b))`, `tag(log, interval(a, b))`; a plain value is fixed. What Optuna cannot
  represent (log with a step or from 0, an unknown tag) is one line naming the key, before the
  first trial.
- Trials run asynchronously, `hydra.sweeper.n_jobs` at once (default: the launcher's own
  parallelism; 4 on SLURM, not submitit's 256): a new trial is asked for as soon as one ends,
  and each trial is told to the study when it ends (see `OptunaSweeper.run_trials` for why it
  is built this way).
- Sampler (`hydra/sweeper/sampler=tpe|random|cmaes|grid|nsgaii`) seeded afresh for every trial
  from `seed` and the trial's number (`SeededPerTrial`): a search repeats, a resumed one goes
  on instead of repeating its first trials, and workers sharing one study never draw alike.
  `direction: [maximize, minimize]` with `optimized_metric: [val/acc, fit_seconds]` is a
  multi-objective search (the Pareto front goes to optimization_results.yaml).
- Pruning (`hydra/sweeper/pruner=none|median|hyperband`): each job reports its metric per
  epoch (classic_cnns.runs.optuna_trial.ReportToTrial) and stops early when pruned; the trial is
  PRUNED, not a failure. The job learns its trial from the environment (hydra.job.env_set), so
  its overrides, launch line and config are the trial's parameters only.
- The study lives in `storage` (default: the journal file `optuna.journal` in the sweep dir;
  any Optuna storage URL, e.g. PostgreSQL for searches over several machines). The same
  command with the same `hydra.sweep.dir` resumes a killed search: trials it left RUNNING
  run again with their parameters (on SLURM, a trial whose job is still in the queue is waited
  for instead), and `n_trials` counts finished trials. sweep_summary.json lists every trial of
  the study with its state.
- Searches sharing a study stamp their running trials with a heartbeat (trial_liveness.py); a
  trial whose worker died (no stamp for 4 x `heartbeat_s`) is run again by another search.
"""

import contextlib
import logging
import math
import multiprocessing
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import warnings
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
from rich.table import Table

from classic_cnns.runs.config_checks import ConfigError
from classic_cnns.runs.console import print_wide, shown_path
from classic_cnns.runs.optuna_trial import PRUNED_AFTER_EPOCH, TRIAL_ENV, open_storage, trial_environment

from .checked_sweeper import CheckedSweeper, job_error
from .per_trial_seed import SeededPerTrial
from .submitit_launchers import SLURM_ACTIVE, queue_state
from .trial_liveness import Heartbeat, dead_trials

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
STATUS = {
    TrialState.COMPLETE: "completed",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
}  # as sweep_summary.json says
SLURM_TRIALS_AT_ONCE = 4  # the default on SLURM; hydra.sweeper.n_jobs sets more
BLIND_RATIO = 4  # more than n_trials / 4 trials at once: a warning that the sampler is nearly blind
STOP_GRACE_S = 5.0  # a stopped search's job processes get this long to end on SIGTERM, then SIGKILL
DEAD_AFTER_BEATS = 4  # a RUNNING trial not stamped for 4 heartbeats: its worker is dead
# Hydra's launchers log each launch ("Launching jobs", "#0 : <every override>"); launched one trial
# at a time that is a misnumbered line full of plumbing, so the sweeper logs its own per trial.
LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)
SYNTAX = "choice(a, b), a,b, range(a, b[, step]), interval(a, b), int(interval(a, b)) or tag(log, interval(a, b))"


def distribution(override: Override) -> BaseDistribution | None:
    """The Optuna distribution of one search-space override; None for a fixed value. What Optuna
    cannot represent (a log scale with a step, or from 0; a tag other than log) is an error
    naming the key, not a silently different search; so is Hydra's or Optuna's own complaint."""
    try:
        return _distribution(override)
    except ValueError as error:
        raise ConfigError(f"{override.input_line}: {error}") from None


def _distribution(override: Override) -> BaseDistribution | None:
    text = override.input_line
    if not override.is_sweep_override():
        return None
    value = override.value()
    tags = set(getattr(value, "tags", ()))
    if unknown := sorted(tags - {"log"}):
        raise ConfigError(
            f"{text}: unknown tag {', '.join(unknown)}; the only tag an Optuna search takes is log, as in tag(log, interval(a, b))"
        )
    log_scale = "log" in tags
    if isinstance(value, ChoiceSweep):
        if log_scale:
            raise ConfigError(
                f"{text}: a choice has no scale; tag(log, ...) takes interval(a, b) or int(interval(a, b))"
            )
        choices = list(override.sweep_iterator())
        if not all(c is None or isinstance(c, (str, int, float, bool)) for c in choices):
            raise ConfigError(f"{text}: choices must be numbers, strings, booleans or null")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"{text}: the range is empty (Hydra's range excludes its end)")
        low, high = values[0], values[-1]
        if not all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            if log_scale:
                raise ConfigError(f"{text}: a log scale takes interval(a, b), not a float range")
            return FloatDistribution(low, high, step=value.step)
        if log_scale and value.step != 1:
            raise ConfigError(
                f"{text}: Optuna's log scale takes no step; write tag(log, int(interval({low}, {high}))) "
                f"for a log scale, or range({value.start}, {value.stop}, step={value.step}) without log"
            )
        return IntDistribution(low, high, step=value.step, log=log_scale)
    if isinstance(value, IntervalSweep):
        if value.start >= value.end:
            raise ConfigError(f"{text}: interval(a, b) needs a < b")
        if log_scale and value.start <= 0:
            raise ConfigError(
                f"{text}: a log scale needs a lower bound above 0 (log of {value.start} is undefined), e.g. interval(1e-5, {value.end})"
            )
        kind = IntDistribution if isinstance(value.start, int) and isinstance(value.end, int) else FloatDistribution
        return kind(value.start, value.end, log=log_scale)
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
    """How many trials run at once by default: joblib's n_jobs (-1: every core), on SLURM
    submitit's array_parallelism but at most SLURM_TRIALS_AT_ONCE (submitit's default, 256,
    would draw a whole search blind), 1 for Hydra's basic launcher."""
    if "array_parallelism" in launcher:
        return max(1, min(int(launcher.array_parallelism), SLURM_TRIALS_AT_ONCE))
    n_jobs = launcher.get("n_jobs", 1)
    if n_jobs is None or n_jobs < 1:
        import joblib

        return joblib.cpu_count() if n_jobs == -1 else 1
    return int(n_jobs)


@contextlib.contextmanager
def launch_lines_off():
    """Hydra's launchers log nothing but their launch lines at INFO: drop those while trials run."""
    quiet = logging.Filter("no launch lines")
    quiet.filter = lambda record: record.levelno > logging.INFO
    loggers = [logging.getLogger(name) for name in LAUNCHER_LOGGERS]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


@contextlib.contextmanager
def sigterm_raises():
    """SIGTERM (scancel of the search's own job, `kill`) ends the search as Ctrl-C does, so it
    stops its running jobs first; Python's default for SIGTERM is to die on the spot."""

    def terminated(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_for(ended: queue.Queue) -> Any:
    """The next item of `ended`, waking every second: a Ctrl-C that the kernel delivered to another
    thread is only acted on when this (the main) thread runs, so an untimed get() would leave it
    pending until a running trial ended."""
    while True:
        try:
            return ended.get(timeout=1.0)
        except queue.Empty:
            continue


def reattaches(launcher: Any) -> bool:
    """Whether the launcher is submitit_launchers.SlurmLauncher. Not isinstance: Hydra's plugin
    scan executes the plugin modules again, so the launcher's class is another copy of it."""
    return callable(getattr(launcher, "reattach", None)) and hasattr(launcher, "on_submitted")


def shown(value: Any) -> str:
    """A parameter as a trial line shows it: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for ask-and-tell: the base class calls `study.stop()` once the
    grid is done, which works only inside `study.optimize`; the sweeper counts the grid itself."""

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
        heartbeat_s: float = 30,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.n_trials, self.n_jobs, self.study_name, self.storage, self.seed = (
            n_trials,
            n_jobs,
            study_name,
            storage,
            seed,
        )
        self.heartbeat_s = heartbeat_s
        self.directions = [str(d) for d in direction] if isinstance(direction, (list, ListConfig)) else [str(direction)]
        self.sampler_cfg = sampler or OmegaConf.create({"_target_": "optuna.samplers.TPESampler"})
        self.pruner_cfg = pruner or OmegaConf.create({"_target_": "optuna.pruners.NopPruner"})

    def run_jobs(self, arguments: list[str]) -> Any:
        space, fixed = search_space(self.parse(arguments))
        if not space:
            raise ConfigError(f"an Optuna search needs a search space in hydra.sweeper.params: {SYNTAX}")
        metric = self.config.get("optimized_metric")
        metrics = [str(m) for m in metric] if isinstance(metric, ListConfig) else [str(metric)]
        if len(metrics) != len(self.directions):
            raise ConfigError(
                f"hydra.sweeper.direction={list(self.directions)} needs optimized_metric to list "
                f"as many metrics, e.g. [val/acc, fit_seconds] (got {metric})"
            )
        pruner = instantiate(self.pruner_cfg)
        if len(metrics) > 1 and not isinstance(pruner, optuna.pruners.NopPruner):
            raise ConfigError("Optuna prunes single-objective searches only: use hydra/sweeper/pruner=none")
        grid = self._grid(space) if self._sampler_name().endswith("GridSampler") else None
        sweep_dir = self.make_sweep_dir().resolve()
        storage_url = str(self.storage or sweep_dir / "optuna.journal")
        storage = open_storage(storage_url)
        study = optuna.create_study(
            storage=storage, study_name=self.study_name, directions=self.directions, load_if_exists=True
        )
        with warnings.catch_warnings(category=optuna.exceptions.ExperimentalWarning, action="ignore"):
            study.set_metric_names(metrics)  # optuna-dashboard labels the objective val/acc, not "Objective 0"
        still_queued = self._still_queued(study, sweep_dir)
        self._rerun_dead_trials(study, sweep_dir, keep={t.number for t in still_queued})
        sampler = SeededPerTrial(
            lambda seed: instantiate(self.sampler_cfg, seed=seed, **({"search_space": grid} if grid else {})), self.seed
        )
        study = optuna.load_study(study_name=self.study_name, storage=storage, sampler=sampler, pruner=pruner)
        wanted = min(self.n_trials, math.prod(len(values) for values in grid.values())) if grid else self.n_trials
        slots = self.n_jobs or launcher_parallelism(self.config.hydra.launcher)
        self._warn_if_blind(slots, wanted)
        if self._finished(study):
            log.info(
                "study %r in %s: %d of %d trials finished", self.study_name, storage_url, self._finished(study), wanted
            )

        entries = self.run_trials(
            study,
            space,
            fixed,
            slots,
            wanted,
            sweep_dir,
            storage_url,
            metrics[0] if len(metrics) == 1 else None,
            still_queued,
        )
        summary = self._summary(study, sweep_dir, entries)
        self._write_results(study, sweep_dir, storage_url, summary)
        self.finish([], summary)
        return [[entry["job_return"] for entry in entries.values()]]

    def run_trials(
        self, study, space, fixed, slots, wanted, sweep_dir, storage_url, metric, still_queued=()
    ) -> dict[int, dict]:
        """Run trials until `wanted` have finished, `slots` at once: a trial is asked for as soon
        as a slot is free and told to the study as soon as its job ends. `still_queued`: trials
        a killed search left whose SLURM jobs are still queued or running; they take their slots
        first and are waited for, not run again.

        Why this design: Optuna's own distributed pattern is N independent workers, each looping
        ask -> run -> tell on a shared storage; Ray Tune keeps every slot of a cluster busy from
        one driver that starts a trial whenever one ends; hydra-optuna-sweeper asks `n_jobs`
        trials, launches them as one batch and tells them when the slowest returns, so a slot
        freed by a pruned trial idles and every trial of a batch looks as long as the slowest.
        Workers that each run many trials would put many trials in one Hydra job (one run dir,
        one config); Ray's driver needs Ray's runtime. So this is the driver shape built on
        Hydra's launcher API: each trial is one `launcher.launch([its overrides])` numbered by the
        trial, each from a thread of its own, so it keeps Hydra's job model (a run dir and
        .hydra config per trial, its JobReturn in sweep_summary.json) on every launcher:
        joblib's (`parallel`, `per_gpu`) share one pool of loky worker processes between the
        threads, submitit's submits one job per trial. Only this thread asks and tells;
        parallel workers on one study remain possible (several sweep dirs, one storage).
        The threads are daemons: a search stopped with Ctrl-C exits at once instead of waiting
        for its running trials. With one slot the trial runs in this thread (the basic launcher
        runs jobs in-process, and signal handlers can only be set in the main thread)."""
        entries: dict[int, dict] = {}
        running: dict[int, optuna.Trial] = {}
        ended: queue.Queue = queue.Queue()  # (trial, the launch's JobReturns or its exception)
        error = None
        if reattaches(self.launcher):  # each trial's SLURM job id, kept on the trial

            def record(number: int, job: dict[str, str]) -> None:
                if number in running:
                    running[number].set_user_attr("slurm_job", job)

            self.launcher.on_submitted = record
        with launch_lines_off(), sigterm_raises(), Heartbeat(self.heartbeat_s) as heartbeat:
            try:
                for frozen in still_queued:
                    # FrozenTrial's id is private (no public way from a frozen trial to a Trial): the
                    # SIGKILL test in tests/test_slurm.py fails if it changes
                    trial = optuna.Trial(study, frozen._trial_id)
                    overrides = [*fixed, *(f"{k}={override_value(v)}" for k, v in trial.params.items())]
                    if metric is not None:
                        overrides.append(self._trial_environment(storage_url, trial.number, metric))
                    log.info(
                        "trial %d: still running as SLURM job %s, started by a killed search: waiting for it",
                        trial.number,
                        frozen.user_attrs["slurm_job"]["job_id"],
                    )
                    running[trial.number] = trial
                    heartbeat.add(trial)
                    threading.Thread(
                        target=self._launch,
                        args=(trial, overrides, ended, frozen.user_attrs["slurm_job"]),
                        name=f"trial {trial.number}",
                        daemon=True,
                    ).start()
                while True:
                    while error is None and len(running) < slots and self._finished(study) + len(running) < wanted:
                        trial = study.ask(space)
                        trial.set_user_attr("sweep_dir", str(sweep_dir))
                        heartbeat.add(trial)
                        overrides = [*fixed, *(f"{k}={override_value(v)}" for k, v in trial.params.items())]
                        try:
                            self.validate_batch_is_legal([overrides], first_job=trial.number)
                        except ConfigError as bad_value:  # the trial fails, the search stops with one line
                            heartbeat.remove(trial)
                            study.tell(trial, state=TrialState.FAIL)
                            error = bad_value
                            break
                        log.info(
                            "trial %d: %s", trial.number, " ".join(f"{k}={shown(v)}" for k, v in trial.params.items())
                        )
                        if metric is not None:
                            overrides.append(self._trial_environment(storage_url, trial.number, metric))
                        running[trial.number] = trial
                        if slots == 1:
                            ended.put((trial, self.launcher.launch([overrides], initial_job_idx=trial.number)))
                        else:
                            threading.Thread(
                                target=self._launch,
                                args=(trial, overrides, ended),
                                name=f"trial {trial.number}",
                                daemon=True,
                            ).start()
                    if not running:
                        break
                    trial, returns = wait_for(ended)
                    del running[trial.number]
                    heartbeat.remove(trial)
                    if isinstance(returns, BaseException):
                        raise returns
                    entries[trial.number] = self._tell(study, trial, returns[0])
                    log.info("trial %d %s", trial.number, entries[trial.number]["status"])
                    self._rerun_dead_trials(study)  # other workers' trials whose worker died
            except BaseException:  # Ctrl-C, or a launcher that failed
                if running:
                    self._stop_running_jobs()
                raise
        if error is not None:
            raise error
        return entries

    def _stop_running_jobs(self) -> None:
        """The search stops while trials run (Ctrl-C, SIGTERM, a launcher that failed): the
        processes running their jobs that are this process's children (joblib's loky workers)
        are ended, or Python's exit would wait for every running trial, and the SLURM jobs it
        submitted (submitit keeps one folder per job id) are cancelled. A search killed with
        SIGKILL cannot: its SLURM jobs go on, and the resumed search waits for them."""
        deadline, signalled = time.monotonic() + STOP_GRACE_S, []
        while True:  # looked at again: a launch thread may be starting a process right now
            for child in multiprocessing.active_children():
                if child not in signalled:
                    child.terminate()
                    signalled.append(child)
            alive = [child for child in signalled if child.is_alive()]
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        for child in alive:  # one that ignores SIGTERM (a handler of its own, a lock held at fork)
            child.kill()
        folders = self.config.hydra.launcher.get("submitit_folder")
        if folders and shutil.which("scancel"):
            submitted = [
                d.name
                for d in Path(str(folders).replace("%j", "_")).parent.glob("*")
                if re.fullmatch(r"\d+(_\d+)?", d.name)
            ]
            if submitted:
                log.warning("cancelling the search's SLURM jobs: %s", " ".join(submitted))
                subprocess.run(["scancel", *submitted], capture_output=True, check=False)

    def _launch(
        self, trial: optuna.Trial, overrides: list[str], ended: queue.Queue, submitted: dict | None = None
    ) -> None:
        """One trial's job through the launcher, from its own thread (or the SLURM job `submitted`
        by a killed search, waited for); what it returns or raises goes to `ended`."""
        try:
            if submitted is not None:
                ended.put((trial, self.launcher.reattach(submitted, overrides, trial.number)))
            else:
                ended.put((trial, self.launcher.launch([overrides], initial_job_idx=trial.number)))
        except BaseException as error:  # noqa: BLE001  (handed to the search's thread, which raises it)
            ended.put((trial, error))

    def _trial_environment(self, storage: str, number: int, metric: str) -> str:
        """The override that names the job's trial (storage, study, number, metric, pruner) in its
        environment, where ReportToTrial finds it; Hydra's launch lines and the job's task
        overrides leave hydra.* out, so the trial shows only its own parameters."""
        spec = trial_environment(storage, self.study_name, number, metric, OmegaConf.to_container(self.pruner_cfg))
        return f"++hydra.job.env_set.{TRIAL_ENV}={override_value(spec)}"

    def _tell(self, study: optuna.Study, trial: optuna.Trial, result: JobReturn) -> dict:
        error = job_error(result)
        entry = {"trial": trial.number, "job_return": result}
        reported = study.get_trials(deepcopy=False)[trial.number].user_attrs  # a trial's number is its index
        if error is None and PRUNED_AFTER_EPOCH in reported:  # the job stopped early
            study.tell(trial, state=TrialState.PRUNED)
            return entry | self.job_entry(result) | {"status": "pruned"}
        values = None if error else result.return_value
        values = list(values) if isinstance(values, (list, tuple, ListConfig)) else [values]
        if error is None and (
            len(values) != len(self.directions)
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        ):
            error = ValueError(f"the job returned {values}, not {len(self.directions)} finite metric value(s)")
        study.tell(trial, state=TrialState.FAIL) if error else study.tell(trial, values)
        return entry | self.job_entry(result, error)

    def _finished(self, study: optuna.Study) -> int:
        """Finished trials, less the ones a killed search left that ran again."""
        trials = study.get_trials(deepcopy=False)
        rerun = {t.user_attrs["rerun_of"] for t in trials if "rerun_of" in t.user_attrs}
        return sum(t.state in FINISHED and t.number not in rerun for t in trials)

    def _sampler_name(self) -> str:
        return str(self.sampler_cfg.get("_target_", ""))

    def _warn_if_blind(self, slots: int, wanted: int) -> None:
        """Each trial is drawn knowing only the trials finished before it: with many at once
        against few trials, a model-based sampler (TPE, CMA-ES, NSGA-II) samples nearly at random."""
        if (
            slots > 1
            and slots * BLIND_RATIO > wanted
            and not self._sampler_name().endswith(("RandomSampler", "GridSampler"))
        ):
            log.warning(
                "%d trials at once for %d trials: most trials are drawn before the ones before them finish, so the "
                "sampler works nearly at random; set hydra.sweeper.n_jobs to at most %d or raise hydra.sweeper.n_trials",
                slots,
                wanted,
                max(1, wanted // BLIND_RATIO),
            )

    def _still_queued(self, study: optuna.Study, sweep_dir: Path) -> list[optuna.trial.FrozenTrial]:
        """Trials a killed search of `sweep_dir` left RUNNING whose SLURM jobs are still in the
        queue (pending or running): on the SLURM launcher, the resumed search waits for them."""
        if not reattaches(self.launcher):
            return []
        left = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get("sweep_dir") == str(sweep_dir) and isinstance(t.user_attrs.get("slurm_job"), dict)
        ]
        return [t for t in left if queue_state(str(t.user_attrs["slurm_job"].get("job_id", ""))) in SLURM_ACTIVE]

    def _rerun_dead_trials(
        self, study: optuna.Study, sweep_dir: Path | None = None, keep: set[int] = frozenset()
    ) -> None:
        """RUNNING trials whose worker is gone, closed as FAIL and their parameters queued to run
        first (by whichever worker asks next): at the start of a search, the trials a killed
        search of the same `sweep_dir` left (but those in `keep`, waited for instead); at any
        time, any worker's trial whose heartbeat stopped (trial_liveness.py). Trials of live
        workers sharing the study are left alone."""
        dead = {t.number: t for t in dead_trials(study, DEAD_AFTER_BEATS * self.heartbeat_s)}
        if sweep_dir is not None:
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial.user_attrs.get("sweep_dir", str(sweep_dir)) == str(sweep_dir):
                    dead[trial.number] = trial
        for number, trial in sorted((n, t) for n, t in dead.items() if n not in keep):
            log.warning(
                "trial %d was left running by a killed search (%s): running it again",
                number,
                trial.user_attrs.get("sweep_dir", "?"),
            )
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)  # another worker may have been first
            study.enqueue_trial(trial.params, user_attrs={"rerun_of": number})

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

    @staticmethod
    def _summary(study: optuna.Study, sweep_dir: Path, entries: dict[int, dict]) -> list[dict]:
        """sweep_summary.json: every trial of the study (also those of earlier, killed runs and
        of other workers) with its state; a trial killed with its search and run again is `rerun`."""
        trials = study.get_trials(deepcopy=False)
        rerun_as = {t.user_attrs["rerun_of"]: t.number for t in trials if "rerun_of" in t.user_attrs}
        summary = []
        for trial in trials:
            entry = {k: v for k, v in entries.get(trial.number, {}).items() if k != "job_return"}
            if not entry:
                job_dir = Path(trial.user_attrs.get("sweep_dir", sweep_dir)) / str(trial.number)
                status = STATUS.get(trial.state, trial.state.name.lower())
                entry = {
                    "job": trial.number,
                    "trial": trial.number,
                    "overrides": [f"{k}={override_value(v)}" for k, v in trial.params.items()],
                    "dir": str(job_dir),
                    "status": status,
                }
                if status == "completed":
                    entry["result"] = trial.values[0] if len(trial.values) == 1 else trial.values
                elif status == "failed":
                    entry["error"] = f"failed in an earlier run (its traceback: {job_dir / 'error.txt'})"
            entry["state"] = trial.state.name
            if trial.number in rerun_as:
                entry |= {"status": "rerun", "rerun_as": rerun_as[trial.number]}
            summary.append(entry)
        return summary

    def _write_results(self, study: optuna.Study, sweep_dir: Path, storage_url: str, summary: list[dict]) -> None:
        """optimization_results.yaml, and the same as a short table on the console."""
        counts = {
            status: sum(e["status"] == status for e in summary) for status in ("completed", "pruned", "failed", "rerun")
        }
        counts |= {
            s: n
            for s in {e["status"] for e in summary} - counts.keys()
            if (n := sum(e["status"] == s for e in summary))
        }
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            best = {}
        elif len(self.directions) == 1:
            best = {
                "best_value": study.best_value,
                "best_params": study.best_params,
                "best_trial": study.best_trial.number,
            }
        else:
            front = [{"trial": t.number, "values": t.values, "params": t.params} for t in study.best_trials]
            best = {"directions": self.directions, "pareto_front": front}
        results = best | {"trials": counts, "storage": storage_url, "study_name": self.study_name}
        (sweep_dir / "optimization_results.yaml").write_text(yaml.safe_dump(results, sort_keys=False))
        print_wide(self._results_table(study, counts, storage_url))

    def _results_table(self, study: optuna.Study, counts: dict[str, int], storage_url: str) -> Table:
        table = Table(title=f"Optuna study {self.study_name!r}", show_header=False, box=None, title_justify="left")
        table.add_row("trials", ", ".join(f"{n} {status}" for status, n in counts.items()))
        names = study.metric_names or ["value"]
        if len(self.directions) == 1 and study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            table.add_row(f"best {names[0]}", f"{study.best_value:.4g} (trial {study.best_trial.number})")
            for key, value in study.best_params.items():
                table.add_row(f"  {key}", f"{value:.4g}" if isinstance(value, float) else str(value))
        elif len(self.directions) > 1:
            for trial in study.best_trials:
                values = ", ".join(f"{name} {value:.4g}" for name, value in zip(names, trial.values))
                table.add_row(f"Pareto trial {trial.number}", values)
        dashboard = shown_path(storage_url) if "://" not in storage_url else storage_url
        table.add_row("dashboard", f"optuna-dashboard {shlex.quote(dashboard)}")
        return table
