"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012), with the layer choices as arguments."""

import math
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from classic_cnns import ClassicCNNsError

from .layers import LayerChoices, flat_features, initialize, pool_with_padding

POOL_AFTER = (0, 1, 4)  # overlapping max pooling follows conv1, conv2 and conv5
LRN_AFTER = (0, 1)  # the paper normalizes the responses of conv1 and conv2 only
SPLIT_ACROSS_GPUS = (1, 3, 4)  # conv2, conv4, conv5 see only the maps on their own GPU
FC_LAYERS = ("fc6", "fc7", "fc8")
# init="paper": "We initialized the neuron biases in the second, fourth, and fifth convolutional
# layers, as well as in the fully-connected hidden layers, with the constant 1."
BIAS_ONE = ("conv2", "conv4", "conv5", "fc6", "fc7")
# The input normalization torchvision's ImageNet weights (AlexNet_Weights.IMAGENET1K_V1) were
# trained with, per RGB channel on [0, 1] pixels: data.mean and data.std when model.pretrained=true.
IMAGENET_NORMALIZATION = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


class AlexNet(nn.Module):
    """conv1 - pool - conv2 - pool - conv3 - conv4 - conv5 - pool - FC6 - FC7 - FC8.

    The defaults are the 2012 paper's network: 227x227 input, 96-256-384-384-256 kernels of
    11/5/3/3/3 (conv1 at stride 4), local response normalization, 3x3 max pooling at stride 2,
    dropout 0.5 and two FC layers of 4096. `conf/model/alexnet.yaml` keeps this structure and
    shrinks kernels, strides and widths for 32x32 CIFAR-10 images.

    Normalization follows the activation (conv - ReLU - LRN, as in the paper); LRN sits after
    conv1 and conv2 as in the paper, any other norm after every convolution. `groups=2` is the
    paper's two-GPU split: conv2, conv4 and conv5 connect only maps on the same GPU.
    `paddings` are the network's own per-layer paddings, used when layers.padding="default";
    `layers` holds the pooling, padding, activation and norm choices (the paper's by default).

    With layers.norm="none" the module layout is torchvision's (`features`, `avgpool`, `classifier` with
    the same indices), so `torchvision.models.alexnet().state_dict()` loads unchanged into
    conf/model/alexnet_torchvision.yaml, whose `avgpool_size=(6, 6)` is torchvision's adaptive
    average pooling; `pretrained=True` loads torchvision's ImageNet weights (FC8 stays fresh when
    num_classes is not 1000).

    The reference notebooks' AlexNets differ in three ways that are arguments here:
    `dropout_before=("fc7", "fc8")` drops FC6's and FC7's outputs (theirs) instead of FC6's and
    FC7's inputs (the paper's and torchvision's order); `pool_paddings` gives each of the three
    poolings Keras's "valid" or "same" padding; `init="keras"` is Keras's Glorot-uniform
    initialization (see layers.initialize). `init="paper"` is the 2012 paper's (`paper_initialization`).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1000,
        input_size: Sequence[int] = (227, 227),
        widths: Sequence[int] = (96, 256, 384, 384, 256),
        kernel_sizes: Sequence[int] = (11, 5, 3, 3, 3),
        strides: Sequence[int] = (4, 1, 1, 1, 1),
        paddings: Sequence[int] = (0, 2, 1, 1, 1),
        groups: int = 1,
        hidden_features: int = 4096,
        layers: LayerChoices = LayerChoices(norm="lrn"),
        dropout: float = 0.5,
        avgpool_size: Sequence[int] | None = None,
        pretrained: bool = False,
        dropout_before: Sequence[str] = ("fc6", "fc7"),
        pool_paddings: Sequence[str] = ("valid", "valid", "valid"),
        init: str = "torch",
    ) -> None:
        super().__init__()
        if not len(widths) == len(kernel_sizes) == len(strides) == len(paddings) == 5:
            raise ValueError(
                "AlexNet has five convolutions: widths, kernel_sizes, strides, paddings need 5 values each"
            )
        if len(pool_paddings) != len(POOL_AFTER):
            raise ValueError(f"AlexNet has {len(POOL_AFTER)} poolings: pool_paddings needs {len(POOL_AFTER)} values")
        if unknown := set(dropout_before) - set(FC_LAYERS):
            raise ValueError(
                f"dropout_before takes FC layer names ({', '.join(FC_LAYERS)}), not {', '.join(sorted(unknown))}"
            )
        pool_kernel_size = layers.pool_kernel_size or 3
        pool_stride = layers.pool_stride or 2
        features: list[nn.Module] = []
        channels = in_channels
        for index, (width, kernel_size, stride) in enumerate(zip(widths, kernel_sizes, strides)):
            split = groups if index in SPLIT_ACROSS_GPUS else 1
            conv = layers.conv_layer(channels, width, kernel_size, stride, paddings[index], groups=split)
            features += [conv, layers.activation_layer()]
            if layers.norm != "none" and (layers.norm != "lrn" or index in LRN_AFTER):
                features.append(layers.norm_layer(width))
            if index in POOL_AFTER:
                pool = layers.pool_layer(width, pool_kernel_size, pool_stride)
                features.append(
                    pool_with_padding(pool, pool_paddings[POOL_AFTER.index(index)], pool_kernel_size, pool_stride)
                )
            channels = width
        self.features = nn.Sequential(*features)
        flat = flat_features(self.features, in_channels, input_size)  # also fails early if nothing is left
        self.avgpool = nn.AdaptiveAvgPool2d(tuple(avgpool_size)) if avgpool_size else nn.Identity()
        if avgpool_size:
            flat = widths[-1] * math.prod(avgpool_size)
        fc_layers = {
            "fc6": nn.Linear(flat, hidden_features),
            "fc7": nn.Linear(hidden_features, hidden_features),
            "fc8": nn.Linear(hidden_features, num_classes),
        }
        classifier: list[nn.Module] = []
        for name, fc in fc_layers.items():
            classifier += [nn.Dropout(dropout)] if name in dropout_before else []
            classifier += [fc] if name == "fc8" else [fc, layers.activation_layer()]
        self.classifier = nn.Sequential(*classifier)  # by default torchvision's indices: FC8 is classifier[6]

        if init == "paper":
            paper_initialization(self)
        else:
            initialize(self, init)
        if pretrained:
            load_torchvision_weights(self)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def paper_initialization(net: AlexNet) -> None:
    """The paper: "We initialized the weights in each layer from a zero-mean Gaussian distribution
    with standard deviation 0.01", biases 1 in BIAS_ONE and "the constant 0" in the others."""
    convs = [m for m in net.features.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in net.classifier if isinstance(m, nn.Linear)]
    for name, layer in zip(("conv1", "conv2", "conv3", "conv4", "conv5", *FC_LAYERS), convs + fcs, strict=True):
        nn.init.normal_(layer.weight, 0.0, 0.01)
        if layer.bias is not None:
            nn.init.constant_(layer.bias, 1.0 if name in BIAS_ONE else 0.0)


