"""Where a job's Trainer runs: its own GPU in a parallel multirun (one file-lock slot per job), and
DDP ranks that Lightning relaunches as this one job inside a multirun."""

import itertools
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, read_write

from classic_cnns import ClassicCNNsError

LOCK_DIR = Path(tempfile.gettempdir()) / "classic_cnns_gpu_slots"  # per machine: all sweeps share it


@contextmanager
def trainer(cfg: DictConfig, **kwargs) -> Iterator[L.Trainer]:
    """`cfg.trainer` instantiated for this job (on its own GPU in a parallel multirun), with
    what DDP needs to relaunch this job's ranks set up while it is in use."""
    with gpu_for_job(cfg) as gpu:
        job_trainer: L.Trainer = instantiate(cfg.trainer, **kwargs, **gpu)
        with _ddp_ranks_run_this_job(job_trainer):
            yield job_trainer


@contextmanager
def claim_gpu(gpu_ids: Sequence[str], lock_dir: Path = LOCK_DIR) -> Iterator[int]:
    """Hold the first free slot of a GPU; yield the index of its GPU in `gpu_ids`.

    Hydra's joblib launcher starts a job whenever a worker is free, so `job.num % n_gpus` does
    not give running jobs distinct GPUs. Instead each job claims a slot: slot 0 of every GPU
    first, then slot 1 of every GPU, ...; a slot is an advisory file lock held for the job's
    life (a job that dies releases it). N jobs at once on N GPUs get one GPU each; 2N jobs get
    two per GPU.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    for slot in itertools.count():
        for index, gpu in enumerate(gpu_ids):
            lock = FileLock(lock_dir / f"{gpu}.slot{slot}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield index
            finally:
                lock.release()
            return


@contextmanager
def gpu_for_job(cfg: DictConfig) -> Iterator[dict]:
    """Trainer arguments that put this job on its own GPU ({"devices": [i]}) when it is one
    single-GPU job of a multirun on a machine with several GPUs; {} otherwise."""
    count = torch.cuda.device_count()
    if (
        count < 2
        or not HydraConfig.initialized()
        or HydraConfig.get().mode != RunMode.MULTIRUN
        or cfg.trainer.accelerator not in ("auto", "gpu", "cuda")
        or cfg.trainer.devices != 1
    ):
        yield {}
        return
    ids = [str(torch.cuda.get_device_properties(i).uuid) for i in range(count)]
    with claim_gpu(ids, LOCK_DIR) as index:
        yield {"devices": [index]}


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
    # hydra.mode=RUN: a trial of an Optuna search (hparams_search=..., whose config says MULTIRUN)
    # runs as itself on every rank, never as a search of its own.
    sys.argv = [sys.argv[0], f"--config-name={hydra_cfg.job.config_name}", *hydra_cfg.overrides.task, "hydra.mode=RUN"]
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
