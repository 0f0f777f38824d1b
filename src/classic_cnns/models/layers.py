"""The design choices the seeds discuss, each a name that both networks resolve here.

Pooling, padding, activation and normalization are config values; this module is the one
place that turns such a value into a layer, so "min pooling" exists exactly once.
"""

from collections.abc import Callable, Sequence

import torch
from torch import nn


class MinPool2d(nn.MaxPool2d):
    """Min pooling: the smallest value of each window, computed exactly as -maxpool(-x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -super().forward(-x)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}

POOLS: dict[str, Callable[..., nn.Module]] = {
    "max": nn.MaxPool2d,
    "avg": nn.AvgPool2d,
    "min": MinPool2d,
}

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "none": lambda channels: nn.Identity(),
    "batch": nn.BatchNorm2d,
    # AlexNet (2012), section 3.3: k=2, n=5, alpha=1e-4, beta=0.75.
    "lrn": lambda channels: nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0),
}

PADDINGS = ("default", "same", "valid")


def choose(registry: dict, name: str, what: str):
    """Look `name` up in `registry`, failing with the list of valid names."""
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; choose one of: {', '.join(registry)}")
    return registry[name]


def make_activation(name: str) -> nn.Module:
    return choose(ACTIVATIONS, name, "activation")()


def make_pool(name: str, kernel_size: int, stride: int) -> nn.Module:
    return choose(POOLS, name, "pooling")(kernel_size=kernel_size, stride=stride)


def make_norm(name: str, channels: int) -> nn.Module:
    return choose(NORMS, name, "norm")(channels)


def conv_padding(padding: str | int, kernel_size: int, default: int) -> int:
    """Zero padding of one convolution.

    "default" keeps the network's own value for that layer, "same" keeps the size at stride 1
    (P = (F - 1) / 2 in O = (N - F + 2P) / S + 1), "valid" adds none, an integer is used as is.
    """
    if isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        return padding
    if padding == "default":
        return default
    if padding == "same":
        return (kernel_size - 1) // 2
    if padding == "valid":
        return 0
    raise ValueError(
        f"unknown padding {padding!r}; choose one of: {', '.join(PADDINGS)} or an integer >= 0"
    )


def flat_features(features: nn.Module, in_channels: int, input_size: Sequence[int]) -> int:
    """Size of the flattened feature map for this input size, found by running the extractor.

    The classifier is sized from this, never from a hard-coded 16 * 5 * 5.
    """
    height, width = input_size
    was_training = features.training
    features.eval()
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, in_channels, height, width))
    except RuntimeError as error:
        raise ValueError(
            f"a {height}x{width} input is too small for these layers: the feature maps shrink to "
            f"nothing ({error}). Use a larger data.image_size, padding=same or a smaller pooling."
        ) from None
    finally:
        features.train(was_training)
    return out.numel()
