"""The OmegaConf resolvers conf/ uses; every entry point (train.py, scripts/, the tests) calls
`register_resolvers` before composing, and Hydra hands them on to its launchers' worker processes."""

import secrets

import torch
from omegaconf import DictConfig, OmegaConf

from classic_cnns.models.alexnet import IMAGENET_NORMALIZATION
from classic_cnns.runs.tensorboard_record import safe_dirname, tensorboard_run_name


def register_resolvers() -> None:
    """The resolvers conf/ uses: ${unique_id:}, ${safe_dirname:...}, ${auto_precision:...},
    ${cuda_device_count:}, ${tensorboard_run_name:}, ${normalization_for_model:...}. Hydra hands them on to
    its launchers' worker processes."""
    # A short random id, cached like Hydra's ${now:}: run and sweep dirs stay unique even for
    # jobs started in the same second, and every job of a sweep sees the same value.
    OmegaConf.register_new_resolver("unique_id", lambda: secrets.token_hex(3), use_cache=True, replace=True)
    OmegaConf.register_new_resolver("safe_dirname", safe_dirname, replace=True)
    OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
    OmegaConf.register_new_resolver("cuda_device_count", cuda_device_count, replace=True)
    OmegaConf.register_new_resolver("tensorboard_run_name", tensorboard_run_name, replace=True)
    OmegaConf.register_new_resolver("normalization_for_model", normalization_for_model, replace=True)


def auto_precision(accelerator: str) -> str:
    """Lightning's `precision` for `accelerator`: bf16 mixed precision on GPUs with native bf16
    (compute capability 8.0 and later: Ampere, Hopper, ...), fp16 mixed on older ones, full fp32
    elsewhere. Not `torch.cuda.is_bf16_supported()`: it also says yes where bf16 is emulated
    (e.g. on a V100), which is slower than fp16 there."""
    if str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.get_device_capability() >= (8, 0) else "16-mixed"
    return "32-true"


def normalization_for_model(statistic: str, own: list[float], *, _root_: DictConfig) -> list[float]:
    """data.mean or data.std (`statistic`): ImageNet's when the network starts from torchvision's
    ImageNet weights (model.pretrained=true), which were trained on inputs normalized that way;
    else the data set's own. A value set explicitly replaces this; the config checks then refuse
    a mismatch with pretrained weights."""
    pretrained = OmegaConf.select(_root_, "model.pretrained", default=False)
    return list(IMAGENET_NORMALIZATION[statistic]) if pretrained is True else list(own)


def cuda_device_count() -> int:
    """The number of visible GPUs, at least 1 (hydra/launcher=per_gpu's number of jobs at once)."""
    return max(1, torch.cuda.device_count())
