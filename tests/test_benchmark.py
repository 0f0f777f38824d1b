"""scripts/benchmark.py: the three ways train the same model on the same work."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torchvision.transforms.functional import to_pil_image

from classic_cnns.benchmark import Result, reference_transform, to_markdown, write_section
from classic_cnns.data import CIFAR10DataModule

from .conftest import ROOT, write_cifar10


def test_benchmark_script_times_three_ways_and_writes_its_section(data_dir, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nkept\n")
    args = [
        "trainer=debug", "trainer.max_epochs=2", "data.batch_size=32", "data.val_size=40", "data.eval_batch_size=50",
        "benchmark.max_batches=3", "benchmark.target=0.0", "benchmark.name=tiny", f"benchmark.doc={doc}",
    ]
    env = {**os.environ, "CLASSIC_CNNS_DATA_DIR": str(data_dir)}
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), *args],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "runs").glob("*/*")
    results = {r["way"]: r for r in json.loads((run / "results.json").read_text())}
    assert list(results) == ["reference loop", "resident loop", "lightning"]
    for r in results.values():
        assert len(r["epoch_seconds"]) == len(r["val_acc"]) == 2 and r["images_per_epoch"] == 3 * 32
        assert r["images_per_second"] > 0 and 0 <= r["test_acc"] <= 1
    # the resident loop and train.py do the same work: same data order, same steps, same weights
    assert results["resident loop"]["val_acc"] == pytest.approx(results["lightning"]["val_acc"], abs=1e-6)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nkept\n") and "<!-- benchmark: tiny -->" in text
    assert "| resident loop |" in text and "Command: `python scripts/benchmark.py trainer=debug" in text
    assert (tmp_path / "benchmarks" / "tiny.png").stat().st_size > 0


def test_a_rerun_replaces_its_own_section_only(tmp_path):
    doc = tmp_path / "b.md"
    write_section(doc, "one", "first")
    write_section(doc, "two", "other")
    write_section(doc, "one", "second")
    text = doc.read_text()
    assert "second" in text and "first" not in text and "other" in text
    assert text.index("second") < text.index("other")


def test_table_reports_time_to_target_and_ratios():
    slow = Result("reference loop", epoch_seconds=[4.0, 2.0, 2.0], val_acc=[0.5, 0.8, 0.9], images_per_epoch=1000)
    fast = Result("resident loop", epoch_seconds=[1.0, 0.5, 0.5], val_acc=[0.6, 0.9, 0.95], images_per_epoch=1000)
    assert fast.time_to(0.9) == (2, 1.5) and slow.time_to(0.99) is None
    table = to_markdown([slow, fast], target=0.9)
    assert "| reference loop | 500 | 2.000 | 8.00 | 3, 8.00 |" in table and "| 0.25x |" in table
    assert "| resident loop | 2,000 | 0.500 | 2.00 | 2, 1.50 |" in table and math.isnan(fast.peak_memory_mib)


def test_reference_pipeline_does_per_image_what_the_batched_transform_does(tmp_path):
    write_cifar10(tmp_path, per_batch=10, n_test=10)
    dm = CIFAR10DataModule(tmp_path, val_size=5, crop_padding=0, horizontal_flip=False, image_size=40)
    dm.setup("test")
    images = dm.splits["test"].images[:4]
    batched = dm.transform(images)
    per_image = [reference_transform(dm)(to_pil_image(image)) for image in images]
    assert batched.shape == (4, 3, 40, 40) and per_image[0].shape == (3, 40, 40)
    # PIL resizes the uint8 image, the batched path the normalized float one: close, not equal
    assert (batched - torch.stack(per_image)).abs().mean() < 0.05
