"""LeNet-5 and AlexNet as a Lightning + Hydra experiment project."""

import hashlib
import secrets

from omegaconf import OmegaConf


class ClassicCNNsError(Exception):
    """A problem the user can fix (missing data, bad value); reported without a traceback."""


# A short random id, cached like Hydra's ${now:}: run and sweep dirs stay unique even for
# jobs started in the same second, and every job of a sweep sees the same value.
OmegaConf.register_new_resolver("unique_id", lambda: secrets.token_hex(3), use_cache=True, replace=True)


def safe_dirname(name: str, limit: int = 120) -> str:
    """`name` as one directory name: no '/', and a long one cut and suffixed with its hash."""
    name = str(name).replace("/", "_")
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


OmegaConf.register_new_resolver("safe_dirname", safe_dirname, replace=True)


def auto_precision(accelerator: str) -> str:
    """Lightning's `precision` for `accelerator`: bf16 mixed precision on GPUs with native bf16
    (compute capability 8.0 and later: Ampere, Hopper, ...), fp16 mixed on older ones, full fp32
    elsewhere. Not `torch.cuda.is_bf16_supported()`: it also says yes where bf16 is emulated
    (e.g. on a V100), which is slower than fp16 there."""
    import torch

    if str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.get_device_capability() >= (8, 0) else "16-mixed"
    return "32-true"


OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)


def _cuda_device_count() -> int:
    from classic_cnns.gpus import cuda_device_count

    return cuda_device_count()


OmegaConf.register_new_resolver("cuda_device_count", _cuda_device_count, replace=True)
