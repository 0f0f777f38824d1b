"""What a person sees: run names, the HPARAMS record, the console, debug configs, one data-dir key."""

import json
import warnings
from io import StringIO

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from classic_cnns.models import AlexNet, LayerChoices, LeNet5
from classic_cnns.runs.console import print_wide, quiet_dependencies
from classic_cnns.runs.tensorboard_record import flatten, run_name
from classic_cnns.runs.tensorboard_views import TensorBoardViews
from classic_cnns.runs.train import train

from .conftest import CONF_DIR, tensorboard_run


def test_run_names_show_what_a_sweep_varies_shortest_first_seed_last():
    overrides = ["++trainer.limit_train_batches=40", "pooling=max", "seed=0", "trainer.max_epochs=2", "trainer=cpu"]
    assert run_name(overrides, {"pooling", "seed"}) == "pooling=max,seed=0"
    assert (
        run_name(["seed=1", "optimizer.lr=0.1", "model=alexnet"], {"seed", "optimizer.lr", "model"})
        == "model=alexnet,optimizer.lr=0.1,seed=1"
    )
    # single runs: what changes the experiment, not where or how long it runs
    assert (
        run_name(["data.data_dir=/d", "model=alexnet", "+trainer.fast_dev_run=true", "data.batch_size=64"], set())
        == "model=alexnet,data.batch_size=64"
    )
    assert run_name(["trainer=cpu", "paths.output_dir=/o"], set()) == "defaults"


def test_hparams_record_holds_choices_overrides_tags_and_hparams_yaml(make_cfg, tmp_path, capsys, recwarn):
    train(make_cfg("pooling=avg", "optimizer.lr=0.05", "tags=[study,v2]"))
    run = tensorboard_run(tmp_path / "run")
    assert run.name.startswith("pooling=avg,")  # the shortest experiment override first
    record = yaml.safe_load((run / "hparams.yaml").read_text())
    assert record["choices"]["pooling"] == "avg" and record["run"]["trainer"] == "debug"
    assert record["tags"] == "study,v2" and "optimizer.lr=0.05" in record["overrides"]
    assert record["config"]["optimizer"]["lr"] == 0.05 and record["config"]["trainer"]["limit_train_batches"] == 3
    assert "_target_" not in record["config"]["optimizer"]  # constants the choice already says
    events = EventAccumulator(str(run)).Reload()
    session = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    for name in flatten(record):
        assert name.encode() in session, name
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["tags"] == ["study", "v2"]

    out = capsys.readouterr().out
    assert "pooling: avg" in out and "optimizer.lr=0.05" in out  # the composed choices first
    assert "features.0" in out and "connections" in out and "FLOPs" not in out  # the project's layer table
    assert "Tip" not in out and "v_num" not in out
    end = out[out.index("done in") :]
    assert "val/acc 0." in end and "test/acc 0." in end
    assert (
        f"checkpoint   {tmp_path / 'run' / 'checkpoints'}" in end and f"tensorboard --logdir {tmp_path / 'run'}" in end
    )
    assert not [w for w in recwarn if "LeafSpec" in str(w.message) or "srun" in str(w.message)]


def test_dependency_noise_is_filtered_at_its_source_not_the_projects_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_dependencies()
        for module in ("lightning.pytorch.utilities._pytree", "classic_cnns.runs.tensorboard_views"):
            warnings.warn_explicit(
                "`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, "x.py", 1, module=module
            )
    assert [w.filename for w in caught] == ["x.py"] and len(caught) == 1  # the project's one stays


@pytest.mark.parametrize(
    "debug, trainer",
    [
        ("fdr", {"fast_dev_run": True}),
        ("overfit", {"overfit_batches": 3, "max_epochs": 20}),
        ("limit", {"max_epochs": 3, "limit_train_batches": 10, "limit_val_batches": 5, "limit_test_batches": 5}),
        ("profiler", {"profiler._target_": "lightning.pytorch.profilers.SimpleProfiler", "max_epochs": 1}),
    ],
)
def test_debug_configs(make_cfg, debug, trainer):
    cfg = make_cfg(f"debug={debug}")
    for key, value in trainer.items():
        assert OmegaConf.select(cfg.trainer, key) == value, key
    assert list(cfg.tags) == ["debug"]


