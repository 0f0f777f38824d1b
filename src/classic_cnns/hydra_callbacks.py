"""Hydra callbacks (conf/hydra/default.yaml lists them): checks that run before Hydra's own steps."""

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from classic_cnns.cli import exit_on_user_error
from classic_cnns.config import validate


class CheckBeforeStart(Callback):
    """Before Hydra makes the run dir: the config's values (`classic_cnns.config.validate`; a
    multirun's sweeper checks every job's) and a writable `hydra.run.dir` (`hydra.sweep.dir`
    for -m). Each problem is one line and exit 1; Hydra's own attempt to make an unwritable
    dir fails with a traceback (FileNotFoundError, EROFS)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exit_on_user_error():
            validate(config)
            _check_writable(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exit_on_user_error():
            _check_writable(config.hydra.sweep.dir)


def _check_writable(directory: str) -> None:
    from classic_cnns.train import _writable_output_dir

    _writable_output_dir(Path(directory))
