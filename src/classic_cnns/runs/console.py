"""What a run prints: the composed choices and the project's layer table at the start, where
everything went at the end, and for a multirun its count of finished and failed jobs.

Third-party noise (Lightning's product tips, a deprecation inside Lightning's own code) is
dropped where it is emitted, by its logger or module; the project's own warnings stay.
"""

import logging
import shlex
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.tree import Tree

from classic_cnns.runs.config_keys import STUDIED, keys_with

ROOT = Path(__file__).resolve().parents[3]  # the checkout (scripts/ lives there)


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("💡 Tip")


# What Lightning says at INFO on every run that the run's own lines already say, or that only
# matters when something is wrong: kept in the run's log file and shown with hydra.verbose=true.
LIGHTNING_CHATTER = (
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "LOCAL_RANK:",
    "Loading `train_dataloader` to estimate",
    "`Trainer.fit` stopped:",
    "Restoring states from the checkpoint",
    "Loaded model weights from the checkpoint",
)
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
_run_log_files: list[logging.Handler] = []  # the run log files added to Lightning's loggers


def _not_chatter(record: logging.LogRecord) -> bool:
    if record.levelno > logging.INFO or not record.getMessage().startswith(LIGHTNING_CHATTER):
        return True
    return logging.getLogger().isEnabledFor(logging.DEBUG) or logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _handlers_reached(logger: logging.Logger) -> tuple[list[logging.Handler], bool]:
    """The handlers a record of `logger` reaches (logging's propagation walk), and whether the
    walk reaches the root logger."""
    handlers, current = [], logger
    while current is not None:
        handlers.extend(current.handlers)
        if current.parent is None:
            return handlers, True
        if not current.propagate:
            return handlers, False
        current = current.parent
    return handlers, True


def route_lightning_logs() -> None:
    """Lightning logs through handlers of its own when it was imported before logging was set up
    (as train.py does), so its lines never reached the run's log file (`train.log`): they go there
    now, all of them, while every console handler its lines reach (its own, or the root's where
    they propagate, as in a notebook or a test runner) leaves out the start-up and
    checkpoint-restore chatter unless the run is verbose (`hydra.verbose=true`)."""
    run_logs = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]  # Hydra's job log
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if h in _run_log_files]:  # a previous job's (one sweep process)
            logger.removeHandler(handler)
        handlers, reaches_root = _handlers_reached(logger)
        for handler in handlers:
            if not isinstance(handler, logging.FileHandler) and _not_chatter not in handler.filters:
                handler.addFilter(_not_chatter)
        if not reaches_root:
            for handler in run_logs:
                logger.addHandler(handler)
    _run_log_files[:] = run_logs


def quiet_dependencies() -> None:
    """Lightning advertises its cloud products at INFO on every fit ("💡 Tip: ... litlogger"), and
    its `_pytree` helper trips torch's LeafSpec deprecation on every fit and test."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _not_a_tip not in logger.filters:
        logger.addFilter(_not_a_tip)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*", module=r"lightning\.pytorch\.utilities\._pytree")
    # On a machine with SLURM installed, every run outside srun gets a hint to use srun.
    warnings.filterwarnings(
        "ignore", message=r".*`srun` command is available.*", module=r"lightning\.fabric\.plugins\.environments\.slurm"
    )
    route_lightning_logs()


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
    which the bar would cut to a meaningless tail). In a multirun's jobs the bars vanish when
    they end, leaving each job's one line; into a file or a pipe they are not drawn at all."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.transient = in_multirun()
        if self.transient and not Console().is_terminal:
            self.disable()

    def refresh(self, hard: bool = False) -> None:
        if self.progress is not None and getattr(self, "transient", False):
            self.progress.live.transient = True
        super().refresh(hard)

    def on_train_end(self, trainer, pl_module) -> None:
        # The module logs the epoch's train/loss after the bar took its epoch-end metrics: take
        # them again, so that the bar left on screen shows the last epoch's, as the closing line does.
        self.on_train_epoch_end(trainer, pl_module)
        super().on_train_end(trainer, pl_module)

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def _get_train_description(self, current_epoch: int) -> str:
        """`Epoch 2/2` in the last epoch of `trainer.max_epochs=2`, as the closing line and
        TensorBoard count, where Lightning's bar shows `Epoch 1/1` (an index and the last index).
        Lightning's one hook for this text is private: tests/test_console.py fails if it goes."""
        total = self.trainer.max_epochs
        shown = f"Epoch {current_epoch + 1}" + (f"/{total}" if total is not None and total >= 0 else "")
        return f"{shown:{len(self.validation_description)}}"  # as Lightning pads it: no flicker beside Validation


