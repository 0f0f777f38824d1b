"""Batched transforms on the batch's device: uint8 (N, C, H, W) in, normalized float out.

No per-sample Python: padding, augmentation, normalization and resizing are a few tensor
operations on the whole batch, run after the batch reached its device (the GPU in training).
The AlexNet paper's parts (docs/imagenet-protocol.md): the per-pixel mean image, PCA lighting
noise, random patches and the ten test crops.
"""

import torch
import torch.nn.functional as F

from classic_cnns import ClassicCNNsError

# "standard": (x - mean) / std, x in [0, 1]. "paper": the AlexNet paper's input, 0-255 values
# minus the mean image of the training split, per pixel. "paper_channel": 0-255 values minus the
# per-channel `mean` (this project's "paper" before the mean image).
SCALES = ("standard", "paper", "paper_channel")
# What evaluation feeds when `crop_size` is set: the centre patch, or the paper's ten patches
# (four corners and centre, and their horizontal flips), whose softmax the classifier averages.
TEST_CROPS = ("center", "ten")


def normalization(mean, std, scale: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (1, C, 1, 1) mean and divisor that `scale` feeds: "standard", (x - mean) / std with x in
    [0, 1]; "paper" and "paper_channel", the AlexNet paper's 0-255 values minus the mean,
    (x - mean) * 255, std unused (for "paper" the mean is the training split's mean image, which
    replaces this one once it is known: `BatchTransform.fit`)."""
    if scale not in SCALES:
        raise ClassicCNNsError(f"data.scale={scale!r} is not allowed: use one of {', '.join(SCALES)}")
    mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return mean, std if scale == "standard" else torch.full_like(mean, 1 / 255)


class BatchTransform:
    """uint8 (N, C, H, W) -> float: centred in `pad_to`, augmented when training (random crop of
    the image padded by `crop_padding`, horizontal flip), normalized, resized to `input_size`.

    The AlexNet paper's parts: `crop_size`, a random crop_size x crop_size patch when training
    and the centre one (or the ten of `test_crops="ten"`, as (N, 10, C, h, w)) when evaluating;
    `mean_image`, the mean of the training images subtracted per pixel; `lighting`, the standard
    deviation of the PCA lighting noise's alphas (0: none). The last two need the training
    split's statistics (`fit`).

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
        crop_size: int | None = None,
        test_crops: str = "center",
        mean_image: bool = False,
        lighting: float = 0.0,
    ) -> None:
        if test_crops not in TEST_CROPS:
            raise ClassicCNNsError(f"data.test_crops={test_crops!r} is not allowed: use one of {', '.join(TEST_CROPS)}")
        if not lighting >= 0:
            raise ClassicCNNsError(
                f"data.lighting={lighting!r} is not allowed: the noise's standard deviation is >= 0 (the paper's 0.1)"
            )
        self.mean, self.std = mean, std
        self.input_size, self.pad_to = tuple(input_size), pad_to
        self.crop_padding, self.horizontal_flip = crop_padding, horizontal_flip
        self.crop_size, self.test_crops = crop_size, test_crops
        self.mean_image, self.lighting = mean_image, lighting
        self.statistics: dict[str, torch.Tensor] | None = None  # from `fit`
        self._constants_on: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    @property
    def needs_statistics(self) -> bool:
        """Whether the training split's statistics must be `fit` before any batch is transformed."""
        return (self.mean_image or self.lighting > 0) and self.statistics is None

    def fit(self, statistics: dict[str, torch.Tensor]) -> None:
        """Take the training split's `pixel_statistics` (the mean image replaces `mean`)."""
        self.statistics = statistics
        if self.mean_image:
            self.mean = statistics["mean_image"]
        self._constants_on.clear()

    def constants_on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """mean, std, eigenvalues, eigenvectors on `device` (the last two None before `fit`)."""
        if device not in self._constants_on:
            eigen = (
                (self.statistics["eigenvalues"], self.statistics["eigenvectors"]) if self.statistics else (None, None)
            )
            self._constants_on[device] = tuple(t if t is None else t.to(device) for t in (self.mean, self.std, *eigen))
        return self._constants_on[device]

    def _geometry(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """Centred in `pad_to`, then the random crops and flips (training) or the test crops."""
        if self.pad_to:
            top, left = (self.pad_to - x.shape[-2]) // 2, (self.pad_to - x.shape[-1]) // 2
            x = F.pad(x, (left, self.pad_to - x.shape[-1] - left, top, self.pad_to - x.shape[-2] - top))
        if train and self.crop_padding:
            x = random_crop(x, self.crop_padding)
        if self.crop_size:
            x = (
                random_patches(x, self.crop_size)
                if train
                else ten_crops(x, self.crop_size)
                if self.test_crops == "ten"
                else center_crop(x, self.crop_size)
            )
        if train and self.horizontal_flip:
            flip = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
            if x.device.type == "cpu":  # only the chosen images: a third of where's time (the mask waits on nothing)
                chosen = flip.view(-1)
                flipped = x.clone()  # x may be the caller's batch
                flipped[chosen] = x[chosen].flip(3)
                return flipped
            x = torch.where(flip, x.flip(3), x)  # no host read of the mask: no sync with the GPU
        return x

    def __call__(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        if self.needs_statistics:
            raise ClassicCNNsError(
                "the per-pixel mean image / lighting noise needs the training split's statistics first (BatchTransform.fit)"
            )
        # Without per-pixel steps before them (the mean image, whose pixels the patches cut, and
        # the lighting noise, drawn first), the crops and flips run on the uint8 images: the
        # float steps then touch only the patches, a quarter of the bytes (the same values).
        geometry_first = not (self.mean_image or self.lighting)
        x = self._geometry(images, train) if geometry_first else images
        x = x.float().div_(255)
        mean, std, eigenvalues, eigenvectors = self.constants_on(x.device)
        if train and self.lighting:
            x = x + lighting_noise(len(x), eigenvalues, eigenvectors, self.lighting).view(len(x), -1, 1, 1)
        if self.mean_image:
            x = x - mean  # the paper's order: the mean image of the whole stored images, then patches
        if not geometry_first:
            x = self._geometry(x, train)
        x = x.div_(std) if self.mean_image else x.sub_(mean).div_(std)  # in place: x is this call's own tensor
        if tuple(x.shape[-2:]) != self.input_size:
            crops = x.shape[:-3]  # (N,) or (N, 10)
            x = F.interpolate(
                x.flatten(0, -4), size=self.input_size, mode="bilinear", align_corners=False, antialias=True
            )
            x = x.view(*crops, *x.shape[-3:])
        return x


def pixel_statistics(split, chunk: int = 256) -> dict[str, torch.Tensor]:
    """What the paper computes over its training set, pixel values in [0, 1]: the mean image
    (1, C, H, W), and the eigenvalues (C,) and eigenvectors (C, C, one per column) of the C x C
    covariance of the pixel values. `split.images[a:b]` are uint8 (n, C, H, W); read in chunks
    (a streamed split decodes each chunk), summed in float64."""
    total, products, channel_sums, count = None, 0.0, 0.0, 0
    for start in range(0, len(split), chunk):
        x = split.images[start : start + chunk].double() / 255
        total = x.sum(0) if total is None else total + x.sum(0)
        pixels = x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, n * H * W)
        products = products + pixels @ pixels.T
        channel_sums = channel_sums + pixels.sum(1)
        count += pixels.shape[1]
    if total is None:
        raise ClassicCNNsError("the training split has no images to compute the mean image from")
    channel_mean = channel_sums / count
    covariance = products / count - torch.outer(channel_mean, channel_mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    return {
        "mean_image": (total / len(split)).float().unsqueeze(0),
        "eigenvalues": eigenvalues.clamp(min=0).float(),
        "eigenvectors": eigenvectors.float(),
    }


def lighting_noise(n: int, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, std: float) -> torch.Tensor:
    """(n, C): for each image, sum_i alpha_i * lambda_i * p_i with alpha_i ~ N(0, std), drawn
    once per image (the paper's [p1, p2, p3][a1 l1, a2 l2, a3 l3]^T, added to every pixel)."""
    alpha = torch.randn(n, len(eigenvalues), device=eigenvalues.device) * std
    return (alpha * eigenvalues) @ eigenvectors.T


def crop_at(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """The size x size patch of each image at its own (top, left), shape (N, 1) each: one gather
    (on the CPU one slice per image, 30x faster than the gather there)."""
    n, c = x.shape[:2]
    if x.device.type == "cpu":
        offsets = zip(top.view(-1).tolist(), left.view(-1).tolist())
        return torch.stack([image[:, y : y + size, x0 : x0 + size] for image, (y, x0) in zip(x, offsets)])
    rows = (top + torch.arange(size, device=x.device)).view(n, 1, size, 1)
    cols = (left + torch.arange(size, device=x.device)).view(n, 1, 1, size)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return x[batch, channel, rows, cols]


def _check_crop(x: torch.Tensor, size: int) -> None:
    if size > min(x.shape[-2:]):
        raise ClassicCNNsError(
            f"data.crop_size={size} is larger than the {x.shape[-2]}x{x.shape[-1]} images: use data.crop_size <= {min(x.shape[-2:])}"
        )


def random_patches(x: torch.Tensor, size: int) -> torch.Tensor:
    """A size x size patch of each image at a random place (the paper's training patches)."""
    _check_crop(x, size)
    n, h, w = len(x), x.shape[-2], x.shape[-1]
    top = torch.randint(0, h - size + 1, (n, 1), device=x.device)
    left = torch.randint(0, w - size + 1, (n, 1), device=x.device)
    return crop_at(x, top, left, size)


def crop_corners(h: int, w: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of the centre patch and the four corner patches, in that order; the centre's
    offsets rounded down."""
    return [((h - size) // 2, (w - size) // 2), (0, 0), (0, w - size), (h - size, 0), (h - size, w - size)]


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    _check_crop(x, size)
    top, left = crop_corners(x.shape[-2], x.shape[-1], size)[0]
    return x[..., top : top + size, left : left + size]


def ten_crops(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 10, C, size, size): the centre and four corner patches, then the same five flipped."""
    _check_crop(x, size)
    five = [x[..., top : top + size, left : left + size] for top, left in crop_corners(x.shape[-2], x.shape[-1], size)]
    five = torch.stack(five, 1)
    return torch.cat([five, five.flip(-1)], 1)


def first_crop(images: torch.Tensor) -> torch.Tensor:
    """A batch of ten-crop sets (N, 10, C, h, w) as its centre crops (N, C, h, w), for showing; other batches as they are."""
    return images[:, 0] if images.dim() == 5 else images


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
