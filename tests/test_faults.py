"""Faults of issue 15 (docs/reliability.md rows 38-50): killed and failed checkpoint writes,
last.ckpt, divergence, data checked before training, resume checks, config errors."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from classic_cnns import ClassicCNNsError
from classic_cnns.runs.callbacks import TrainingDivergedError
from classic_cnns.runs.checkpoint_loading import read_checkpoint
from classic_cnns.runs.checkpoint_writing import AtomicCheckpointIO, CheckpointWriteError
from classic_cnns.runs.config_checks import ConfigError, validate
from classic_cnns.runs.resume import ResumeError, check_resume
from classic_cnns.runs.train import train

from .conftest import CONF_DIR, write_mnist
from .test_reliability import metrics_of


# --- atomic checkpoints ---------------------------------------------------------------------
@pytest.fixture
def other_filesystem(tmp_path, monkeypatch):
    """A directory on another filesystem than $TMPDIR's: /dev/shm or a tmpfs mounted here
    (root); failing both, renames across directories fail with EXDEV as across filesystems."""
    tmpdir = tmp_path / "tmpdir"  # the writers' $TMPDIR, checked for orphans afterwards
    tmpdir.mkdir()
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmpdir.stat().st_dev:
        directory = Path(tempfile.mkdtemp(dir=shm))
        yield directory, tmpdir
        shutil.rmtree(directory, ignore_errors=True)
        return
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=False, capture_output=True
        ).returncode
        == 0
    ):
        yield mount, tmpdir
        subprocess.run(["umount", str(mount)], check=False)
        return
    rename = os.rename

    def cross_device_rename(source, target, *args, **kwargs):
        if Path(source).resolve().parent != Path(target).resolve().parent:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return rename(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "rename", cross_device_rename)
    yield mount, tmpdir


# Imports once; each path read from stdin forks a writer that saves checkpoints there in a loop,
# and prints its pid. Forked before torch has run an operation (no thread pool to inherit: a
# fork of a process whose pools run can hang in its first save); its children are reaped by
# the kernel (SIGCHLD ignored). One interpreter for all the kills instead of one each (~10 s).
WRITERS = """
import os, signal, sys, torch
from classic_cnns.runs.checkpoint_writing import AtomicCheckpointIO
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        checkpoint_io, weights = AtomicCheckpointIO(), torch.arange(1_000_000, dtype=torch.float32)
        for version in range(1, 10**6):
            checkpoint_io.save_checkpoint({"state_dict": {"w": weights}, "version": version}, line.strip())
        os._exit(0)
    print(pid, flush=True)
"""


def _staged(tmpdir: Path) -> list[Path]:
    """What a writer left in its $TMPDIR, but for torch's own cache dir (torchinductor_USER),
    which importing torch may create there at any time: under load it appeared before the first
    write and failed this test."""
    return [p for p in tmpdir.iterdir() if not p.name.startswith("torchinductor_")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_mid_write(writers: subprocess.Popen, path: Path, tmpdir: Path, delay: float) -> None:
    """Fork a writer that saves checkpoints at `path` in a loop (its $TMPDIR is `tmpdir`);
    SIGKILL it `delay` s after its write is seen under way (a file in $TMPDIR or a new file next
    to `path`: not one an earlier killed writer left), and wait until it is gone."""
    left = set(path.parent.iterdir()) if path.parent.exists() else set()  # what earlier killed writers left
    writers.stdin.write(f"{path}\n")
    writers.stdin.flush()
    pid = int(writers.stdout.readline())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _alive(pid):
        beside = set(path.parent.iterdir()) - left - {path} if path.parent.exists() else set()
        if beside or _staged(tmpdir):
            break
        time.sleep(0.0005)
    else:
        os.kill(pid, signal.SIGKILL) if _alive(pid) else None
        pytest.fail("the checkpoint writer never started a write")
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.001)


def test_killed_checkpoint_writes_leave_the_old_or_new_file_and_no_orphans(other_filesystem):
    directory, tmpdir = other_filesystem
    checkpoint_io, last = AtomicCheckpointIO(), directory / "checkpoints" / "last.ckpt"
    writers = subprocess.Popen(
        [sys.executable, "-c", WRITERS],
        env=os.environ | {"TMPDIR": str(tmpdir)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for delay in (0.0, 0.01, 0.04):
            _kill_mid_write(writers, last, tmpdir, delay)
            assert not _staged(tmpdir)  # nothing staged in $TMPDIR
            if last.exists():  # never a truncated or empty file
                assert torch.load(last, weights_only=True)["version"] >= 1
    finally:
        writers.kill()
        writers.wait()
    checkpoint_io.save_checkpoint({"version": 0}, last)  # the next save clears the dead writers' files
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]
    assert torch.load(last, weights_only=True) == {"version": 0}


def test_a_full_disk_mid_run_is_one_clear_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint_io, last = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    checkpoint_io.save_checkpoint({"epoch": 0}, last)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # where a full disk shows on NFS and delayed allocation
    with pytest.raises(CheckpointWriteError, match=r"disk full: .*last.ckpt.*previous version of it is kept.*Free"):
        checkpoint_io.save_checkpoint({"epoch": 1, "w": torch.zeros(10_000)}, last)
    monkeypatch.undo()
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]  # no partial file, no 0-byte file
    assert torch.load(last, weights_only=True) == {"epoch": 0}


@pytest.fixture
def tiny_disk(tmp_path, monkeypatch):
    """A 1 MiB filesystem (a tmpfs, as root); elsewhere the save fails as torch.save fails on a
    full disk (a RuntimeError from its zip writer, not ENOSPC) with no space left."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    mounted = shutil.which("mount") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted and mounted.returncode == 0:
        yield mount
        subprocess.run(["umount", str(mount)], check=False)
        return
    import classic_cnns.runs.checkpoint_writing as writing

    def zip_writer_fails(checkpoint, file):
        if "w" in checkpoint:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
        _real_save(checkpoint, file)

    monkeypatch.setattr(writing.torch, "save", zip_writer_fails)
    monkeypatch.setattr(writing.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**20, 2**20, 0))
    yield mount


