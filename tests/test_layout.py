"""README's layout names every module of the package, so the tree a newcomer reads is the real one;
the published results state only conclusions that scripts/report.py generated."""

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


# A line that states a conclusion: the words scripts/report.py's sentences use, and others a hand would.
CONCLUSION = re.compile(
    r"holm(-corrected)? p=|not separable|worse|better|faster|slower|outperform|\bbeats?\b|significan|needs (fewer|more) epochs",
    re.IGNORECASE,
)


def _stated(line: str) -> str:
    """The line without the phrases it names in quotes (a wording, not a result: no digits)."""
    return re.sub(r'"[^"0-9]*"', "", line)


def test_published_conclusions_are_quoted_from_the_reports():
    """docs/results.md and docs/notebooks.md hold no conclusion written by hand: every line that
    states one, and every table row with a test in it, is a line of a report.md under
    docs/results/ (scripts/report.py's output, copied)."""
    reports = {
        line.strip()
        for path in (ROOT / "docs" / "results").glob("*/report.md")
        for line in path.read_text().splitlines()
    }
    quoted = 0
    for page in ("results.md", "notebooks.md"):
        for line in (ROOT / "docs" / page).read_text().splitlines():
            if CONCLUSION.search(_stated(line)):
                assert line.strip() in reports, f"docs/{page}: a conclusion no report generated: {line.strip()}"
                quoted += 1
    assert quoted >= 3  # the re-run studies' conclusions are there


def test_the_conclusion_check_catches_what_a_hand_would_write():
    for line in (
        "ReLU learns six times faster than tanh.",
        "Batch norm is Significantly ahead.",
        'The report says "pooling=avg is worse than pooling=max (test accuracy -0.0014, Holm-corrected p=0.016)."',
        "| pooling=avg | 5 | -0.0014, p=0.008, Holm p=0.016: **yes** |",
        "LRN beats no normalization here.",
    ):
        assert CONCLUSION.search(_stated(line)), line
    assert not CONCLUSION.search(_stated('the sentence is generated: "not separable with N seeds" (not proven equal)'))


def test_every_report_the_results_cite_is_there():
    cited = set(re.findall(r"docs/results/([\w-]+)/", (ROOT / "docs" / "results.md").read_text()))
    assert cited and {name for name in cited if not (ROOT / "docs" / "results" / name / "report.md").exists()} == set()
