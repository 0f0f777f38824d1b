"""LeNet-5 (LeCun, Bottou, Bengio and Haffner, 1998), with the layer choices as arguments."""

from collections.abc import Sequence

from torch import nn

from .layers import conv_padding, flat_features, make_activation, make_norm, make_pool


class LeNet5(nn.Module):
    """C1 conv 6@5x5 - S2 pool - C3 conv 16@5x5 - S4 pool - C5 120 - F6 84 - output.

    The paper pads 28x28 digits to 32x32; padding C1 by 2 does the same job, so the default
    network sees 28x28 MNIST and still has 16 maps of 5x5 before C5. C5 is a 5x5 convolution
    over 5x5 maps in the paper, i.e. a fully connected layer: here it is one, sized for
    whatever the feature extractor produces at `input_size`.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: Sequence[int] = (28, 28),
        activation: str = "relu",
        pooling: str = "max",
        pool_kernel_size: int | None = None,
        pool_stride: int | None = None,
        padding: str | int = "default",
        norm: str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        pool_kernel_size = pool_kernel_size or 2
        pool_stride = pool_stride or pool_kernel_size
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=conv_padding(padding, 5, default=2)),  # C1
            make_activation(activation),
            make_norm(norm, 6),
            make_pool(pooling, pool_kernel_size, pool_stride),  # S2
            nn.Conv2d(6, 16, kernel_size=5, padding=conv_padding(padding, 5, default=0)),  # C3
            make_activation(activation),
            make_norm(norm, 16),
            make_pool(pooling, pool_kernel_size, pool_stride),  # S4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat_features(self.features, in_channels, input_size), 120),  # C5
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(120, 84),  # F6
            make_activation(activation),
            nn.Dropout(dropout),
            nn.Linear(84, num_classes),  # output
        )

    def forward(self, x):
        return self.classifier(self.features(x))
