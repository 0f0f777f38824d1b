"""hparams_search=...: the project's Optuna sweeper, offline on the tiny data."""

import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from classic_cnns.runs.config_checks import ConfigError
from classic_cnns.runs.optuna_trial import open_storage
from hydra_plugins.classic_cnns_sweeper.optuna_sweeper import (
    OptunaSweeper,
    distribution,
    launcher_parallelism,
    search_space,
)

from .conftest import CONF_DIR, ROOT
from .test_cli import FAST, run_cli

# the tiny training split has 200 images: a fixed batch of 32, not the search's 256 (too large an error)
SEARCH = ["hparams_search=lenet5_optuna", *FAST, "data.batch_size=32"]
LIMITS = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]
# Two trials whose outcome is known: a 1-epoch trial completes (its one report is within the
# pruner's warm-up); a 3-epoch trial is pruned after its second epoch (val/acc < 1.01 always)
# and stops there, without its third.
PRUNE_SECOND_EPOCH = [
    "hydra.sweeper.params=null",
    "trainer.max_epochs=choice(1, 3)",
    "hydra/sweeper/sampler=grid",
    "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
    "+hydra.sweeper.pruner.lower=1.01",
    "+hydra.sweeper.pruner.n_warmup_steps=1",
    "hydra.sweeper.n_trials=2",
]


def trials(storage: str, name: str = "lenet5") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(str(storage))).trials


def compose_search(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["hparams_search=lenet5_optuna", *overrides], return_hydra_config=True)


# --- the search space: hydra-optuna-sweeper's syntax, through Hydra's override grammar --------
@pytest.mark.parametrize(
    "override, expected",
    [
        ("x=choice(64, 128, 256)", CategoricalDistribution([64, 128, 256])),
        ("x=max,avg,subsampling", CategoricalDistribution(["max", "avg", "subsampling"])),
        ("x=range(32, 128, step=32)", IntDistribution(32, 96, step=32)),  # Hydra's range excludes 128
        ("x=range(1, 4)", IntDistribution(1, 3)),
        ("x=interval(0.001, 0.1)", FloatDistribution(0.001, 0.1)),
        ("x=tag(log, interval(0.001, 0.1))", FloatDistribution(0.001, 0.1, log=True)),
        ("x=int(interval(1, 10))", IntDistribution(1, 10)),
        ("x=tag(log, int(interval(1, 100)))", IntDistribution(1, 100, log=True)),
        ("x=0.5", None),  # a fixed value
    ],
)
def test_search_space_takes_hydra_optuna_sweepers_syntax(override, expected):
    (parsed,) = OverridesParser.create().parse_overrides([override])
    assert distribution(parsed) == expected


@pytest.mark.parametrize(
    "override, message",
    [
        ("x=range(5, 1)", "range is empty"),
        ("x=interval(0.1, 0.01)", r"interval\(a, b\) needs a < b"),
        ("x=tag(log, range(0.1, 1.0, 0.1))", "log scale takes interval"),
        ("x=glob(*)", "not a search space"),
        # what Optuna cannot represent is not silently changed (a log range used to become step 1, no log)
        (
            "x=tag(log, range(16, 128, step=16))",
            r"log scale takes no step; write tag\(log, int\(interval\(16, 112\)\)\)",
        ),
        ("x=tag(lgo, interval(0.001, 0.1))", "unknown tag lgo"),
        ("x=tag(log, interval(0, 0.1))", "lower bound above 0"),
        ("x=tag(log, choice(1, 2))", "a choice has no scale"),
        ("x=range(0, 10, step=0)", "x=range.*step"),  # Hydra's own complaint, naming the key
    ],
)
def test_a_search_space_it_cannot_map_is_one_clear_error(override, message):
    (parsed,) = OverridesParser.create().parse_overrides([override])
    with pytest.raises(ConfigError, match=message) as error:
        distribution(parsed)
    assert str(error.value).startswith(f"{override}: ") and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["hparams_search=lenet5_optuna", "data.batch_size=tag(log, range(16,128,step=16))"],
            "data.batch_size=tag(log, range(16,128,step=16)): Optuna's log scale takes no step",
        ),
        (["-m", "optimizer.lr=interval(0.1, 0.2)"], "a grid sweep takes lists"),
    ],
)
def test_a_bad_search_space_stops_before_the_first_job_in_one_line(overrides, message, data_dir, tmp_path):
    done = run_cli(*overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}", data_dir=data_dir, cwd=tmp_path)
    assert done.returncode == 1
    assert message in done.stderr + done.stdout
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "sweep" / "0").exists()


