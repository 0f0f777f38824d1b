"""The one table of config groups and run keys (runs/config_keys.py) covers the config, and
every list the run machinery keeps is read off it."""

import re

import yaml
from omegaconf import OmegaConf

from classic_cnns.runs import config_checks, resume, tensorboard_record
from classic_cnns.runs.config_keys import BUILT, KEYS, SAME_ON_RESUME, STUDIED, WHERE, keys_with

from .conftest import CONF_DIR


def test_every_config_group_has_a_row():
    groups = {path.name for path in CONF_DIR.iterdir() if path.is_dir()}
    assert groups - KEYS.keys() == set(), "a folder of conf/ without a row in runs/config_keys.py"


def test_every_row_names_a_key_of_the_config_or_a_group(make_cfg):
    cfg = make_cfg()
    groups = {path.name for path in CONF_DIR.iterdir() if path.is_dir()}
    options_of = {group: [OmegaConf.load(path) for path in (CONF_DIR / group).glob("*.yaml")] for group in groups}
    for key in KEYS:
        if key in groups or key.startswith("trainer."):  # trainer.max_steps & co: Trainer arguments that may be unset
            continue
        group, _, rest = key.partition(".")
        options = options_of.get(group, [])
        in_default = OmegaConf.select(cfg, key, default="<absent>", throw_on_resolution_failure=False) != "<absent>"
        assert in_default or any(rest in option for option in options), key  # data.decode: data=imagefolder's


def test_the_layer_choices_are_studied_and_fixed_on_resume():
    """A group that the `layers:` node reads (a layer choice) is what a study varies and what a
    checkpoint's weights mean: both roles come from its row."""
    layers = yaml.safe_load((CONF_DIR / "train.yaml").read_text())["layers"]
    read = {match for value in layers.values() for match in re.findall(r"\$\{(\w+)\.", str(value))}
    assert read == {"pooling", "padding", "activation", "norm"}
    for group in read:
        assert {STUDIED, SAME_ON_RESUME} <= KEYS[group], group


def test_the_run_machinery_reads_its_lists_off_the_table():
    assert tensorboard_record.EXPERIMENT_GROUPS == keys_with(STUDIED)
    assert tensorboard_record.INFRASTRUCTURE == keys_with(WHERE)
    assert resume.SAME_AS_CHECKPOINT == keys_with(SAME_ON_RESUME)
    assert config_checks.INSTANTIATED == keys_with(BUILT) == ("model", "data", "optimizer", "scheduler")
