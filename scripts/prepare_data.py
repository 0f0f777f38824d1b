"""Download (or check) a data set once, before training or a sweep: python scripts/prepare_data.py data=cifar10"""

import sys

import hydra
from omegaconf import DictConfig

from classic_cnns.runs.entry_points import NO_RUN_DIR, exit_on_user_error
from classic_cnns.runs.resolvers import register_resolvers


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    datamodule = hydra.utils.instantiate(cfg.data)
    with exit_on_user_error():
        datamodule.prepare_data()
        datamodule.setup()
    sizes = ", ".join(f"{name} {len(split)}" for name, split in datamodule.splits.items())
    print(f"{datamodule.name} in {datamodule.folder}: {sizes} images")


if __name__ == "__main__":
    sys.argv += NO_RUN_DIR
    register_resolvers()
    main()
