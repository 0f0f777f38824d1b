import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from classic_cnns.runs.train import train

from .conftest import CONF_DIR, tensorboard_run

METRIC_KEYS = {"val/acc", "val/loss", "test/acc", "test/loss", "fit_seconds", "epochs", "params", "seed"}


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize(
    "overrides, data_target, channels",
    [
        ([], "MNISTDataModule", 1),
        (["data=cifar10"], "CIFAR10DataModule", 3),
        (["model=alexnet"], "CIFAR10DataModule", 3),
        (["model=alexnet", "data=mnist"], "MNISTDataModule", 1),
    ],
    ids=["lenet5-mnist", "lenet5-cifar10", "alexnet-cifar10", "alexnet-mnist"],
)
def test_train_every_model_on_every_data_set(make_cfg, tmp_path, overrides, data_target, channels):
    cfg = make_cfg(*overrides)
    assert cfg.data._target_.endswith(data_target)
    result = train(cfg)

    run = tmp_path / "run"
    metrics = read_metrics(run)
    assert METRIC_KEYS <= metrics.keys()
    assert result == metrics["val/acc"] and 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["epochs"] == 1 and metrics["params"] > 0
    assert (run / "config.yaml").exists() and (run / "checkpoints" / "last.ckpt").exists()
    checkpoint = torch.load(metrics["best_checkpoint"], weights_only=True)  # plain containers only
    assert checkpoint["hyper_parameters"]["config"]["data"]["_target_"].endswith(data_target)
    assert checkpoint["state_dict"]["net.features.0.weight"].shape[1] == channels


def test_tensorboard_run_named_from_overrides_with_final_metrics_as_hparams(make_cfg, tmp_path):
    train(make_cfg("pooling=avg"))
    run_dir = tensorboard_run(tmp_path / "run")
    assert "pooling=avg" in run_dir.name
    events = EventAccumulator(str(run_dir)).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/acc", "hp/test_acc", "hp/val_acc"} <= scalars
    assert "hp_metric" not in scalars
    assert any(tag.startswith("lr-") for tag in scalars)
    plugin = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugin and "_hparams_/experiment" in plugin
    assert b"pooling" in plugin["_hparams_/session_start_info"]


def test_seed_zero_is_honoured_and_reproducible(make_cfg, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(make_cfg(f"seed={seed}", output_dir=tmp_path / name))
        runs[name] = read_metrics(tmp_path / name)
    assert runs["a"]["seed"] == 0
    assert runs["a"]["test/loss"] == runs["b"]["test/loss"]
    assert runs["a"]["test/loss"] != runs["c"]["test/loss"]


def test_seed_null_draws_and_records_a_seed(make_cfg, tmp_path):
    train(make_cfg("seed=null", "callbacks=none"))
    assert isinstance(read_metrics(tmp_path / "run")["seed"], int)


def test_a_callback_or_logger_set_to_null_is_left_out(make_cfg, tmp_path):
    train(make_cfg("callbacks.progress_bar=null", "callbacks.lr_monitor=null", "logger=[tensorboard,csv]"))
    assert (tmp_path / "run" / "csv").is_dir() and tensorboard_run(tmp_path / "run").is_dir()


def test_optimized_metric_is_returned(make_cfg):
    cfg = make_cfg("optimized_metric=val/loss", "scheduler=none", "optimizer=adamw")
    assert train(cfg) == pytest.approx(read_metrics(Path(cfg.paths.output_dir))["val/loss"])


# An image folder's options need a folder of images: they compose, build and train in
# tests/test_imagefolder.py and tests/test_imagenet_protocol.py.
ON_A_FOLDER = {"data=imagefolder", "experiment=alexnet_imagenet"}


def all_options():
    skip = {"hydra"}
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in skip):
        for option in sorted(group.glob("*.yaml")):
            if f"{group.name}={option.stem}" not in ON_A_FOLDER:
                yield f"{group.name}={option.stem}"


