"""The experiment=study_* sweeps: each job of each study composes and passes validation."""

import itertools
import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from classic_cnns.config import validate
from classic_cnns.train import train

from .conftest import CONF_DIR

STUDIES = sorted(p.stem for p in (CONF_DIR / "experiment").glob("study_*.yaml"))


@pytest.mark.parametrize("study", STUDIES)
def test_every_job_of_a_study_composes_and_validates(make_cfg, study):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        sweep = compose("train", overrides=[f"experiment={study}"], return_hydra_config=True).hydra.sweeper.params
    assert sweep.seed == "0,1,2"  # every study repeats each configuration over 3 seeds
    grid = [[f"{key}={value}" for value in str(values).split(",")] for key, values in sweep.items()]
    for job in itertools.product(*grid):
        cfg = make_cfg(f"experiment={study}", *job)
        validate(cfg)
        choices = HydraConfig.get().runtime.choices
        for key, value in (override.split("=") for override in job):
            assert str(cfg.seed if key == "seed" else choices[key]) == value


def test_activation_study_runs_alexnet_without_any_regularization_as_in_the_paper(make_cfg):
    cfg = make_cfg("experiment=study_activation", "activation=tanh")
    assert cfg.model._target_.endswith("AlexNet") and cfg.model.layers.norm == "none" and cfg.model.layers.activation == "tanh"
    assert cfg.model.dropout == 0 and cfg.optimizer.weight_decay == 0
    assert cfg.data.crop_padding == 0 and not cfg.data.horizontal_flip
    assert cfg.scheduler == {} and cfg.trainer.max_epochs == 30  # constant lr: epochs to the target do not depend on max_epochs


def test_activation_study_stops_each_run_once_training_accuracy_reaches_the_target(make_cfg, tmp_path):
    train(make_cfg("experiment=study_activation", "trainer.max_epochs=3", "callbacks.early_stopping.stopping_threshold=0.0"))
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 1


@pytest.mark.parametrize("experiment, model", [("lenet5_fast", "LeNet5"), ("alexnet_fast", "AlexNet")])
def test_fast_configs_validate_once_at_the_end_and_test_the_final_model(make_cfg, experiment, model):
    cfg = make_cfg(f"experiment={experiment}")
    validate(cfg)
    assert cfg.model._target_.endswith(model) and cfg.model.layers.norm == "batch"
    assert cfg.trainer.check_val_every_n_epoch == cfg.trainer.max_epochs > 1
    assert cfg.callbacks.views is None and cfg.callbacks.model_checkpoint.monitor == "val/acc"
