import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from classic_cnns import ClassicCNNsError
from classic_cnns.inference import evaluate, predict
from classic_cnns.train import train

from .conftest import FAST, ROOT, compose_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    run = tmp_path_factory.mktemp("trained")
    train(compose_config([*FAST, "data=cifar10"], run, data_dir))
    return run, json.loads((run / "metrics.json").read_text())


def test_evaluate_from_the_checkpoint_alone_reproduces_the_test_metrics(trained, tmp_path):
    run, metrics = trained
    result = evaluate(metrics["best_checkpoint"], output_dir=str(tmp_path))
    assert result["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert result["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-4)
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "per_class.csv") as file:
        rows = list(csv.DictReader(file))
    assert [r["class"] for r in rows][:2] == ["airplane", "automobile"]
    assert sum(int(r["images"]) for r in rows) == result["images"] == 100


def make_inputs(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(folder / "big.jpg")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / "small_grey.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8), mode="RGBA").save(folder / "alpha.png")
    (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predict_any_image_and_report_bad_files_without_stopping(trained, tmp_path):
    _, metrics = trained
    predictions = {p.file.rsplit("/", 1)[-1]: p for p in predict(metrics["best_checkpoint"], str(make_inputs(tmp_path / "in")), topk=3)}
    for name in ("big.jpg", "small_grey.png", "alpha.png"):
        assert not predictions[name].error and len(predictions[name].classes) == 3
        assert predictions[name].probabilities == sorted(predictions[name].probabilities, reverse=True)
    assert "not a readable image" in predictions["broken.png"].error
    assert "not a readable image" in predictions["notes.txt"].error
    (missing,) = predict(metrics["best_checkpoint"], str(tmp_path / "nope.png"))
    assert missing.error == "file not found"


def test_predict_command_prints_a_table_and_writes_csv(trained, tmp_path):
    _, metrics = trained
    inputs = make_inputs(tmp_path / "in")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "predict.py"), f"ckpt_path={metrics['best_checkpoint']}",
         f"inputs={inputs}", f"csv={tmp_path / 'out.csv'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1  # some files failed
    assert "big.jpg" in result.stdout and "error: not a readable image" in result.stdout
    with open(tmp_path / "out.csv") as file:
        rows = list(csv.DictReader(file))
    assert len([r for r in rows if r["file"].endswith("big.jpg")]) == 3
    assert {r["file"].rsplit("/", 1)[-1] for r in rows if r["error"]} == {"broken.png", "notes.txt"}


def test_a_wrong_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "x.ckpt").write_text("nope")
    with pytest.raises(ClassicCNNsError, match="is not a checkpoint"):
        predict(str(tmp_path / "x.ckpt"), str(tmp_path))
