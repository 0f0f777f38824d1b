"""hydra/launcher=per_gpu: jobs of a parallel multirun spread over the GPUs, least-loaded first."""

from types import SimpleNamespace

import torch
from hydra import compose, initialize_config_dir

from classic_cnns.runs import devices
from classic_cnns.runs.devices import claim_gpu, gpu_for_job

from .conftest import CONF_DIR


def test_jobs_claim_the_least_loaded_gpu_and_release_it(tmp_path):
    with claim_gpu(["a", "b"], tmp_path) as first, claim_gpu(["a", "b"], tmp_path) as second:
        with claim_gpu(["a", "b"], tmp_path) as third:
            assert (first, second, third) == (0, 1, 0)  # a third job doubles up on the first GPU
        with claim_gpu(["a", "b"], tmp_path) as fourth:
            assert fourth == 0  # the slot the third job released
    with claim_gpu(["a", "b"], tmp_path) as again:
        assert again == 0


def test_single_gpu_jobs_of_a_multirun_get_their_own_gpu(make_cfg, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=f"GPU-{i}"))
    monkeypatch.setattr(devices, "LOCK_DIR", tmp_path)
    single = make_cfg("hydra.mode=MULTIRUN", "trainer.accelerator=auto")
    with gpu_for_job(single) as first, gpu_for_job(single) as second:
        assert (first, second) == ({"devices": [0]}, {"devices": [1]})
    with gpu_for_job(make_cfg("hydra.mode=MULTIRUN", "trainer=ddp")) as ddp:
        assert ddp == {}  # a job on several devices keeps its own choice
    with gpu_for_job(make_cfg("trainer.accelerator=auto")) as single_run:
        assert single_run == {}  # not a multirun


def test_per_gpu_launcher_runs_as_many_jobs_as_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=per_gpu"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 4
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert cfg.hydra.launcher.n_jobs == 1  # a CPU machine: one at a time
