import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

from classic_cnns import ClassicCNNsError
from classic_cnns.runs.train import train
from classic_cnns.tools.inference import evaluate, predict

from .conftest import FAST, ROOT, compose_config, run_command
from .test_untrusted import checkpoint_like_train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    run = tmp_path_factory.mktemp("trained")
    train(compose_config([*FAST, "data=cifar10"], run, data_dir))
    return run, json.loads((run / "metrics.json").read_text())


def test_evaluate_from_the_checkpoint_alone_reproduces_the_test_metrics(trained, tmp_path, data_dir):
    run, metrics = trained
    result = evaluate(metrics["best_checkpoint"], output_dir=str(tmp_path), data_dir=str(data_dir))
    assert result["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert result["test/loss"] == pytest.approx(metrics["test/loss"], rel=1e-4)
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "per_class.csv") as file:
        rows = list(csv.DictReader(file))
    assert [r["class"] for r in rows][:2] == ["airplane", "automobile"]
    assert sum(int(r["images"]) for r in rows) == result["images"] == 100
    # the rows are returned as well, the same as the CSV's
    assert [(r["class"], r["images"], r["correct"]) for r in result["per_class"]] == [
        (r["class"], int(r["images"]), int(r["correct"])) for r in rows
    ]
    assert sum(r["correct"] for r in result["per_class"]) == round(result["test/acc"] * 100)


