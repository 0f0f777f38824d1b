"""Hydra's submitit launchers (hydra/launcher=slurm, submitit_local), except that a job that ends
without a result (scancel, SLURM's time limit, a node failure, the OOM killer) is one failed job
of the sweep, with SLURM's reason in sweep_summary.json and its error.txt, instead of an exception
that stops the sweep and loses the results of the jobs that did finish.

Each submitted job is announced (`on_submitted`: its number, SLURM job id and submitit folder), so
that an Optuna search records it on the trial, and a search resumed after its driver was killed
waits for a job still in SLURM's queue (`reattach`) instead of running its trial again.

`launch` is Hydra's (hydra-submitit-launcher 1.2.0) but for its last lines, which took every job's
result in one list comprehension; tests/test_slurm.py fails when Hydra's changes, so that this
copy is compared with it again.
"""

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf, open_dict

log = logging.getLogger(__name__)

POLL_S = 2.0  # how often a waiting launch asks SLURM's queue about its job
RESULT_GRACE_S = 5.0  # how long a job that left the queue has to show its result file
SLURM_ACTIVE = set(
    "PENDING CONFIGURING RUNNING COMPLETING REQUEUED REQUEUE_HOLD RESIZING SUSPENDED SIGNALING STOPPED".split()
)


class JobEndedWithoutResult(RuntimeError):
    """A sweep job that the scheduler ended before it returned (it never raised anything itself)."""


class _SurvivingLauncher(submitit_launcher.BaseSubmititLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit  # lazy, as Hydra's: plugin discovery stays fast

        assert self.config is not None
        num_jobs = len(job_overrides)
        assert num_jobs > 0
        params = self.params
        init_params = {"folder": self.params["submitit_folder"]}
        specific_init_keys = {"max_num_timeout"}
        init_params.update(**{f"{self._EXECUTOR}_{x}": y for x, y in params.items() if x in specific_init_keys})
        init_keys = specific_init_keys | {"submitit_folder"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        params = {x if x in baseparams else f"{self._EXECUTOR}_{x}": y for x, y in params.items() if x not in init_keys}
        executor.update_parameters(**params)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {self.config.hydra.sweep.dir}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params: list[Any] = []
        for idx, overrides in enumerate(job_overrides):
            idx = initial_job_idx + idx
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*job_params))
        if self.on_submitted is not None:
            for job, (_, _, idx, _, _) in zip(jobs, job_params):
                self.on_submitted(idx, {"job_id": str(job.job_id), "folder": str(job.paths.folder)})
        return [self._result(job, overrides, idx) for job, (overrides, _, idx, _, _) in zip(jobs, job_params)]

    on_submitted: Callable[[int, dict[str, str]], None] | None = None  # called from the launching thread

    def _result(self, job, overrides: list[str], number: int) -> JobReturn:
        """The job's own JobReturn, or a failed one saying how the scheduler ended it."""
        from submitit.core.utils import UncompletedJobError

        ended = self._wait(job)
        if ended is None:
            try:
                return job.results()[0]
            except UncompletedJobError:
                ended = f"ended {job.state}"
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = number
        job_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        job_dir.mkdir(parents=True, exist_ok=True)
        reason = slurm_reason(Path(job.paths.stderr))
        error = JobEndedWithoutResult(
            f"{self._EXECUTOR} job {job.job_id} {ended} without a result"
            + (f": {reason}" if reason else " (scancel, the time limit, a node failure or the OOM killer)")
            + f"; its log: {job.paths.stderr}"
        )
        result = JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=error)
        result.hydra_cfg = OmegaConf.create(
            {"hydra": {"job": {"num": number}, "runtime": {"output_dir": str(job_dir)}}}
        )
        return result

    def _wait(self, job) -> str | None:
        """Wait until the job is done: None when submitit knows its end, else how it left SLURM's
        queue. Why squeue: where SLURM keeps no accounting (sacct), submitit sees every job as
        UNKNOWN and learns that a job ended only from its result file, so it would wait for ever
        for one that was cancelled or vanished."""
        while not job.done():
            if self._EXECUTOR == "slurm":
                state = queue_state(job.job_id)
                if state is not None and state not in SLURM_ACTIVE:
                    time.sleep(RESULT_GRACE_S)  # the result file is written as the job ends
                    return None if job.done() else f"ended {state}" if state else "left SLURM's queue"
            time.sleep(POLL_S)
        return None


def queue_state(job_id: str) -> str | None:
    """The job's state in SLURM's queue ("RUNNING", "CANCELLED", ...), "" when the queue no longer
    knows it, None when squeue could not answer (the controller restarting: ask again)."""
    done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return done.stdout.strip().split("\n")[0]
    return "" if "Invalid job id" in done.stderr else None


def slurm_reason(log: Path) -> str | None:
    """The line SLURM's step daemon writes into a job's log when it ends the job
    ("*** JOB 21 ON node CANCELLED AT ... ***", "... DUE TO TIME LIMIT ***"), from its last 8 kB."""
    try:
        with log.open("rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 8192))
            tail = file.read().decode(errors="replace")
    except OSError:
        return None
    lines = re.findall(r"\*\*\* JOB .*? \*\*\*", tail)
    return lines[-1].strip("* ") if lines else None


class SlurmLauncher(_SurvivingLauncher):
    _EXECUTOR = "slurm"

    def reattach(self, submitted: dict[str, str], overrides: list[str], number: int) -> Sequence[JobReturn]:
        """Job `number`'s result, for a job an earlier (killed) driver submitted (`submitted` as
        `on_submitted` gave it), waited for as `launch` waits for its own."""
        import submitit

        job = submitit.SlurmJob(folder=submitted["folder"], job_id=submitted["job_id"])
        return [self._result(job, overrides, number)]


class LocalLauncher(_SurvivingLauncher):
    _EXECUTOR = "local"
