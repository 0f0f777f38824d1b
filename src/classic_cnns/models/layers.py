"""The design choices the reference notebooks discuss, each a name that both networks resolve here.

Pooling, padding, activation and normalization are config values, gathered in one LayerChoices
that both networks take; this module is the one place that turns such a value into a layer, so
"min pooling" exists exactly once. Adding a pooling type is one entry in POOLS and one file in
conf/pooling/: the config checks, the TensorBoard views and the summary all follow the registry.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class MinPool2d(nn.MaxPool2d):
    """Min pooling: the smallest value of each window, computed exactly as -maxpool(-x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -super().forward(-x)


class Subsampling2d(nn.Module):
    """LeNet-5's S2/S4: the sum of each window times a trainable coefficient, plus a trainable
    bias, one pair per feature map (LeCun et al. 1998, section II-B)."""

    def __init__(self, channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.weight = nn.Parameter(torch.full((channels,), 1.0 / kernel_size**2))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window_sum = F.avg_pool2d(x, self.kernel_size, self.stride) * self.kernel_size**2
        return window_sum * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class LocalResponseNorm(nn.Module):
    """AlexNet's local response normalization (Krizhevsky et al. 2012, section 3.3):
    b_i = a_i / (k + alpha * sum of a_j^2 over the n maps j centred on i)^beta, at each position.

    `alpha` is the paper's: `nn.LocalResponseNorm` divides its alpha by n, so passing it 1e-4
    would normalize five times more weakly than the paper.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def divisor(self, x: torch.Tensor) -> torch.Tensor:
        """(k + alpha * window sum of squares)^beta, the same shape as `x`."""
        squares = F.pad(x.square().unsqueeze(1), (0, 0, 0, 0, self.size // 2, (self.size - 1) // 2))
        window_sum = F.avg_pool3d(squares, (self.size, 1, 1), stride=1).squeeze(1) * self.size
        return (self.k + self.alpha * window_sum).pow(self.beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.divisor(x)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


def forward_with_hooks(net: nn.Module, x: torch.Tensor, hooks: dict[nn.Module, Callable]) -> None:
    """One forward pass of `net` on `x` in eval mode without gradients, each module of `hooks`
    calling its hook(module, inputs, output); afterwards the hooks are removed and the training
    mode restored: a measurement that leaves the network as it was."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks.items()]
    was_training = net.training
    try:
        with torch.no_grad():
            net.eval()(x)
    finally:
        net.train(was_training)
        for handle in handles:
            handle.remove()


def lrn_divisor_spread(net: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """How much each LRN layer's divisor varies on `images`: the median and the maximum of
    divisor / k^beta, per layer in network order (lrn1, lrn2, ...). Both near 1.0 mean that
    LRN was only the constant factor k^-beta there. Empty without LRN layers."""
    layers = [module for module in net.modules() if isinstance(module, LocalResponseNorm)]
    if not layers:
        return {}
    ratios: dict[int, torch.Tensor] = {}

    def record(index: int):
        return lambda layer, inputs, output: ratios.__setitem__(index, layer.divisor(inputs[0]) / layer.k**layer.beta)

    forward_with_hooks(net, images, {layer: record(index) for index, layer in enumerate(layers, 1)})
    spread = {}
    for index, ratio in sorted(ratios.items()):
        spread |= {f"lrn{index}/divisor_median": ratio.median().item(), f"lrn{index}/divisor_max": ratio.max().item()}
    return spread


class ScaledTanh(nn.Module):
    """LeNet-5's squashing function f(a) = A tanh(S a) with A = 1.7159, S = 2/3 (appendix A)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class SamePad2d(nn.Module):
    """TensorFlow's "same" padding, O = ceil(N / S), also for strided convolutions (where
    PyTorch's padding="same" refuses): pads (S*(O-1) + F - N) in total, the extra pixel of an
    odd total on the bottom/right, computed from the size of each input."""

    def __init__(self, kernel_size: int, stride: int, mode: str = "zeros", value: float = 0.0) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.mode = "constant" if mode == "zeros" else mode
        self.value = value  # of the added pixels in "zeros" mode: -inf in front of a max pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max(self.stride * (math.ceil(size / self.stride) - 1) + self.kernel_size - size, 0)
            pads += [total // 2, total - total // 2]
        return (
            F.pad(x, pads, mode=self.mode, value=self.value)
            if self.mode == "constant"
            else F.pad(x, pads, mode=self.mode)
        )


class ConnectionTableConv2d(nn.Module):
    """A convolution in which output map j sees only the input maps table[j], one kernel per
    connection (LeNet-5's C3, with exactly the paper's 1,516 parameters for its table)."""

    def __init__(self, table: Sequence[Sequence[int]], in_channels: int, kernel_size: int, padding: int = 0) -> None:
        super().__init__()
        self.out_channels, self.in_channels = len(table), in_channels
        self.kernel_size, self.padding = kernel_size, padding
        outputs = [j for j, inputs in enumerate(table) for _ in inputs]
        inputs = [i for row in table for i in row]
        self.register_buffer("index", torch.tensor(outputs) * in_channels + torch.tensor(inputs), persistent=False)
        fan_in = torch.tensor([len(table[j]) * kernel_size**2 for j in outputs], dtype=torch.float32)
        bound = (1.0 / fan_in).sqrt().view(-1, 1, 1)
        self.weight = nn.Parameter((torch.rand(len(inputs), kernel_size, kernel_size) * 2 - 1) * bound)
        self.bias = nn.Parameter(torch.zeros(len(table)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = self.weight.new_zeros(self.out_channels * self.in_channels, self.kernel_size, self.kernel_size)
        full = full.index_copy(0, self.index, self.weight)
        full = full.view(self.out_channels, self.in_channels, self.kernel_size, self.kernel_size)
        return F.conv2d(x, full, self.bias, padding=self.padding)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "scaled_tanh": ScaledTanh,
}

POOLS: dict[str, Callable[..., nn.Module]] = {
    "max": lambda channels, kernel_size, stride: nn.MaxPool2d(kernel_size, stride),
    "avg": lambda channels, kernel_size, stride: nn.AvgPool2d(kernel_size, stride),
    "min": lambda channels, kernel_size, stride: MinPool2d(kernel_size, stride),
    "subsampling": Subsampling2d,
    "lp": lambda channels, kernel_size, stride: nn.LPPool2d(2, kernel_size, stride),  # power-average, p = 2
}

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "none": lambda channels: nn.Identity(),
    "batch": nn.BatchNorm2d,
    # AlexNet (2012), section 3.3: k=2, n=5, alpha=1e-4, beta=0.75.
    "lrn": lambda channels: LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0),
}

POOL_PADDINGS = ("valid", "same")


def pool_with_padding(pool: nn.Module, padding: str, kernel_size: int, stride: int) -> nn.Module:
    """`pool` unpadded ("valid") or with TensorFlow's "same" padding, O = ceil(N / S) (Keras's
    MaxPooling2D(padding="same")): the added pixels are -inf, so that they never win a max."""
    if padding not in POOL_PADDINGS:
        raise ValueError(f"unknown pool padding {padding!r}; choose one of: {', '.join(POOL_PADDINGS)}")
    if padding == "valid":
        return pool
    if not isinstance(pool, nn.MaxPool2d) or isinstance(pool, MinPool2d):
        raise ValueError(f"'same' pool padding is defined here for max pooling only, not {type(pool).__name__}")
    return nn.Sequential(SamePad2d(kernel_size, stride, value=float("-inf")), pool)


INITIALIZATIONS = ("torch", "keras")


def initialize(net: nn.Module, scheme: str) -> None:
    """ "torch": PyTorch's own initialization, as built; "keras": Keras's defaults for Conv2D and
    Dense, Glorot-uniform kernels (U(-a, a), a = sqrt(6 / (fan_in + fan_out))) and zero biases."""
    if scheme not in INITIALIZATIONS:
        raise ValueError(f"unknown initialization {scheme!r}; choose one of: {', '.join(INITIALIZATIONS)}")
    if scheme == "keras":
        for module in net.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


PADDINGS = ("default", "same", "valid")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

# What the TensorBoard views and the summary call a stage, by layer type. The pool and norm types
# are the ones the registries build, so a new registry entry is a stage without further code.
CONVS = (nn.Conv2d, ConnectionTableConv2d)
POOL_TYPES = tuple({type(make(1, 2, 2)) for make in POOLS.values()})
NORM_TYPES = tuple({type(make(1)) for make in NORMS.values()} - {nn.Identity})


def stage(module: nn.Module) -> str | None:
    """ "conv", "pool" or "norm" for a layer of those kinds (the views and the summary show
    these), None for the rest (activations, dropout, flatten, linear layers)."""
    if isinstance(module, CONVS):
        return "conv"
    if isinstance(module, POOL_TYPES):
        return "pool"
    if isinstance(module, NORM_TYPES):
        return "norm"
    return None


def choose(registry: dict, name: str, what: str):
    """Look `name` up in `registry`, failing with the list of valid names."""
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; choose one of: {', '.join(registry)}")
    return registry[name]


def make_activation(name: str) -> nn.Module:
    return choose(ACTIVATIONS, name, "activation")()


def make_pool(name: str, channels: int, kernel_size: int, stride: int) -> nn.Module:
    return choose(POOLS, name, "pooling")(channels, kernel_size, stride)


def make_norm(name: str, channels: int) -> nn.Module:
    return choose(NORMS, name, "norm")(channels)


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: str | int = "default",
    default_padding: int = 0,
    padding_mode: str = "zeros",
    groups: int = 1,
) -> nn.Module:
    """A convolution with the padding choice applied.

    "default" keeps the network's own value for this layer, "valid" adds none, an integer is
    used as is, and "same" gives O = ceil(N / S): P = (F - 1) / 2 in O = (N - F + 2P) / S + 1
    when that is exact (odd F, stride 1), else a SamePad2d in front of an unpadded convolution.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"unknown padding mode {padding_mode!r}; choose one of: {', '.join(PADDING_MODES)}")
    if padding == "same" and (stride > 1 or kernel_size % 2 == 0):
        return nn.Sequential(
            SamePad2d(kernel_size, stride, padding_mode),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, groups=groups),
        )
    pad = symmetric_padding(padding, kernel_size, default_padding)
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=pad, padding_mode=padding_mode, groups=groups
    )


