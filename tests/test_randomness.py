"""Each epoch's data order comes from (seed, epoch) jointly; each DDP rank has its own
augmentation and dropout stream while the order stays shared."""

from types import SimpleNamespace

import torch
from torch import nn

from classic_cnns.classifier import ImageClassifier
from classic_cnns.data import CIFAR10DataModule, MNISTDataModule
from classic_cnns.data.batching import EpochOrderSampler

from .conftest import write_mnist


def _ids_in_order(images: torch.Tensor) -> list[int]:
    """The ids conftest.fake_images writes into each image's first two pixels, in batch order."""
    return (images[:, 0, 0, 0].int() + 256 * images[:, 0, 0, 1].int()).tolist()


def test_two_seeds_share_no_epoch_order(tmp_path):
    write_mnist(tmp_path, n_train=240, n_test=10)
    orders = {}
    for seed in (0, 1):
        dm = MNISTDataModule(tmp_path, val_size=40, batch_size=200, seed=seed)
        dm.setup("fit")
        for epoch in range(6):
            batches = dm.device_batches("train", "cpu", shuffle=True, epoch=lambda e=epoch: e)
            orders[seed, epoch] = [i for images, _ in batches for i in _ids_in_order(images)]
    assert len({tuple(order) for order in orders.values()}) == len(orders)  # with seed + epoch: (1, e) == (0, e + 1)
    # the DataLoader placement's sampler draws the very same order, each rank its share
    sampler = EpochOrderSampler(dm.splits["train"], seed=1, rank=1, world_size=2)
    sampler.set_epoch(3)
    assert _ids_in_order(dm.splits["train"].images[list(sampler)]) == orders[1, 3][1::2]


def test_every_ddp_rank_draws_its_own_augmentation_and_dropout():
    """The epoch hook train() relies on, run as on ranks 0 and 1 of a DDP fit (in-process)."""
    model = ImageClassifier(nn.Dropout(0.5), optimizer=None, seed=7)
    dm = CIFAR10DataModule("unused", crop_padding=4, horizontal_flip=True)
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)

    def draws(rank: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        model.trainer = SimpleNamespace(global_rank=rank, current_epoch=epoch)
        model.on_train_epoch_start()
        return dm.transform(images, train=True), model.net(torch.ones(1000))

    rank0, rank1, rank0_again, rank0_next = draws(0, 2), draws(1, 2), draws(0, 2), draws(0, 3)
    for a, b in zip(rank0, rank1):
        assert not torch.equal(a, b)  # crops and flips, dropout masks: the ranks differ
    for a, b in zip(rank0, rank0_again):
        torch.testing.assert_close(a, b)  # a resumed epoch draws the same again
    assert not torch.equal(rank0[1], rank0_next[1])  # and the next epoch draws anew
