"""What a run shows in TensorBoard, read back from its event files and from a real server."""

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from classic_cnns.runs.train import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
    from .conftest import FAST, compose_config, tensorboard_run

    output_dir = tmp_path_factory.mktemp("views")
    train(compose_config([*FAST, "trainer.max_epochs=2", "callbacks.views.every_n_epochs=1"], output_dir, data_dir))
    return tensorboard_run(output_dir)


def test_images_text_and_scalars_are_in_the_event_files(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0}).Reload()
    images = events.Tags()["images"]
    for tag in ("val/confusion_matrix", "filters/01_conv", "test/confusion_matrix", "test/worst_misclassified"):
        assert tag in images, tag
    assert len(events.Images("val/confusion_matrix")) == 2  # every epoch here (every_n_epochs=1)
    assert len(events.Images("test/confusion_matrix")) == 1
    feature_maps = sorted(tag for tag in images if tag.startswith("feature_maps/"))
    assert feature_maps == [
        "feature_maps/01_conv",
        "feature_maps/02_pool",
        "feature_maps/03_conv",
        "feature_maps/04_pool",
    ]
    assert len([t for t in events.Tags()["scalars"] if t.startswith("test_per_class_acc/")]) == 10
    text = events.Tags()["tensors"]
    assert "model/summary/text_summary" in text and "config/text_summary" in text
    assert not any(tag.startswith("weights/") for tag in events.Tags()["histograms"])  # off by default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_real_tensorboard_server_serves_the_scalars_and_hparams(run_dir):
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(run_dir.parent),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/data/plugin"
    try:
        deadline, runs = time.monotonic() + 60, {}
        while time.monotonic() < deadline and run_dir.name not in runs:
            try:
                runs = json.load(urllib.request.urlopen(f"{base}/scalars/tags", timeout=5))
            except OSError:
                pass
            time.sleep(0.5)
        assert "val/acc" in runs[run_dir.name]
        query = urllib.parse.urlencode({"run": run_dir.name, "tag": "val/acc"})
        points = json.load(urllib.request.urlopen(f"{base}/scalars/scalars?{query}", timeout=10))
        assert len(points) == 2  # one per epoch: [wall_time, step, value]
        request = urllib.request.Request(
            f"{base}/hparams/experiment",
            data=json.dumps({"experimentName": ""}).encode(),
            headers={"Content-Type": "application/json"},
        )
        experiment = json.load(urllib.request.urlopen(request, timeout=10))
        assert {"hp/test_acc", "hp/val_acc"} <= {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert any(h["name"] == "choices/pooling" for h in experiment["hparamInfos"])
    finally:
        server.terminate()
        server.wait(timeout=10)
