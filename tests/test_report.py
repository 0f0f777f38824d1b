import json
import subprocess
import sys

import pytest

from classic_cnns import ClassicCNNsError
from classic_cnns.report import load_sweep, write_report

from .conftest import ROOT
from .test_cli import FAST, run_cli


@pytest.fixture(scope="module")
def sweep(data_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("sweep")
    result = run_cli("-m", "seed=0,1", "pooling=max,avg", *FAST, "trainer.max_epochs=2", data_dir=data_dir, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (cwd / "outputs" / "multirun").glob("*/*")
    return sweep_dir


def test_report_groups_seeds_per_configuration_and_lists_failures(sweep, tmp_path):
    failed = sweep / "3"  # seed=1 pooling=avg: turned into a failed job
    metrics = {job: json.loads((sweep / job / "metrics.json").read_text()) for job in "012"}
    (failed / "metrics.json").rename(tmp_path / "kept.json")
    (failed / "error.txt").write_text("Traceback ...\nTrainingDivergedError: the training loss became nan\n")
    try:
        out = write_report(sweep, tmp_path / "report")
    finally:
        (tmp_path / "kept.json").rename(failed / "metrics.json")
        (failed / "error.txt").unlink()

    jobs, curves, common = load_sweep(sweep)
    assert "trainer=debug" in common and set(jobs["configuration"]) == {"pooling=max", "pooling=avg"}
    assert len(curves) == 8 and set(curves["epoch"]) == {1, 2}  # 4 jobs x 2 epochs of val/acc
    report = (out / "report.md").read_text()
    max_mean = (metrics["0"]["test/acc"] + metrics["2"]["test/acc"]) / 2
    assert f"{max_mean:.4f} ±" in report
    assert "4 jobs, 1 failed" in report and "TrainingDivergedError: the training loss became nan" in report
    for name in ("report.csv", "jobs.csv", "val_acc.png", "test_acc.png"):
        assert (out / name).stat().st_size > 0


def test_report_command_and_a_wrong_directory(sweep, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), str(sweep), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "| pooling=max" in result.stdout
    with pytest.raises(ClassicCNNsError, match="holds no job directories"):
        write_report(tmp_path)
