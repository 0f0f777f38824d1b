"""A per-layer table of a network, in the terms the seeds use.

Lightning's ModelSummary provides the layers, their input/output shapes and parameter counts;
this module adds what it lacks: the paper's "connections" (multiply-adds, bias included) and,
for convolutions and pools, N, F, P, S and O = (N - F + 2P) / S + 1 next to the measured size.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.utilities.model_summary import ModelSummary
from torch import nn

from classic_cnns.models.layers import LocalResponseNorm, MinPool2d, SamePad2d, Subsampling2d
from classic_cnns.models.lenet import ConnectionTableConv2d, RBFOutput

POOLS = (nn.MaxPool2d, nn.AvgPool2d, MinPool2d, Subsampling2d)
NORMS = (nn.BatchNorm2d, LocalResponseNorm)
HEADER = ("layer", "type", "output", "params", "fixed", "connections", "N", "F", "P", "S", "O")


@dataclass
class LayerRow:
    name: str
    kind: str
    output: tuple[int, ...]
    params: int
    fixed: int
    connections: int
    geometry: tuple[int, int, int, int, int] | None  # N, F, P, S, O from the formula

    def cells(self) -> list[str]:
        geometry = [str(v) for v in self.geometry] if self.geometry else [""] * 5
        output = "x".join(str(d) for d in self.output)
        numbers = (f"{self.params:,}", f"{self.fixed:,}" if self.fixed else "", f"{self.connections:,}")
        return [self.name, self.kind, output, *numbers, *geometry]


class _Wrapper(L.LightningModule):
    def __init__(self, net: nn.Module, example: torch.Tensor) -> None:
        super().__init__()
        self.net, self.example_input_array = net, example

    def forward(self, x):
        return self.net(x)


def _single(value) -> int:
    return value[0] if isinstance(value, tuple) else value


def _geometry(module: nn.Module, n: int, out_width: int) -> tuple[int, int, int, int, int] | None:
    if isinstance(module, (nn.Conv2d, ConnectionTableConv2d)) or isinstance(module, POOLS):
        f, s = _single(module.kernel_size), _single(getattr(module, "stride", 1))
        p = _single(getattr(module, "padding", 0))
        o = (n - f + 2 * p) // s + 1
        if o != out_width:
            raise AssertionError(f"{module}: the formula gives {o}, the layer produced {out_width}")
        return n, f, p, s, o
    if isinstance(module, SamePad2d):
        return n, module.kernel_size, out_width - n, module.stride, out_width
    return None


def _connections(module: nn.Module, out_shape: Sequence[int], params: int) -> int:
    """Multiply-adds per image, counting a bias as one connection (the paper's convention)."""
    positions = out_shape[-1] * out_shape[-2] if len(out_shape) == 4 else 1
    if isinstance(module, (nn.Conv2d, ConnectionTableConv2d)):
        return positions * params  # every output unit of a map uses all of its kernel and bias
    if isinstance(module, Subsampling2d):
        return positions * out_shape[1] * (module.kernel_size**2 + 1)
    if isinstance(module, POOLS):
        return positions * out_shape[1] * _single(module.kernel_size) ** 2
    if isinstance(module, nn.Linear):
        return params
    if isinstance(module, RBFOutput):
        return module.prototypes.numel()
    return 0


def summarize(net: nn.Module, in_channels: int, input_size: Sequence[int]) -> list[LayerRow]:
    """One row per layer of `net` for one image of `input_size`: the layers with weights,
    connections or a geometry, and normalizations; activations, dropout and flatten are left out."""
    was_training = net.training
    device = next(net.parameters()).device  # the net may already sit on a GPU (TensorBoard views)
    wrapper = _Wrapper(net.eval(), torch.zeros(1, in_channels, *input_size, device=device)).to(device)
    summary = ModelSummary(wrapper, max_depth=-1)
    net.train(was_training)
    rows = []
    for name, layer in summary._layer_summary.items():
        module = layer._module
        if list(module.children()):
            continue
        out_shape, in_shape = layer.out_size, layer.in_size
        params = layer.num_parameters
        fixed = sum(b.numel() for b in module.buffers() if b.is_floating_point()) if isinstance(module, RBFOutput) else 0
        geometry = _geometry(module, in_shape[-1], out_shape[-1]) if len(out_shape) == 4 else None
        connections = _connections(module, out_shape, params)
        if not (params or fixed or connections or geometry or isinstance(module, NORMS)):
            continue
        rows.append(
            LayerRow(
                name.removeprefix("net."), type(module).__name__, tuple(out_shape[1:]), params, fixed,
                connections, geometry,
            )  # fmt: skip
        )
    return rows


def totals(rows: Sequence[LayerRow]) -> list[str]:
    return [
        "total", "", "", f"{sum(r.params for r in rows):,}", f"{sum(r.fixed for r in rows):,}",
        f"{sum(r.connections for r in rows):,}", "", "", "", "", "",
    ]  # fmt: skip


def to_markdown(rows: Sequence[LayerRow]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    lines.append("| " + " | ".join(f"**{c}**" if c else "" for c in totals(rows)) + " |")
    return "\n".join(lines)


def to_rich(rows: Sequence[LayerRow], title: str = ""):
    from rich.table import Table

    table = Table(title=title, show_footer=True)
    for column, footer in zip(HEADER, totals(rows)):
        numeric = column not in ("layer", "type", "output")
        table.add_column(column, footer=footer, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*row.cells())
    return table
