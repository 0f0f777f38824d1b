"""README's layout names every module of the package, so the tree a newcomer reads is the real one."""

import re

from .conftest import ROOT


def test_every_module_is_in_the_readme_layout():
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1]
    named = set(re.findall(r"[\w/]*?(\w+)\.py", layout)) | set(re.findall(r"(\w+)/", layout))
    package = ROOT / "src" / "classic_cnns"
    modules = {p.stem for p in package.rglob("*.py") if p.stem != "__init__"} | {
        p.name for p in package.rglob("*") if p.is_dir() and p.name != "__pycache__"
    }
    assert modules - named == set(), "modules missing from README.md's layout"


def test_the_readme_stays_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
