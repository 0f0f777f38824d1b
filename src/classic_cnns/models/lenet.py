"""LeNet-5 (LeCun, Bottou, Bengio and Haffner, 1998), with the layer choices as arguments."""

from collections.abc import Sequence

import torch
from torch import nn

from .layers import ConnectionTableConv2d, LayerChoices, flat_features, initialize, symmetric_padding

# Table I of the paper: which S2 maps (rows of the table) feed each of the 16 C3 maps. Six take
# three neighbouring maps, six take four neighbours, three take four non-neighbours, one takes all.
# (Laid out as the table's groups: `fmt: skip` keeps the formatter from one tuple a line.)
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip

# Stylized 7x12 digit bitmaps for the RBF output units (+1 for '#', -1 for '.'); the paper's
# Fig. 3 shows its own drawings of this kind. One digit a row (`fmt: skip`: not 12 lines a digit).
DIGIT_BITMAPS = (
    ("..###..", ".#...#.", "#.....#", "#.....#", "#.....#", "#.....#", "#.....#", "#.....#", "#.....#", "#.....#", ".#...#.", "..###.."),
    ("...#...", "..##...", ".#.#...", "...#...", "...#...", "...#...", "...#...", "...#...", "...#...", "...#...", "...#...", ".#####."),
    (".#####.", "#.....#", "......#", "......#", ".....#.", "....#..", "...#...", "..#....", ".#.....", "#......", "#......", "#######"),
    (".#####.", "#.....#", "......#", "......#", "......#", "..####.", "......#", "......#", "......#", "......#", "#.....#", ".#####."),
    ("....##.", "...#.#.", "..#..#.", ".#...#.", "#....#.", "#....#.", "#######", ".....#.", ".....#.", ".....#.", ".....#.", ".....#."),
    ("#######", "#......", "#......", "#......", "######.", "......#", "......#", "......#", "......#", "......#", "#.....#", ".#####."),
    ("..####.", ".#.....", "#......", "#......", "######.", "#.....#", "#.....#", "#.....#", "#.....#", "#.....#", "#.....#", ".#####."),
    ("#######", "......#", ".....#.", ".....#.", "....#..", "....#..", "...#...", "...#...", "..#....", "..#....", ".#.....", ".#....."),
    (".#####.", "#.....#", "#.....#", "#.....#", ".#...#.", "..###..", ".#...#.", "#.....#", "#.....#", "#.....#", "#.....#", ".#####."),
    (".#####.", "#.....#", "#.....#", "#.....#", "#.....#", ".######", "......#", "......#", "......#", "......#", ".....#.", ".####.."),
)  # fmt: skip


class RBFOutput(nn.Module):
    """The paper's output layer: unit i computes the squared distance of F6's 84 outputs to a
    fixed +1/-1 prototype (a 7x12 bitmap of digit i). It returns minus the distance, so that
    the largest value is the prediction. Cross-entropy on it, y_correct + log(sum_i exp(-y_i)),
    is not the paper's loss (eq. 9) minus a constant: eq. 9 has log(e^-j + sum_i exp(-y_i)),
    whose e^-j stops pushing up penalties y_i that are already large; cross-entropy is its
    j -> infinity limit."""

    def __init__(self, in_features: int = 84, num_classes: int = 10) -> None:
        super().__init__()
        bitmaps = torch.tensor([[[1.0 if c == "#" else -1.0 for c in row] for row in digit] for digit in DIGIT_BITMAPS])
        if in_features != 84 or num_classes > len(bitmaps):
            raise ValueError(
                "the RBF output layer has 10 fixed 7x12 prototypes: it needs 84 inputs and at most 10 classes"
            )
        self.register_buffer("prototypes", bitmaps.flatten(1)[:num_classes])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(x, self.prototypes).square()


class LeNet5(nn.Module):
    """C1 conv 6@5x5 - S2 pool - C3 conv 16@5x5 - S4 pool - C5 120 - F6 84 - output.

    The paper pads 28x28 digits to 32x32; by default C1 is padded by 2 instead, so the network
    sees 28x28 MNIST and still has 16 maps of 5x5 before C5. C5 is a 5x5 convolution over 5x5
    maps in the paper, i.e. a fully connected layer: here it is one, sized for whatever the
    feature extractor produces at `input_size`.

    `c3_table=True` uses the paper's partial C3 connections, `output="rbf"` its RBF output
    layer; with pooling="subsampling" the activation follows each pooling layer as well, as
    in the paper (where every layer up to F6 is squashed). `layers` holds the pooling, padding,
    activation and norm choices. `init="keras"` is Keras's Glorot-uniform initialization (the
    reference notebooks' Keras LeNet-5s; see layers.initialize).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: Sequence[int] = (28, 28),
        layers: LayerChoices = LayerChoices(),
        c1_padding: int = 2,
        dropout: float = 0.0,
        c3_table: bool = False,
        output: str = "linear",
        init: str = "torch",
    ) -> None:
        super().__init__()
        if output not in ("linear", "rbf"):
            raise ValueError(f"unknown output {output!r}; choose one of: linear, rbf")
        pool_kernel_size = layers.pool_kernel_size or 2
        pool_stride = layers.pool_stride or pool_kernel_size

        def pool(channels: int) -> list[nn.Module]:
            squash = [layers.activation_layer()] if layers.pooling == "subsampling" else []
            return [layers.pool_layer(channels, pool_kernel_size, pool_stride), *squash]

        c1 = layers.conv_layer(in_channels, 6, 5, default_padding=c1_padding)
        if c3_table:
            c3 = ConnectionTableConv2d(C3_TABLE, 6, 5, padding=symmetric_padding(layers.padding, 5, default=0))
        else:
            c3 = layers.conv_layer(6, 16, 5)
        self.features = nn.Sequential(
            c1,  # C1
            layers.activation_layer(),
            layers.norm_layer(6),
            *pool(6),  # S2
            c3,  # C3
            layers.activation_layer(),
            layers.norm_layer(16),
            *pool(16),  # S4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat_features(self.features, in_channels, input_size), 120),  # C5
            layers.activation_layer(),
            nn.Dropout(dropout),
            nn.Linear(120, 84),  # F6
            layers.activation_layer(),
            nn.Dropout(dropout),
            RBFOutput(84, num_classes) if output == "rbf" else nn.Linear(84, num_classes),  # output
        )
        initialize(self, init)

    def forward(self, x):
        return self.classifier(self.features(x))
