"""Hydra's basic sweeper, made safe for long sweeps (a Hydra plugin: conf/hydra/default.yaml selects it).

- Every job's config is composed and validated, and its network built shapes-only, before the
  first job starts, so a typo or a pooling too large in the third value of a sweep fails in
  seconds, not after two finished jobs.
- A failing job (bad value, NaN loss, out of memory) does not stop the others: its error goes
  to `error.txt` in its own dir, every job's status to `sweep_summary.json` in the sweep dir,
  and the command exits with status 1 at the end, listing the failed jobs.
"""

import json
import logging
import traceback
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.utils import JobStatus

from classic_cnns.config import ConfigError, check_network_builds, validate

log = logging.getLogger(__name__)


class CheckedSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch) -> None:
        loader = self.hydra_context.config_loader
        first = sum(map(len, self.overrides[: self.batch_index - 1])) if self.overrides else None
        for index, overrides in enumerate(batch):
            cfg = loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            try:
                validate(cfg)
                check_network_builds(cfg)
            except ConfigError as error:
                number = "" if first is None else f"{first + index} "
                raise ConfigError(f"job {number}({' '.join(overrides)}): {error}") from None

    def sweep(self, arguments: list[str]) -> Any:
        self.launcher_returns = []
        launch = self.launcher.launch

        def launch_and_keep(batch, initial_job_idx):
            results = launch(batch, initial_job_idx=initial_job_idx)
            self.launcher_returns.extend(results)
            return [r for r in results if r.status != JobStatus.FAILED]  # the base class re-raises failures

        self.launcher.launch = launch_and_keep
        try:
            super().sweep(arguments)
        finally:
            self.launcher.launch = launch
        failed = self._write_summary()
        if failed:
            log.error("%d of %d jobs failed:\n%s", len(failed), len(self.launcher_returns), "\n".join(failed))
            raise SystemExit(1)
        return [self.launcher_returns]

    def _write_summary(self) -> list[str]:
        jobs, failed = [], []
        for result in self.launcher_returns:
            job_dir = Path(result.hydra_cfg.hydra.runtime.output_dir)
            entry = {"job": result.hydra_cfg.hydra.job.num, "overrides": list(result.overrides), "dir": str(job_dir)}
            if result.status == JobStatus.FAILED:
                error = result._return_value
                (job_dir / "error.txt").write_text("".join(traceback.format_exception(error)))
                entry.update(status="failed", error=f"{type(error).__name__}: {error}")
                failed.append(f"  job {entry['job']} ({' '.join(entry['overrides'])}): {entry['error']}")
            else:
                entry.update(status="completed", result=result.return_value)
            jobs.append(entry)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        (sweep_dir / "sweep_summary.json").write_text(json.dumps(jobs, indent=2, default=str) + "\n")
        return failed
