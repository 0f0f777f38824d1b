"""The faults of docs/reliability.md, one or more tests each."""

import json
import threading
import time

import lightning as L
import pytest
import torch
from hydra.errors import ConfigCompositionException

from classic_cnns import ClassicCNNsError
from classic_cnns.data import DatasetNotFoundError, MNISTDataModule
from classic_cnns.runs.callbacks import TrainingDivergedError
from classic_cnns.runs.checkpoint_loading import load_classifier
from classic_cnns.runs.config_checks import ConfigError
from classic_cnns.runs.train import train

from .conftest import write_idx, write_mnist
from .test_cli import FAST, run_cli


def metrics_of(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# --- config ---------------------------------------------------------------------------------
def test_unknown_group_option_lists_the_valid_ones(make_cfg):
    with pytest.raises(ConfigCompositionException, match="(?s)pooling/median.*Available options.*subsampling"):
        make_cfg("pooling=median")


def test_unknown_key_is_named(make_cfg):
    with pytest.raises(ConfigCompositionException, match="val_fraction"):
        make_cfg("data.val_fraction=1.5")


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.max_epochs=-1", "trainer.max_epochs=-1 is not allowed: use an integer from 1 to 1000000000"),
        ("pooling.name=median", "pooling.name='median' is not allowed: use one of: max, avg, min, subsampling"),
        ("data.batch_size=0", "data.batch_size=0 is not allowed"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is not allowed: use a finite number > 0"),
        ("padding.value=full", "padding.value='full' is not allowed"),
        ("model.dropout=1.5", "model.dropout=1.5 is not allowed: use a number in"),
        ("trainer.max_epochs=ten", "trainer.max_epochs='ten' is not allowed"),
    ],
)
def test_bad_values_fail_before_training_naming_key_value_and_allowed(make_cfg, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        train(make_cfg(override))
    assert not (tmp_path / "run").exists()


def test_multirun_validates_every_job_before_the_first_starts(data_dir, tmp_path):
    result = run_cli("-m", "data=cifar10", "data.mean=[0.5],[0.1,0.2]", *FAST, data_dir=data_dir, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert "data.mean=[0.1, 0.2] has 2 values: CIFAR-10 images have 3 channels, use 3 values" in output
    assert not list(tmp_path.glob("outputs/multirun/*/*/*/metrics.json"))  # not even the valid job ran


def test_multirun_survives_a_failed_job_and_reports_it(data_dir, tmp_path):
    fast = [o for o in FAST if not o.startswith("data.val_size")]
    # 240 passes the config check (MNIST has 60,000 training images) but not this 240-image copy
    result = run_cli("-m", "data.val_size=40,240,50", *fast, data_dir=data_dir, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "1 of 3 jobs failed" in output and "data.val_size=240" in output
    (sweep,) = tmp_path.glob("outputs/multirun/*/*")
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [job["status"] for job in summary] == ["completed", "failed", "completed"]
    assert "data.val_size=240 must be between" in (sweep / "1" / "error.txt").read_text()
    assert (sweep / "0" / "metrics.json").exists() and (sweep / "2" / "metrics.json").exists()


# --- training -------------------------------------------------------------------------------
class PoisonWeightsAtEpoch(L.Callback):
    """Simulates divergence: the weights become NaN when epoch `epoch` starts."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.fill_(float("nan"))


class CrashAtEpoch(L.Callback):
    """Simulates a killed run: raises when epoch `epoch` starts."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def test_nan_loss_stops_with_advice_and_keeps_the_best_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg(
        "trainer.max_epochs=2",
        "trainer.detect_anomaly=false",
        "+callbacks.poison._target_=tests.test_reliability.PoisonWeightsAtEpoch",
        "+callbacks.poison.epoch=1",
    )
    with pytest.raises(TrainingDivergedError, match="diverged in epoch 1.*Lower optimizer.lr"):
        train(cfg)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    for path in checkpoints.iterdir():
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_resumed_run_ends_with_the_metrics_of_an_uninterrupted_one(make_cfg, tmp_path):
    common = ["trainer.max_epochs=3", "data=cifar10", "model.dropout=0.5"]  # augmentation and dropout use the RNG
    train(make_cfg(*common, output_dir=tmp_path / "whole"))
    interrupted = make_cfg(
        *common,
        "+callbacks.crash._target_=tests.test_reliability.CrashAtEpoch",
        "+callbacks.crash.epoch=2",
        output_dir=tmp_path / "killed",
    )
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(interrupted)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    # the documented resume: the same overrides, ckpt_path=.../last.ckpt and the run's own dir
    train(make_cfg(*common, f"ckpt_path={last}", output_dir=tmp_path / "killed"))
    whole, resumed = metrics_of(tmp_path / "whole"), metrics_of(tmp_path / "killed")
    for key in ("val/acc", "val/loss", "test/acc", "test/loss", "epochs"):
        assert resumed[key] == whole[key], key


def test_a_resume_path_that_does_not_exist_is_an_error(make_cfg, tmp_path):
    with pytest.raises(ClassicCNNsError, match="does not exist: nothing to resume from"):
        train(make_cfg(f"ckpt_path={tmp_path}/missing/last.ckpt"))


def test_a_checkpoint_alone_rebuilds_the_model(make_cfg, tmp_path):
    train(make_cfg("model=alexnet", "data=mnist"))
    best = metrics_of(tmp_path / "run")["best_checkpoint"]
    model = load_classifier(best)
    state = torch.load(best, weights_only=True)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    info = model.hparams.data_info
    assert info["class_names"][3] == "3" and info["input_size"] == [28, 28] and len(info["mean"]) == 1
    assert model(torch.zeros(2, info["channels"], *info["input_size"])).shape == (2, 10)


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path):
    (tmp_path / "model.ckpt").write_bytes(b"garbage")
    with pytest.raises(ClassicCNNsError, match="model.ckpt is not a checkpoint written by classic-cnns"):
        load_classifier(tmp_path / "model.ckpt")


# --- data -----------------------------------------------------------------------------------
def test_image_and_label_counts_that_differ_are_named(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", torch.zeros(7, dtype=torch.uint8).numpy())
    dm = MNISTDataModule(tmp_path)
    with pytest.raises(ClassicCNNsError, match=r"t10k images \(100, 28, 28\) and labels \(7,\) do not match"):
        dm.setup("test")


def test_jobs_preparing_the_same_directory_at_once_download_once(tmp_path, monkeypatch):
    calls = []

    def slow_download(self, root):
        calls.append(root)
        time.sleep(0.3)
        write_mnist(root)

    monkeypatch.setattr(MNISTDataModule, "download_files", slow_download)
    threads = [threading.Thread(target=MNISTDataModule(tmp_path).prepare_data) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(calls) == 1
    dm = MNISTDataModule(tmp_path, val_size=10)
    dm.setup()
    assert len(dm.splits["test"]) == 100


def test_an_interrupted_download_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    def broken_download(self, root):
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True)
        (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03partial")
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(MNISTDataModule, "download_files", broken_download)
    with pytest.raises(DatasetNotFoundError, match="download failed .ConnectionResetError"):
        MNISTDataModule(tmp_path).prepare_data()
    assert MNISTDataModule(tmp_path).missing_files() == list(MNISTDataModule.files)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


# --- output ---------------------------------------------------------------------------------
def test_an_unwritable_output_dir_fails_before_training(make_cfg, tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ClassicCNNsError, match="cannot write to the output directory .*hydra.run.dir"):
        train(make_cfg(output_dir=tmp_path / "a_file" / "run"))


def test_a_full_disk_fails_before_training(make_cfg, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12 - 10**6, 10**6))
    with pytest.raises(ClassicCNNsError, match="only 1 MiB free"):
        train(make_cfg())


def test_every_row_of_the_fault_table_names_a_test_that_exists():
    import importlib
    import re

    from .conftest import ROOT

    table = (ROOT / "docs" / "reliability.md").read_text()
    names = re.findall(r"`((?:R|test_\w+)::test_\w+)`", table)
    assert len(set(re.findall(r"^\| (\d+) \|", table, re.M))) >= 15
    for name in names:
        module, function = name.split("::")
        module = "test_reliability" if module == "R" else module
        assert hasattr(importlib.import_module(f"tests.{module}"), function), name