@pytest.mark.parametrize("override", list(all_options()))
def test_every_config_option_composes_and_builds(make_cfg, override):
    cfg = make_cfg(override)
    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model, in_channels=datamodule.channels, num_classes=10, input_size=datamodule.input_size)
    assert net(torch.zeros(2, datamodule.channels, *datamodule.input_size)).shape == (2, 10)
    instantiate(cfg.optimizer)(params=net.parameters())
    for node in ("logger", "callbacks"):
        [instantiate(c) for c in (cfg.get(node) or {}).values()]
    if cfg.trainer.accelerator in ("cpu", "auto") or torch.cuda.is_available():
        instantiate(cfg.trainer, logger=False)


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=lenet5_1998"],
        ["pooling=subsampling", "activation=scaled_tanh"],
        ["pooling=min", "padding=reflect"],
        ["model=alexnet", "norm=lrn", "pooling=avg", "pooling.kernel_size=2", "pooling.stride=2"],
        # 60M parameters: no checkpoint files (2 x 0.5 GB written, one read back: 6 s of a step's 13 s)
        ["model=alexnet_2012", "model.groups=2", "data.batch_size=4", "data.eval_batch_size=4", "callbacks=none"],
        ["model=alexnet_torchvision", "data.batch_size=4", "data.eval_batch_size=4", "callbacks=none"],
    ],
    ids=lambda overrides: " ".join(overrides),
)
def test_every_architecture_option_trains_a_step(make_cfg, tmp_path, overrides):
    train(
        make_cfg(
            *overrides, "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"
        )
    )
    metrics = read_metrics(tmp_path / "run")
    assert metrics["epochs"] == 1


def test_lenet5_1998_sees_mnist_centred_in_32x32(make_cfg):
    cfg = make_cfg("model=lenet5_1998")
    datamodule = instantiate(cfg.data)
    assert datamodule.input_size == (32, 32)
    x = datamodule.transform(torch.full((1, 1, 28, 28), 255, dtype=torch.uint8))
    background = (0 - datamodule.mean) / datamodule.std
    torch.testing.assert_close(x[0, 0, :2], background.view(1, 1).expand(2, 32))  # padded rows
    assert (x[0, 0, 2:30, 2:30] > 0).all()


def test_long_override_lists_still_give_a_valid_run_name(make_cfg):
    cfg = make_cfg(*(f"+extra.key_{i}=/some/long/path/value_{i}" for i in range(20)))
    assert "/" not in cfg.run_name and len(cfg.run_name) <= 120
    assert cfg.run_name != make_cfg(*(f"+extra.key_{i}=/some/long/path/value_{i}" for i in range(19))).run_name


@pytest.mark.parametrize(
    "overrides",
    [
        ["data.placement=dataloader", "data.num_workers=1"],
        ["channels_last=true", "compile=true", "+compile_options.backend=eager"],
        ["trainer.precision=bf16-mixed", "channels_last=true"],  # the GPU default, here on the CPU
    ],
    ids=["dataloader-with-a-worker", "channels-last-compiled", "bf16-channels-last"],
)
def test_speed_options_train_and_log_like_the_default_path(make_cfg, tmp_path, overrides):
    cfg = make_cfg(*overrides)
    train(cfg)
    metrics = read_metrics(tmp_path / "run")
    assert METRIC_KEYS <= metrics.keys() and 0.0 <= metrics["test/acc"] <= 1.0
    events = EventAccumulator(str(tensorboard_run(tmp_path / "run"))).Reload()
    assert {"train/loss", "val/acc", "test/acc"} <= set(events.Tags()["scalars"])
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert "net.features.0.weight" in checkpoint["state_dict"]  # compile keeps the keys loadable


@pytest.mark.parametrize(
    "capability, precision",
    [
        ((7, 0), "16-mixed"),
        ((7, 5), "16-mixed"),
        ((8, 0), "bf16-mixed"),
        ((8, 9), "bf16-mixed"),
        ((9, 0), "bf16-mixed"),
    ],
    ids=["V100", "T4", "A100", "L4", "H100"],
)
def test_precision_is_bf16_only_on_gpus_with_native_bf16_and_full_on_cpu(make_cfg, monkeypatch, capability, precision):
    assert make_cfg("trainer=cpu").trainer.precision == "32-true"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # emulation counts there
    assert make_cfg("trainer=gpu").trainer.precision == precision
    assert make_cfg("trainer=cpu").trainer.precision == "32-true"
    assert make_cfg("trainer=gpu", "trainer.precision=32-true").trainer.precision == "32-true"


def test_no_training_step_reads_a_value_back_to_the_host(make_cfg, tmp_path, monkeypatch):
    """The epoch metrics are updated on the device every step and read once per epoch: the
    host reads (.item(), .cpu(), bool(), ...) of a whole run do not grow with its steps."""
    reads: list[str] = []
    for name in ("item", "cpu", "tolist", "numpy", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)

    def host_reads(steps: int) -> Counter:
        reads.clear()
        train(
            make_cfg(
                f"trainer.limit_train_batches={steps}", "trainer.detect_anomaly=false", output_dir=tmp_path / str(steps)
            )
        )
        return Counter(reads)

    few, many = host_reads(2), host_reads(6)  # the first run also pays Lightning's one-time reads
    assert few["item"] + few["__float__"] > 0  # the counting works: epoch values are read
    assert many - few == Counter()  # no kind of read grew with the steps
