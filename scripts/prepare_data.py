"""Download (or check) a data set once, before training or a sweep: python scripts/prepare_data.py data=cifar10"""

import sys

import hydra
from omegaconf import DictConfig

from classic_cnns import ClassicCNNsError


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    datamodule = hydra.utils.instantiate(cfg.data)
    try:
        datamodule.prepare_data()
        datamodule.setup()
    except ClassicCNNsError as error:
        sys.exit(f"error: {error}")
    sizes = ", ".join(f"{name} {len(split)}" for name, split in datamodule.splits.items())
    print(f"{datamodule.name} in {datamodule.folder}: {sizes} images")


if __name__ == "__main__":
    sys.argv += ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled"]  # writes no run dir
    main()
