"""What the entry points share: train.py's config composed in Python, no Hydra run dir for the
helper scripts, user errors reported in one line."""

import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from classic_cnns import ClassicCNNsError

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"  # the checkout's conf/, beside train.py

NO_RUN_DIR = ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled"]


@contextmanager
def exit_on_user_error():
    """A ClassicCNNsError (missing data, bad checkpoint, ...) ends the script with its message, exit 1."""
    try:
        yield
    except ClassicCNNsError as error:
        sys.exit(f"error: {error}")


def compose_train_config(overrides: Sequence[str]) -> DictConfig:
    """The config `python train.py OVERRIDES` would get, with Hydra's runtime set up: for code
    that calls train(cfg) itself (the tests, scripts/gpu_acceptance.py)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg
