"""train(cfg): the testable core of `python train.py`."""

import json
import logging
import os
import random
import shutil
import sys
import time
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, read_write

from classic_cnns import ClassicCNNsError, console, run_record
from classic_cnns.config import validate
from classic_cnns.data import ImageDataModule
from classic_cnns.gpus import gpu_for_job
from classic_cnns.module import ImageClassifier

log = logging.getLogger(__name__)

# The data lives in memory and batches are single gathers: DataLoader workers would only add
# start-up time, so Lightning's advice to add some does not apply.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
# Epoch metrics are summed over the DDP ranks before they are logged (ImageClassifier._log_epoch).
warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")

MIN_FREE_BYTES = 200 * 2**20  # checkpoints of the paper's AlexNet are 0.7 GB; smaller nets a few MB


def train(cfg: DictConfig) -> float | None:
    """Fit (or resume from `cfg.ckpt_path`), test the best checkpoint, write metrics.json;
    return `cfg.optimized_metric`."""
    validate(cfg)
    console.quiet_dependencies()
    output_dir = _writable_output_dir(Path(cfg.paths.output_dir))
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise ClassicCNNsError(f"ckpt_path={ckpt_path} does not exist: nothing to resume from (this run would start over)")
    seed = _seed(cfg)
    L.seed_everything(seed, workers=True)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    resolved = OmegaConf.to_container(cfg, resolve=True) | {"seed": seed}  # the seed actually used
    if rank_zero_only.rank == 0:
        OmegaConf.save(resolved, output_dir / "config.yaml")

    datamodule: ImageDataModule = instantiate(cfg.data)
    net = instantiate(
        cfg.model,
        in_channels=datamodule.channels,
        num_classes=datamodule.num_classes,
        input_size=datamodule.input_size,
    )
    console.print_start(cfg, net, datamodule)
    model = ImageClassifier(
        net=net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        label_smoothing=cfg.label_smoothing,
        config=resolved,
        data_info=datamodule.describe(),
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        compile_options=OmegaConf.to_container(cfg.compile_options),
    )
    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = _instantiate_all(cfg.get("callbacks"))
    with ExitStack() as job:
        gpu = job.enter_context(gpu_for_job(cfg))  # one GPU per job in a parallel multirun
        trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, **gpu)
        job.enter_context(_ddp_ranks_run_this_job(trainer))
        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        fit_seconds = time.perf_counter() - start

        # Both splits are scored once more on the checkpoint that is kept (best by val/acc).
        best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.validate(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        val_metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        test_metrics = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)[0] if cfg.test else {}

    metrics: dict[str, Any] = {
        **{k: float(v) for k, v in (val_metrics | test_metrics).items()},
        "fit_seconds": fit_seconds,
        "epochs": trainer.current_epoch,
        "params": sum(p.numel() for p in net.parameters()),
        "seed": seed,
        "tags": list(cfg.tags),
        "best_checkpoint": best_path,
    }
    if trainer.is_global_zero:
        run_record.log_hparams(trainer.loggers, resolved, seed, metrics)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        console.print_end(metrics, output_dir, tensorboard_dir=run_record.tensorboard_logdir(trainer, output_dir))
    return metrics.get(cfg.optimized_metric)


def _seed(cfg: DictConfig) -> int:
    """cfg.seed, or a random one; a DDP rank started by Lightning takes the seed rank 0 drew, so
    that all ranks draw the same data order (Lightning passes it on as PL_GLOBAL_SEED)."""
    if cfg.seed is not None:
        return cfg.seed
    if rank_zero_only.rank > 0 and "PL_GLOBAL_SEED" in os.environ:
        return int(os.environ["PL_GLOBAL_SEED"])
    return random.randrange(2**31)


@contextmanager
def _ddp_ranks_run_this_job(trainer: L.Trainer):
    """Lightning starts the other DDP ranks of a fit by running the script again with
    `sys.argv[1:] + hydra.run.dir=<hydra.run.dir>`. In a multirun job that command line is the
    whole sweep (with -m) and hydra.run.dir is not the job's dir; for this job, make both its
    own: its config name and overrides, run in RUN mode, writing into its dir. At the end the
    process group goes, so that the next job of the sweep can start its own."""
    environment = getattr(trainer.strategy, "cluster_environment", None)
    if (
        trainer.world_size == 1
        or environment is None
        or environment.creates_processes_externally  # SLURM's srun, torchrun: nothing is relaunched
        or not HydraConfig.initialized()
        or HydraConfig.get().mode != RunMode.MULTIRUN
    ):
        yield
        return
    if getattr(sys.modules["__main__"], "__spec__", None) is not None:
        raise ClassicCNNsError(
            "trainer=ddp inside a multirun runs with Hydra's basic launcher (jobs one after another, "
            "each on all its devices) or on SLURM (hydra/launcher=slurm with hydra.launcher.tasks_per_node "
            "and gpus_per_node equal to trainer.devices); this launcher runs jobs in worker processes "
            "that Lightning cannot start again for the other ranks. Drop hydra/launcher=..., or run "
            "single-device jobs in parallel (hydra/launcher=per_gpu)"
        )
    hydra_cfg = HydraConfig.get()
    argv, run_dir, environ = sys.argv, OmegaConf.to_container(hydra_cfg.run)["dir"], dict(os.environ)
    sys.argv = [sys.argv[0], f"--config-name={hydra_cfg.job.config_name}", *hydra_cfg.overrides.task]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        with read_write(hydra_cfg):
            hydra_cfg.run.dir = run_dir
        # The next job starts its own ranks: no process group, and none of the LOCAL_RANK,
        # MASTER_PORT, ... that the launch exported (LOCAL_RANK would say "already launched").
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)


def _writable_output_dir(output_dir: Path) -> Path:
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


def _instantiate_all(node: DictConfig | None) -> list:
    """Every entry of a logger/callbacks node; `callbacks.progress_bar=null` drops one."""
    return [instantiate(entry) for entry in (node or {}).values() if entry is not None]
