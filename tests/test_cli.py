"""`python train.py` as a user runs it, in a subprocess."""

import json
import os
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from .conftest import ROOT, run_command, tensorboard_run

FAST = ["trainer=debug", "data.batch_size=32", "data.val_size=40", "data.eval_batch_size=50"]


def run_cli(*args: str, data_dir, cwd) -> subprocess.CompletedProcess:
    """`python train.py ARGS`, run in this process (conftest.run_command)."""
    env = {"CLASSIC_CNNS_DATA_DIR": str(data_dir), "HYDRA_FULL_ERROR": "0"}
    return run_command(ROOT / "train.py", *args, cwd=cwd, env=env)


def run_process(*args: str, data_dir, cwd) -> subprocess.CompletedProcess:
    """`python train.py ARGS` in a process of its own: for what crosses the process boundary (DDP's ranks)."""
    env = {**os.environ, "CLASSIC_CNNS_DATA_DIR": str(data_dir), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


def test_multirun_gives_each_job_its_own_dir_and_tensorboard_run(data_dir, tmp_path):
    result = run_cli(
        "-m", "pooling=max,avg", *FAST, "trainer.log_every_n_steps=50", "seed=null", data_dir=data_dir, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [job.name for job in jobs] == ["0", "1"]
    seeds = [json.loads((job / "metrics.json").read_text())["seed"] for job in jobs]
    assert all(isinstance(seed, int) for seed in seeds) and seeds[0] != seeds[1]  # seed=null: each job draws its own
    for job, pooling in zip(jobs, ("max", "avg")):
        assert json.loads((job / "metrics.json").read_text())["test/acc"] >= 0.0
        assert tensorboard_run(job) == job / f"pooling={pooling}"  # only what the sweep varies
        events = EventAccumulator(str(job / f"pooling={pooling}")).Reload()
        experiment = HParamsPluginData.FromString(
            events.PluginTagToContent("hparams")["_hparams_/experiment"]
        ).experiment
        # the table's columns: what the sweep varies, then the metrics, accuracies first (not 5 config columns first)
        assert [(h.name, h.differs) for h in experiment.hparam_infos] == [("choices/pooling", True)]
        assert [m.name.tag for m in experiment.metric_infos][:2] == ["hp/val_acc", "hp/test_acc"]
    assert (
        result.stdout.rstrip().splitlines()[-3:]
        == [
            f"2 finished, 0 failed (every job's status: {sweep.relative_to(tmp_path)}/sweep_summary.json)",
            f"report       python {ROOT / 'scripts' / 'report.py'} {sweep.relative_to(tmp_path)}",  # run from elsewhere: no ../../
            f"TensorBoard  tensorboard --logdir {sweep.relative_to(tmp_path)}",
        ]
    )
    # the config once, then one line per job (after Hydra's launch line), no layer tables
    assert (
        result.stdout.count("train config") == 1
        and "pooling: max,avg" in result.stdout
        and "features.0" not in result.stdout
    )
    job_lines = [line for line in result.stdout.splitlines() if line.startswith("job ")]
    assert [line.split(": done in")[0] for line in job_lines] == ["job 0 pooling=max", "job 1 pooling=avg"]
    output = result.stdout + result.stderr
    for chatter in (
        "GPU available",
        "TPU available",
        "Loading `train_dataloader`",
        "`Trainer.fit` stopped",
        "Restoring states",
        "Loaded model weights",
        "logging interval",
    ):
        assert chatter not in output, chatter
    assert "Restoring states from the checkpoint" in (jobs[0] / "train.log").read_text()  # kept in the job's log


def test_missing_data_is_one_clear_message_not_a_traceback(tmp_path):
    result = run_cli("data.download=false", *FAST, data_dir=tmp_path / "empty", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "MNIST was not found in" in output and "train-images-idx3-ubyte" in output
    assert "Traceback" not in output
    assert not (tmp_path / "outputs").exists()  # no run dir of a run that never started


def test_a_failed_download_leaves_no_lock_and_no_data_dir(tmp_path, monkeypatch):
    from classic_cnns.data import DatasetNotFoundError, MNISTDataModule

    def offline(self, root):
        raise OSError("network unreachable")

    monkeypatch.setattr(MNISTDataModule, "download_files", offline)
    for data_dir in (tmp_path / "new", tmp_path):  # a data dir it made, one that was there
        with pytest.raises(DatasetNotFoundError, match="the download failed"):
            MNISTDataModule(data_dir=str(data_dir)).prepare_data()
    assert list(tmp_path.iterdir()) == []


def test_a_mistyped_key_gets_a_did_you_mean_and_help_is_short(tmp_path):
    result = run_cli("trainer.max_epoch=3", "polling=max", data_dir=tmp_path, cwd=tmp_path)
    assert result.returncode == 1
    assert "did you mean trainer.max_epochs?" in result.stderr and "did you mean pooling?" in result.stderr
    assert not (tmp_path / "outputs").exists()
    help_text = run_cli("--help", data_dir=tmp_path, cwd=tmp_path).stdout
    assert "pooling: avg, lp, max, min, subsampling" in help_text and "--cfg job" in help_text
    assert len(help_text.splitlines()) < 40 and "_target_" not in help_text  # the groups, not the whole config


def test_runs_started_together_never_share_a_dir(data_dir, tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *FAST, "callbacks=none", "logger=csv"],
            cwd=tmp_path,
            env={**os.environ, "CLASSIC_CNNS_DATA_DIR": str(data_dir)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=240)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs[0][-3000:]
    runs = list((tmp_path / "outputs" / "runs").glob("*/*"))
    assert len(runs) == 2 and all((run / "metrics.json").exists() for run in runs)
    for chatter in ("GPU available", "Loading `train_dataloader`", "`Trainer.fit` stopped"):  # Lightning's own handlers
        assert chatter not in outputs[0], chatter


def test_ddp_on_cpu_runs_two_processes_in_one_run_dir(data_dir, tmp_path):
    limits = [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
    ]
    data = [o for o in FAST if o.startswith("data.")]
    result = run_cli("trainer=ddp", "trainer.accelerator=cpu", *limits, *data, data_dir=data_dir, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2" in result.stdout + result.stderr
    (run,) = (tmp_path / "outputs" / "runs").glob("*/*")  # the second rank wrote into the same dir
    assert (run / "metrics.json").exists() and (run / "train_ddp_process_1.log").exists()


def test_the_parallel_launcher_runs_every_job_and_survives_a_failed_one(data_dir, tmp_path):
    """joblib runs both jobs at once (hydra/launcher=slurm, submitit's, runs on a real SLURM
    cluster in tests/test_slurm.py)."""
    fast = [o for o in FAST if not o.startswith("data.val_size")]
    launcher = ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"]
    result = run_cli(
        "-m", *launcher, "data.val_size=40,240", *fast, data_dir=data_dir, cwd=tmp_path
    )  # 240: all of the tiny set
    assert result.returncode == 1
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert [job["status"] for job in json.loads((sweep / "sweep_summary.json").read_text())] == ["completed", "failed"]
    assert (sweep / "0" / "metrics.json").exists() and (sweep / "1" / "error.txt").exists()
    # two jobs at once share the cores instead of each taking all
    assert json.loads((sweep / "0" / "metrics.json").read_text())["cpu_threads"] == max(
        1, len(os.sched_getaffinity(0)) // 2
    )


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    from .conftest import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu" and launcher.gpus_per_node == 1
