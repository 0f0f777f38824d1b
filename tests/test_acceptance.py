"""scripts/gpu_acceptance.py's dry mode: every step of the GPU acceptance run, tiny, on the CPU."""

from classic_cnns.tools.acceptance import Acceptance


def test_dry_mode_runs_every_step_and_writes_the_summary(data_dir, tmp_path):
    doc = tmp_path / "benchmarks.md"
    acceptance = Acceptance(tmp_path / "out", data_dir, doc, dry=True, repeats=1)
    assert acceptance.all(), [s for s in acceptance.steps if s.ok is False]
    ran = {s.name: s.ok for s in acceptance.steps}
    assert ran["a killed run resumes to the uninterrupted run's metrics"] is True
    assert ran["hydra/launcher=per_gpu gives each job its own GPU"] is None  # needs GPUs, says so
    text = doc.read_text()
    for section in ("LeNet-5 on MNIST (lenet5_fast)", "AlexNet on CIFAR-10 (alexnet_fast)", "AlexNet at 224x224, throughput", "GPU acceptance"):
        assert f"<!-- benchmark: {section}, CPU (dry mode) -->" in text
    assert "| 12-job LeNet-5 sweep <= 60 s | parallel " in text and "nothing measured" in text
