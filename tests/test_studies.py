"""The experiment=study_* and hparams_search=* sweeps: every job composes, validates and builds."""

import itertools
import json
import math
import re
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from classic_cnns.runs.config_checks import ConfigError, check_network_builds, validate
from classic_cnns.runs.train import train
from classic_cnns.tools.sweep_report import write_report
from hydra_plugins.classic_cnns_sweeper.checked_sweeper import CheckedSweeper, choose

from .conftest import CONF_DIR
from .test_cli import FAST, run_cli

STUDIES = sorted(p.stem for p in (CONF_DIR / "experiment").glob("study_*.yaml"))
SEARCHES = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))
OPTUNA_RANGE = re.compile(r"^(?:float|int)\(\s*([^,]+),\s*([^,)]+)")  # float(LOW, HIGH[, log]): both ends


def _values(parser: OverridesParser, key: str, spec: str) -> list[str]:
    """The values a sweep takes for `key`: every one of a list, both ends of a range."""
    match = OPTUNA_RANGE.match(spec.strip())
    if match:
        return [value.strip() for value in match.groups()]
    override = parser.parse_override(f"{key}={spec}")
    if override.is_discrete_sweep():
        return list(override.sweep_string_iterator())
    if override.is_sweep_override():  # interval(LOW, HIGH)
        return [str(override.value().start), str(override.value().end)]
    return [override.get_value_element_as_str()]


def _jobs(group: str, name: str) -> list[list[str]]:
    """Every job of a study's grid (seeds left out: a seed cannot change a shape); for a search,
    every combination of its choices with all ranges at their low ends and at their high ends."""
    cfg = compose("train", overrides=[f"{group}={name}"], return_hydra_config=True)
    parser = OverridesParser.create()
    grid, ranges = [], []
    for key, spec in cfg.hydra.sweeper.params.items():
        if key == "seed":
            continue
        values = [f"{key}={value}" for value in _values(parser, key, str(spec))]
        (ranges if OPTUNA_RANGE.match(str(spec).strip()) or "interval(" in str(spec) else grid).append(values)
    ends = [list(end) for end in zip(*ranges)] or [[]]
    return [[f"{group}={name}", *job, *end] for job in itertools.product(*grid) for end in ends]


