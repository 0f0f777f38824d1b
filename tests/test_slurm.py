"""hydra/launcher=slurm on a real SLURM cluster (scripts/slurm_local_cluster.sh start; CI starts it).

Every job is a SLURM job on this machine's single node, on CPU: a grid sweep of 2-task DDP jobs
(srun starts the ranks) one of which is scancelled, an Optuna search whose two trials run at once,
one of them pruned, a search stopped with SIGTERM, and one killed with SIGKILL and resumed.
"""

import hashlib
import inspect
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import optuna
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

from classic_cnns.runs.optuna_trial import open_storage

from .conftest import ROOT
from .test_cli import FAST, run_cli
from .test_optuna import PRUNE_SECOND_EPOCH

HYDRA_LAUNCH_SHA256 = (
    "546875669010f80d6ceede740e8bf2d18088cf5bcce2eb4794c735fa3dc2fc0e"  # hydra-submitit-launcher 1.2.0
)


def on_slurm(partition: str, tasks: int) -> list[str]:
    return [
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={partition}",
        f"hydra.launcher.tasks_per_node={tasks}",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
    ]


def test_a_grid_sweep_of_two_task_ddp_jobs_runs_on_slurm_and_a_cancelled_job_is_one_failed_job(
    data_dir, tmp_path, slurm_cluster
):
    """Job 0 runs as 2 tasks (srun starts both DDP ranks) and finishes; job 1 is scancelled while
    it runs: the sweep keeps job 0's result, records job 1 failed with SLURM's reason and exits 1."""
    sweep = tmp_path / "sweep"
    cancelled = []

    def cancel_job_1_once_it_runs():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not cancelled:
            job_1 = [d.name for d in (sweep / ".submitit").glob("*_1")] if (sweep / ".submitit").exists() else []
            if job_1 and running(job_1, states=("R",)):
                subprocess.run(["scancel", *job_1], check=True)
                cancelled.extend(job_1)
            time.sleep(0.5)

    threading.Thread(target=cancel_job_1_once_it_runs, daemon=True).start()
    result = run_cli(
        "-m",
        *on_slurm(slurm_cluster, tasks=2),
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        *FAST,
        "trainer.max_epochs=1,1000",
        f"hydra.sweep.dir={sweep}",
        data_dir=data_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 1 and cancelled, (result.stdout + result.stderr)[-3000:]
    completed, failed = json.loads((sweep / "sweep_summary.json").read_text())
    assert completed["status"] == "completed" and json.loads((sweep / "0" / "metrics.json").read_text())["epochs"] == 1
    assert failed["status"] == "failed" and f"slurm job {cancelled[0]} " in failed["error"]
    assert re.search(r"without a result: JOB \d+ ON \S+ CANCELLED AT", failed["error"])  # SLURM's own words
    assert "JobEndedWithoutResult" in (sweep / "1" / "error.txt").read_text()
    assert "1 of 2 jobs failed" in result.stderr + result.stdout and "Traceback" not in result.stderr
    (job_0,) = [d for d in (sweep / ".submitit").glob("*_0")]
    logs = "".join(p.read_text() for p in job_0.glob("*_log.*"))
    assert logs.count("MEMBER: 2/2") == 1 and logs.count("MEMBER: 1/2") == 1  # srun started both ranks


def test_the_launch_copied_from_hydras_submitit_launcher_is_still_its_launch():
    """submitit_launchers._SurvivingLauncher.launch is Hydra's but for its last line: when Hydra's
    changes, compare the two again and update this hash."""
    source = inspect.getsource(BaseSubmititLauncher.launch)
    assert hashlib.sha256(source.encode()).hexdigest() == HYDRA_LAUNCH_SHA256


def test_a_parallel_optuna_search_with_pruning_runs_on_slurm(data_dir, tmp_path, slurm_cluster):
    sweep = tmp_path / "search"
    result = run_cli(
        "hparams_search=lenet5_optuna",
        *on_slurm(slurm_cluster, tasks=1),
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        *PRUNE_SECOND_EPOCH,
        *FAST[1:],
        "trainer.accelerator=cpu",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        data_dir=data_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    trials = optuna.load_study(study_name="lenet5", storage=open_storage(str(sweep / "optuna.journal"))).trials
    assert {t.params["trainer.max_epochs"]: t.state.name for t in trials} == {1: "COMPLETE", 3: "PRUNED"}
    assert (
        len(list((sweep / ".submitit").glob("*/*_0_log.out"))) == 2
    )  # each trial its own SLURM job, started when a slot frees
    for trial in trials:  # a pruned trial stopped after its second epoch, and was still scored
        metrics = json.loads((sweep / str(trial.number) / "metrics.json").read_text())
        assert metrics["epochs"] == {1: 1, 3: 2}[trial.params["trainer.max_epochs"]]
        assert trial.value == (metrics["val/acc"] if trial.state.name == "COMPLETE" else trial.intermediate_values[1])


def test_a_search_stopped_with_sigterm_cancels_its_slurm_jobs(data_dir, tmp_path, slurm_cluster):
    """A real SIGTERM to the search while its two trials run as SLURM jobs: it exits, and
    cancels them instead of leaving them running."""
    sweep = tmp_path / "search"
    search = start_search(
        "hparams_search=lenet5_optuna",
        *on_slurm(slurm_cluster, tasks=1),
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        *FAST[1:],
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1000",
        f"hydra.sweep.dir={sweep}",
        data_dir=data_dir,
        cwd=tmp_path,
    )
    deadline, jobs = time.monotonic() + 240, []
    while len(jobs) < 2 or running(jobs) != set(jobs):  # both trials' SLURM jobs have started
        assert search.poll() is None and time.monotonic() < deadline, (
            search.stderr.read()[-3000:] if search.poll() is not None else "timeout"
        )
        time.sleep(1)
        jobs = (
            sorted(d.name for d in (sweep / ".submitit").glob("*") if d.name.isdigit())
            if (sweep / ".submitit").exists()
            else []
        )
    search.send_signal(signal.SIGTERM)
    assert search.wait(timeout=60) != 0
    deadline = time.monotonic() + 60
    while running(jobs):
        assert time.monotonic() < deadline, f"still in the queue: {running(jobs)}"
        time.sleep(1)


def test_a_search_killed_with_sigkill_waits_for_its_slurm_job_when_resumed(data_dir, tmp_path, slurm_cluster):
    """SIGKILL leaves the running trial's SLURM job going (nothing can cancel it); the same command
    resumes the search, waits for that job and records its result: the trial is not run twice."""
    sweep = tmp_path / "search"
    args = [
        "hparams_search=lenet5_optuna",
        *on_slurm(slurm_cluster, tasks=1),
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.n_trials=1",
        "hydra/sweeper/pruner=none",
        *FAST[1:],
        "trainer.accelerator=cpu",
        "trainer.max_epochs=10",  # killed as its job starts: still importing or training when resumed
        f"hydra.sweep.dir={sweep}",
    ]
    search = start_search(*args, data_dir=data_dir, cwd=tmp_path)
    deadline, job = time.monotonic() + 240, None
    while job is None or not running([job], states=("R",)):  # its trial's SLURM job runs
        assert search.poll() is None and time.monotonic() < deadline, (
            search.stderr.read()[-3000:] if search.poll() is not None else "timeout"
        )
        time.sleep(0.5)
        if (sweep / "optuna.journal").exists():
            trials = optuna.load_study(study_name="lenet5", storage=open_storage(str(sweep / "optuna.journal"))).trials
            job = trials[0].user_attrs.get("slurm_job", {}).get("job_id") if trials else None
    os.killpg(search.pid, signal.SIGKILL)
    search.wait()
    assert running([job]) == {job}  # the killed search's job goes on

    again = run_cli(*args, data_dir=data_dir, cwd=tmp_path)  # the same command, in this process
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert f"trial 0: still running as SLURM job {job}" in again.stdout + again.stderr
    (done,) = optuna.load_study(study_name="lenet5", storage=open_storage(str(sweep / "optuna.journal"))).trials
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert done.state.name == "COMPLETE" and done.value == metrics["val/acc"] and metrics["epochs"] == 10
    assert sorted(d.name for d in (sweep / ".submitit").iterdir() if d.name[0].isdigit()) == [job]  # submitted once
    assert "1 completed, 0 pruned, 0 failed, 0 rerun" in again.stdout


def start_search(*args: str, data_dir, cwd) -> subprocess.Popen:
    """`python train.py ARGS` as a process of its own (in its own session), to be signalled or killed."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env={**os.environ, "CLASSIC_CNNS_DATA_DIR": str(data_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def running(jobs: list[str], states: tuple[str, ...] = ("PD", "R", "CF")) -> set[str]:
    """Those of `jobs` that SLURM still has pending or running (in one of `states`)."""
    queue = subprocess.run(["squeue", "-h", "-o", "%i %t", "-j", ",".join(jobs)], capture_output=True, text=True).stdout
    return {line.split()[0] for line in queue.splitlines() if line.split()[1] in states}
