"""Classify images with a checkpoint: python scripts/predict.py ckpt_path=... inputs=FILE_OR_DIR

PNG/JPEG of any size and mode, converted like the training data (grey or RGB, native size).
Says what polarity the model expects (MNIST: white digits on black); `invert=auto` (the
default) inverts images with a light border for such a model, `invert=true/false` all or none.
Prints the top-k classes per file (+ csv=FILE to save them); a file that cannot be read (not an
image, over PIL's decompression-bomb limit, a symlink loop) is reported and the others are
still classified. Exits 1 if any file failed.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from classic_cnns.runs.config_checks import validate
from classic_cnns.runs.entry_points import NO_RUN_DIR, exit_on_user_error
from classic_cnns.tools.inference import predict, write_predictions_csv


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        validate(cfg)
        predictions = predict(cfg.ckpt_path, cfg.inputs, cfg.topk, cfg.invert, cfg.data.data_dir)
    if predictions.expects:
        print(predictions.expects)
    root = Path(cfg.inputs)
    table = Table(title=str(root) if root.is_dir() else None)
    table.add_column("file", overflow="fold")
    for rank in range(1, cfg.topk + 1):
        table.add_column(f"#{rank}")
    for p in predictions:
        cells = [f"{name} {probability:.3f}" for name, probability in zip(p.classes, p.probabilities)]
        shown = str(Path(p.file).relative_to(root)) if root.is_dir() else p.file
        shown += " (inverted)" if p.inverted else ""
        table.add_row(shown, *(cells or [f"[red]error: {p.error}[/red]"]))
    Console(width=max(120, Console().width)).print(table)
    if cfg.csv:
        write_predictions_csv(predictions, cfg.csv)
    if any(p.error for p in predictions):
        sys.exit(1)


if __name__ == "__main__":
    sys.argv += NO_RUN_DIR
    main()
