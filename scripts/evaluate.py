"""Test a checkpoint: python scripts/evaluate.py ckpt_path=outputs/runs/.../checkpoints/last.ckpt

Writes metrics.json, confusion_matrix.png and per_class.csv (default: NAME_evaluation/ beside
the checkpoint NAME.ckpt; out=DIR for another place) and prints the per-class table. Needs
nothing but the checkpoint and the data.
"""

import sys

import hydra
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from classic_cnns.runs.entry_points import NO_RUN_DIR, exit_on_user_error
from classic_cnns.tools.inference import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        metrics = evaluate(cfg.ckpt_path, cfg.out, cfg.data.data_dir)
    table = Table(title=f"test accuracy {metrics['test/acc']:.4f}, loss {metrics['test/loss']:.4f}")
    for column in ("class", "images", "correct", "accuracy"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in metrics["per_class"]:
        table.add_row(row["class"], str(row["images"]), str(row["correct"]), f"{row['accuracy']:.4f}")
    Console().print(table)
    print(f"written to {metrics['output_dir']}")


if __name__ == "__main__":
    sys.argv += NO_RUN_DIR
    main()
