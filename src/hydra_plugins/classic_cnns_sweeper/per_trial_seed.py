"""A sampler seeded per trial, so that workers sharing one Optuna study never draw alike
(kept apart from optuna_sweeper.py so that a worker needs only Optuna to use it)."""

from collections.abc import Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial


def trial_seed(seed: int, number: int) -> int:
    """A seed for trial `number` of a search seeded `seed`, unrelated to its neighbours'."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class SeededPerTrial(optuna.samplers.BaseSampler):
    """The configured sampler, made afresh for every trial and seeded from (seed, trial number).

    The storage numbers a study's trials atomically, so workers sharing a study (several
    processes, machines or SLURM jobs on one PostgreSQL study) sample every trial from a
    different seed even when started together with the same command; a single search still
    repeats, and a resumed one draws new trials because their numbers are new. A worker id
    would add nothing: the trial number is already unique across workers. The samplers keep
    what they learn in the study, so a fresh instance per trial loses nothing."""

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self.make, self.seed = make, seed
        self._by_trial: dict[int, optuna.samplers.BaseSampler] = {}

    def _sampler(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        if trial.number not in self._by_trial:
            self._by_trial[trial.number] = self.make(trial_seed(self.seed, trial.number))
        return self._by_trial[trial.number]

    def before_trial(self, study, trial) -> None:
        self._sampler(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._sampler(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._sampler(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._sampler(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._sampler(trial).after_trial(study, trial, state, values)
        self._by_trial.pop(trial.number)