# --- samplers, pruners and parallel trials as config choices ----------------------------------
@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "grid", "nsgaii"])
def test_every_sampler_is_a_config_choice_seeded_by_the_sweeper(sampler):
    cfg = compose_search(f"hydra/sweeper/sampler={sampler}").hydra.sweeper.sampler
    grid = {"search_space": {"pooling": ["max", "avg"]}} if sampler == "grid" else {}
    first, second = (instantiate(cfg, seed=3, **grid) for _ in range(2))
    assert type(first).__name__.lower().startswith(sampler.replace("nsgaii", "nsgaiisampler"))
    space = (
        {"x": FloatDistribution(0, 1)} if sampler != "grid" else {"pooling": CategoricalDistribution(["max", "avg"])}
    )
    draws = []
    for one in (first, second):  # the same seed draws the same first trial
        study = optuna.create_study(sampler=one)
        draws.append(study.ask(space).params)
    assert draws[0] == draws[1]


@pytest.mark.parametrize(
    "pruner, kind", [("none", "NopPruner"), ("median", "MedianPruner"), ("hyperband", "HyperbandPruner")]
)
def test_every_pruner_is_a_config_choice(pruner, kind):
    assert type(instantiate(compose_search(f"hydra/sweeper/pruner={pruner}").hydra.sweeper.pruner)).__name__ == kind


@pytest.mark.parametrize(
    "launcher, expected",
    [
        ([], 1),
        (["hydra/launcher=parallel", "hydra.launcher.n_jobs=3"], 3),
        (["hydra/launcher=slurm"], 4),  # not submitit's array_parallelism of 256: a search would go out blind
        (["hydra/launcher=slurm", "hydra.launcher.array_parallelism=2"], 2),
    ],
    ids=["basic", "parallel", "slurm", "slurm-2"],
)
def test_trials_at_once_default_to_the_launchers_parallelism(launcher, expected):
    assert launcher_parallelism(compose_search(*launcher).hydra.launcher) == expected


@pytest.mark.parametrize(
    "sampler, at_once, n_trials, warned",
    [("tpe", 4, 8, True), ("tpe", 2, 8, False), ("tpe", 1, 2, False), ("random", 8, 8, False)],
)
def test_too_many_trials_at_once_for_a_model_based_sampler_is_a_warning(sampler, at_once, n_trials, warned, caplog):
    sweeper = OptunaSweeper(sampler=compose_search(f"hydra/sweeper/sampler={sampler}").hydra.sweeper.sampler)
    with caplog.at_level(logging.WARNING):
        sweeper._warn_if_blind(at_once, n_trials)
    assert ("nearly at random; set hydra.sweeper.n_jobs to at most 2" in caplog.text) == warned


# --- trials run asynchronously: a free slot gets a new trial at once -----------------------------
class SleepingLauncher:
    """A launcher whose job sleeps `trainer.max_epochs` x 0.1 s and returns 0.5 (no training)."""

    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir = sweep_dir

    def launch(self, job_overrides, initial_job_idx):
        ((*overrides,),) = job_overrides
        epochs = int(next(o for o in overrides if o.startswith("trainer.max_epochs=")).split("=")[1])
        time.sleep(0.1 * epochs)
        hydra_cfg = OmegaConf.create(
            {
                "hydra": {
                    "job": {"num": initial_job_idx},
                    "runtime": {"output_dir": str(self.sweep_dir / str(initial_job_idx))},
                }
            }
        )
        return [
            JobReturn(
                overrides=[o for o in overrides if not o.startswith("++hydra.")],
                status=JobStatus.COMPLETED,
                _return_value=0.5,
                hydra_cfg=hydra_cfg,
            )
        ]


