"""Per-layer summary of the network a config builds: python scripts/summarize.py model=lenet5_1998

Takes the same overrides as train.py. Prints a table (output shape, parameters, connections,
and N, F, P, S, O of O = (N - F + 2P) / S + 1 for convolutions and pools); +markdown=true
prints it as Markdown instead, +num_classes=1000 sizes the output layer for ImageNet.
"""

import sys

import hydra
from omegaconf import DictConfig

from classic_cnns.layer_table import summarize, to_markdown, to_rich
from classic_cnns.runs.console import print_wide
from classic_cnns.runs.entry_points import NO_RUN_DIR
from classic_cnns.runs.resolvers import register_resolvers


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> None:
    datamodule = hydra.utils.instantiate(cfg.data)
    num_classes = cfg.get("num_classes") or datamodule.num_classes
    net = hydra.utils.instantiate(
        cfg.model, in_channels=datamodule.channels, num_classes=num_classes, input_size=datamodule.input_size
    )
    rows = summarize(net, datamodule.channels, datamodule.input_size)
    if cfg.get("markdown"):
        print(to_markdown(rows))
    else:
        size = "x".join(map(str, datamodule.input_size))
        # +num_classes sizes the net for another set (ImageNet's 1000): the data config only gave the input size
        made_for = f"on {datamodule.name}" if num_classes == datamodule.num_classes else f"for {num_classes} classes"
        print_wide(to_rich(rows, title=f"{type(net).__name__} {made_for}, {size} input"))  # whole, also into a pipe


if __name__ == "__main__":
    sys.argv += NO_RUN_DIR
    register_resolvers()
    main()
