"""DDP on the CPU (gloo, two spawned ranks): what the ranks agree on and what they count."""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from classic_cnns.data import MNISTDataModule
from classic_cnns.classifier import ImageClassifier

from .conftest import write_idx


class PredictsZero(nn.Module):
    """Always class 0, whatever the image: its accuracy is the share of label-0 images."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([1.0] + [0.0] * 9))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


class RanksDisagree(MNISTDataModule):
    """Rank 0's free memory says "device", the other rank's "dataloader"; records what each got."""

    def __init__(self, data_dir: Path, record_dir: Path) -> None:
        super().__init__(data_dir, val_size=2, eval_batch_size=2, download=False)
        self.record_dir = record_dir

    def _auto_placement(self, device: torch.device) -> str:
        return "device" if self.trainer.global_rank == 0 else "dataloader"

    def test_dataloader(self):
        loader = super().test_dataloader()
        (self.record_dir / f"rank{self.trainer.global_rank}").write_text(type(loader).__name__)
        return loader


def test_ranks_share_rank_0s_placement_and_count_each_test_image_once(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, labels in (("train", [0, 1, 2, 3]), ("t10k", [0, 1, 1])):  # 3 test images on 2 ranks
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.zeros((len(labels), 28, 28), dtype=np.uint8))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.array(labels, dtype=np.uint8))
    trainer = L.Trainer(
        strategy="ddp_spawn", accelerator="cpu", devices=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    model = ImageClassifier(PredictsZero(), optimizer=None)
    (metrics,) = trainer.test(model, datamodule=RanksDisagree(tmp_path, tmp_path), verbose=False)
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["DeviceBatches", "DeviceBatches"]
    # 1 of 3 images is a 0; repeating image 0 to pad rank 1's share would count 2 of 4
    assert metrics["test/acc"] == pytest.approx(1 / 3)
