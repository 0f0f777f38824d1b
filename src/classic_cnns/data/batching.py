"""The batching engine: how the images of a split become batches, in which order, where.

Two placements (`placement=`):
- "device": the split is copied once onto the training device and each batch is one index
  slice there (`DeviceBatches`);
- "dataloader": the split stays in host memory and a torch DataLoader gathers each batch
  (`host_loader`: pinned memory on CUDA, optional workers).
"auto" picks per device, once (`Placement`); under DDP rank 0 decides for all ranks.
Either way the training order of an epoch is `epoch_order(n, seed, epoch)`, each rank its share.
"""

from collections.abc import Callable, Iterator

import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from classic_cnns import ClassicCNNsError
from classic_cnns.randomness import epoch_order

PLACEMENTS = ("auto", "device", "dataloader")


class TensorBatches(Dataset):
    """Images and labels held as tensors; the DataLoader fetches a whole batch in one gather."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def _whole_batch(batch):
    """`__getitems__` already returns the batch: nothing to collate."""
    return batch


class DeviceBatches:
    """Batches as index slices of tensors that already live on the training device.

    The order of an epoch is `epoch_order(n, seed, epoch)`: every DDP rank draws the same one
    and takes its own share, and a resumed run replays the same order as an uninterrupted one.
    `epoch` says which epoch is starting; without it the object counts its own passes. Under DDP
    training drops the remainder, so that every rank takes the same number of steps; evaluation
    splits the set into disjoint shares without repeats (like Lightning's
    UnrepeatedDistributedSampler), so that each image is counted once: the shares may differ by
    one image, and the ranks' batch counts by one, which is safe because evaluation has no
    per-step collective.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: Callable[[], int] | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = epoch
        self._passes = 0

    def _indices(self) -> torch.Tensor:
        n, device = len(self.labels), self.labels.device
        if self.shuffle:
            epoch = self.epoch() if self.epoch is not None else self._passes
            order = epoch_order(n, self.seed, epoch, device)[: n - n % self.world_size]
        else:
            order = torch.arange(n, device=device)
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self.labels)
        per_rank = n // self.world_size if self.shuffle else len(range(self.rank, n, self.world_size))
        return -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices()
        self._passes += 1
        for batch in indices.split(self.batch_size):
            yield self.images[batch], self.labels[batch]


class EpochOrderSampler(DistributedSampler):
    """The DataLoader placement's training order: DeviceBatches' order (from (seed, epoch)
    jointly, each rank its share, the remainder dropped). Lightning keeps a DistributedSampler
    as it is and tells it the epoch (`set_epoch`), also after a resume."""

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(len(self.dataset), self.seed, self.epoch)[: self.total_size]
        return iter(order[self.rank :: self.num_replicas].tolist())


def check_batch_size(batch_size: int, images: int, world_size: int) -> None:
    """A training batch must fit in each rank's share of the training split."""
    per_rank = images // world_size
    if batch_size > per_rank:
        raise ClassicCNNsError(
            f"data.batch_size={batch_size} is larger than the {per_rank} training images "
            f"{'each DDP rank gets' if world_size > 1 else 'left after data.val_size'}: every step "
            f"would see all of them, not a batch of that size. Use data.batch_size <= {per_rank}"
        )


def host_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader over `dataset` in host memory: training in the epoch order (each rank its
    share), evaluation under DDP in disjoint shares without DistributedSampler's padding repeats,
    so that each image counts once. A dataset with `__getitems__` returns whole batches."""
    sampler = None
    if shuffle:
        sampler = EpochOrderSampler(dataset, seed, rank, world_size)
    elif world_size > 1:
        sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=_whole_batch if hasattr(dataset, "__getitems__") else None,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
    )


class Placement:
    """What `placement` means on each device, decided once: "auto" asks `measure(device)`.
    Under DDP rank 0 decides and broadcasts its choice: ranks deciding on their own free memory
    could disagree, and mix a device share with a DistributedSampler share (or hang)."""

    def __init__(self, placement: str, measure: Callable[[torch.device], str]) -> None:
        if placement not in PLACEMENTS:
            raise ClassicCNNsError(f"data.placement={placement!r} is not allowed: use one of {', '.join(PLACEMENTS)}")
        self.placement, self.measure = placement, measure
        self._chosen: dict[torch.device, str] = {}

    def resolve(self, device: torch.device, strategy=None) -> str:
        """ "device" or "dataloader" on `device`; `strategy`: the trainer's, to broadcast with."""
        if self.placement != "auto":
            return self.placement
        if device not in self._chosen:
            choice = self.measure(device)
            if strategy is not None and strategy.world_size > 1:
                choice = strategy.broadcast(choice, src=0)
            self._chosen[device] = choice
        return self._chosen[device]


def fits_on_device(device: torch.device, nbytes: int) -> str:
    """ "device" where `nbytes` take less than half the free memory of `device` (host memory:
    the data is there already), else "dataloader"."""
    if device.type != "cuda":
        return "device"
    free, _ = torch.cuda.mem_get_info(device)
    return "device" if nbytes < free / 2 else "dataloader"
