"""What running one training job takes besides training: the plumbing around train(cfg).

`start` checks the output dir and the resume path, chooses and sets the seed and writes
config.yaml; `finish` writes metrics.json and the hparams record and prints the closing lines.
"""

import json
import os
import random
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from classic_cnns import ClassicCNNsError
from classic_cnns.runs import console, tensorboard_record
from classic_cnns.runs.checkpoint_loading import checkpoint_dirs, read_checkpoint
from classic_cnns.runs.resume import check_resume

MIN_FREE_BYTES = 200 * 2**20  # checkpoints of the paper's AlexNet are 0.7 GB; smaller nets a few MB


def start(cfg: DictConfig) -> tuple[int, dict[str, Any]]:
    """Check where results go and what to resume from, choose and set the seed, write
    config.yaml; return the seed and the resolved config (with the seed actually used)."""
    # The data lives in memory and batches are single gathers: DataLoader workers would only add
    # start-up time, so Lightning's advice to add some does not apply.
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # Epoch metrics are summed over the DDP ranks before they are logged (ImageClassifier._log_epoch).
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")
    # Metrics are logged once per epoch, so a logging interval longer than an epoch loses nothing.
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
    console.quiet_dependencies()
    output_dir = writable_output_dir(Path(cfg.paths.output_dir))
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise ClassicCNNsError(
            f"ckpt_path={ckpt_path} does not exist: nothing to resume from (this run would start over)"
        )
    # untrusted: refused if it asks for more than plain values, or its callback state names files
    # outside this run's checkpoint directory (which Lightning would delete)
    checkpoint = read_checkpoint(ckpt_path, checkpoint_dirs=checkpoint_dirs(cfg)) if ckpt_path else None
    seed = _choose_seed(cfg)
    L.seed_everything(seed, workers=True)
    _share_the_cpu()
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    resolved = OmegaConf.to_container(cfg, resolve=True) | {"seed": seed}
    if checkpoint:
        check_resume(resolved, checkpoint, ckpt_path, allow_changes=cfg.allow_resume_changes)
    if rank_zero_only.rank == 0:
        OmegaConf.save(resolved, output_dir / "config.yaml")
    return seed, resolved


def _share_the_cpu() -> None:
    """Jobs that run side by side share the CPU cores instead of each taking all of them: a job
    of a parallel multirun (joblib's `hydra.launcher.n_jobs`) takes cores / n_jobs threads, a
    SLURM job the CPUs it asked for."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if "SLURM_CPUS_PER_TASK" in os.environ:
        torch.set_num_threads(max(1, min(cores, int(os.environ["SLURM_CPUS_PER_TASK"]))))
    elif HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        n_jobs = HydraConfig.get().launcher.get("n_jobs")
        if isinstance(n_jobs, int) and n_jobs > 1:
            torch.set_num_threads(max(1, cores // n_jobs))


def _choose_seed(cfg: DictConfig) -> int:
    """cfg.seed, or a random one; a DDP rank started by Lightning takes the seed rank 0 drew, so
    that all ranks draw the same data order (Lightning passes it on as PL_GLOBAL_SEED)."""
    if cfg.seed is not None:
        return cfg.seed
    if rank_zero_only.rank > 0 and "PL_GLOBAL_SEED" in os.environ:
        return int(os.environ["PL_GLOBAL_SEED"])
    return random.randrange(2**31)


def writable_output_dir(output_dir: Path) -> Path:
    """Fail before training, not at the first checkpoint, when results could not be written."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write_test_{os.getpid()}"  # DDP ranks probe the same dir
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ClassicCNNsError(
            f"cannot write to the output directory {output_dir} ({error.strerror or error}); "
            "run from a writable directory or set hydra.run.dir=... (hydra.sweep.dir=... for -m)"
        ) from None
    free = shutil.disk_usage(output_dir).free
    if free < MIN_FREE_BYTES:
        raise ClassicCNNsError(
            f"only {free / 2**20:.0f} MiB free on the disk of {output_dir}; checkpoints need more: "
            "free some space or set hydra.run.dir=... on another disk"
        )
    return output_dir


# What a run has written before its data is read: nothing worth keeping if it stops there.
WRITTEN_AT_START = {".hydra", "train.log", "config.yaml"}


def remove_unused_run_dir(output_dir: Path) -> None:
    """A run that stopped before training (missing data, a refused checkpoint) leaves no run dir
    behind, nor the empty folders above it up to the working directory."""
    if not output_dir.is_dir() or {p.name for p in output_dir.iterdir()} - WRITTEN_AT_START:
        return
    shutil.rmtree(output_dir)
    cwd = Path.cwd().resolve()
    for parent in output_dir.resolve().parents:
        if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
            return
        parent.rmdir()


def instantiate_all(node: DictConfig | None) -> list:
    """Every entry of a logger/callbacks node; `callbacks.progress_bar=null` drops one."""
    return [instantiate(entry) for entry in (node or {}).values() if entry is not None]


def finish(
    trainer: L.Trainer, config: dict[str, Any], metrics: dict[str, Any], first_train_loss: float | None = None
) -> None:
    """On rank 0: the hparams record with the final metrics, metrics.json in the output dir, and
    the closing lines on the console."""
    if not trainer.is_global_zero:
        return
    output_dir = Path(config["paths"]["output_dir"])
    tensorboard_record.log_hparams(trainer.loggers, config, config["seed"], metrics)
    metrics = metrics | {"cpu_threads": torch.get_num_threads()}  # what this job's CPU work ran on
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    tensorboard_dir = tensorboard_record.tensorboard_logdir(trainer, output_dir)
    monitor = getattr(trainer.checkpoint_callback, "monitor", None)
    kept = f"best {monitor}" if monitor else "the last epoch"
    console.print_end(
        metrics, output_dir, tensorboard_dir, first_train_loss, run_name=config.get("run_name", ""), kept=kept
    )


def optimized(metrics: dict[str, Any], optimized_metric: str | Sequence[str]) -> float | list[float] | None:
    """What train(cfg) returns to a sweeper: the value of `optimized_metric`, or a list of values
    for a list of metrics (a multi-objective Optuna search)."""
    if isinstance(optimized_metric, str):
        return metrics.get(optimized_metric)
    return [metrics.get(name) for name in optimized_metric]