def load_torchvision_weights(net: AlexNet) -> None:
    """torchvision's ImageNet weights (AlexNet_Weights.IMAGENET1K_V1) through its own weights API,
    which downloads them once into torch's hub cache; all but FC8 when the classes differ."""
    from torchvision.models import AlexNet_Weights

    weights = AlexNet_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    try:
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)  # tensors only, no code
    except OSError as error:  # URLError, no route, DNS: offline
        raise ClassicCNNsError(
            f"model.pretrained=true could not download torchvision's AlexNet weights ({error}): "
            f"offline, place {weights.url} as {cached}"
        ) from None
    except Exception as error:  # a truncated or foreign file in the cache
        raise ClassicCNNsError(
            f"{cached} is not torchvision's AlexNet weights ({error}): delete it, then download or place it again"
        ) from None
    if net.classifier[-1].out_features != state["classifier.6.weight"].shape[0]:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.6.")}  # FC8: other classes
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a tensor of another shape
        missing, unexpected = [str(error).strip().splitlines()[-1].strip()], []
    differences = [k for k in missing if not k.startswith("classifier.6.")] + unexpected
    if differences:
        raise ClassicCNNsError(
            "model.pretrained=true loads torchvision's AlexNet (model=alexnet_torchvision on 3-channel "
            f"images), but this network differs: {', '.join(differences)}"
        )