def test_a_slot_freed_by_a_short_trial_starts_the_next_one_while_a_long_one_runs(tmp_path):
    """2 slots, a grid of one 8-epoch and three 1-epoch trials: the short ones run one after
    another beside the long one, and each is told to the study when it ends, not with a batch."""
    space = {"trainer.max_epochs": CategoricalDistribution([8, 1])}
    sweeper = OptunaSweeper(n_trials=4, n_jobs=2)
    sweeper.launcher, sweeper.validate_batch_is_legal = SleepingLauncher(tmp_path), lambda batch, first_job: None
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"trainer.max_epochs": 8})
    for _ in range(3):
        study.enqueue_trial({"trainer.max_epochs": 1})
    entries = sweeper.run_trials(
        study, space, [], slots=2, wanted=4, sweep_dir=tmp_path, storage_url="unused", metric=None
    )
    assert sorted(entries) == [0, 1, 2, 3] and {e["status"] for e in entries.values()} == {"completed"}
    long, *short = study.trials
    assert all(t.datetime_complete < long.datetime_complete for t in short)  # all three ran beside trial 0
    assert (
        short[0].datetime_complete <= short[1].datetime_start and short[1].datetime_complete <= short[2].datetime_start
    )
    assert all(
        (t.datetime_complete - t.datetime_start).total_seconds() < 0.5 for t in short
    )  # its own duration, not the batch's


class ChildProcessLauncher(SleepingLauncher):
    """A launcher whose job runs in a child process of the search (as joblib's loky workers do)."""

    def __init__(self, sweep_dir: Path) -> None:
        super().__init__(sweep_dir)
        self.children = []

    def launch(self, job_overrides, initial_job_idx):
        child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(120,))
        child.start()
        self.children.append(child)
        child.join()
        return super().launch(job_overrides, initial_job_idx)


