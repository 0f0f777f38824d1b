"""hydra/launcher=slurm on a real SLURM cluster (scripts/slurm_local_cluster.sh start; CI starts it).

Every job is a SLURM job on this machine's single node, on CPU: a grid sweep of 2-task DDP jobs
(srun starts the ranks) and an Optuna search whose two trials run at once, one of them pruned.
"""

import json

import optuna

from classic_cnns.runs.optuna_trial import open_storage

from .test_cli import FAST, run_cli
from .test_optuna import PRUNE_SECOND_EPOCH


def on_slurm(partition: str, tasks: int) -> list[str]:
    return [
        "hydra/launcher=slurm", f"hydra.launcher.partition={partition}", f"hydra.launcher.tasks_per_node={tasks}",
        "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
    ]  # fmt: skip


def test_a_grid_sweep_of_two_task_ddp_jobs_runs_on_slurm(data_dir, tmp_path, slurm_cluster):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", *on_slurm(slurm_cluster, tasks=2), "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        "pooling=max,avg", f"hydra.sweep.dir={sweep}", *FAST, data_dir=data_dir, cwd=tmp_path,
    )  # fmt: skip
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
        "hparams_search=lenet5_optuna", *on_slurm(slurm_cluster, tasks=1), "hydra.sweeper.n_jobs=2",
        f"hydra.sweep.dir={sweep}", *PRUNE_SECOND_EPOCH, *FAST[1:], "trainer.accelerator=cpu",
        "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
        data_dir=data_dir, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    trials = optuna.load_study(study_name="lenet5", storage=open_storage(str(sweep / "optuna.journal"))).trials
    assert {t.params["trainer.max_epochs"]: t.state.name for t in trials} == {1: "COMPLETE", 3: "PRUNED"}
    assert any((sweep / ".submitit").glob("*_0/*_0_log.out"))  # submitted as a SLURM job array
    for trial in trials:  # a pruned trial stopped after its second epoch, and was still scored
        metrics = json.loads((sweep / str(trial.number) / "metrics.json").read_text())
        assert metrics["epochs"] == {1: 1, 3: 2}[trial.params["trainer.max_epochs"]]
        assert trial.value == (metrics["val/acc"] if trial.state.name == "COMPLETE" else trial.intermediate_values[1])
