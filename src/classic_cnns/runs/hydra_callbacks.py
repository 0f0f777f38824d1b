"""Hydra callbacks (conf/hydra/default.yaml lists them): checks that run before Hydra's own steps."""

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from classic_cnns.runs.config_checks import require_visible_gpu, validate
from classic_cnns.runs.entry_points import exit_on_user_error
from classic_cnns.runs.job import writable_output_dir


class CheckBeforeStart(Callback):
    """Before Hydra makes the run dir: the config's values (`classic_cnns.runs.config_checks.validate`; a
    multirun's sweeper checks every job's) and a writable `hydra.run.dir` (`hydra.sweep.dir`
    for -m). Each problem is one line and exit 1; Hydra's own attempt to make an unwritable
    dir fails with a traceback (FileNotFoundError, EROFS)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exit_on_user_error():
            validate(config)
            require_visible_gpu(config)
            if config.hydra.output_subdir is not None:  # the helper scripts (cli.NO_RUN_DIR) write no run dir
                writable_output_dir(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exit_on_user_error():
            writable_output_dir(Path(config.hydra.sweep.dir))
