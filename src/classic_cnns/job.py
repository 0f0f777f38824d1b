"""What running one training job takes besides training: the plumbing around train(cfg).

`start` checks the output dir and the resume path, chooses and sets the seed and writes
config.yaml; `trainer` builds the Lightning Trainer on this job's GPU (one per job in a parallel
multirun) and lets DDP ranks relaunch this job alone inside a multirun; `finish` writes
metrics.json and the hparams record. `register_resolvers` adds the OmegaConf resolvers the
configs use; every entry point (train.py, scripts/, the tests) calls it before composing.
"""

import hashlib
import itertools
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, read_write

from classic_cnns import ClassicCNNsError, console, run_record
from classic_cnns.checkpoint import read_checkpoint
from classic_cnns.resume import check_resume


MIN_FREE_BYTES = 200 * 2**20  # checkpoints of the paper's AlexNet are 0.7 GB; smaller nets a few MB
LOCK_DIR = Path(tempfile.gettempdir()) / "classic_cnns_gpu_slots"  # per machine: all sweeps share it


# --- resolvers ------------------------------------------------------------------------------
def register_resolvers() -> None:
    """The resolvers conf/ uses: ${unique_id:}, ${safe_dirname:...}, ${auto_precision:...},
    ${cuda_device_count:}, ${tensorboard_run_name:}. Hydra hands them on to its launchers' worker processes."""
    # A short random id, cached like Hydra's ${now:}: run and sweep dirs stay unique even for
    # jobs started in the same second, and every job of a sweep sees the same value.
    OmegaConf.register_new_resolver("unique_id", lambda: secrets.token_hex(3), use_cache=True, replace=True)
    OmegaConf.register_new_resolver("safe_dirname", safe_dirname, replace=True)
    OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
    OmegaConf.register_new_resolver("cuda_device_count", cuda_device_count, replace=True)
    OmegaConf.register_new_resolver("tensorboard_run_name", run_record.tensorboard_run_name, replace=True)


def safe_dirname(name: str, limit: int = 120) -> str:
    """`name` as one directory name: no '/', and a long one cut and suffixed with its hash."""
    name = str(name).replace("/", "_")
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def auto_precision(accelerator: str) -> str:
    """Lightning's `precision` for `accelerator`: bf16 mixed precision on GPUs with native bf16
    (compute capability 8.0 and later: Ampere, Hopper, ...), fp16 mixed on older ones, full fp32
    elsewhere. Not `torch.cuda.is_bf16_supported()`: it also says yes where bf16 is emulated
    (e.g. on a V100), which is slower than fp16 there."""
    if str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.get_device_capability() >= (8, 0) else "16-mixed"
    return "32-true"


def cuda_device_count() -> int:
    """The number of visible GPUs, at least 1 (hydra/launcher=per_gpu's number of jobs at once)."""
    return max(1, torch.cuda.device_count())


# --- before training ------------------------------------------------------------------------
def start(cfg: DictConfig) -> tuple[int, dict[str, Any]]:
    """Check where results go and what to resume from, choose and set the seed, write
    config.yaml; return the seed and the resolved config (with the seed actually used)."""
    # The data lives in memory and batches are single gathers: DataLoader workers would only add
    # start-up time, so Lightning's advice to add some does not apply.
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # Epoch metrics are summed over the DDP ranks before they are logged (ImageClassifier._log_epoch).
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")
    console.quiet_dependencies()
    output_dir = writable_output_dir(Path(cfg.paths.output_dir))
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise ClassicCNNsError(f"ckpt_path={ckpt_path} does not exist: nothing to resume from (this run would start over)")
    checkpoint = read_checkpoint(ckpt_path) if ckpt_path else None  # untrusted: refused if it asks for more than plain values
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


def instantiate_all(node: DictConfig | None) -> list:
    """Every entry of a logger/callbacks node; `callbacks.progress_bar=null` drops one."""
    return [instantiate(entry) for entry in (node or {}).values() if entry is not None]


# --- the trainer: this job's GPU, DDP ranks ---------------------------------------------------
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


# --- after training ------------------------------------------------------------------------
def finish(trainer: L.Trainer, config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """On rank 0: the hparams record with the final metrics, metrics.json in the output dir, and
    the closing lines on the console."""
    if not trainer.is_global_zero:
        return
    output_dir = Path(config["paths"]["output_dir"])
    run_record.log_hparams(trainer.loggers, config, config["seed"], metrics)
    metrics = metrics | {"cpu_threads": torch.get_num_threads()}  # what this job's CPU work ran on
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    console.print_end(metrics, output_dir, tensorboard_dir=run_record.tensorboard_logdir(trainer, output_dir))


def optimized(metrics: dict[str, Any], optimized_metric: str | Sequence[str]) -> float | list[float] | None:
    """What train(cfg) returns to a sweeper: the value of `optimized_metric`, or a list of values
    for a list of metrics (a multi-objective Optuna search)."""
    if isinstance(optimized_metric, str):
        return metrics.get(optimized_metric)
    return [metrics.get(name) for name in optimized_metric]
