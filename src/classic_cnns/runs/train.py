"""train(cfg): the testable core of `python train.py`; the job plumbing is in job.py and devices.py."""

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from classic_cnns.classifier import ImageClassifier
from classic_cnns.data import ImageDataModule
from classic_cnns.runs import console, devices, job
from classic_cnns.runs.callbacks import FirstTrainingLoss, require_finite
from classic_cnns.runs.checkpoint_loading import checkpoint_dirs, require_weights_fit, weight_shapes
from classic_cnns.runs.checkpoint_writing import AtomicCheckpointIO
from classic_cnns.runs.config_checks import build_network, require_visible_gpu, validate
from classic_cnns.runs.optuna_trial import callbacks_for_this_trial
from classic_cnns.runs.resume import FitClock, StrayCheckpoints


def train(cfg: DictConfig) -> float | list[float] | None:
    """Fit (or resume from `cfg.ckpt_path`), score the best checkpoint on validation and test,
    write metrics.json; return `cfg.optimized_metric` (a list of values for a list of metrics)."""
    validate(cfg)
    require_visible_gpu(cfg)
    seed, config = job.start(cfg)
    datamodule: ImageDataModule = instantiate(cfg.data, seed=seed)
    net = build_network(cfg, datamodule)
    if cfg.get("ckpt_path"):  # allow_resume_changes=true may have changed the network: one line, not a traceback
        expected = {f"net.{key}": value.shape for key, value in net.state_dict().items()}
        require_weights_fit(expected, weight_shapes(cfg.ckpt_path), f"ckpt_path={cfg.ckpt_path}")
    console.print_start(cfg, net, datamodule)
    model = ImageClassifier(
        net=net,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        label_smoothing=cfg.label_smoothing,
        config=config,
        data_info=datamodule.describe(),
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        compile_options=OmegaConf.to_container(cfg.compile_options),
        seed=seed,
        top5=cfg.get("top5", False),
    )
    loggers, callbacks = (
        job.instantiate_all(cfg.get("logger")),
        job.instantiate_all(cfg.get("callbacks")) + callbacks_for_this_trial(),
    )
    fit_clock = FitClock()  # fit_seconds over all segments of a resumed run
    first_loss = FirstTrainingLoss()
    plugins = [
        AtomicCheckpointIO(checkpoint_dirs(cfg))
    ]  # atomic writes; checked loads; deletes only in the run's checkpoint dir
    with devices.trainer(
        cfg, logger=loggers or False, callbacks=[*callbacks, fit_clock, first_loss, StrayCheckpoints()], plugins=plugins
    ) as trainer:
        fit_clock.start()
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        fit_seconds = fit_clock.seconds  # before validate/test restore the best checkpoint's clock
        train_metrics = {
            k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/")
        }  # the last epoch's
        # Both splits are scored once more on the checkpoint that is kept (best by val/acc).
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.validate(model, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True)
        val_metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        tested = (
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True)[0]
            if cfg.test
            else {}
        )
        test_metrics = {k: v for k, v in tested.items() if k.startswith("test/")}
    metrics = {k: float(v) for k, v in (train_metrics | val_metrics | test_metrics).items()} | {
        "fit_seconds": fit_seconds,
        "epochs": trainer.current_epoch,
        "params": sum(p.numel() for p in net.parameters()),
        "seed": seed,
        "tags": list(cfg.tags),
        "best_checkpoint": best,
    }
    for callback in callbacks:  # diagnostics that a study switches on (callbacks.LRNDivisorSpread)
        metrics |= getattr(callback, "final_metrics", {})
    require_finite(metrics)
    job.finish(trainer, config, metrics, first_train_loss=first_loss.value)
    return job.optimized(metrics, cfg.optimized_metric)
