"""scripts/gpu_acceptance.py: its dry mode runs every step, tiny, on the CPU; its plan and its
time budget keep a command inside the GPU machine's window."""

import importlib.util
import sys
import time

import pytest

from .conftest import ROOT, run_command


@pytest.fixture(scope="module")
def acceptance():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", ROOT / "scripts" / "gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_acceptance"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_acceptance"]


# Each part as a test of its own: the parts take 10-40 s each, and pytest-xdist can share them out.
@pytest.mark.parametrize(
    "part, expected",
    [
        (
            "checks",
            {
                "a killed run resumes to the uninterrupted run's metrics": True,
                "hydra/launcher=per_gpu gives each job its own GPU": None,  # needs GPUs, says so
            },
        ),
        (
            "bench",
            {
                "benchmark: lenet5_fast GPU candidates": True,
                "benchmark: JPEG decoding, workers vs the GPU": True,
                "benchmark: AlexNet on CIFAR-10 (alexnet_fast)": None,  # the LeNet-5 benchmark's steps, on a GPU only
            },
        ),
        ("sweep", {"the 12-job sweep, parallel and sequential": True}),
    ],
)
def test_dry_mode_runs_every_step_of_a_part_and_writes_the_summary(acceptance, data_dir, tmp_path, part, expected):
    doc = tmp_path / "benchmarks.md"
    run = acceptance.Acceptance(tmp_path / "out", data_dir, doc, dry=True, repeats=1, budget_s=600)
    if part == "sweep":  # its driver runs in this process (a new one pays ~12 s of imports); the kill check's cannot

        def cli(*args, run_dir=None):
            start = time.perf_counter()
            done = run_command(ROOT / "train.py", *run.cli_args(*args, run_dir=run_dir), cwd=run.out)
            return done, time.perf_counter() - start

        run.cli = cli
    assert run.all(part), [s for s in run.steps if s.ok is False]
    ran = {s.name: s.ok for s in run.steps}
    assert set(ran) == {name for name, _ in run.parts()[part]}
    assert {name: ran[name] for name in expected} == expected
    text = doc.read_text()
    assert f"<!-- benchmark: GPU acceptance ({part}), CPU (dry mode) -->" in text
    if part == "bench":
        for section in ("LeNet-5 on MNIST (lenet5_fast)", "AlexNet at 224x224, throughput"):
            assert f"<!-- benchmark: {section}, CPU (dry mode) -->" in text
    if part == "sweep":
        assert "| 12-job LeNet-5 sweep <= 60 s | parallel " in text and "nothing measured" in text


def test_a_step_after_the_budget_is_spent_is_reported_not_run(acceptance, data_dir, tmp_path):
    run = acceptance.Acceptance(tmp_path / "out", data_dir, tmp_path / "benchmarks.md", dry=True, repeats=1, budget_s=0)
    time.sleep(0.01)
    assert run.all("checks")  # nothing failed: nothing ran
    assert {s.ok for s in run.steps} == {None}
    assert all(s.detail == "not run: the part's time budget is spent" for s in run.steps)


def test_the_plan_fits_the_budget_and_a_larger_one_is_refused(acceptance):
    assert acceptance.check_plan(acceptance.plan(acceptance.REPEATS)) == []
    problems = acceptance.check_plan(acceptance.plan(10))
    assert problems and all("more than its" in p for p in problems)
    assert set(acceptance.MAX_EPOCHS) == {"checks", "bench", "sweep"} == set(acceptance.BUDGET_S) - {"all"}
    assert (
        max(acceptance.BUDGET_S[p] for p in ("checks", "bench", "sweep")) <= 300 and acceptance.BUDGET_S["all"] <= 480
    )
