"""python train.py [overrides]: trains LeNet-5 on MNIST by default; see README.md."""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from classic_cnns import ClassicCNNsError
from classic_cnns.runs.job import remove_unused_run_dir
from classic_cnns.runs.resolvers import register_resolvers
from classic_cnns.runs.train import train
from classic_cnns.runs.unknown_keys import hint_unknown_keys


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except ClassicCNNsError as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job; the other jobs of the sweep still run
        logging.getLogger("train").error("%s", error)
        remove_unused_run_dir(Path(HydraConfig.get().runtime.output_dir))
        sys.exit(1)


if __name__ == "__main__":
    register_resolvers()
    with hint_unknown_keys(Path(__file__).parent / "conf", "train"):
        main()