@pytest.mark.parametrize(
    "group, name", [("experiment", s) for s in STUDIES] + [("hparams_search", s) for s in SEARCHES]
)
def test_every_job_of_every_study_and_search_composes_validates_and_builds(group, name):
    """Each job's network is built on the meta device (shapes only), as the checked sweeper does
    before the first job of a sweep starts."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        jobs = _jobs(group, name)
        parser = OverridesParser.create()
        assert len(jobs) >= 2
        for job in jobs:
            cfg = compose("train", overrides=job, return_hydra_config=True)
            validate(cfg)
            check_network_builds(cfg)
            choices = cfg.hydra.runtime.choices
            for key, value in (override.split("=", 1) for override in job[1:]):  # each job gets its values
                if key in choices:
                    assert choices[key] == value
                else:
                    assert (
                        OmegaConf.select(cfg, key) == parser.parse_override(f"{key}={value}").value()
                    )  # as Hydra reads it


@pytest.mark.parametrize("study", STUDIES)
def test_studies_with_lenet5_repeat_over_5_seeds_the_alexnet_ones_over_3(study):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={study}"], return_hydra_config=True)
    networks = str(cfg.hydra.sweeper.params.get("model", cfg.hydra.runtime.choices.model))
    assert cfg.hydra.sweeper.params.seed == ("0,1,2,3,4" if "lenet5" in networks else "0,1,2")


@pytest.mark.parametrize(
    "overrides, problem",
    [
        (["model=alexnet", "padding=valid"], "a 32x32 input is too small"),  # the padding study's old AlexNet jobs
        (["pooling.kernel_size=8"], "a 28x28 input is too small"),
    ],
)
def test_a_network_that_cannot_be_built_is_a_config_error_naming_the_fix(make_cfg, overrides, problem):
    with pytest.raises(
        ConfigError,
        match=f"cannot be built: {problem}.*Use a larger data.image_size, padding=same or a smaller pooling",
    ):
        check_network_builds(make_cfg(*overrides))


def test_activation_study_runs_alexnet_without_any_regularization_as_in_the_paper(make_cfg):
    cfg = make_cfg("experiment=study_activation", "activation=tanh")
    assert (
        cfg.model._target_.endswith("AlexNet")
        and cfg.model.layers.norm == "none"
        and cfg.model.layers.activation == "tanh"
    )
    assert cfg.model.dropout == 0 and cfg.optimizer.weight_decay == 0
    assert cfg.data.crop_padding == 0 and not cfg.data.horizontal_flip
    assert (
        cfg.scheduler == {} and cfg.trainer.max_epochs == 30
    )  # constant lr: epochs to the target do not depend on max_epochs


def test_activation_study_stops_each_run_once_training_accuracy_reaches_the_target(make_cfg, tmp_path):
    train(
        make_cfg(
            "experiment=study_activation", "trainer.max_epochs=3", "callbacks.early_stopping.stopping_threshold=0.0"
        )
    )
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["epochs"] == 1


@pytest.mark.parametrize("experiment, model", [("lenet5_fast", "LeNet5"), ("alexnet_fast", "AlexNet")])
def test_fast_configs_validate_once_at_the_end_and_test_the_final_model(make_cfg, experiment, model):
    cfg = make_cfg(f"experiment={experiment}")
    validate(cfg)
    assert cfg.model._target_.endswith(model) and cfg.model.layers.norm == "batch"
    assert cfg.trainer.check_val_every_n_epoch == cfg.trainer.max_epochs  # once, after the last epoch
    assert cfg.callbacks.views is None and cfg.callbacks.model_checkpoint.monitor == "val/acc"


def test_checked_sweeper_builds_every_network_before_the_first_job_starts(data_dir, tmp_path):
    result = run_cli("-m", "pooling.kernel_size=2,8", *FAST, data_dir=data_dir, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "job 1 (pooling.kernel_size=8 trainer=debug" in output  # the job: its number and overrides
    assert "the network cannot be built: a 28x28 input is too small" in output
    assert "Use a larger data.image_size, padding=same or a smaller pooling" in output
    assert not list(tmp_path.glob("outputs/multirun/*/*/0"))  # job 0 (kernel size 2, valid) never started


def test_lrn_study_records_the_divisor_spread_of_the_kept_weights_and_other_runs_do_not(make_cfg, tmp_path):
    """The LRN study's diagnostic is a callback it switches on, not part of every run."""
    overrides = [
        "model=alexnet",
        "norm=lrn",
        "model.widths=[16,32,32,32,32]",
        "model.hidden_features=64",
        "trainer.limit_train_batches=1",
    ]
    spread = "+callbacks.lrn_divisor_spread={_target_:classic_cnns.runs.callbacks.LRNDivisorSpread}"
    train(make_cfg(*overrides, spread, output_dir=tmp_path / "study"))
    metrics = json.loads((tmp_path / "study" / "metrics.json").read_text())
    assert {"lrn1/divisor_median", "lrn1/divisor_max", "lrn2/divisor_median", "lrn2/divisor_max"} <= metrics.keys()
    assert 1.0 <= metrics["lrn1/divisor_median"] <= metrics["lrn1/divisor_max"]  # divisor / k^beta, k=2
    train(make_cfg(*overrides, output_dir=tmp_path / "plain"))
    assert not any(key.startswith("lrn") for key in json.loads((tmp_path / "plain" / "metrics.json").read_text()))
    study = OmegaConf.load(CONF_DIR / "experiment" / "study_lrn.yaml")
    assert study.callbacks.lrn_divisor_spread._target_ == "classic_cnns.runs.callbacks.LRNDivisorSpread"


