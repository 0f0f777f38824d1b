"""Batched transforms on the batch's device: uint8 (N, C, H, W) in, normalized float out.

No per-sample Python: padding, augmentation, normalization and resizing are a few tensor
operations on the whole batch, run after the batch reached its device (the GPU in training).
"""

import torch
import torch.nn.functional as F

from classic_cnns import ClassicCNNsError

SCALES = ("standard", "paper")


def normalization(mean, std, scale: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (1, C, 1, 1) mean and divisor that `scale` feeds: "standard", (x - mean) / std with x in
    [0, 1]; "paper", the AlexNet paper's 0-255 values minus the mean, (x - mean) * 255, std unused."""
    if scale not in SCALES:
        raise ClassicCNNsError(f"data.scale={scale!r} is not allowed: use one of {', '.join(SCALES)}")
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return mean, torch.full_like(mean, 1 / 255) if scale == "paper" else std


class BatchTransform:
    """uint8 (N, C, H, W) -> float: centred in `pad_to`, augmented when training (random crop of
    the image padded by `crop_padding`, horizontal flip), normalized, resized to `input_size`.

    `mean` and `std` are fixed when it is built; the copies on each device are made once, kept
    beside them, so that no batch pays a host-to-device copy."""

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        input_size: tuple[int, int],
        pad_to: int | None = None,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
    ) -> None:
        self.mean, self.std = mean, std
        self.input_size, self.pad_to = tuple(input_size), pad_to
        self.crop_padding, self.horizontal_flip = crop_padding, horizontal_flip
        self._constants_on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def constants_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants_on:
            self._constants_on[device] = (self.mean.to(device), self.std.to(device))
        return self._constants_on[device]

    def __call__(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        x = images.float().div_(255)
        if self.pad_to:
            top, left = (self.pad_to - x.shape[-2]) // 2, (self.pad_to - x.shape[-1]) // 2
            x = F.pad(x, (left, self.pad_to - x.shape[-1] - left, top, self.pad_to - x.shape[-2] - top))
        if train and self.crop_padding:
            x = random_crop(x, self.crop_padding)
        if train and self.horizontal_flip:
            flip = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
            x = torch.where(flip, x.flip(3), x)
        mean, std = self.constants_on(x.device)
        x = (x - mean) / std
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return x


def random_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding) for a whole batch: zero-pad, then cut each image
    at its own random offset with one gather."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, channel, rows, cols]
