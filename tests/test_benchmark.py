"""scripts/benchmark.py: the three ways do and time the same work, repeated and interleaved."""

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.transforms.functional import to_pil_image

from classic_cnns.data import CIFAR10DataModule
from classic_cnns.runs.config_checks import ConfigError
from classic_cnns.tools.benchmark.measure import (
    EpochTimer,
    Result,
    check_settings,
    interleaved,
    reference_transform,
    set_global_switches,
)
from classic_cnns.tools.benchmark.report import results_from_json, section, spread, to_markdown, write_section

from .conftest import ROOT, run_command, write_cifar10


def test_benchmark_script_repeats_each_way_interleaved_under_the_same_switches(data_dir, tmp_path):
    args = [
        "trainer=debug",
        "trainer.max_epochs=2",
        "data.batch_size=32",
        "data.val_size=40",
        "data.eval_batch_size=50",
        "data.crop_padding=2",
        "model.dropout=0.3",  # random crops and dropout masks: the same draws in every way
        "benchmark.max_batches=3",
        "benchmark.target=0.0",
        "benchmark.name=tiny",
        "benchmark.repeats=2",
        "benchmark.doc=null",
    ]
    result = run_command(
        ROOT / "scripts" / "benchmark.py", *args, cwd=tmp_path, env={"CLASSIC_CNNS_DATA_DIR": str(data_dir)}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "runs").glob("*/*")
    runs = results_from_json((run / "results.json").read_text())
    ways = ["reference loop", "resident loop", "lightning"]
    assert [(r.repeat, r.way) for r in runs] == [(0, w) for w in ways] + [(1, w) for w in reversed(ways)]
    for r in runs:
        assert len(r.epoch_seconds) == len(r.val_acc) == 2 and r.images_per_epoch == 3 * 32
        assert r.images_per_second > 0 and 0 <= r.test_acc <= 1
    # the same switches while each run trained: cuDNN benchmark as trainer.benchmark, anomaly detection as trainer=debug's
    assert runs[0].switches["cudnn.benchmark"] is True and runs[0].switches["detect_anomaly"] is True
    assert all(r.switches == runs[0].switches for r in runs)
    # the resident loop and train.py do the same work: same data order, crops, dropout masks, steps, weights
    for repeat in (0, 1):
        resident, lightning = (next(r for r in runs if (r.repeat, r.way) == (repeat, w)) for w in ways[1:])
        assert resident.val_acc == pytest.approx(lightning.val_acc, abs=1e-6)
        assert (run / f"lightning_{repeat}" / "metrics.json").exists()  # each lightning run in its own dir
    text = (run / "benchmark.md").read_text()
    assert "<!-- benchmark: tiny -->" in text and "| resident loop | 2 |" in text and "Each way ran 2 times" in text
    assert (
        "Command: `python scripts/benchmark.py trainer=debug" in text
        and (run / "benchmarks" / "tiny.png").stat().st_size > 0
    )


def test_publishing_needs_5_repeats_and_known_ways():
    check_settings(["lightning"], 5, "docs/benchmarks.md")
    check_settings(["lightning"], 1, None)
    with pytest.raises(
        ConfigError, match="benchmark.repeats=3 is too few to publish in docs/benchmarks.md: use benchmark.repeats=5"
    ):
        check_settings(["lightning"], 3, "docs/benchmarks.md")
    with pytest.raises(ConfigError, match=r"benchmark.ways has \['seeds loop'\]"):
        check_settings(["seeds loop"], 5, None)


def test_ways_alternate_their_order_from_repeat_to_repeat():
    assert interleaved(["a", "b", "c"], 3) == [
        (0, "a"),
        (0, "b"),
        (0, "c"),
        (1, "c"),
        (1, "b"),
        (1, "a"),
        (2, "a"),
        (2, "b"),
        (2, "c"),
    ]


def test_lightning_clock_stops_when_validation_starts():
    """Lightning validates before on_train_epoch_end, with trainer.training False."""
    timer = EpochTimer("unused.json")
    trainer = SimpleNamespace(
        sanity_checking=False,
        training=False,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
        callback_metrics={},
    )
    timer.on_train_epoch_start(trainer, None)
    timer.on_validation_start(trainer, None)
    stopped = timer.epoch_seconds[:]
    timer.on_train_epoch_end(trainer, None)  # after validation: the epoch is not timed again
    assert len(stopped) == 1 and timer.epoch_seconds == stopped


@pytest.mark.parametrize("mode", [True, False])
def test_the_plain_loops_get_the_trainers_cudnn_benchmark_mode(mode):
    before = torch.backends.cudnn.benchmark
    try:
        cfg = OmegaConf.create(
            {"trainer": {"benchmark": mode, "deterministic": False}, "float32_matmul_precision": "high"}
        )
        assert set_global_switches(cfg)["cudnn.benchmark"] is mode and torch.backends.cudnn.benchmark is mode
    finally:
        torch.backends.cudnn.benchmark = before


def test_table_gives_median_and_spread_over_repeats():
    def run(way, repeat, seconds):
        return Result(
            way,
            repeat,
            epoch_seconds=[2 * seconds, seconds, seconds],
            val_acc=[0.5, 0.9, 0.95],
            images_per_epoch=1000,
            test_acc=0.9,
        )

    runs = [
        run("reference loop", 0, 2.0),
        run("resident loop", 0, 0.5),
        run("resident loop", 1, 0.4),
        run("reference loop", 1, 2.5),
        run("resident loop", 2, 1.0),
        run("reference loop", 2, 2.0),
    ]
    table = to_markdown(runs, target=0.9)
    # images/s: reference 500, 400, 500 -> 500 (400-500); resident 2000, 2500, 1000 -> 2000 (1000-2500)
    assert "| reference loop | 3 | 500 (400-500) | 2.000 (2.000-2.500) |" in table
    assert "| resident loop | 3 | 2,000 (1,000-2,500) |" in table
    # per repeat: 0.25, 0.16, 0.5 of the resident loop of the same repeat
    assert "| 0.25x (0.16x-0.50x) |" in table and "| 2 (2-2); 6.00 (6.00-7.50) |" in table
    assert spread([1.0], "{:.1f}".format) == "1.0" and "Each way ran 3 times" in section(
        "x", runs, "CPU", "cmd", None, "x.png"
    )


def test_a_rerun_replaces_its_own_section_only(tmp_path):
    doc = tmp_path / "b.md"
    write_section(doc, "one", "first")
    write_section(doc, "two", "other")
    write_section(doc, "one", "second")
    text = doc.read_text()
    assert "second" in text and "first" not in text and "other" in text
    assert text.index("second") < text.index("other")


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
