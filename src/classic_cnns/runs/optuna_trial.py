"""What a job of an Optuna search (hparams_search=...) does besides training: it reports the
monitored metric of every epoch to its trial, and stops early when the study's pruner says so.

The sweeper (src/hydra_plugins/classic_cnns_sweeper/optuna_sweeper.py) asks the study for the
trials and tells it their results; each job gets its trial's storage, study, number, metric and
pruner in the environment variable CLASSIC_CNNS_OPTUNA_TRIAL (the sweeper sets it through
hydra.job.env_set), not in its overrides: the job's launch line, config and overrides.yaml show
the trial's parameters only, and DDP ranks started by the job inherit it.
"""

import json
import logging
import os
from pathlib import Path

import lightning as L
import optuna
from hydra.utils import instantiate
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend

log = logging.getLogger(__name__)
PRUNED_AFTER_EPOCH = "pruned_after_epoch"  # the trial's user attribute that says the job was pruned
TRIAL_ENV = "CLASSIC_CNNS_OPTUNA_TRIAL"  # the job's trial, as JSON (trial_environment)


def open_storage(storage: str) -> BaseStorage:
    """An Optuna storage from a URL (`sqlite:///...`, `postgresql+psycopg://...`: any
    SQLAlchemy URL) or, for anything without `://`, a journal file (what optuna-dashboard
    reads the same way). Both are safe for many jobs writing at once: the journal file takes a
    file lock for every write, a database server its own locks."""
    if "://" in storage:
        return optuna.storages.get_storage(storage)
    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(storage)))


def trial_environment(storage: str, study_name: str, trial: int, monitor: str, pruner: dict) -> str:
    """The value of CLASSIC_CNNS_OPTUNA_TRIAL for one trial; `pruner` is the pruner's config."""
    return json.dumps(
        {"storage": storage, "study_name": study_name, "trial": trial, "monitor": monitor, "pruner": pruner}
    )


def callbacks_for_this_trial() -> list[L.Callback]:
    """[ReportToTrial] in a job of an Optuna search (CLASSIC_CNNS_OPTUNA_TRIAL set), else []."""
    text = os.environ.get(TRIAL_ENV)
    if not text:
        return []
    spec = json.loads(text)
    return [
        ReportToTrial(
            spec["storage"], spec["study_name"], int(spec["trial"]), str(spec["monitor"]), instantiate(spec["pruner"])
        )
    ]


class ReportToTrial(L.Callback):
    """Reports `monitor` after every validation epoch of the fit to trial `trial` of the study
    (step = epoch); when `pruner` says so, the fit stops there and the trial gets the user
    attribute `pruned_after_epoch`, which the sweeper records as PRUNED. Under DDP, rank 0
    reports and decides and every rank stops: stopping, not raising, because Lightning ends
    the whole process tree (the sweep included) when one of its DDP ranks fails."""

    def __init__(
        self,
        storage: str,
        study_name: str,
        trial: int,
        monitor: str = "val/acc",
        pruner: optuna.pruners.BasePruner | None = None,
    ) -> None:
        self.storage, self.study_name, self.trial_number, self.monitor = storage, study_name, trial, monitor
        self.pruner = pruner or optuna.pruners.NopPruner()
        self._trial: optuna.Trial | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        storage = open_storage(self.storage)
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=self.pruner)
        study_id = storage.get_study_id_from_name(self.study_name)
        self._trial = optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        prune = False
        if self._trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None:
                self._trial.report(float(value), step=trainer.current_epoch)
                prune = self._trial.should_prune()
            if prune:
                self._trial.set_user_attr(PRUNED_AFTER_EPOCH, trainer.current_epoch)
                log.info("trial %d pruned after epoch %d", self.trial_number, trainer.current_epoch)
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
