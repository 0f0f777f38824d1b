"""hydra/launcher=slurm on a real SLURM cluster (scripts/slurm_local_cluster.sh start; CI starts it).

Every job is a SLURM job on this machine's single node, on CPU: a grid sweep of 2-task DDP jobs
(srun starts the ranks) and an Optuna search whose two trials run at once, one of them pruned.
"""

import json
import os
import signal
import subprocess
import sys
import time

import optuna

from classic_cnns.runs.optuna_trial import open_storage

from .conftest import ROOT
from .test_cli import FAST, run_cli
from .test_optuna import PRUNE_SECOND_EPOCH


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


def test_a_grid_sweep_of_two_task_ddp_jobs_runs_on_slurm(data_dir, tmp_path, slurm_cluster):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        *on_slurm(slurm_cluster, tasks=2),
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "pooling=max,avg",
        f"hydra.sweep.dir={sweep}",
        *FAST,
        data_dir=data_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    for job, pooling in (("0", "max"), ("1", "avg")):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["test/acc"] >= 0.0 and json.loads(json.dumps(metrics))["epochs"] == 1
        logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
        assert f"pooling={pooling}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
    assert logs.count("MEMBER: 2/2") == 2 and logs.count("MEMBER: 1/2") == 2  # srun started both ranks of both jobs


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
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "hparams_search=lenet5_optuna",
        *on_slurm(slurm_cluster, tasks=1),
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        *FAST[1:],
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1000",
        f"hydra.sweep.dir={sweep}",
    ]
    env = {**os.environ, "CLASSIC_CNNS_DATA_DIR": str(data_dir)}
    search = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
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


def running(jobs: list[str]) -> set[str]:
    """Those of `jobs` that SLURM still has pending or running."""
    queue = subprocess.run(["squeue", "-h", "-o", "%i %t", "-j", ",".join(jobs)], capture_output=True, text=True).stdout
    return {line.split()[0] for line in queue.splitlines() if line.split()[1] in ("PD", "R", "CF")}