def test_a_tuned_sweep_searches_first_and_each_job_trains_at_the_value_chosen_on_validation(data_dir, tmp_path):
    """hydra.sweeper.tune: the search's jobs (its seed, its epochs) run in search/, the value with
    the best validation accuracy is chosen, and the grid's job trains at it."""
    tune = "hydra.sweeper.tune={params:{optimizer.lr:'0.0001,0.05'},per:[pooling],overrides:['seed=100']}"
    # the compared seeds in hydra.sweeper.params, as a study config has them: the search runs on its
    # own seed once, not once per compared seed
    params = "hydra.sweeper.params={seed:'0'}"
    result = run_cli("-m", params, "pooling=max", tune, *FAST, data_dir=data_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    searched = []
    assert len(list((sweep / "search").glob("[0-9]*"))) == 2  # one job per searched value
    for job in sorted((sweep / "search").glob("[0-9]*")):
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        assert "seed=100" in overrides and "seed=0" not in overrides  # the search's seed, not a compared one
        val_acc = json.loads((job / "metrics.json").read_text())["val/acc"]
        searched.append((val_acc, [o for o in overrides if "lr=" in o][0]))
    assert sorted(lr for _, lr in searched) == ["optimizer.lr=0.0001", "optimizer.lr=0.05"]
    best = max(searched)[1] if searched[0][0] != searched[1][0] else searched[0][1]  # a tie: the first
    (choice,) = json.loads((sweep / "search" / "choice.json").read_text())["choices"]
    assert choice["group"] == {"pooling": "max"} and choice["chosen"] == [best]
    job_overrides = OmegaConf.load(sweep / "0" / ".hydra" / "overrides.yaml")
    assert best in job_overrides and "seed=0" in job_overrides
    assert OmegaConf.load(sweep / "0" / ".hydra" / "config.yaml").optimizer.lr == float(best.split("=")[1])
    assert f"search: pooling=max: {best}" in result.stdout
    assert (
        f"- pooling=max: **{best}**" in (write_report(sweep) / "report.md").read_text()
    )  # the report says what was chosen


def grid_sweeper(params: dict) -> CheckedSweeper:
    sweeper = CheckedSweeper(params=OmegaConf.create(params))
    sweeper.hydra_context = SimpleNamespace(config_loader=None)  # what parsing needs of setup()
    return sweeper


def test_seeds_on_the_command_line_replace_a_studys_seeds():
    """Not each of them once per seed of the study (30 jobs instead of 10, 2026-12-03)."""
    params = OmegaConf.load(CONF_DIR / "experiment" / "study_activation.yaml").hydra.sweeper.params
    for seeds in ("seed", "++seed"):
        jobs = list(itertools.product(*grid_sweeper(params).grid([f"{seeds}=0,1,2,3,4", "trainer=cpu"])))
        assert sorted(jobs) == [
            (f"activation={a}", f"{seeds}={seed}", "trainer=cpu") for a in ("relu", "tanh") for seed in range(5)
        ]


sweep_values = st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True).map(lambda v: ",".join(map(str, v)))
sweep_keys = st.sampled_from(
    ["seed", "++seed", "pooling", "model.widths", "+model.c1_padding", "optimizer.lr", "data@x"]
)


@settings(max_examples=200, deadline=None)
@given(
    params=st.dictionaries(sweep_keys.filter(lambda k: not k.startswith("+")), sweep_values, max_size=4),
    arguments=st.lists(st.tuples(sweep_keys, sweep_values), max_size=5),
)
def test_of_a_key_given_twice_the_last_values_count_and_no_job_repeats(params, arguments):
    """Any mix of hydra.sweeper.params and command-line overrides, keys repeated among them: the
    grid has each key once, in its first place, with its last values, as Hydra's BasicSweeper."""
    given_in_order = [*params.items(), *arguments]
    expected = {}
    for key, values in given_in_order:
        expected[key.lstrip("+")] = [f"{key}={value}" for value in values.split(",")]  # ++seed= sets seed
    grid = grid_sweeper(params).grid([f"{key}={values}" for key, values in arguments])
    assert grid == list(expected.values())
    jobs = list(itertools.product(*grid))
    assert len(jobs) == len(set(jobs)) == math.prod(len(values) for values in expected.values())


outcome_scores = st.one_of(st.none(), st.just(math.nan), st.floats(0, 1))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["standard", "paper", "other"]),
        st.dictionaries(
            st.sampled_from(["lr=0.1", "lr=0.01", "lr=0.001"]),
            st.lists(outcome_scores, min_size=1, max_size=3),
            min_size=1,
        ),
        min_size=1,
    )
)
def test_the_search_chooses_each_groups_best_mean_and_a_failed_job_never_beats_a_finished_one(table):
    outcomes = [((g,), (c,), s) for g, candidates in table.items() for c, scores in candidates.items() for s in scores]
    for maximize in (True, False):
        chosen = choose(outcomes, maximize)
        assert chosen.keys() == {(g,) for g in table}
        for (group,), ((best,), means) in chosen.items():
            candidates = table[group]
            finished = {
                c for c, scores in candidates.items() if all(s is not None and not math.isnan(s) for s in scores)
            }
            if finished:
                assert best in finished
                values = {c: sum(candidates[c]) / len(candidates[c]) for c in finished}
                target = max(values.values()) if maximize else min(values.values())
                assert math.isclose(values[best], target, abs_tol=1e-12)
            else:
                assert not math.isfinite(means[(best,)])  # the sweeper stops: every value failed


def test_the_lrn_study_tunes_the_learning_rate_per_input_scale_and_normalization_on_other_seeds():
    """Issue 26: 0-255 inputs fed at the rate chosen for unit-variance inputs confound none vs LRN."""
    study = OmegaConf.load(CONF_DIR / "experiment" / "study_lrn.yaml").hydra.sweeper
    assert list(study.tune.per) == ["data.scale", "norm"]
    assert len(str(study.tune.params["optimizer.lr"]).split(",")) >= 3
    (seed,) = [o for o in study.tune.overrides if o.startswith("seed=")]
    assert seed.split("=")[1] not in str(study.params.seed).split(",")
