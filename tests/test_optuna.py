"""hparams_search=...: the project's Optuna sweeper, offline on the tiny data."""

import json

import optuna

from .test_cli import FAST, run_cli

# the tiny training split has 200 images: batches of 32 or 64, not the search's 256 (too large an error)
SEARCH = ["hparams_search=lenet5_optuna", *FAST, "hydra.sweeper.params={data.batch_size:'32,64'}"]


def trials(sweep_dir):
    study = optuna.load_study(study_name="lenet5", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    return study.trials


def test_a_killed_search_resumes_where_it_stopped(data_dir, tmp_path):
    sweep = tmp_path / "search"
    first = run_cli(*SEARCH, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}", data_dir=data_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    study = optuna.load_study(study_name="lenet5", storage=f"sqlite:///{sweep / 'optuna.db'}")
    study.ask()  # a trial left RUNNING, as by a search killed mid-trial
    again = run_cli(*SEARCH, "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={sweep}", data_dir=data_dir, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    states = [t.state.name for t in trials(sweep)]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]  # 2 before, the stale one, 1 new: 3 done + 1 failed = 4
    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "3"]
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in best and "optimizer.lr" in best


def test_a_failed_trial_is_recorded_and_the_study_goes_on(data_dir, tmp_path):
    sweep = tmp_path / "search"
    poison = ["+callbacks.poison._target_=tests.test_reliability.PoisonWeightsAtEpoch", "+callbacks.poison.epoch=0"]
    result = run_cli(
        *SEARCH, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}", *poison,
        "trainer.detect_anomaly=false",
        data_dir=data_dir, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1 and "2 of 2 trials failed" in result.stdout + result.stderr
    assert [t.state.name for t in trials(sweep)] == ["FAIL", "FAIL"]
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert all("TrainingDivergedError" in job["error"] for job in summary)
