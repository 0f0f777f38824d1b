"""A per-layer table of a network, in the terms the reference notebooks use.

One forward pass with forward hooks gives each layer's input and output shape; next to the
parameter count this adds the paper's "connections" (multiply-adds, bias included) and, for
convolutions and pools, N, F, P, S and O = (N - F + 2P) / S + 1 checked against the measured size.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from classic_cnns.models.layers import SamePad2d, Subsampling2d, forward_with_hooks, stage
from classic_cnns.models.lenet import RBFOutput

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
        if self.kind == "SamePad2d":  # P: the pixels it adds (before+after), O: the padded size
            n, _, p, _, o = self.geometry
            geometry[2], geometry[4] = f"+{p} ({p // 2}+{p - p // 2})", f"{o} = N+P"
        output = "x".join(str(d) for d in self.output)
        numbers = (f"{self.params:,}", f"{self.fixed:,}" if self.fixed else "", f"{self.connections:,}")
        return [self.name, self.kind, output, *numbers, *geometry]


def _single(value) -> int:
    return value[0] if isinstance(value, tuple) else value


def _geometry(module: nn.Module, n: int, out_width: int) -> tuple[int, int, int, int, int] | None:
    if stage(module) in ("conv", "pool"):
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
    if stage(module) == "conv":
        return positions * params  # every output unit of a map uses all of its kernel and bias
    if isinstance(module, Subsampling2d):
        return positions * out_shape[1] * (module.kernel_size**2 + 1)
    if stage(module) == "pool":
        return positions * out_shape[1] * _single(module.kernel_size) ** 2
    if isinstance(module, nn.Linear):
        return params
    if isinstance(module, RBFOutput):
        return module.prototypes.numel()
    return 0


def _shapes(net: nn.Module, example: torch.Tensor) -> dict[nn.Module, tuple[torch.Size, torch.Size]]:
    """Input and output shape of every layer (module without children) that `net(example)` calls."""
    shapes = {}

    def record(module, inputs, output) -> None:
        shapes[module] = (inputs[0].shape, output.shape)

    forward_with_hooks(net, example, {module: record for module in net.modules() if not list(module.children())})
    return shapes


def summarize(net: nn.Module, in_channels: int, input_size: Sequence[int]) -> list[LayerRow]:
    """One row per layer of `net` for one image of `input_size`: the layers with weights,
    connections or a geometry, and normalizations; activations, dropout and flatten are left out."""
    device = next(net.parameters()).device  # the net may already sit on a GPU (TensorBoard views)
    shapes = _shapes(net, torch.zeros(1, in_channels, *input_size, device=device))
    rows = []
    for name, module in net.named_modules():
        if module not in shapes:
            continue
        in_shape, out_shape = shapes[module]
        params = sum(p.numel() for p in module.parameters())
        fixed = (
            sum(b.numel() for b in module.buffers() if b.is_floating_point()) if isinstance(module, RBFOutput) else 0
        )
        geometry = _geometry(module, in_shape[-1], out_shape[-1]) if len(out_shape) == 4 else None
        connections = _connections(module, out_shape, params)
        if not (params or fixed or connections or geometry or stage(module) == "norm"):
            continue
        rows.append(LayerRow(name, type(module).__name__, tuple(out_shape[1:]), params, fixed, connections, geometry))
    return rows


def totals(rows: Sequence[LayerRow]) -> list[str]:
    return [
        "total",
        "",
        "",
        f"{sum(r.params for r in rows):,}",
        f"{sum(r.fixed for r in rows):,}",
        f"{sum(r.connections for r in rows):,}",
        "",
        "",
        "",
        "",
        "",
    ]


PADDING_NOTE = "SamePad2d rows: P is the pixels the padding adds (before+after), O the padded size N + P."


def to_markdown(rows: Sequence[LayerRow]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    lines.append("| " + " | ".join(f"**{c}**" if c else "" for c in totals(rows)) + " |")
    if any(row.kind == "SamePad2d" for row in rows):
        lines += ["", PADDING_NOTE]
    return "\n".join(lines)


def to_rich(rows: Sequence[LayerRow], title: str = ""):
    from rich.table import Table

    caption = PADDING_NOTE if any(row.kind == "SamePad2d" for row in rows) else None
    table = Table(title=title, caption=caption, show_footer=True)
    for column, footer in zip(HEADER, totals(rows)):
        numeric = column not in ("layer", "type", "output")
        table.add_column(column, footer=footer, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*row.cells())
    return table
