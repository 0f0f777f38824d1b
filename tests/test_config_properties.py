"""Property test of the config checks (issue 23, item 6): for every row of the check table
(runs/config_checks.py CHECKS), generated wrong values (wrong type, out of range, NaN/inf,
empty, huge) are refused before Hydra makes the run dir, in one line naming the key, exit 1.

The wrong values come from each row's `kind` (the generators below, one per kind): a new row
of a known kind is covered as it stands; a new kind fails test_every_kind_has_a_generator."""

import copy
import math
import shutil

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf, open_dict

from classic_cnns.runs.config_checks import CHECKS, ConfigError, require_visible_gpu, validate

from .conftest import CONF_DIR, ROOT, run_command

NOT_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
WRONG_TYPES = st.one_of(
    st.text(max_size=4),
    st.just(""),
    st.just([]),
    st.lists(st.text(max_size=2), min_size=1, max_size=2),
    st.just({"a": 1}),
)
HUGE = st.integers(min_value=2**64, max_value=2**80)


def _ints(minimum, maximum, optional):
    return st.one_of(
        st.integers(max_value=minimum - 1),
        st.integers(min_value=maximum + 1) if maximum is not None else st.nothing(),
        HUGE,
        st.floats(allow_nan=True).filter(lambda v: not float(v).is_integer() if math.isfinite(v) else True),
        st.booleans(),
        WRONG_TYPES,
        *([] if optional else [st.none()]),
    )


def _numbers(low, high, low_open, high_open):
    below = st.floats(max_value=low, exclude_max=not low_open, allow_nan=False) if math.isfinite(low) else st.nothing()
    above = st.floats(min_value=high, exclude_min=not high_open, allow_nan=False) if high is not None else st.nothing()
    return st.one_of(below, above, NOT_FINITE, st.booleans(), st.none(), WRONG_TYPES)


def _lists(low, low_open):
    bad_item = _numbers(low, None, low_open, False)
    return st.one_of(
        st.just([]),
        st.lists(bad_item, min_size=1, max_size=3),
        st.none(),
        st.floats(),
        WRONG_TYPES.filter(lambda v: v != []),
    )


def _names(names):
    return st.one_of(
        st.text(max_size=8).filter(lambda v: v not in names),
        st.integers(-5, 5).filter(lambda v: v not in names),
        st.none(),
        NOT_FINITE,
        st.just([]),
    )


# kind -> generator of values a row of that kind must refuse
WRONG = {
    "int": _ints,
    "number": _numbers,
    "numbers": _lists,
    "one_of": _names,
    "one_of_or_int": lambda names, minimum, maximum: st.one_of(
        _names(names).filter(
            lambda v: not (isinstance(v, int) and not isinstance(v, bool) and minimum <= v <= maximum)
        ),
        _ints(minimum, maximum, optional=True),
    ),
    "bool": lambda optional: st.one_of(
        st.integers(), st.text(max_size=3), NOT_FINITE, *([] if optional else [st.none()])
    ),
    "devices": lambda: st.one_of(
        st.just(0),
        st.integers(max_value=-2),
        st.just([]),
        st.lists(st.integers(max_value=-1), min_size=1, max_size=2),
        st.sampled_from(["", "0", "abc", "gpu"]),
        st.floats(),
        st.none(),
        st.booleans(),
    ),
    "batch_limit": lambda: st.one_of(
        st.integers(max_value=-1),
        st.floats(min_value=1.0, exclude_min=True),
        st.floats(max_value=0.0, exclude_max=True),
        NOT_FINITE,
        st.booleans(),
        WRONG_TYPES,
    ),
}


def wrong_values(key):
    kind, *parameters = CHECKS[key].kind
    return WRONG[kind](*parameters)


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """`python train.py` with the GPU-free trainer, its Hydra config included (the callback reads it)."""
    run_dir = tmp_path_factory.mktemp("properties") / "run"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=cpu", f"hydra.run.dir={run_dir}"], return_hydra_config=True)
        predict = compose("predict", overrides=["ckpt_path=x", "inputs=y"])
    (callback,) = [instantiate(c) for c in cfg.hydra.callbacks.values()]
    return cfg, predict, callback, run_dir


def test_every_kind_has_a_generator():
    assert {rule.kind[0] for rule in CHECKS.values()} <= WRONG.keys()


@pytest.mark.parametrize("key", sorted(CHECKS))
def test_a_wrong_value_of_any_key_is_one_line_naming_it_before_the_run_dir(composed, key):
    cfg, predict, callback, run_dir = composed
    base = predict if key == "topk" else cfg

    @settings(max_examples=6, deadline=None, derandomize=True)
    @given(value=wrong_values(key))
    def refused(value):
        bad = copy.deepcopy(base)
        with open_dict(bad):
            OmegaConf.update(bad, key, value, merge=False, force_add=True)  # as an override: the value replaced
        if key == "topk":  # scripts/predict.py validates its own config
            with pytest.raises(ConfigError) as error:
                validate(bad)
            message = str(error.value)
        else:
            with pytest.raises(SystemExit) as exit:
                callback.on_run_start(config=bad)  # what Hydra calls before it makes the run dir
            message = str(exit.value.code)
            assert message.startswith("error: ")
        made = run_dir.exists()
        shutil.rmtree(run_dir, ignore_errors=True)  # so that one miss does not hide behind the next example
        assert f"{key}=" in message and "\n" not in message, message
        assert not made

    refused()


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=8589934592", "seed=8589934592 is not allowed: use null or an integer from 0 to 4294967295"),
        ("optimizer.momentum=-1", r"optimizer.momentum=-1 is not allowed: use a number in \[0, 1\)"),
        ("optimizer.weight_decay=abc", "optimizer.weight_decay='abc' is not allowed: use a finite number >= 0"),
        ("optimizer.lr=inf", "optimizer.lr=inf is not allowed: use a finite number > 0"),
        ("scheduler.max_lr=-1", "scheduler.max_lr=-1 is not allowed: use a finite number > 0"),
        ("data.std=[0]", r"data.std=\[0\] is not allowed: use a list of one or more finite numbers > 0"),
        ("data.eval_batch_size=0", "data.eval_batch_size=0 is not allowed: use an integer from 1 to 1000000000"),
        ("trainer.precision=abc", "trainer.precision='abc' is not allowed: use one of: 64-true, 32-true"),
        ("trainer.devices=0", "trainer.devices=0 is not allowed: use auto, an integer >= 1"),
        ("trainer.limit_train_batches=-1", "trainer.limit_train_batches=-1 is not allowed"),
        ("+trainer.foo=1", "trainer.foo=1 is not an argument of lightning.pytorch.Trainer"),
    ],
)
def test_the_values_found_wrong_in_the_issue_are_one_line(override, message):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=cpu", override])
    with pytest.raises(ConfigError, match=message) as error:
        validate(cfg)
    assert "\n" not in str(error.value)


def test_trainer_gpu_without_a_gpu_names_the_fix(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    cfg = OmegaConf.create({"trainer": {"accelerator": "gpu"}})
    with pytest.raises(
        ConfigError, match=r"trainer.accelerator=gpu but no GPU is visible on this machine .*: use trainer=cpu"
    ):
        require_visible_gpu(cfg)


def test_the_command_line_exits_1_with_one_line_and_no_run_dir(tmp_path):
    done = run_command(ROOT / "train.py", "optimizer.momentum=nan", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: invalid config: optimizer.momentum=nan is not allowed: use a number in [0, 1)"
    assert not (tmp_path / "run").exists()