_real_save = torch.save


def test_a_full_disk_is_said_so_whatever_the_writer_raises(tiny_disk):
    """torch.save on a full disk raises RuntimeError("... unexpected pos ..."), not OSError."""
    checkpoint_io, last = AtomicCheckpointIO(), tiny_disk / "checkpoints" / "last.ckpt"
    checkpoint_io.save_checkpoint({"epoch": 0}, last)
    with pytest.raises(
        CheckpointWriteError,
        match=rf"^disk full: writing the checkpoint {last} failed \(.*\); the previous version of it is kept",
    ) as error:
        checkpoint_io.save_checkpoint({"epoch": 1, "w": torch.zeros(1_000_000)}, last)  # 4 MB
    assert "\n" not in str(error.value)
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]
    assert torch.load(last, weights_only=True) == {"epoch": 0}


# --- last.ckpt --------------------------------------------------------------------------------
class LastCheckpointEpochs(L.Callback):
    """Records after every epoch (when the next starts, and when fit ends) which epoch last.ckpt holds."""

    seen: ClassVar[list[tuple[int, int, str]]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch > 0:
            self._record(trainer, trainer.current_epoch - 1)

    def on_fit_end(self, trainer, pl_module) -> None:
        self._record(trainer, trainer.current_epoch - 1)

    def _record(self, trainer, finished_epoch: int) -> None:
        last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
        held = torch.load(last, weights_only=True)["epoch"]
        self.seen.append((finished_epoch, held, type(trainer.strategy.checkpoint_io).__name__))


def test_last_ckpt_holds_every_epoch_even_when_val_acc_does_not_improve(make_cfg, tmp_path):
    LastCheckpointEpochs.seen = []
    # a learning rate this small leaves val/acc the same in every epoch: only epoch 0 is "best"
    train(
        make_cfg(
            "trainer.max_epochs=3",
            "optimizer.lr=1e-12",
            "+callbacks.record._target_=tests.test_faults.LastCheckpointEpochs",
        )
    )
    assert LastCheckpointEpochs.seen == [(epoch, epoch, "AtomicCheckpointIO") for epoch in range(3)]
    assert metrics_of(tmp_path / "run")["best_checkpoint"].endswith("epoch_000.ckpt")


# --- divergence -------------------------------------------------------------------------------
class PoisonWeightsAtStep(L.Callback):
    """Simulates divergence inside the first, short epoch: the weights become NaN before step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.fill_(float("nan"))


POISON = [
    "trainer.detect_anomaly=false",
    "+callbacks.poison._target_=tests.test_faults.PoisonWeightsAtStep",
    "+callbacks.poison.step=1",
]


@pytest.mark.parametrize("callbacks", ["default", "none"])
def test_a_run_diverged_within_its_first_epoch_saves_no_checkpoint_and_no_nan_metrics(make_cfg, tmp_path, callbacks):
    with pytest.raises(TrainingDivergedError, match="diverged.*Lower optimizer.lr"):
        train(make_cfg(f"callbacks={callbacks}", *POISON))  # 3 steps: never a 50th step
    run = tmp_path / "run"
    assert not (run / "metrics.json").exists()
    assert not list(run.glob("checkpoints/*"))


# --- data checked before training -------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"\x00\x00\x08\x01\x00\x00\x00\x64" + bytes(10)], ids=["empty", "truncated"])
def test_a_bad_test_split_file_is_found_before_the_first_training_step(make_cfg, tmp_path, content):
    write_mnist(tmp_path / "data")
    (tmp_path / "data" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(content)
    with pytest.raises(ClassicCNNsError, match="t10k-labels-idx1-ubyte (is not an IDX file|holds 10 bytes)"):
        train(make_cfg(f"data.data_dir={tmp_path / 'data'}"))
    assert not (tmp_path / "run" / "checkpoints").exists()  # not a single epoch was trained


# --- config errors: one line naming key, value and fix, before anything runs ------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["+optimizer.lrr=0.1"], "optimizer.lrr=0.1 is not an argument of torch.optim.SGD: use one of lr, momentum"),
        (
            ["+model.dropot=0.5"],
            "model.dropot=0.5 is not an argument of classic_cnns.models.LeNet5: use one of .*dropout",
        ),
        (
            ["data=cifar10", "data.std=[0.2,0.2]"],
            r"data.std=\[0.2, 0.2\] has 2 values: CIFAR-10 images have 3 channels",
        ),
        (
            ["data.val_size=60000"],
            "data.val_size=60000 is not allowed: MNIST has 60000 training images, use at most 59999",
        ),
    ],
)
def test_config_errors_are_one_line_before_training(make_cfg, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        train(make_cfg(*overrides))
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize("topk", ["-1", "abc"])
def test_predict_topk_is_checked(topk):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("predict", overrides=["ckpt_path=x", "inputs=y", f"topk={topk}"])
    with pytest.raises(
        ConfigError,
        match=f"topk={topk if topk == '-1' else repr(topk)} is not allowed: use an integer from 1 to 1000000000",
    ):
        validate(cfg)


def test_an_unwritable_run_dir_is_one_line_before_hydra_makes_it(tmp_path):
    (tmp_path / "a_file").write_text("")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra.run.dir={tmp_path}/a_file/run"], return_hydra_config=True)
    (callback,) = [instantiate(c) for c in cfg.hydra.callbacks.values()]  # what Hydra calls before making the dir
    with pytest.raises(SystemExit) as exit:
        callback.on_run_start(config=cfg)
    assert str(exit.value.code) == (
        f"error: cannot write to the output directory {tmp_path}/a_file/run (Not a directory); "
        "run from a writable directory or set hydra.run.dir=... (hydra.sweep.dir=... for -m)"
    )


# --- resume -------------------------------------------------------------------------------------
class SlowFirstSegmentThenKilled(L.Callback):
    """While `armed`: epoch 0 takes 0.6 s longer and the run is killed when epoch 1 starts."""

    armed = False

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.armed:
            time.sleep(0.6)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.armed and trainer.current_epoch == 1:
            SlowFirstSegmentThenKilled.armed = False
            raise KeyboardInterrupt


def test_resume_refuses_other_settings_in_one_line_and_continues_the_run(make_cfg, tmp_path):
    # one-cycle schedule (the default) over 2 epochs; the resume repeats the overrides, as documented
    common = ["trainer.max_epochs=2", "+callbacks.kill._target_=tests.test_faults.SlowFirstSegmentThenKilled"]
    SlowFirstSegmentThenKilled.armed = True
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        train(make_cfg(*common))
    run, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"
    config_yaml = (run / "config.yaml").read_text()

    with pytest.raises(
        ResumeError,
        match=r"another model, data or optimizer: activation.name: relu -> tanh, .*"
        r"model.layers.pooling: max -> avg, .*pooling.name: max -> avg\. .*allow_resume_changes=true",
    ):
        train(make_cfg(*common, "pooling=avg", "activation=tanh", f"ckpt_path={last}"))
    with pytest.raises(
        ResumeError, match=r"trainer.max_epochs: 2 -> 5, but the learning-rate schedule's length was fixed"
    ):
        train(make_cfg(*common, "trainer.max_epochs=5", f"ckpt_path={last}"))
    (tmp_path / "garbage.ckpt").write_bytes(b"garbage")
    with pytest.raises(ClassicCNNsError, match=r"garbage.ckpt is not a checkpoint written by classic-cnns' train"):
        train(make_cfg(*common, f"ckpt_path={tmp_path / 'garbage.ckpt'}"))
    assert (run / "config.yaml").read_text() == config_yaml  # a refused resume changes nothing
    changed = OmegaConf.to_container(make_cfg(*common, "pooling=avg"), resolve=True)
    check_resume(changed, read_checkpoint(last), str(last), allow_changes=True)  # the explicit override lets it through

    first_segment = torch.load(last, weights_only=True)["callbacks"]["FitClock"]["fit_seconds"]
    train(make_cfg(*common, f"ckpt_path={last}"))
    assert metrics_of(run)["fit_seconds"] > first_segment >= 0.6  # both segments count
    assert len({p.parent for p in run.rglob("events.out.tfevents.*")}) == 1  # the resumed run continues its curves


@pytest.mark.parametrize("pid", [0, -1, 2**31, 2**63])
def test_a_pid_no_process_can_have_is_not_alive(pid):
    """A temporary file named with such a number (crafted, or from another system) is a dead
    writer's, not a crash of the writer that looks at it."""
    from classic_cnns import process_alive

    assert process_alive(pid) is False and process_alive(os.getpid()) is True