def test_ctrl_c_stops_the_search_at_once_and_ends_its_running_jobs(tmp_path):
    """Without this, Python's exit would wait for the running trials' job processes."""
    sweeper = OptunaSweeper(n_trials=2, n_jobs=2)
    sweeper.launcher, sweeper.validate_batch_is_legal = ChildProcessLauncher(tmp_path), lambda batch, first_job: None
    sweeper.config = OmegaConf.create({"hydra": {"launcher": {}}})
    study = optuna.create_study(direction="maximize")
    space = {"trainer.max_epochs": CategoricalDistribution([1])}
    launcher = sweeper.launcher

    def interrupt_once_both_jobs_run():  # Ctrl-C while both trials' processes run, however loaded the machine
        while len(launcher.children) < 2 or not all(child.is_alive() for child in launcher.children):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_both_jobs_run, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sweeper.run_trials(study, space, [], slots=2, wanted=2, sweep_dir=tmp_path, storage_url="unused", metric=None)
    # From the kernel's side (/proc): the launch threads' own join() reaps the children, and a
    # reaped child can look alive to this thread's is_alive() (multiprocessing's waitpid race).
    deadline = time.monotonic() + 10
    while not all(process_ended(child.pid) for child in launcher.children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(launcher.children) == 2 and all(process_ended(child.pid) for child in launcher.children)
    assert time.monotonic() - started < 15


def process_ended(pid: int) -> bool:
    """The process is gone, or a zombie (it has ended; nobody has reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# --- workers sharing one study draw different parameters ----------------------------------------
# One worker of a shared study, as its own process (Optuna only): the sweeper's sampler (TPE, seed
# 0, like every other worker); it waits until all 4 are ready, then asks and tells three trials.
WORKER = """
import json, sys, time
from pathlib import Path
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from hydra_plugins.classic_cnns_sweeper.per_trial_seed import SeededPerTrial

storage, ready = sys.argv[1], Path(sys.argv[2])
sampler = SeededPerTrial(lambda seed: optuna.samplers.TPESampler(seed=seed), seed=0)
study = optuna.load_study(study_name="shared", sampler=sampler,
                          storage=storage if "://" in storage else JournalStorage(JournalFileBackend(storage)))
space = {"optimizer.lr": FloatDistribution(0.005, 0.2, log=True), "pooling": CategoricalDistribution(["max", "avg", "subsampling"])}
(ready / sys.argv[3]).touch()
while len(list(ready.iterdir())) < 4:
    time.sleep(0.01)
draws = []
for _ in range(3):
    trial = study.ask(space)
    draws.append(sorted(trial.params.items()))
    study.tell(trial, trial.params["optimizer.lr"])
print(json.dumps(draws))
"""


@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_four_workers_started_at_once_on_one_study_never_draw_the_same_parameters(backend, tmp_path, request):
    storage = str(tmp_path / "optuna.journal") if backend == "journal" else request.getfixturevalue("postgres_url")
    optuna.create_study(study_name="shared", storage=open_storage(storage), direction="maximize")
    (ready := tmp_path / "ready").mkdir()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, storage, str(ready), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), [err[-2000:] for _, err in outputs]
    every = [json.dumps(draw) for out, _ in outputs for draw in json.loads(out)]
    assert len(every) == 12 and len(set(every)) == 12
    assert [t.number for t in trials(storage, "shared")] == list(range(12))


# A worker that runs one trial and stamps its heartbeat every 0.1 s until it is killed.
RUNNING_WORKER = """
import sys, time
from pathlib import Path
import optuna
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from hydra_plugins.classic_cnns_sweeper.trial_liveness import Heartbeat

# a 1 s grace for a lock file the killed worker left (Optuna's default 30 s would stop this
# worker's 0.5 s beats for longer than the 2 s after which it is taken for dead)
lock = JournalFileSymlinkLock(sys.argv[1], grace_period=1)
study = optuna.load_study(study_name="shared", storage=JournalStorage(JournalFileBackend(sys.argv[1], lock)))
trial = study.ask({"optimizer.lr": FloatDistribution(0.005, 0.2, log=True)})
trial.set_user_attr("sweep_dir", sys.argv[2])
with Heartbeat(0.5) as heartbeat:  # dead after 4 missed beats: 2 s, robust to a loaded CI machine
    heartbeat.add(trial)
    (Path(sys.argv[2]) / "ready").touch()
    time.sleep(300)
"""


def test_a_killed_workers_trial_is_run_again_by_another_and_a_live_ones_is_not(tmp_path):
    storage = str(tmp_path / "optuna.journal")
    optuna.create_study(study_name="shared", storage=open_storage(storage), direction="maximize")
    workers = []
    for name in ("killed", "alive"):
        (tmp_path / name).mkdir()
        workers.append(
            subprocess.Popen(
                [sys.executable, "-c", RUNNING_WORKER, storage, str(tmp_path / name)], stderr=subprocess.PIPE, text=True
            )
        )
        deadline = time.monotonic() + 60
        while not (tmp_path / name / "ready").exists():  # one after the other: trial 0 is the killed worker's
            assert workers[-1].poll() is None and time.monotonic() < deadline, workers[-1].stderr.read()[-2000:]
            time.sleep(0.05)
    try:
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait()
        time.sleep(3.0)  # 6 missed beats of the killed worker; the live one keeps beating
        study = optuna.load_study(study_name="shared", storage=open_storage(storage))
        OptunaSweeper(heartbeat_s=0.5)._rerun_dead_trials(study)  # what any other search does after each trial
        assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING", "WAITING"]
        rerun = study.ask({"optimizer.lr": FloatDistribution(0.005, 0.2, log=True)})
        assert rerun.number == 2 and rerun.user_attrs["rerun_of"] == 0 and rerun.params == study.trials[0].params
    finally:
        workers[1].kill()
        workers[1].wait()


# --- whole searches ------------------------------------------------------------------------------
def test_a_killed_search_reruns_its_running_trial_and_repeats_no_parameters(data_dir, tmp_path):
    """A real kill (SIGKILL) while trial 1 runs; the same command resumes the search."""
    sweep = tmp_path / "search"
    command = [sys.executable, str(ROOT / "train.py"), *SEARCH, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "CLASSIC_CNNS_DATA_DIR": str(data_dir)}
    search = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while not (sweep / "1" / ".hydra").exists():  # trial 1 has started
        assert search.poll() is None and time.monotonic() < deadline, (
            search.stderr.read()[-3000:] if search.poll() else "timeout"
        )
        time.sleep(0.2)
    os.killpg(search.pid, signal.SIGKILL)
    search.wait()
    killed = trials(sweep / "optuna.journal")[1]
    assert killed.state.name == "RUNNING"

    again = run_cli(*command[2:], data_dir=data_dir, cwd=tmp_path)  # the same command, in this process
    assert again.returncode == 0, again.stderr[-3000:]
    after = trials(sweep / "optuna.journal")
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]  # n_trials=3 finished ones
    assert after[2].params == killed.params and after[2].user_attrs["rerun_of"] == 1  # run again, as it was
    fresh = [tuple(sorted(t.params.items())) for t in (after[0], after[1], after[3])]
    assert len(set(fresh)) == 3  # the resumed sampler did not repeat trial 0's parameters
    # the summary lists every trial of the study, the first run's too; the killed one was run again, not failed
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert [(job["trial"], job["state"], job["status"]) for job in summary] == [
        (0, "COMPLETE", "completed"),
        (1, "FAIL", "rerun"),
        (2, "COMPLETE", "completed"),
        (3, "COMPLETE", "completed"),
    ]
    assert (
        summary[1]["rerun_as"] == 2
        and summary[0]["dir"] == str(sweep / "0")
        and "optimizer.lr" in " ".join(summary[0]["overrides"])
    )
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert (
        results["trials"] == {"completed": 3, "pruned": 0, "failed": 0, "rerun": 1}
        and "optimizer.lr" in results["best_params"]
    )
    assert "3 completed, 0 pruned, 0 failed, 1 rerun" in again.stdout


def test_a_failed_trial_is_recorded_and_the_study_goes_on(data_dir, tmp_path):
    sweep = tmp_path / "search"
    poison = ["+callbacks.poison._target_=tests.test_reliability.PoisonWeightsAtEpoch", "+callbacks.poison.epoch=0"]
    result = run_cli(
        *SEARCH,
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep}",
        *poison,
        "trainer.detect_anomaly=false",
        data_dir=data_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "2 of 2 jobs failed" in result.stdout + result.stderr
    assert [t.state.name for t in trials(sweep / "optuna.journal")] == ["FAIL", "FAIL"]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert all("TrainingDivergedError" in job["error"] for job in summary)


def test_parallel_trials_on_postgresql_in_a_multi_objective_search(data_dir, tmp_path, postgres_url):
    """Two trials at once (joblib), told to a real PostgreSQL server; the Pareto front is written."""
    sweep = tmp_path / "search"
    result = run_cli(
        *SEARCH,
        *LIMITS,
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep}",
        f"hydra.sweeper.storage='{postgres_url}'",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "hydra/sweeper/sampler=nsgaii",
        "hydra.sweeper.direction=[maximize,minimize]",
        "optimized_metric=[val/acc,fit_seconds]",
        data_dir=data_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="lenet5", storage=postgres_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    first, second = study.trials
    assert second.datetime_start < first.datetime_complete  # both at once, in joblib's workers
    assert study.metric_names == ["val/acc", "fit_seconds"]
    for trial in study.trials:
        metrics = json.loads((sweep / str(trial.number) / "metrics.json").read_text())
        assert trial.values == [metrics["val/acc"], metrics["fit_seconds"]]
    front = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["pareto_front"]
    assert {t["trial"] for t in front} == {t.number for t in study.best_trials} and front


def test_a_ddp_trial_runs_once_on_two_ranks_and_a_pruned_trial_is_no_failure(data_dir, tmp_path):
    """trainer=ddp inside a search: the relaunched rank runs the trial's overrides (no search of
    its own, no run of its own), with the seed rank 0 drew (seed=null); rank 0 reports each epoch,
    the pruner stops both ranks, the trial is PRUNED. One trial: each trial's rank 1 is a new
    process (~12 s of imports here); the search's other trials are tested without DDP above."""
    sweep = tmp_path / "search"
    data = [o for o in FAST if o.startswith("data.")]
    prune_second_epoch = [o for o in PRUNE_SECOND_EPOCH if not o.startswith(("trainer.max_epochs", "hydra.sweeper.n"))]
    result = run_cli(
        "hparams_search=lenet5_optuna",
        *data,
        *LIMITS[1:],
        "trainer=ddp",
        "trainer.accelerator=cpu",
        f"hydra.sweep.dir={sweep}",
        *prune_second_epoch,
        "trainer.max_epochs=choice(3)",
        "hydra.sweeper.n_trials=1",
        "seed=null",
        data_dir=data_dir,
        cwd=tmp_path,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    seed = json.loads((sweep / "0" / "metrics.json").read_text())["seed"]
    assert isinstance(seed, int) and (result.stdout + result.stderr).count(f"Seed set to {seed}") == 2  # both ranks
    (trial,) = trials(sweep / "optuna.journal")
    assert trial.state.name == "PRUNED" and sorted(trial.intermediate_values) == [0, 1]  # stopped after epoch 2
    assert json.loads((sweep / "0" / "metrics.json").read_text())["epochs"] == 2
    assert sorted(p.name for p in tmp_path.rglob("optuna.journal")) == ["optuna.journal"]  # one search only
    assert not (tmp_path / "outputs").exists()
    assert (sweep / "0" / "train_ddp_process_1.log").exists()
    summary = [job["status"] for job in json.loads((sweep / "sweep_summary.json").read_text())]
    assert summary == ["pruned"]
    # what the user sees: the trial's own parameters, no reporting plumbing; a short result table
    shown = result.stdout + result.stderr
    assert (
        "callbacks.optuna_trial" not in shown and "CLASSIC_CNNS_OPTUNA_TRIAL" not in shown and "_target_" not in shown
    )
    assert "trial 0: " in shown
    assert not any(word in (sweep / "0" / ".hydra" / "overrides.yaml").read_text() for word in ("callbacks", "hydra."))
    assert "0 completed, 1 pruned, 0 failed, 0 rerun" in result.stdout
    assert "optuna-dashboard search/optuna.journal" in result.stdout
    assert optuna.load_study(study_name="lenet5", storage=open_storage(str(sweep / "optuna.journal"))).metric_names == [
        "val/acc"
    ]


def test_optuna_dashboard_serves_the_study(tmp_path):
    """`optuna-dashboard <storage>` on 127.0.0.1: the study and its trials through its HTTP API."""
    storage = str(tmp_path / "optuna.journal")
    study = optuna.create_study(study_name="lenet5", storage=open_storage(storage), direction="maximize")
    for value in (0.5, 0.7):
        trial = study.ask({"optimizer.lr": FloatDistribution(0.001, 0.1, log=True)})
        trial.report(value / 2, step=0)
        study.tell(trial, value)
    port = free_port()
    server = subprocess.Popen(
        [
            shutil.which(
                "optuna-dashboard", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
            ),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            storage,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        studies = get_json(f"http://127.0.0.1:{port}/api/studies", server)["study_summaries"]
        assert [(s["study_name"], s["directions"]) for s in studies] == [("lenet5", ["maximize"])]
        detail = get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", server)
        assert [t["values"] for t in detail["trials"]] == [[0.5], [0.7]]
        assert detail["trials"][1]["intermediate_values"] == [{"step": 0, "value": 0.35}]
        assert [t["number"] for t in detail["best_trials"]] == [1]
    finally:
        server.terminate()
        server.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url: str, server: subprocess.Popen, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            assert server.poll() is None, server.stderr.read()[-2000:]
            assert time.monotonic() < deadline, f"no answer from {url}"
            time.sleep(0.2)


def test_the_sweepers_read_a_failed_jobs_error_through_hydras_public_api():
    """checked_sweeper.job_error relies on JobReturn.return_value re-raising the job's exception:
    this fails loudly if a Hydra release changes that."""
    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.classic_cnns_sweeper.checked_sweeper import job_error

    error = ValueError("boom")
    assert job_error(JobReturn(status=JobStatus.FAILED, _return_value=error)) is error
    assert job_error(JobReturn(status=JobStatus.COMPLETED, _return_value=0.5)) is None


def test_a_value_on_the_command_line_fixes_or_replaces_a_searched_key():
    parser = OverridesParser.create()
    params = ["data.batch_size=choice(64, 128)", "model.dropout=interval(0.0, 0.5)", "pooling=max,avg"]
    space, fixed = search_space(
        parser.parse_overrides([*params, "data.batch_size=32", "model.dropout=interval(0.1, 0.2)"])
    )
    assert space == {"model.dropout": FloatDistribution(0.1, 0.2), "pooling": CategoricalDistribution(["max", "avg"])}
    assert fixed == ["data.batch_size=32"]
