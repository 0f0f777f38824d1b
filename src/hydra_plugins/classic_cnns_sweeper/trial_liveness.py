"""Heartbeats of running trials, so that a search sharing a study with others can tell a dead
worker's trial (left RUNNING forever) from a long one, and run it again.

Optuna's own heartbeat (RDBStorage's heartbeat_interval, with RetryFailedTrialCallback) exists
for relational databases only and beats only inside `study.optimize`; this one is a user
attribute of the trial, stamped from a thread of the process that runs it, and works the same
on the journal file and on PostgreSQL. Kept apart from optuna_sweeper.py: it needs only Optuna.
"""

import threading
import time

import optuna
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT = "heartbeat"  # the trial's user attribute: when its worker was last seen alive (Unix time)


def stamp(trial: optuna.Trial) -> None:
    trial.set_user_attr(HEARTBEAT, time.time())


class Heartbeat:
    """While open, stamps every trial added (and not yet removed) every `interval` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._trials: dict[int, optuna.Trial] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="trial heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, trial: optuna.Trial) -> None:
        with self._lock:
            stamp(trial)
            self._trials[trial.number] = trial

    def remove(self, trial: optuna.Trial) -> None:
        """Before the trial is told: a finished trial takes no more stamps."""
        with self._lock:
            self._trials.pop(trial.number, None)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                for trial in self._trials.values():
                    stamp(trial)


def dead_trials(study: optuna.Study, stale_after: float) -> list[FrozenTrial]:
    """RUNNING trials whose worker has not stamped them for `stale_after` seconds (trials
    without a heartbeat, from searches that do not stamp, are never taken for dead)."""
    now = time.time()
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [trial for trial in running if now - trial.user_attrs.get(HEARTBEAT, now) > stale_after]