def config_tree(cfg: DictConfig, hydra: DictConfig | None = None) -> Tree:
    """The config groups' choices (overridden ones in bold) and every other overridden key;
    `hydra`: the hydra node (default: the running job's). Values are printed as given: escaped,
    so that rich does not take `tags=[a,b]` for markup and drop it."""
    if hydra is None and HydraConfig.initialized():
        hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task) if hydra else []
    choices = {
        g: str(o)
        for g, o in (hydra.runtime.choices.items() if hydra else ())
        if not g.startswith(("hydra", "paths")) and o is not None
    }
    studied = keys_with(STUDIED)
    choices = dict(sorted(choices.items(), key=lambda item: (item[0] not in studied, item[0])))
    tree = Tree(f"[bold]{escape(hydra.job.name) if hydra else 'train'}[/bold] config", guide_style="dim")
    groups = tree.add("groups")
    given = {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[-1] for o in overrides}  # a sweep's `pooling=max,avg` too
    for group, option in choices.items():
        groups.add(
            f"[bold yellow]{escape(f'{group}: {given[group]}')}[/]"
            if group in given
            else f"{group}: [cyan]{escape(option)}[/]"
        )
    keys = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in choices]
    if keys:
        branch = tree.add("overrides")
        for override in keys:
            branch.add(f"[bold yellow]{escape(override)}[/]")
    values = {"seed": cfg.get("seed"), "tags": list(cfg.get("tags") or []), "test": cfg.get("test", True)}
    seed, tags, test = (
        escape(given[key] if key in given else str(value)) for key, value in values.items()
    )  # a sweep's seed=0,1 too
    tree.add(f"seed: [cyan]{seed}[/]  tags: [cyan]{tags}[/]  test: [cyan]{test}[/]")
    return tree


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@rank_zero_only
def print_start(cfg: DictConfig, net, datamodule) -> None:
    """The composed choices, then the network's per-layer table (scripts/summarize.py's); not in
    a multirun's jobs, whose sweep printed its config once (print_sweep_start)."""
    from classic_cnns.layer_table import summarize, to_rich

    if in_multirun():
        return
    console = Console()
    console.print(config_tree(cfg))
    size = "x".join(map(str, datamodule.input_size))
    table = to_rich(
        summarize(net, datamodule.channels, datamodule.input_size),
        title=f"{type(net).__name__} on {datamodule.name}, {size} input",
    )
    print_wide(table, console)


def print_sweep_start(config: DictConfig) -> None:
    """A multirun's config, once, before its jobs: the choices and the swept overrides."""
    Console().print(config_tree(config, config.hydra))


def format_metrics(metrics: Mapping[str, Any]) -> str:
    shown = [
        f"{k} [bold]{v:.4f}[/]"
        for k, v in metrics.items()
        if "/" in k and not k.startswith("train/") and isinstance(v, float)
    ]
    return "  ".join(shown)


def _done_line(metrics: Mapping[str, Any], first_train_loss: float | None) -> str:
    """How long, how many epochs, the training loss from the first epoch to the last (the number
    `debug=overfit` is for), then the kept checkpoint's metrics."""
    epochs = metrics.get("epochs")
    line = f"[green]done[/] in {metrics.get('fit_seconds', 0):.1f} s, {epochs} epoch{'s' if epochs != 1 else ''}"
    if isinstance(metrics.get("train/loss"), float):
        start = f"{first_train_loss:.4f} -> " if first_train_loss is not None and epochs != 1 else ""
        line += f", train/loss {start}[bold]{metrics['train/loss']:.4f}[/]"
    return f"{line}: {format_metrics(metrics)}"


@rank_zero_only
def print_end(
    metrics: Mapping[str, Any],
    output_dir: str | Path,
    tensorboard_dir: str | Path | None,
    first_train_loss: float | None = None,
    run_name: str = "",
    kept: str = "best val/acc",
) -> None:
    """The kept checkpoint's metrics and where everything went, as commands to copy; a job of a
    multirun says it in one line, with its run name (what the sweep varies)."""
    output_dir = Path(output_dir)
    done = _done_line(metrics, first_train_loss)
    if in_multirun():
        Console(soft_wrap=True).print(
            f"job {HydraConfig.get().job.num} {escape(run_name)}: {done}  ({shown_path(output_dir)})", highlight=False
        )
        return
    lines = [done, f"run dir      {shown_path(output_dir)}"]
    if metrics.get("best_checkpoint"):
        lines.append(f"checkpoint   {shown_path(metrics['best_checkpoint'])} (kept: {kept})")
    lines.append(f"metrics      {shown_path(output_dir / 'metrics.json')}")
    if tensorboard_dir:
        lines.append(f"TensorBoard  tensorboard --logdir {shlex.quote(shown_path(tensorboard_dir))}")
    Console(soft_wrap=True).print("\n".join(lines), highlight=False)


def report_command(sweep_dir: str | Path) -> str:
    """The report command to copy: the script's path relative to the working directory when it
    is below it, else absolute (never ../../ from elsewhere)."""
    script = ROOT / "scripts" / "report.py"
    script = shlex.quote(shown_path(script)) if script.exists() else "scripts/report.py"
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
