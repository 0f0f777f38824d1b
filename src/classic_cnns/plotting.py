"""Every figure of the project: TensorBoard views, evaluation, sweep reports, benchmark charts.

The one place that selects matplotlib's backend (Agg: no display; figures go to TensorBoard and
PNG files). Each function returns a titled figure; `save` and `to_png` write and close it.
"""

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import torch  # noqa: E402

Figure = plt.Figure


def to_png(figure: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


def save(figure: Figure, path: Path, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


CARD_INCHES = (4.0, 4.0)  # 400 x 400 pixels: TensorBoard's image cards show it without shrinking
CARD_FONT = 8  # points: 11 pixels at 100 dpi


def confusion_figure(matrix: torch.Tensor, class_names: Sequence[str], title: str = "confusion matrix") -> Figure:
    """Confusion matrix (rows: true class, columns: predicted), counts in the cells. Sized for a
    TensorBoard image card (CARD_INCHES at 100 dpi: shown unscaled, its numbers readable)."""
    matrix = matrix.cpu()
    figure, ax = plt.subplots(figsize=CARD_INCHES)
    ax.imshow(matrix.numpy(), cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=60, ha="right", fontsize=CARD_FONT)
    ax.set_yticks(ticks, class_names, fontsize=CARD_FONT)
    ax.set_xlabel("predicted", fontsize=CARD_FONT)
    ax.set_ylabel("true", fontsize=CARD_FONT)
    ax.set_title(title, fontsize=CARD_FONT + 1)
    for (i, j), count in zip(
        torch.cartesian_prod(torch.arange(len(matrix)), torch.arange(len(matrix))).tolist(), matrix.flatten().tolist()
    ):
        if count:
            ax.text(
                j,
                i,
                int(count),
                ha="center",
                va="center",
                fontsize=CARD_FONT,
                color="white" if count > matrix.max() / 2 else "black",
            )
    figure.tight_layout()
    return figure


def images_figure(
    images: Sequence[torch.Tensor], titles: Sequence[str], mean, std, title: str = "", columns: int = 4
) -> Figure:
    """Normalized (C, H, W) images of one size shown as they were before normalization, a caption
    above each. Drawn as one picture in one axes: a grid of subplots with tight_layout took 4x as
    long, and this figure is drawn at the end of every run."""
    rows = -(-len(images) // columns)
    mean, std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    tiles = torch.stack([(image.float() * std + mean).clamp(0, 1) for image in images])
    channels, height, width = tiles.shape[1:]
    caption, gap = max(height // 3, 6), max(width // 14, 2)  # pixels: a caption band above each row, a gap between
    canvas = torch.ones(channels, rows * (caption + height), columns * (width + gap) - gap)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        top, left = row * (caption + height) + caption, column * (width + gap)
        canvas[:, top : top + height, left : left + width] = tile
    title_inches, width_inches = (0.3 if title else 0.0), 2.0 * columns
    pictures_inches = width_inches * canvas.shape[1] / canvas.shape[2]  # square pixels
    figure = plt.figure(figsize=(width_inches, pictures_inches + title_inches))
    ax = figure.add_axes((0, 0, 1, 1 - title_inches / figure.get_figheight()))
    ax.axis("off")
    pixels = canvas.permute(1, 2, 0).squeeze(-1).numpy()
    ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    for index, text in enumerate(titles):
        row, column = divmod(index, columns)
        ax.text(
            column * (width + gap) + width / 2,
            row * (caption + height) + caption - 1,
            text,
            ha="center",
            va="bottom",
            fontsize=8,
        )
    if title:
        figure.suptitle(title, fontsize=9, y=1 - 0.05 / figure.get_figheight(), va="top")
    return figure


def curves_figure(curves, metric: str, title: str, target: float | None = None) -> Figure:
    """`metric` per epoch for each configuration of a sweep (a DataFrame with columns
    configuration, job, epoch, metric): the mean over its seeds as a line, their minimum to
    maximum as a band, so that one bad seed shows."""
    figure, ax = plt.subplots(figsize=(7, 4.5))
    for configuration, group in curves.groupby("configuration", sort=False):
        per_epoch = group.groupby("epoch")[metric].agg(["mean", "min", "max", "count"]).dropna()
        (line,) = ax.plot(per_epoch.index, per_epoch["mean"], marker="o", label=configuration)
        if (per_epoch["count"] > 1).any():
            ax.fill_between(
                per_epoch.index, per_epoch["min"], per_epoch["max"], color=line.get_color(), alpha=0.2, linewidth=0
            )
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set(xlabel="epoch", ylabel=metric)
    ax.set_title(title, fontsize=10)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=7, title="line: mean over seeds\nband: their min to max", title_fontsize=7)
    figure.tight_layout()
    return figure


def bars_figure(
    labels: Sequence[str],
    values: Sequence[float],
    xlabel: str,
    title: str,
    errors: Sequence[float] | None = None,
    xlim: tuple[float, float] | None = None,
) -> Figure:
    """Horizontal bars, the first label on top (optionally with error bars)."""
    figure, ax = plt.subplots(figsize=(7, 0.4 * len(labels) + 1.6))
    ax.barh(
        list(labels)[::-1],
        list(values)[::-1],
        xerr=list(errors)[::-1] if errors is not None else None,
        capsize=3,
        color="tab:blue",
    )
    ax.set(xlabel=xlabel)
    ax.set_title(title, fontsize=10)
    if xlim:
        ax.set_xlim(*xlim)
    figure.tight_layout()
    return figure
