"""Jobs of a parallel multirun spread over the visible GPUs, least-loaded first.

Hydra's joblib launcher starts a job whenever a worker is free, so `job.num % n_gpus` does not
give running jobs distinct GPUs. Instead each job claims a slot: slot 0 of every GPU first, then
slot 1 of every GPU, ...; a slot is an advisory file lock held for the job's life (a job that
dies releases it). N jobs at once on N GPUs get one GPU each; 2N jobs get two per GPU.
"""

import itertools
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

LOCK_DIR = Path(tempfile.gettempdir()) / "classic_cnns_gpu_slots"  # per machine: all sweeps share it


@contextmanager
def claim_gpu(gpu_ids: Sequence[str], lock_dir: Path = LOCK_DIR) -> Iterator[int]:
    """Hold the first free slot, in the order above; yield the index of its GPU in `gpu_ids`."""
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


def cuda_device_count() -> int:
    """The number of visible GPUs, at least 1 (hydra/launcher=per_gpu's number of jobs at once)."""
    return max(1, torch.cuda.device_count())