def test_evaluate_command_is_quiet_and_writes_beside_the_checkpoint(trained, tmp_path, data_dir):
    _, metrics = trained
    (tmp_path / "x").mkdir()
    checkpoint = tmp_path / "x" / "model.ckpt"  # copied out of its run
    checkpoint.write_bytes(Path(metrics["best_checkpoint"]).read_bytes())
    fake_slurm = tmp_path / "bin"  # Lightning hints at srun wherever SLURM is installed
    fake_slurm.mkdir()
    (fake_slurm / "srun").write_text("#!/bin/sh\n")
    (fake_slurm / "srun").chmod(0o755)
    env = {"PATH": f"{fake_slurm}{os.pathsep}{os.environ['PATH']}", "CLASSIC_CNNS_DATA_DIR": str(data_dir)}
    result = run_command(ROOT / "scripts" / "evaluate.py", "ckpt_path=x/model.ckpt", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""  # no srun hint, no deprecation from Lightning's code, no "GPU available"
    assert result.stdout.rstrip().endswith(f"written to {tmp_path / 'x' / 'model_evaluation'}")
    assert json.loads((tmp_path / "x" / "model_evaluation" / "metrics.json").read_text())["images"] == 100


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
    predictions = {
        p.file.rsplit("/", 1)[-1]: p
        for p in predict(metrics["best_checkpoint"], str(make_inputs(tmp_path / "in")), topk=3)
    }
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
    result = run_command(
        ROOT / "scripts" / "predict.py",
        f"ckpt_path={metrics['best_checkpoint']}",
        f"inputs={inputs}",
        f"csv={tmp_path / 'out.csv'}",
        cwd=tmp_path,
    )
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


def test_predict_reports_a_decompression_bomb_and_a_symlink_loop_and_classifies_the_rest(
    trained, tmp_path, monkeypatch
):
    _, metrics = trained
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (32, 32), "white").save(folder / "ok.png")
    Image.new("RGB", (200, 200)).save(folder / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # PIL refuses images over twice its limit
    (folder / "sub" / "up").symlink_to(folder)  # a loop through the tree
    (folder / "self").symlink_to(folder / "self")  # a link to itself
    predictions = {
        Path(p.file).relative_to(folder).as_posix(): p for p in predict(metrics["best_checkpoint"], str(folder))
    }
    assert set(predictions) == {"ok.png", "bomb.png", "sub/up", "self"}
    assert not predictions["ok.png"].error and len(predictions["ok.png"].classes) == 3
    assert not predictions["ok.png"].inverted  # invert=auto leaves CIFAR-10 models' inputs alone
    assert "decompression bomb" in predictions["bomb.png"].error
    assert predictions["sub/up"].error.startswith("symlink loop") and predictions["self"].error == "symlink loop"


def draw_digits(folder: Path, inverted: bool) -> Path:
    """Digits as MNIST has them (white strokes on black, 28x28, an empty border), or inverted."""
    folder.mkdir()
    strokes = {
        "one": [("line", (14, 4, 14, 23))],
        "seven": [("line", (8, 5, 20, 5)), ("line", (20, 5, 11, 23))],
        "zero": [("ellipse", (8, 4, 20, 23))],
    }
    for name, shapes in strokes.items():
        image = Image.new("L", (28, 28), 0)
        draw = ImageDraw.Draw(image)
        for shape, box in shapes:
            (draw.line(box, fill=255, width=3) if shape == "line" else draw.ellipse(box, outline=255, width=3))
        (ImageOps.invert(image) if inverted else image).save(folder / f"{name}.png")
    return folder


def test_predict_states_the_polarity_and_inverts_dark_on_light_digits(make_cfg, tmp_path):
    ckpt = tmp_path / "mnist.ckpt"
    torch.save(checkpoint_like_train(make_cfg()), ckpt)
    white_on_black = predict(str(ckpt), str(draw_digits(tmp_path / "mnist_like", inverted=False)), topk=10)
    black_on_white = draw_digits(tmp_path / "on_paper", inverted=True)
    auto = predict(str(ckpt), str(black_on_white), topk=10)  # invert=auto is the default
    assert "light strokes on a dark background, as in MNIST" in auto.expects
    assert [p.inverted for p in white_on_black] == [False] * 3 and [p.inverted for p in auto] == [True] * 3
    for original, inverted in zip(white_on_black, auto):
        assert inverted.classes == original.classes and inverted.probabilities == pytest.approx(original.probabilities)
    as_given = predict(str(ckpt), str(black_on_white), topk=10, invert=False)
    assert not any(p.inverted for p in as_given)
    assert all(p.probabilities != pytest.approx(q.probabilities, abs=1e-3) for p, q in zip(as_given, white_on_black))
    with pytest.raises(ClassicCNNsError, match="invert='sometimes' is not allowed"):
        predict(str(ckpt), str(black_on_white), invert="sometimes")


def test_predict_reports_fifos_and_never_opens_them(trained, tmp_path):
    """A FIFO given as input, or inside a directory, would block the reader forever."""
    _, metrics = trained
    folder = make_inputs(tmp_path / "in")
    os.mkfifo(folder / "pipe.png")
    os.mkfifo(tmp_path / "top.png")
    predictions = {p.file.rsplit("/", 1)[-1]: p for p in predict(metrics["best_checkpoint"], str(folder))}
    assert predictions["pipe.png"].error == "not a regular file (a FIFO): not read"
    assert not predictions["big.jpg"].error
    (top,) = predict(metrics["best_checkpoint"], str(tmp_path / "top.png"))
    assert top.error == "not a regular file (a FIFO): not read"


def test_batched_predictions_are_those_of_each_image_alone(trained, tmp_path):
    _, metrics = trained
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(300):  # more than one batch of 256
        Image.fromarray(rng.integers(0, 255, (12 + i % 9, 10 + i % 7, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    together = predict(metrics["best_checkpoint"], str(folder), topk=2)
    assert len(together) == 300
    for i in (0, 255, 256, 299):
        (alone,) = predict(metrics["best_checkpoint"], str(folder / f"{i:03d}.png"), topk=2)
        assert together[i].file == alone.file and together[i].classes == alone.classes
        assert together[i].probabilities == pytest.approx(alone.probabilities, abs=1e-5)


def test_predict_reads_an_image_as_its_model_was_trained_shorter_side_and_central_square(tmp_path):
    """The AlexNet protocol's "shorter side ... 256, and then cropped out the central 256x256
    patch": predict must not stretch a wide image where training cut its central square."""
    from classic_cnns.tools.inference import _load_image

    wide = np.zeros((8, 16, 3), dtype=np.uint8)
    wide[:, :4] = wide[:, 12:] = (255, 0, 0)  # red bands left and right, outside the central 8x8
    Image.fromarray(wide).save(tmp_path / "wide.png")
    central = _load_image(tmp_path / "wide.png", 3, (8, 8), "shorter_side")
    assert central.shape == (3, 8, 8) and int(central[0].max()) == 0  # no red left
    assert int(_load_image(tmp_path / "wide.png", 3, (8, 8))[0].max()) > 0  # stretched keeps the bands
