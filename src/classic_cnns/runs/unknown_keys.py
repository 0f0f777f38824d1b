""" "Did you mean ...?" for an override whose key the config does not have (`trainer.max_epoch=3`).

Hydra composes the config before any of the project's code runs, and answers such a key with
"Key 'max_epoch' is not in struct" and the advice to add it with `+`; it is almost always a typo.
After Hydra's message, `hint_unknown_keys` names the closest key the config does have.
"""

import difflib
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

_ABSENT = object()


def _keys(node, prefix: str = "") -> list[str]:
    """Every dotted key of a config, inner nodes included."""
    keys = []
    for key, value in node.items_ex(resolve=False) if isinstance(node, DictConfig) else ():
        name = f"{prefix}{key}"
        keys.append(name)
        if isinstance(value, DictConfig):
            keys += _keys(value, f"{name}.")
    return keys


def closest_keys(config_dir: Path, config_name: str, overrides: Sequence[str]) -> dict[str, str]:
    """{unknown key: the config's closest key} for every override (not `+`, `++` or `~`) whose key
    neither the config (composed with the command line's group choices) nor conf/ has."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:  # a syntax error: Hydra's own message says it
        return {}
    groups = {p.name for p in config_dir.iterdir() if p.is_dir()}
    choices = [o.input_line for o in parsed if o.key_or_group in groups or "/" in o.key_or_group]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=choices, return_hydra_config=True)
    except HydraException:  # a bad group choice: Hydra's message lists the options
        return {}
    finally:
        GlobalHydra.instance().clear()
    known = _keys(cfg) + sorted(groups)
    found = {}
    for override in parsed:
        key = override.key_or_group
        if override.is_add() or override.is_force_add() or override.is_delete() or key in groups or "/" in key:
            continue
        if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False) is not _ABSENT:
            continue
        match = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
        if match:
            found[key] = match[0]
    return found


@contextmanager
def hint_unknown_keys(config_dir: Path, config_name: str) -> Iterator[None]:
    """Around a Hydra main: when it exits with status 1, one line per override whose key the
    config lacks, naming the closest key it has (composing costs time only on that path)."""
    try:
        yield
    except SystemExit as exit:
        if exit.code == 1:
            overrides = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
            for key, match in closest_keys(config_dir, config_name, overrides).items():
                print(f"did you mean {match}? The config has no key {key} (+{key}=... would add one).", file=sys.stderr)
        raise
