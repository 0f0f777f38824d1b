"""DDP on the CPU (gloo, two ranks spawned or forked): what the ranks agree on and what they count."""

from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from classic_cnns.classifier import ImageClassifier
from classic_cnns.data import ImageFolderDataModule, MNISTDataModule

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
        strategy="ddp_fork",
        accelerator="cpu",
        devices=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = ImageClassifier(PredictsZero(), optimizer=None)
    (metrics,) = trainer.test(model, datamodule=RanksDisagree(tmp_path, tmp_path), verbose=False)
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["DeviceBatches", "DeviceBatches"]
    # 1 of 3 images is a 0; repeating image 0 to pad rank 1's share would count 2 of 4
    assert metrics["test/acc"] == pytest.approx(1 / 3)


FOLDER_IMAGES, FOLDER_SIZE, FOLDER_PADDING = 16, 16, 2


def write_position_folder(root: Path) -> None:
    """train/ of 16 PNGs (lossless) whose pixels say which image and where they are: red = the
    image's id, green = 10 x (row + 1), blue = 10 x (column + 1); val/ one image per class."""
    rows, cols = np.mgrid[:FOLDER_SIZE, :FOLDER_SIZE]
    for split, count in (("train", FOLDER_IMAGES), ("val", 2)):
        for image_id in range(count):
            folder = root / split / ("ab"[image_id % 2])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.stack([np.full_like(rows, image_id), 10 * rows + 10, 10 * cols + 10], -1).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{image_id:02d}.png")


class RecordsTrainingCrops(ImageFolderDataModule):
    """Appends, per rank, (image id, crop offset down, crop offset right, flipped) of every training
    image it feeds, read off its centre pixels (the corners may be the crop's zero padding)."""

    def __init__(self, data_dir: Path, record_dir: Path, decode: str) -> None:
        super().__init__(
            str(data_dir),
            image_size=FOLDER_SIZE,
            crop_padding=FOLDER_PADDING,
            channels=3,
            batch_size=4,
            mean=[0.0],
            std=[1.0],
            decode=decode,
            num_workers=1 if decode == "stream" else 0,
        )
        self.record_dir = record_dir

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = super().on_after_batch_transfer(batch, dataloader_idx)
        if self.trainer.training:
            centre = FOLDER_SIZE // 2
            pixels = (images[..., centre, centre : centre + 2] * 255).round().long()  # mean 0, std 1: x / 255
            image_id, row, col = pixels[:, 0, 0], pixels[:, 1, 0] // 10 - 1, pixels[:, 2, 0] // 10 - 1
            flipped = pixels[:, 2, 0] > pixels[:, 2, 1]
            with open(self.record_dir / f"rank{self.trainer.global_rank}", "a") as record:
                for crop in zip(image_id, row - centre, col - centre, flipped):
                    record.write(" ".join(str(int(value)) for value in crop) + "\n")
        return images, labels


def test_a_streamed_folder_is_sharded_across_ranks_each_with_its_own_augmentation(tmp_path):
    """Two gloo ranks, one epoch of a streamed folder (decoded in a DataLoader worker): together
    they see every training image exactly once, and draw different crops and flips."""
    write_position_folder(tmp_path / "photos")
    trainer = L.Trainer(
        strategy="ddp_fork",
        accelerator="cpu",
        devices=2,
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * FOLDER_SIZE**2, 2))
    model = ImageClassifier(net, optimizer=partial(torch.optim.SGD, lr=0.01), seed=0)
    trainer.fit(model, datamodule=RecordsTrainingCrops(tmp_path / "photos", tmp_path, decode="stream"))
    seen = [
        [tuple(map(int, line.split())) for line in (tmp_path / f"rank{r}").read_text().splitlines()] for r in (0, 1)
    ]
    assert [len(crops) for crops in seen] == [FOLDER_IMAGES // 2] * 2
    assert sorted(image_id for crops in seen for image_id, *_ in crops) == list(range(FOLDER_IMAGES))
    augmentations = [[tuple(crop) for _, *crop in crops] for crops in seen]
    assert augmentations[0] != augmentations[1]  # the same stream on both ranks would draw the same sequence
    assert len({crop for crops in augmentations for crop in crops}) > 1  # the crops and flips are random at all


def test_a_folder_in_memory_is_sharded_across_ranks(tmp_path):
    """decode=once takes CIFAR-10's path: each rank's index slices of the one epoch order (in
    process: the ranks' augmentation streams are tests/test_randomness.py's)."""
    write_position_folder(tmp_path / "photos")
    dm = RecordsTrainingCrops(tmp_path / "photos", tmp_path, decode="once")
    dm.setup("fit")
    shares = [
        [
            int(i)
            for images, _ in dm.device_batches("train", "cpu", shuffle=True, rank=rank, world_size=2, epoch=lambda: 1)
            for i in images[:, 0, 0, 0]
        ]
        for rank in (0, 1)
    ]
    assert [len(share) for share in shares] == [FOLDER_IMAGES // 2] * 2
    assert sorted(shares[0] + shares[1]) == list(range(FOLDER_IMAGES))
