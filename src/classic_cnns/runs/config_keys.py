"""The one table of the config's groups and run keys, and what each is to a run.

Every list the run machinery keeps is read off this table: the groups a run's name and HPARAMS
record call its experiment (tensorboard_record, console), what a resumed run must share with
its checkpoint and what it may change (resume), and the groups whose keys are a class's
arguments (config_checks). A new config group is one row here (tests/test_config_keys.py
fails, naming it, while a folder of conf/ has no row).
"""

STUDIED = "studied"  # what an experiment varies: the run's name and its HPARAMS choices
BUILT = "built"  # instantiated from its _target_: every other key is an argument of that class
SAME_ON_RESUME = "same on resume"  # a resumed run must share it with its checkpoint
FREE_ON_RESUME = "free on resume"  # ... apart from these, which do not change the results
SCHEDULE_LENGTH = "schedule length"  # fixes the number of optimizer steps (one-cycle's total_steps)
WHERE = "where"  # where and how a run runs, not what it studies: left out of single runs' names
NOT_HPARAM = "not an hparam"  # kept out of the HPARAMS record's config values

KEYS: dict[str, set[str]] = {
    # What a study varies. pooling, padding, activation and norm are the layer choices (the
    # `layers:` node of conf/train.yaml builds models.LayerChoices from them).
    "model": {STUDIED, BUILT, SAME_ON_RESUME},
    "data": {STUDIED, BUILT, SAME_ON_RESUME},
    "pooling": {STUDIED, SAME_ON_RESUME},
    "padding": {STUDIED, SAME_ON_RESUME},
    "activation": {STUDIED, SAME_ON_RESUME},
    "norm": {STUDIED, SAME_ON_RESUME},
    "optimizer": {STUDIED, BUILT, SAME_ON_RESUME},
    "scheduler": {STUDIED, BUILT, SAME_ON_RESUME},
    "experiment": {STUDIED},
    "label_smoothing": {SAME_ON_RESUME},
    "seed": {SAME_ON_RESUME, NOT_HPARAM},  # with the epoch it draws each epoch's data order
    "hparams_search": set(),
    # Where the data lives and how it is fed.
    "data.data_dir": {WHERE, FREE_ON_RESUME},
    "data.download": {FREE_ON_RESUME},
    "data.placement": {WHERE, FREE_ON_RESUME},
    "data.num_workers": {WHERE, FREE_ON_RESUME},
    "data.eval_batch_size": {FREE_ON_RESUME},
    "data.decode": {WHERE, FREE_ON_RESUME},  # data=imagefolder: decoded once or streamed, the same images
    "data.on_bad_file": {WHERE, FREE_ON_RESUME},
    # How the run runs.
    "trainer": {WHERE},
    "trainer.max_epochs": {SCHEDULE_LENGTH},
    "trainer.max_steps": {SCHEDULE_LENGTH},
    "trainer.limit_train_batches": {SCHEDULE_LENGTH},
    "trainer.accumulate_grad_batches": {SCHEDULE_LENGTH},
    "paths": {WHERE, NOT_HPARAM},
    "hydra": {WHERE},
    "logger": {WHERE, NOT_HPARAM},
    "callbacks": {WHERE, NOT_HPARAM},
    "debug": {WHERE},
    "ckpt_path": {WHERE, NOT_HPARAM},
    "allow_resume_changes": {WHERE},
    "tags": {WHERE, NOT_HPARAM},  # recorded on their own
    "test": {WHERE, NOT_HPARAM},
    "top5": {WHERE, NOT_HPARAM},  # what is measured, not what is trained
    "run_name": {NOT_HPARAM},
    "compile": {WHERE},
    "compile_options": {WHERE},
    "channels_last": {WHERE},
    "float32_matmul_precision": {WHERE},
    "optimized_metric": {WHERE},
}


def keys_with(role: str) -> tuple[str, ...]:
    """The keys of the table that have `role`, in the table's order."""
    return tuple(key for key, roles in KEYS.items() if role in roles)