def test_fast_dev_run_without_test(make_cfg, tmp_path, capsys):
    train(make_cfg("debug=fdr", "test=false"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "val/acc" in metrics and not any(k.startswith("test/") for k in metrics) and metrics["tags"] == ["debug"]
    assert "Testing" not in capsys.readouterr().out


def test_feature_map_cards_line_up_across_pooling_and_padding_variants():
    import torch

    example = torch.zeros(1, 1, 28, 28)
    keys = {
        str(options): list(TensorBoardViews.feature_maps(LeNet5(layers=LayerChoices(**options)), example))
        for options in (
            {},
            {"pooling": "avg"},
            {"pooling": "min"},
            {"pooling": "subsampling"},
            {"padding": "same"},
            {"padding": "valid"},
        )
    }
    assert all(k == ["01_conv", "02_pool", "03_conv", "04_pool"] for k in keys.values()), keys
    alexnet = TensorBoardViews.feature_maps(
        AlexNet(layers=LayerChoices(padding="same"), input_size=(67, 67)), torch.zeros(1, 3, 67, 67)
    )
    assert list(alexnet) == ["01_conv", "02_pool", "03_conv", "04_pool", "05_conv", "06_conv", "07_conv", "08_pool"]


def test_one_data_dir_key_and_no_stale_path(make_cfg, tmp_path):
    cfg = make_cfg(f"data.data_dir={tmp_path / 'elsewhere'}")
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    assert [key for key in flat if "data_dir" in key] == ["data/data_dir"] and flat["data/data_dir"] == str(
        tmp_path / "elsewhere"
    )
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for script in ("evaluate", "predict"):
            assert compose(script, overrides=["data.data_dir=/data"]).data.data_dir == "/data"
            with pytest.raises(ConfigCompositionException):
                compose(script, overrides=["data_dir=/data"])  # the old evaluate key


def test_wide_tables_print_whole_into_a_pipe():
    from classic_cnns.layer_table import PADDING_NOTE, summarize, to_markdown, to_rich

    rows = summarize(AlexNet(layers=LayerChoices(padding="same", norm="lrn")), 3, (227, 227))  # the paper's AlexNet
    out = StringIO()
    print_wide(to_rich(rows, title="AlexNet"), Console(file=out, width=80))
    assert "…" not in out.getvalue() and "LocalResponseNorm" in out.getvalue() and "113,533,056" in out.getvalue()
    assert "+8 (4+4)" in out.getvalue() and "235 = N+P" in out.getvalue()  # a padding row says what its P and O are
    assert PADDING_NOTE in to_markdown(rows)


def test_config_tree_prints_bracketed_values_as_given(make_cfg):
    from classic_cnns.runs.console import config_tree

    cfg = make_cfg("tags=[a,b]", "logger=[tensorboard,csv]", "optimized_metric=[val/acc,fit_seconds]")
    out = StringIO()
    Console(file=out, width=200).print(config_tree(cfg))
    text = out.getvalue()
    for given in ("tags=[a,b]", "logger=[tensorboard,csv]", "optimized_metric=[val/acc,fit_seconds]", "tags: [a,b]"):
        assert given in text, given  # not read as markup and dropped


def test_lightning_chatter_leaves_the_console_but_not_the_log(tmp_path):
    import logging

    from classic_cnns.runs.console import route_lightning_logs

    root, lightning = logging.getLogger(), logging.getLogger("lightning.pytorch")
    console, log_file = StringIO(), logging.FileHandler(tmp_path / "train.log")
    lightning.addHandler(terminal := logging.StreamHandler(console))
    root.addHandler(log_file)
    try:
        route_lightning_logs()
        chatter = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        chatter.info("GPU available: False, used: False")
        chatter.info("Restoring states from the checkpoint path at /x/epoch_000.ckpt")
        chatter.info("Seed set to 3")
        chatter.warning("GPU available: a warning is never chatter")
        root.setLevel(logging.DEBUG)  # hydra.verbose=true
        chatter.info("Loaded model weights from the checkpoint at /x/epoch_000.ckpt")
    finally:
        root.setLevel(logging.WARNING)
        lightning.removeHandler(terminal)
        root.removeHandler(log_file)
        route_lightning_logs()  # forget the test's log file
        log_file.close()
    assert console.getvalue().splitlines() == [
        "Seed set to 3",
        "GPU available: a warning is never chatter",
        "Loaded model weights from the checkpoint at /x/epoch_000.ckpt",
    ]
    assert (tmp_path / "train.log").read_text().count("\n") == 5  # every line in the run's log


def test_overfit_shows_the_training_loss_falling_and_tensorboard_counts_epochs(make_cfg, tmp_path, capsys):
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    train(make_cfg("debug=overfit", "trainer.max_epochs=3"))
    out = capsys.readouterr().out
    assert "train/loss: " in out  # in the progress bar
    assert "Epoch 3/3" in out and "Epoch 2/2" not in out  # epochs counted as the user set them, not 0-based
    end = out[out.index("done in") :].splitlines()[0]
    first, last = (float(x) for x in end.split("train/loss ")[1].split(":")[0].split(" -> "))
    assert last < first and json.loads((tmp_path / "run" / "metrics.json").read_text())["train/loss"] == pytest.approx(
        last, abs=1e-4
    )

    events = EventAccumulator(str(tensorboard_run(tmp_path / "run")), size_guidance={"images": 0}).Reload()
    assert "epoch" not in events.Tags()["scalars"]  # no card of Lightning's own before the metrics
    for tag in ("train/loss", "val/acc"):
        assert [e.step for e in events.Scalars(tag)] == [1, 2, 3], tag  # x = epoch
    (matrix,) = events.Images("val/confusion_matrix")  # at the end of the fit
    assert matrix.step == 3 and matrix.width <= 400 and matrix.height <= 400  # shown unscaled on a card

    plugin = events.PluginTagToContent("hparams")
    session = HParamsPluginData.FromString(plugin["_hparams_/session_start_info"]).session_start_info
    assert (
        session.hparams["seed"].string_value == "0" and session.hparams["config/trainer/max_epochs"].string_value == "3"
    )
    experiment = HParamsPluginData.FromString(plugin["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos][:2] == ["hp/val_acc", "hp/test_acc"]


def test_the_closing_lines_say_which_checkpoint_was_kept(make_cfg, tmp_path, capsys):
    """A notebook experiment keeps the last epoch (callbacks.model_checkpoint.monitor=null): the
    closing line must not claim the best val/acc was kept."""
    train(make_cfg("callbacks.model_checkpoint.monitor=null", "callbacks.progress_bar=null"))
    assert "(kept: the last epoch)" in capsys.readouterr().out
