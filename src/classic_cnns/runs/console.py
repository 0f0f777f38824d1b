"""What a run prints: the composed choices and the project's layer table at the start, where
everything went at the end, and for a multirun its count of finished and failed jobs.

Third-party noise (Lightning's product tips, a deprecation inside Lightning's own code) is
dropped where it is emitted, by its logger or module; the project's own warnings stay.
"""

import logging
import os
import shlex
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from rich.console import Console
from rich.measure import Measurement
from rich.tree import Tree

from classic_cnns.runs.config_keys import STUDIED, keys_with

ROOT = Path(__file__).resolve().parents[3]  # the checkout (scripts/ lives there)


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")


def quiet_dependencies() -> None:
    """Lightning advertises its cloud products at INFO on every fit ("💡 Tip: ... litlogger"), and
    its `_pytree` helper trips torch's LeafSpec deprecation on every fit and test."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _not_a_tip not in logger.filters:
        logger.addFilter(_not_a_tip)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", module=r"lightning\.pytorch\.utilities\._pytree")
    # On a machine with SLURM installed, every run outside srun gets a hint to use srun.
    warnings.filterwarnings("ignore", message=r".*`srun` command is available.*", module=r"lightning\.fabric\.plugins\.environments\.slurm")


def shown_path(path: str | Path) -> str:
    """`path` relative to the working directory when it is below it (shorter to copy), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def print_wide(renderable, console: Console | None = None) -> None:
    """Print a table at its natural width, also when stdout is a pipe or a narrow terminal
    (rich would otherwise squeeze it into 80 columns and cut the cells)."""
    console = console or Console()
    needed = Measurement.get(console, console.options.update_width(10_000), renderable).maximum
    Console(width=max(console.width, needed), file=console.file).print(renderable)


class ProgressBar(RichProgressBar):
    """Rich progress bar without Lightning's `v_num` (the logger's version: here the run name,
    which the bar would cut to a meaningless tail)."""

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


def config_tree(cfg: DictConfig) -> Tree:
    """The config groups' choices (overridden ones in bold) and every other overridden key."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    overrides = list(hydra.overrides.task) if hydra else []
    choices = {g: str(o) for g, o in (hydra.runtime.choices.items() if hydra else ()) if not g.startswith(("hydra", "paths")) and o is not None}
    choices = dict(sorted(choices.items(), key=lambda item: (item[0] not in keys_with(STUDIED), item[0])))
    overridden_groups = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    tree = Tree(f"[bold]{hydra.job.name if hydra else 'train'}[/bold] config", guide_style="dim")
    groups = tree.add("groups")
    for group, option in choices.items():
        groups.add(f"[bold yellow]{group}: {option}[/]" if group in overridden_groups else f"{group}: [cyan]{option}[/]")
    keys = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in choices]
    if keys:
        branch = tree.add("overrides")
        for override in keys:
            branch.add(f"[bold yellow]{override}[/]")
    tree.add(f"seed: [cyan]{cfg.get('seed')}[/]  tags: [cyan]{list(cfg.get('tags') or [])}[/]  test: [cyan]{cfg.get('test', True)}[/]")
    return tree


@rank_zero_only
def print_start(cfg: DictConfig, net, datamodule) -> None:
    """The composed choices, then the network's per-layer table (scripts/summarize.py's)."""
    from classic_cnns.layer_table import summarize, to_rich

    console = Console()
    console.print(config_tree(cfg))
    size = "x".join(map(str, datamodule.input_size))
    table = to_rich(summarize(net, datamodule.channels, datamodule.input_size), title=f"{type(net).__name__} on {datamodule.name}, {size} input")
    print_wide(table, console)


def format_metrics(metrics: Mapping[str, Any]) -> str:
    shown = [f"{k} [bold]{v:.4f}[/]" for k, v in metrics.items() if "/" in k and isinstance(v, float)]
    return "  ".join(shown)


@rank_zero_only
def print_end(metrics: Mapping[str, Any], output_dir: str | Path, tensorboard_dir: str | Path | None) -> None:
    """The kept checkpoint's metrics and where everything went, as commands to copy."""
    output_dir = Path(output_dir)
    epochs = metrics.get("epochs")
    lines = [
        f"[green]done[/] in {metrics.get('fit_seconds', 0):.1f} s, {epochs} epoch{'s' if epochs != 1 else ''}: {format_metrics(metrics)}",
        f"run dir      {shown_path(output_dir)}",
    ]
    if metrics.get("best_checkpoint"):
        lines.append(f"checkpoint   {shown_path(metrics['best_checkpoint'])} (kept: best val/acc)")
    lines.append(f"metrics      {shown_path(output_dir / 'metrics.json')}")
    if tensorboard_dir:
        lines.append(f"TensorBoard  tensorboard --logdir {shlex.quote(shown_path(tensorboard_dir))}")
    Console(soft_wrap=True).print("\n".join(lines), highlight=False)


def report_command(sweep_dir: str | Path) -> str:
    script = ROOT / "scripts" / "report.py"
    script = os.path.relpath(script) if script.exists() else "scripts/report.py"
    return f"python {script} {shlex.quote(shown_path(sweep_dir))}"


def print_sweep_end(sweep_dir: str | Path, finished: int, failed: int) -> None:
    """The last lines of a multirun: the count of finished and failed jobs and what to run next."""
    colour = "red" if failed else "green"
    Console().print(
        f"[{colour}]{finished} finished, {failed} failed[/] (every job's status: {shown_path(Path(sweep_dir) / 'sweep_summary.json')})\n"
        f"report       {report_command(sweep_dir)}\n"
        f"TensorBoard  tensorboard --logdir {shlex.quote(shown_path(sweep_dir))}",
        highlight=False,
        soft_wrap=True,
    )
