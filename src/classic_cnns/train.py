"""train(cfg): the testable core of `python train.py`."""

import json
import logging
import random
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from classic_cnns.data import ImageDataModule
from classic_cnns.module import ImageClassifier

log = logging.getLogger(__name__)

# The data lives in memory and batches are single gathers: DataLoader workers would only add
# start-up time, so Lightning's advice to add some does not apply.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def train(cfg: DictConfig) -> float | None:
    """Fit, test the best checkpoint, write metrics.json; return `cfg.optimized_metric`."""
    seed = cfg.seed if cfg.seed is not None else random.randrange(2**31)
    L.seed_everything(seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    OmegaConf.save(resolved, output_dir / "config.yaml")

    datamodule: ImageDataModule = instantiate(cfg.data)
    net = instantiate(
        cfg.model,
        in_channels=datamodule.channels,
        num_classes=datamodule.num_classes,
        input_size=datamodule.input_size,
    )
    model = ImageClassifier(
        net=net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        num_classes=datamodule.num_classes,
        label_smoothing=cfg.label_smoothing,
        config=resolved,
    )
    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = _instantiate_all(cfg.get("callbacks"))
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)

    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    val_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint else ""
    if best_path and checkpoint.monitor == "val/acc":
        val_metrics["val/acc"] = float(checkpoint.best_model_score)
    (test_metrics,) = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None)

    metrics: dict[str, Any] = {
        **val_metrics,
        **{k: float(v) for k, v in test_metrics.items()},
        "fit_seconds": fit_seconds,
        "epochs": trainer.current_epoch,
        "params": sum(p.numel() for p in net.parameters()),
        "seed": seed,
        "best_checkpoint": best_path,
    }
    if trainer.is_global_zero:
        _log_hyperparams(loggers, resolved, seed, metrics)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        log.info("metrics: %s", {k: v for k, v in metrics.items() if "/" in k})
    return metrics.get(cfg.optimized_metric)


def _instantiate_all(node: DictConfig | None) -> list:
    """Every entry of a logger/callbacks node; `callbacks.progress_bar=null` drops one."""
    return [instantiate(entry) for entry in (node or {}).values() if entry is not None]


def _log_hyperparams(loggers, config: dict[str, Any], seed: int, metrics: dict[str, Any]) -> None:
    """One hparams record per run, with the final metrics (TensorBoard's HPARAMS tab)."""
    skip = ("paths", "logger", "callbacks", "trainer", "run_name", "seed")
    params = {"choices": _group_choices(), "seed": seed, **{k: v for k, v in config.items() if k not in skip}}
    params["trainer"] = {key: config["trainer"].get(key) for key in ("max_epochs", "precision", "accelerator")}
    final = {f"hp/{k.replace('/', '_')}": v for k, v in metrics.items() if "/" in k}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):  # links the metrics to the hparams record
            logger.log_hyperparams(params, final)
        else:
            logger.log_hyperparams(params)
            logger.log_metrics(final)
        logger.save()


def _group_choices() -> dict[str, str]:
    """Which option of each config group this run uses (model=alexnet, pooling=avg, ...)."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {group: str(option) for group, option in choices.items() if not group.startswith("hydra")}
