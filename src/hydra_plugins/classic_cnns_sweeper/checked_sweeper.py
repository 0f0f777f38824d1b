"""Hydra's grid sweep, made safe for long sweeps (a Hydra plugin: conf/hydra/default.yaml selects it).

- Every job's config is composed and validated, and its network built shapes-only, before the
  first job starts, so a typo or a pooling too large in the third value of a sweep fails in
  seconds, not after two finished jobs.
- A failing job (bad value, NaN loss, out of memory) does not stop the others: its error goes
  to `error.txt` in its own dir, every job's status to `sweep_summary.json` in the sweep dir,
  and the command exits with status 1 at the end, listing the failed jobs.

Built on Hydra's public Sweeper plugin API (the same grid as Hydra's basic sweeper: every
combination of the swept values, in batches of `max_batch_size` jobs).
"""

import contextlib
import io
import itertools
import json
import logging
import traceback
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


class CheckedSweeper(Sweeper):
    def __init__(self, max_batch_size: int | None = None, params: DictConfig | None = None) -> None:
        self.max_batch_size = max_batch_size
        self.params = {str(k): str(v) for k, v in (params or {}).items()}

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def validate_batch_is_legal(self, batch, first_job: int = 0) -> None:
        """Compose, validate and build (shapes only) the network of every job of `batch`, whose
        first job is number `first_job`."""
        loader = self.hydra_context.config_loader
        for number, overrides in enumerate(batch, start=first_job):
            cfg = loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            try:
                validate(cfg)
                check_network_builds(cfg)
            except ConfigError as error:
                raise ConfigError(f"job {number} ({' '.join(overrides)}): {error}") from None

    def parse(self, arguments: Sequence[str]):
        """`hydra.sweeper.params` and the command line's overrides, parsed by Hydra's grammar."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        return parser.parse_overrides([*(f"{k}={v}" for k, v in self.params.items()), *arguments])

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

    def run_jobs(self, arguments: list[str]) -> Any:
        choices = []
        for override in self.parse(arguments):
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
        jobs = [list(job) for job in itertools.product(*choices)]
        self.validate_batch_is_legal(jobs)
        self.make_sweep_dir()
        batch_size = self.max_batch_size or len(jobs)
        results: list[JobReturn] = []
        for start in range(0, len(jobs), batch_size):
            results.extend(self.launcher.launch(jobs[start : start + batch_size], initial_job_idx=start))
        self.finish(results)
        return [results]

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