def symmetric_padding(padding: str | int, kernel_size: int, default: int) -> int:
    """P on each side for "default" (the layer's own), "same" ((F - 1) / 2), "valid" (0) or an integer."""
    if isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        return padding
    if padding in PADDINGS:
        return {"default": default, "same": (kernel_size - 1) // 2, "valid": 0}[padding]
    raise ValueError(f"unknown padding {padding!r}; choose one of: {', '.join(PADDINGS)} or an integer >= 0")


@dataclass(frozen=True)
class LayerChoices:
    """The layer choices both networks take: one value from each of the config groups
    activation, pooling, padding and norm (conf/train.yaml builds it as `layers`).

    A pool size of None means the network's own (LeNet-5 2x2 at stride 2, AlexNet 3x3 at
    stride 2); padding "default" keeps each layer's own padding. Names are checked here.
    """

    activation: str = "relu"
    pooling: str = "max"
    pool_kernel_size: int | None = None
    pool_stride: int | None = None
    padding: str | int = "default"
    padding_mode: str = "zeros"
    norm: str = "none"

    def __post_init__(self) -> None:
        choose(ACTIVATIONS, self.activation, "activation")
        choose(POOLS, self.pooling, "pooling")
        choose(NORMS, self.norm, "norm")
        symmetric_padding(self.padding, 1, 0)
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"unknown padding mode {self.padding_mode!r}; choose one of: {', '.join(PADDING_MODES)}")

    def activation_layer(self) -> nn.Module:
        return make_activation(self.activation)

    def pool_layer(self, channels: int, kernel_size: int, stride: int) -> nn.Module:
        """The chosen pooling with the given window; the caller applies its own defaults."""
        return make_pool(self.pooling, channels, kernel_size, stride)

    def norm_layer(self, channels: int) -> nn.Module:
        return make_norm(self.norm, channels)

    def conv_layer(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        default_padding: int = 0,
        groups: int = 1,
    ) -> nn.Module:
        """A convolution with the padding choice applied (see conv2d); `default_padding` is the layer's own."""
        return conv2d(
            in_channels, out_channels, kernel_size, stride, self.padding, default_padding, self.padding_mode, groups
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
