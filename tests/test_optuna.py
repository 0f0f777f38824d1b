"""hparams_search=...: the project's Optuna sweeper, offline on the tiny data."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
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
LIMITS = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
# Two trials whose outcome is known: a 1-epoch trial completes (its one report is within the
# pruner's warm-up); a 3-epoch trial is pruned after its second epoch (val/acc < 1.01 always)
# and stops there, without its third.
PRUNE_SECOND_EPOCH = [
    "hydra.sweeper.params=null", "trainer.max_epochs=choice(1, 3)", "hydra/sweeper/sampler=grid",
    "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner", "+hydra.sweeper.pruner.lower=1.01",
    "+hydra.sweeper.pruner.n_warmup_steps=1", "hydra.sweeper.n_trials=2",
]  # fmt: skip


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
        ("x=float(0.1, 0.2)", "old syntax.*interval"),  # Hydra's grammar would read a choice of 2 values
        ("x=range(5, 1)", "range is empty"),
        ("x=tag(log, range(0.1, 1.0, 0.1))", "log scale takes interval"),
        ("x=glob(*)", "not a search space"),
    ],
)
def test_a_search_space_it_cannot_map_is_one_clear_error(override, message):
    (parsed,) = OverridesParser.create().parse_overrides([override])
    with pytest.raises(ConfigError, match=message):
        distribution(parsed)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["hparams_search=lenet5_optuna", "optimizer.lr=interval(0.1, 0.01)"], "interval(a, b) needs a < b"),
        (["-m", "optimizer.lr=interval(0.1, 0.2)"], "a grid sweep takes lists"),
    ],
)
def test_a_bad_search_space_stops_before_the_first_job_in_one_line(overrides, message, data_dir, tmp_path):
    done = run_cli(*overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}", data_dir=data_dir, cwd=tmp_path)
    assert done.returncode == 1
    assert message in done.stderr + done.stdout
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "sweep" / "0").exists()


def test_the_old_syntax_in_a_config_stops_before_anything_is_parsed():
    sweeper = OptunaSweeper(params={"optimizer.lr": "float(0.005, 0.2, log)"})
    with pytest.raises(ConfigError, match=r"optimizer.lr=float\(0.005, 0.2, log\): .*old syntax.*tag\(log, interval"):
        sweeper.parse([])


# --- samplers, pruners and parallel trials as config choices ----------------------------------
@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "grid", "nsgaii"])
def test_every_sampler_is_a_config_choice_seeded_by_the_sweeper(sampler):
    cfg = compose_search(f"hydra/sweeper/sampler={sampler}").hydra.sweeper.sampler
    grid = {"search_space": {"pooling": ["max", "avg"]}} if sampler == "grid" else {}
    first, second = (instantiate(cfg, seed=3, **grid) for _ in range(2))
    assert type(first).__name__.lower().startswith(sampler.replace("nsgaii", "nsgaiisampler"))
    space = {"x": FloatDistribution(0, 1)} if sampler != "grid" else {"pooling": CategoricalDistribution(["max", "avg"])}
    draws = []
    for one in (first, second):  # the same seed draws the same first trial
        study = optuna.create_study(sampler=one)
        draws.append(study.ask(space).params)
    assert draws[0] == draws[1]


@pytest.mark.parametrize("pruner, kind", [("none", "NopPruner"), ("median", "MedianPruner"), ("hyperband", "HyperbandPruner")])
def test_every_pruner_is_a_config_choice(pruner, kind):
    assert type(instantiate(compose_search(f"hydra/sweeper/pruner={pruner}").hydra.sweeper.pruner)).__name__ == kind


@pytest.mark.parametrize(
    "launcher, expected",
    [([], 1), (["hydra/launcher=parallel", "hydra.launcher.n_jobs=3"], 3), (["hydra/launcher=slurm", "hydra.launcher.array_parallelism=6"], 6)],
    ids=["basic", "parallel", "slurm"],
)
def test_trials_at_once_default_to_the_launchers_parallelism(launcher, expected):
    assert launcher_parallelism(compose_search(*launcher).hydra.launcher) == expected


# --- whole searches ------------------------------------------------------------------------------
def test_a_killed_search_reruns_its_running_trial_and_repeats_no_parameters(data_dir, tmp_path):
    """A real kill (SIGKILL) while trial 1 runs; the same command resumes the search."""
    sweep = tmp_path / "search"
    command = [sys.executable, str(ROOT / "train.py"), *SEARCH, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "CLASSIC_CNNS_DATA_DIR": str(data_dir)}
    search = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 180
    while not (sweep / "1" / ".hydra").exists():  # trial 1 has started
        assert search.poll() is None and time.monotonic() < deadline, search.stderr.read()[-3000:] if search.poll() else "timeout"
        time.sleep(0.2)
    os.killpg(search.pid, signal.SIGKILL)
    search.wait()
    killed = trials(sweep / "optuna.journal")[1]
    assert killed.state.name == "RUNNING"

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    after = trials(sweep / "optuna.journal")
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]  # n_trials=3 finished ones
    assert after[2].params == killed.params and after[2].user_attrs["rerun_of"] == 1  # run again, as it was
    fresh = [tuple(sorted(t.params.items())) for t in (after[0], after[1], after[3])]
    assert len(set(fresh)) == 3  # the resumed sampler did not repeat trial 0's parameters
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["trials"] == {"COMPLETE": 3, "PRUNED": 0, "FAIL": 1} and "optimizer.lr" in results["best_params"]


def test_a_failed_trial_is_recorded_and_the_study_goes_on(data_dir, tmp_path):
    sweep = tmp_path / "search"
    poison = ["+callbacks.poison._target_=tests.test_reliability.PoisonWeightsAtEpoch", "+callbacks.poison.epoch=0"]
    result = run_cli(
        *SEARCH, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}", *poison,
        "trainer.detect_anomaly=false",
        data_dir=data_dir, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1 and "2 of 2 jobs failed" in result.stdout + result.stderr
    assert [t.state.name for t in trials(sweep / "optuna.journal")] == ["FAIL", "FAIL"]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert all("TrainingDivergedError" in job["error"] for job in summary)


def test_parallel_trials_on_postgresql_in_a_multi_objective_search(data_dir, tmp_path, postgres_url):
    """Two trials at once (joblib), told to a real PostgreSQL server; the Pareto front is written."""
    sweep = tmp_path / "search"
    result = run_cli(
        *SEARCH, *LIMITS, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}", f"hydra.sweeper.storage='{postgres_url}'",
        "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "hydra/sweeper/sampler=nsgaii",
        "hydra.sweeper.direction=[maximize,minimize]", "optimized_metric=[val/acc,fit_seconds]",
        data_dir=data_dir, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr  # both trials launched as one batch
    study = optuna.load_study(study_name="lenet5", storage=postgres_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        metrics = json.loads((sweep / str(trial.number) / "metrics.json").read_text())
        assert trial.values == [metrics["val/acc"], metrics["fit_seconds"]]
    front = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["pareto_front"]
    assert {t["trial"] for t in front} == {t.number for t in study.best_trials} and front


def test_a_ddp_trial_runs_once_on_two_ranks_and_a_pruned_trial_is_no_failure(data_dir, tmp_path):
    """trainer=ddp inside a search: the relaunched rank runs the trial's overrides (no search of
    its own); rank 0 reports each epoch, the pruner stops both ranks, the trial is PRUNED."""
    sweep = tmp_path / "search"
    data = [o for o in FAST if o.startswith("data.")]
    result = run_cli(
        "hparams_search=lenet5_optuna", *data, *LIMITS[1:], "trainer=ddp", "trainer.accelerator=cpu",
        f"hydra.sweep.dir={sweep}", *PRUNE_SECOND_EPOCH, data_dir=data_dir, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    done = trials(sweep / "optuna.journal")
    assert {t.params["trainer.max_epochs"]: t.state.name for t in done} == {1: "COMPLETE", 3: "PRUNED"}
    assert {t.params["trainer.max_epochs"]: sorted(t.intermediate_values) for t in done} == {1: [0], 3: [0, 1]}
    assert sorted(p.name for p in tmp_path.rglob("optuna.journal")) == ["optuna.journal"]  # one search only
    assert not (tmp_path / "outputs").exists()
    for trial in done:
        assert (sweep / str(trial.number) / "train_ddp_process_1.log").exists()
    summary = {job["trial"]: job["status"] for job in json.loads((sweep / "sweep_summary.json").read_text())}
    assert sorted(summary.values()) == ["completed", "pruned"]


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
        [shutil.which("optuna-dashboard", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])),
         "--host", "127.0.0.1", "--port", str(port), storage],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
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
    space, fixed = search_space(parser.parse_overrides([*params, "data.batch_size=32", "model.dropout=interval(0.1, 0.2)"]))
    assert space == {"model.dropout": FloatDistribution(0.1, 0.2), "pooling": CategoricalDistribution(["max", "avg"])}
    assert fixed == ["data.batch_size=32"]
