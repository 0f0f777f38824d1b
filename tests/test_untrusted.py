"""Files from elsewhere run no code: crafted checkpoints and CIFAR-10 batches (issue 15, items 1-2)."""

import os
import pickle
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from PIL import Image

from classic_cnns import ClassicCNNsError
from classic_cnns.classifier import ImageClassifier
from classic_cnns.data import CIFAR10DataModule
from classic_cnns.runs.checkpoint_loading import (
    DATA_MODULES,
    NETWORKS,
    UnsafeCheckpointError,
    build_datamodule,
    load_classifier,
    read_checkpoint,
    rebuild_callback_states,
)
from classic_cnns.runs.checkpoint_writing import AtomicCheckpointIO, CheckpointWriteError
from classic_cnns.runs.train import train
from classic_cnns.tools.inference import evaluate, predict

from .conftest import ROOT, write_cifar10, write_idx, write_mnist


class WritesFile:
    """A pickled object that writes `path` when it is unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return Path.write_text, (self.path, "code ran")


def checkpoint_like_train(cfg) -> dict:
    """What train() stores and load_classifier reads: weights, the resolved config, the data description."""
    datamodule = instantiate(cfg.data)
    net = instantiate(
        cfg.model, in_channels=datamodule.channels, num_classes=datamodule.num_classes, input_size=datamodule.input_size
    )
    config = OmegaConf.to_container(cfg, resolve=True)
    hparams = {"config": config, "data_info": datamodule.describe()}
    return {"state_dict": ImageClassifier(net=net, optimizer=None).state_dict(), "hyper_parameters": hparams}


def payloads(tmp_path: Path) -> dict[str, tuple[str, dict, str]]:
    """Crafted config nodes, each writing tmp_path/<kind> when Hydra instantiates it: kind ->
    (the config key it replaces, the node, the key the error must name)."""
    staged = tmp_path / "staged.pkl"
    torch.save(WritesFile(tmp_path / "staged_pickle"), staged)  # torch.load(weights_only=False) runs it
    write_text = {"_target_": "pathlib.Path.write_text", "data": "code ran"}
    return {
        "nested_write_text": (
            "model.layers",
            write_text | {"self": {"_target_": "pathlib.Path", "_args_": [str(tmp_path / "nested_write_text")]}},
            "config.model.layers holds a nested _target_ ('pathlib.Path.write_text')",
        ),
        "staged_pickle": (
            "model.dropout",
            {"_target_": "torch.load", "f": str(staged), "weights_only": False},
            "config.model.dropout holds a nested _target_ ('torch.load')",
        ),
        "foreign_data_target": (
            "data",
            {"_target_": "shutil.copyfile", "src": str(staged), "dst": str(tmp_path / "foreign_data_target")},
            "config.data._target_='shutil.copyfile' is not one of the project's classes",
        ),
    }


def test_the_crafted_payloads_run_code_when_hydra_instantiates_them(tmp_path):
    """The control: each payload of the tests below does write its file through hydra.utils.instantiate."""
    for kind, (_, node, _) in payloads(tmp_path).items():
        instantiate(node)
        assert (tmp_path / kind).exists(), kind


ENTRY_POINTS = ("load_classifier", "evaluate", "predict", "resume")


@pytest.mark.parametrize("kind", ["nested_write_text", "staged_pickle", "foreign_data_target"])
def test_a_crafted_checkpoint_is_refused_naming_the_key_and_runs_nothing(make_cfg, tmp_path, kind):
    key, node, message = payloads(tmp_path)[kind]
    checkpoint = checkpoint_like_train(make_cfg())
    section, _, name = key.partition(".")
    if name:
        checkpoint["hyper_parameters"]["config"][section][name] = node
    else:
        checkpoint["hyper_parameters"]["config"][section] = node
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "digit.png")
    calls = {
        "load_classifier": lambda: load_classifier(path),
        "evaluate": lambda: evaluate(str(path), output_dir=str(tmp_path / "evaluation")),
        "predict": lambda: predict(str(path), str(tmp_path / "digit.png")),
        "resume": lambda: train(make_cfg(f"ckpt_path={path}", output_dir=tmp_path / "resumed")),
    }
    for entry_point, call in calls.items():
        with pytest.raises(UnsafeCheckpointError) as error:
            call()
        assert message in str(error.value) and "\n" not in str(error.value), entry_point
        assert not (tmp_path / kind).exists(), entry_point
    assert not (tmp_path / "evaluation").exists() and not (tmp_path / "resumed" / "checkpoints").exists()


def test_every_model_and_data_config_is_on_the_allowlist():
    """A network or data set added to conf/ but not exported would make its checkpoints unloadable."""
    paths = [*(ROOT / "conf" / "model").glob("*.yaml"), *(ROOT / "conf" / "data").glob("*.yaml")]
    targets = {path: OmegaConf.load(path).get("_target_") for path in paths}
    for path, target in targets.items():
        allowed = NETWORKS if path.parent.name == "model" else DATA_MODULES
        assert target is None or target in allowed, path  # None: inherits its target through `defaults`
    assert sum(target is not None for target in targets.values()) >= 6


def test_resume_refuses_a_checkpoint_whose_callback_state_points_outside_its_directory(make_cfg, tmp_path):
    """Lightning's ModelCheckpoint deletes the files its restored state names when it replaces them:
    a crafted last.ckpt naming ../../victim.ckpt made a resumed run delete that file."""
    victim = tmp_path / "victim.ckpt"
    victim.write_text("precious")
    dirpath = str(tmp_path / "run" / "checkpoints")
    checkpoint = checkpoint_like_train(make_cfg())
    state = {
        "dirpath": dirpath,
        "best_model_path": f"{dirpath}/epoch_000.ckpt",
        "last_model_path": f"{dirpath}/../../victim.ckpt",
    }
    checkpoint["callbacks"] = {"ModelCheckpoint{'monitor': 'val/acc'}": state}
    torch.save(checkpoint, tmp_path / "last.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=r"callbacks.ModelCheckpoint.last_model_path=.*victim.ckpt"):
        train(make_cfg(f"ckpt_path={tmp_path / 'last.ckpt'}"))
    assert victim.read_text() == "precious"


def test_a_checkpoint_pickle_with_code_is_refused(tmp_path):
    torch.save({"state_dict": {}, "hyper_parameters": WritesFile(tmp_path / "ran")}, tmp_path / "evil.ckpt")
    with pytest.raises(ClassicCNNsError, match="evil.ckpt is not a checkpoint written by classic-cnns"):
        load_classifier(tmp_path / "evil.ckpt")
    assert not (tmp_path / "ran").exists()


# --- CIFAR-10 batches -----------------------------------------------------------------------
def test_cifar_batches_in_every_pickle_protocol_load(tmp_path):
    """Re-encoded copies (other checksums, other pickle protocols) still load."""
    folder = write_cifar10(tmp_path)
    images = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    batch = {
        "data": images,
        "labels": [3, 4],
        "batch_label": b"training batch 1 of 5",
        "filenames": [b"a.png", "b.png"],
    }
    for protocol in (2, 4, 5):
        (folder / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
        module = CIFAR10DataModule(str(folder))
        loaded, labels = module.load(train=False)
        assert torch.equal(loaded.flatten(1), torch.from_numpy(images)) and labels.tolist() == [3, 4], protocol


@pytest.fixture
def cifar_with_payload(tmp_path):
    data = write_cifar10(tmp_path / "data")
    batch = data / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": WritesFile(tmp_path / "ran"), "labels": [0]}))
    return data


def test_a_cifar_batch_with_a_reduce_payload_runs_nothing(make_cfg, tmp_path, cifar_with_payload):
    with pytest.raises(ClassicCNNsError, match=r"data_batch_1: refused to unpickle the global pathlib.*write_text"):
        train(make_cfg("data=cifar10", f"data.data_dir={cifar_with_payload}"))
    assert not (tmp_path / "ran").exists()


def test_prepare_data_exits_non_zero_on_a_cifar_batch_with_a_payload(tmp_path, monkeypatch, cifar_with_payload):
    script = ROOT / "scripts" / "prepare_data.py"
    monkeypatch.setattr(sys, "argv", [str(script), "data=cifar10", f"data.data_dir={cifar_with_payload}"])
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(str(script), run_name="__main__")  # in-process: the script's own code, without a new interpreter
    assert isinstance(exit.value.code, str)  # sys.exit(message): exit status 1, the message on stderr
    assert exit.value.code.startswith("error: ") and "refused to unpickle the global pathlib" in exit.value.code
    assert not (tmp_path / "ran").exists()


# --- callback state on resume (issue 23, item 1) ---------------------------------------------
@pytest.fixture
def trained_run(make_cfg, tmp_path):
    """A finished 1-epoch run without a schedule (so that a resume may train a second epoch)."""
    common = ["scheduler=none", "logger=csv"]
    train(make_cfg(*common))
    return tmp_path / "run", common


def test_resume_never_deletes_outside_the_run_whatever_the_callback_state_leaves_out(make_cfg, tmp_path, trained_run):
    """A ModelCheckpoint state without `dirpath` made Lightning take its paths as its own:
    RUN/checkpoints/../../victim passed Lightning's "inside my directory" test and was deleted."""
    run, common = trained_run
    victim_file, victim_dir = tmp_path / "victim.ckpt", tmp_path / "victim_dir"
    victim_file.write_text("precious")
    (victim_dir / "inside").mkdir(parents=True)
    checkpoints = run / "checkpoints"
    checkpoint = torch.load(checkpoints / "last.ckpt", weights_only=True)
    for key, state in checkpoint["callbacks"].items():
        if key.startswith("ModelCheckpoint"):
            del state["dirpath"]
            state["best_model_path"] = f"{checkpoints}/../../victim_dir"
            state["kth_best_model_path"] = f"{checkpoints}/../../victim.ckpt"
            state["best_k_models"] = {f"{checkpoints}/../../victim.ckpt": torch.tensor(2.0)}
    torch.save(checkpoint, tmp_path / "crafted.ckpt")
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"callbacks\.ModelCheckpoint\.best_model_path=.*victim_dir.* is not a \.ckpt file in this run's checkpoint directory",
    ) as error:
        train(make_cfg(*common, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'crafted.ckpt'}"))
    assert "\n" not in str(error.value)
    assert victim_file.read_text() == "precious" and (victim_dir / "inside").is_dir()


@pytest.fixture
def run_layout(tmp_path):
    """RUN/checkpoints with a checkpoint, a directory named like one and symlinks out of it."""
    own = tmp_path / "run" / "checkpoints"
    (own / "dir.ckpt").mkdir(parents=True)
    (own / "epoch_000.ckpt").write_text("ok")
    (tmp_path / "victim.ckpt").write_text("precious")
    (own / "link.ckpt").symlink_to(tmp_path / "victim.ckpt")
    (own / "linked_dir").symlink_to(tmp_path)
    return own


PATH_PARTS = st.lists(
    st.sampled_from(
        ["..", ".", "checkpoints", "run", "linked_dir", "epoch_000.ckpt", "link.ckpt", "dir.ckpt", "victim.ckpt", "x"]
    ),
    max_size=5,
)
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
CHECKPOINT_KEYS = [
    "best_model_path",
    "kth_best_model_path",
    "last_model_path",
    "best_k_models",
    "dirpath",
    "monitor",
    "best_model_score",
    "kth_value",
    "current_score",
]


@st.composite
def callback_states(draw, own: Path):
    """A ModelCheckpoint state with any subset of its keys (dirpath too), paths relative to the
    run's checkpoints folder, the filesystem root or nothing, and at times a value of any type,
    an extra key or another callback's state."""

    def path():
        if draw(st.booleans()):  # what Lightning writes: a checkpoint of the run, by absolute path
            return f"{own}/{draw(st.sampled_from(['epoch_000.ckpt', 'epoch_001.ckpt', 'last.ckpt']))}"
        base = draw(st.sampled_from([str(own), str(own.parent), "/", ""]))
        return "/".join([base, *draw(PATH_PARTS)]) if base else "/".join(draw(PATH_PARTS))

    state = {}
    for key in draw(st.lists(st.sampled_from(CHECKPOINT_KEYS), unique=True)):
        if draw(st.integers(0, 5)) == 0:
            state[key] = draw(ANY_VALUE)
        elif key == "best_k_models":
            state[key] = {path(): torch.tensor(1.0) for _ in range(draw(st.integers(0, 2)))}
        elif key == "monitor":
            state[key] = "val/acc"
        elif key.endswith("score") or key == "kth_value":
            state[key] = torch.tensor(0.5)
        else:
            state[key] = path()
    if draw(st.integers(0, 9)) == 0:
        state[draw(st.text(min_size=1, max_size=8))] = draw(ANY_VALUE)
    states = {"ModelCheckpoint{'monitor': 'val/acc'}": state}
    if draw(st.integers(0, 9)) == 0:
        states[
            draw(st.sampled_from(["Evil", "ModelCheckpointX", "FitClock", "EarlyStopping{'monitor': 'val/acc'}"]))
        ] = draw(ANY_VALUE)
    return states


@pytest.mark.filterwarnings("ignore:the state of callback")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_rebuilt_callback_states_name_only_checkpoint_files_of_the_run_or_are_refused_in_one_line(run_layout, data):
    """Whatever keys are present or missing: every path that survives resolves (.., symlinks)
    to a .ckpt file inside the run's checkpoint folder (never a directory); the rest is
    refused in one line naming callbacks.<callback>.<key>; other callbacks' states are dropped."""
    states = data.draw(callback_states(run_layout))
    try:
        rebuilt = rebuild_callback_states(states, [str(run_layout)])
    except UnsafeCheckpointError as error:
        message = str(error)
        assert "\n" not in message and message.startswith("callbacks")
        return
    own = os.path.realpath(run_layout)
    assert {key.split("{")[0] for key in rebuilt} <= {"ModelCheckpoint", "FitClock", "EarlyStopping"}  # others dropped
    for state in rebuilt.values():
        if not isinstance(state, dict):
            continue
        paths = [state.get(key) for key in ("best_model_path", "kth_best_model_path", "last_model_path")]
        for path in [*paths, *(state.get("best_k_models") or {})]:
            if path:
                assert path.endswith(".ckpt") and path.startswith(own + os.sep) and not os.path.isdir(path), path
                assert os.path.realpath(path) == path
        if "dirpath" in state:
            assert state["dirpath"] == own or state["dirpath"].startswith(own + os.sep)


def test_the_checkpoint_plugin_deletes_only_checkpoint_files_of_the_run(run_layout):
    """The last line of defence, whatever state Lightning holds: no directory, nothing outside."""
    plugin = AtomicCheckpointIO([str(run_layout)])
    for path in (
        run_layout / "dir.ckpt",
        run_layout / "link.ckpt",
        run_layout / ".." / ".." / "victim.ckpt",
        run_layout.parent / "x.ckpt",
    ):
        with pytest.raises(CheckpointWriteError, match="refused to delete"):
            plugin.remove_checkpoint(path)
    assert (run_layout / "dir.ckpt").is_dir() and (run_layout.parent.parent / "victim.ckpt").read_text() == "precious"
    plugin.remove_checkpoint(run_layout / "epoch_000.ckpt")
    assert not (run_layout / "epoch_000.ckpt").exists()


def test_evaluate_and_predict_drop_the_callback_states_they_never_use(make_cfg, tmp_path):
    checkpoint = checkpoint_like_train(make_cfg())
    checkpoint["callbacks"] = {"Evil": {"best_model_path": "/etc/passwd"}}
    torch.save(checkpoint, tmp_path / "model.ckpt")
    assert "callbacks" not in read_checkpoint(tmp_path / "model.ckpt")


# --- the whole embedded config, top-level keys (issue 23, item 2) ----------------------------
def _targets(node, prefix=""):
    """Dotted keys of every Hydra instantiation key in `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("_target_", "_partial_", "_args_"):
                yield f"{prefix}{key}"
            yield from _targets(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _targets(item, f"{prefix}{index}.")


def test_targets_outside_model_and_data_are_dropped_before_anyone_can_build_them(make_cfg, tmp_path):
    """optimizer, scheduler (_partial_), callbacks, trainer, logger, top-level hyper_parameters and
    top-level checkpoint keys: never built by the loaders, and gone from what they hand out
    (model.hparams.config), so that instantiate() on it builds nothing."""
    payload = {
        "_target_": "pathlib.Path.write_text",
        "self": {"_target_": "pathlib.Path", "_args_": [str(tmp_path / "ran")]},
        "data": "x",
    }
    checkpoint = checkpoint_like_train(make_cfg())
    config = checkpoint["hyper_parameters"]["config"]
    config["optimizer"] = payload
    config["scheduler"] = payload | {"_partial_": True}
    config["callbacks"]["evil"] = payload
    config["trainer"] = payload
    checkpoint["hyper_parameters"]["evil"] = payload
    checkpoint["evil"] = payload
    checkpoint["loops"] = {"fit_loop": payload}
    torch.save(checkpoint, tmp_path / "crafted.ckpt")
    read = read_checkpoint(tmp_path / "crafted.ckpt")
    assert "evil" not in read and "evil" not in read["hyper_parameters"]
    assert sorted(_targets(read)) == [
        "hyper_parameters.config.data._target_",
        "hyper_parameters.config.model._target_",
        "hyper_parameters.config.model.layers._target_",
    ]
    model = load_classifier(tmp_path / "crafted.ckpt")
    for key in ("optimizer", "scheduler", "trainer"):
        instantiate(model.hparams.config[key])
    instantiate(model.hparams.config["callbacks"]["evil"])
    assert not (tmp_path / "ran").exists()


def test_a_non_plain_value_anywhere_in_the_config_is_refused_naming_the_key(make_cfg, tmp_path):
    checkpoint = checkpoint_like_train(make_cfg())
    checkpoint["hyper_parameters"]["config"]["trainer"]["max_epochs"] = torch.zeros(2)
    torch.save(checkpoint, tmp_path / "crafted.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=r"config.trainer.max_epochs is a Tensor; only plain values"):
        read_checkpoint(tmp_path / "crafted.ckpt")


# --- loading writes nothing outside the directory the user named (item 3) -------------------
def test_evaluate_never_downloads_or_makes_directories_where_the_checkpoint_says(make_cfg, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere" / "data"
    checkpoint = checkpoint_like_train(make_cfg(f"data.data_dir={elsewhere}", "data.download=true"))
    torch.save(checkpoint, tmp_path / "model.ckpt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CLASSIC_CNNS_DATA_DIR", raising=False)
    with pytest.raises(
        ClassicCNNsError, match=rf"MNIST was not found in {tmp_path}/data/MNIST/raw and data.download=false"
    ) as error:
        evaluate(str(tmp_path / "model.ckpt"), output_dir=str(tmp_path / "evaluation"))
    assert "\n" not in str(error.value)
    assert (
        not (tmp_path / "elsewhere").exists()
        and not (tmp_path / "data").exists()
        and not (tmp_path / "evaluation").exists()
    )


# --- sizes declared by a file are checked before anything is allocated (item 4) -------------
def test_a_declared_network_size_the_weights_do_not_have_is_refused_before_allocating(make_cfg, tmp_path):
    checkpoint = checkpoint_like_train(make_cfg())
    checkpoint["hyper_parameters"]["config"]["model"] = {
        "_target_": "classic_cnns.models.AlexNet",
        "hidden_features": 10**9,
    }
    checkpoint["hyper_parameters"]["data_info"]["input_size"] = [227, 227]
    torch.save(checkpoint, tmp_path / "huge.ckpt")
    with pytest.raises(
        ClassicCNNsError,
        match=r"huge.ckpt: the weights do not fit the network: net\.\S+ is missing.*\(and \d+ more\)\. Use the model settings",
    ) as error:
        load_classifier(tmp_path / "huge.ckpt")  # 10**9 x 10**9 weights: never allocated
    assert "\n" not in str(error.value)


def test_a_state_dict_of_other_shapes_names_the_keys_and_shapes(make_cfg, tmp_path):
    checkpoint = checkpoint_like_train(make_cfg())
    checkpoint["hyper_parameters"]["data_info"]["input_size"] = [64, 64]
    torch.save(checkpoint, tmp_path / "other.ckpt")
    with pytest.raises(
        ClassicCNNsError, match=r"net\.\S+\.weight is \[120, 400\] in the checkpoint but \[120, 3136\] in the network"
    ):
        load_classifier(tmp_path / "other.ckpt")


@pytest.mark.parametrize(
    "key, value",
    [("input_size", [40000, 40000]), ("native_size", [100000, 100000]), ("channels", 7), ("class_names", ["x"] * 5000)],
)
def test_image_sizes_and_class_counts_from_a_file_are_capped(make_cfg, tmp_path, key, value):
    checkpoint = checkpoint_like_train(make_cfg())
    checkpoint["hyper_parameters"]["data_info"][key] = value
    torch.save(checkpoint, tmp_path / "big.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=rf"big.ckpt: refused, data_info.{key}"):
        load_classifier(tmp_path / "big.ckpt")


def test_worker_counts_and_data_sizes_come_from_the_loader_not_the_file(make_cfg, tmp_path):
    checkpoint = checkpoint_like_train(make_cfg("data.placement=dataloader", "data.num_workers=12"))
    torch.save(checkpoint, tmp_path / "model.ckpt")
    model = load_classifier(tmp_path / "model.ckpt")
    assert build_datamodule(model.hparams.config, str(tmp_path)).num_workers == 0
    config = model.hparams.config | {"data": model.hparams.config["data"] | {"image_size": 50000}}
    with pytest.raises(UnsafeCheckpointError, match=r"config.data.image_size=50000 is not null or 1 to 1024 pixels"):
        build_datamodule(config, str(tmp_path))
    config = model.hparams.config | {"data": model.hparams.config["data"] | {"eval_batch_size": 0}}
    with pytest.raises(
        UnsafeCheckpointError, match=r"config.data.eval_batch_size=0 is not allowed: it must be an integer from 1"
    ):
        build_datamodule(config, str(tmp_path))  # was a ZeroDivisionError in evaluate


class UnfilledArray:
    """Pickles as numpy's _reconstruct of an array of `shape` whose bytes never follow."""

    def __init__(self, shape) -> None:
        self.shape = shape

    def __reduce__(self):
        return _RECONSTRUCT_FOR_TESTS, (np.ndarray, self.shape, b"B")


_RECONSTRUCT_FOR_TESTS = np.zeros(0, np.uint8).__reduce__()[0]


@pytest.mark.parametrize(
    "batch, message",
    [
        (
            {"data": UnfilledArray((500_000, 3072)), "labels": [0]},
            r"declares 1536000000 bytes but the file holds \d+\)",
        ),
        (
            {"data": np.zeros((2, 3072), np.uint8), "labels": [[0] * 1000] * 2},
            r"'labels' is not a list of 2 integers, one per image",
        ),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, r"'labels' is not a list of 2 integers"),
    ],
    ids=["declared_array", "shared_sublists", "count"],
)
def test_a_cifar_batch_that_declares_more_than_it_holds_is_refused(tmp_path, batch, message):
    folder = write_cifar10(tmp_path)
    (folder / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(ClassicCNNsError, match=rf"test_batch is not a readable CIFAR-10 batch .*{message}") as error:
        CIFAR10DataModule(str(folder)).load(train=False)
    assert "\n" not in str(error.value)


def test_mnist_labels_outside_the_classes_are_found_before_training(make_cfg, tmp_path):
    write_mnist(tmp_path / "data")
    write_idx(tmp_path / "data" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.array([3] * 99 + [200]))
    with pytest.raises(
        ClassicCNNsError, match=r"t10k-labels-idx1-ubyte holds labels up to 200, outside 0-9: MNIST has 10 classes"
    ):
        train(make_cfg(f"data.data_dir={tmp_path / 'data'}"))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("label", [10, -1])
def test_cifar_labels_outside_the_classes_are_found_before_training(make_cfg, tmp_path, label):
    folder = write_cifar10(tmp_path / "data")
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, label]}
    (folder / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps(batch))
    with pytest.raises(
        ClassicCNNsError, match=rf"data_batch_2 holds labels outside 0-9 \({min(0, label)} to {max(0, label)}\)"
    ):
        train(make_cfg("data=cifar10", f"data.data_dir={folder}"))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resuming_into_another_network_names_the_weights_that_do_not_fit(make_cfg, tmp_path, trained_run):
    run, common = trained_run
    with pytest.raises(
        ClassicCNNsError,
        match=r"ckpt_path=.*last.ckpt: the weights do not fit the network: net\.\S+ is \[120, 400\] in the checkpoint but \[120, 256\] in the network",
    ) as error:
        train(
            make_cfg(
                *common,
                "+model.c1_padding=0",
                "allow_resume_changes=true",
                f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            )
        )
    assert "\n" not in str(error.value)


def test_a_resumed_run_removes_the_checkpoints_the_killed_segment_left_untracked(make_cfg, tmp_path, trained_run):
    """A segment killed between writing epoch_NNN.ckpt and last.ckpt leaves a file the restored
    state does not know: the resume removes it, and only files of the callbacks' own naming."""
    run, common = trained_run
    checkpoints = run / "checkpoints"
    shutil.copy(checkpoints / "last.ckpt", checkpoints / "epoch_007.ckpt")  # the killed segment's
    shutil.copy(checkpoints / "last.ckpt", checkpoints / "epoch_000-v1.ckpt")
    (checkpoints / "my_copy.ckpt").write_text("a user's own file")
    train(make_cfg(*common, "trainer.max_epochs=2", f"ckpt_path={checkpoints / 'last.ckpt'}"))
    tracked = torch.load(checkpoints / "last.ckpt", weights_only=True)["callbacks"]
    best = {Path(s["best_model_path"]).name for s in tracked.values() if isinstance(s, dict) and "best_model_path" in s}
    assert {p.name for p in checkpoints.iterdir()} == best | {"last.ckpt", "my_copy.ckpt"}


def test_the_states_the_restored_callbacks_write_pass_the_allowlist(tmp_path):
    """What Lightning's own callbacks (this version's keys) and FitClock write rebuilds as it is."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer
    from lightning.pytorch.trainer.states import RunningStage

    from classic_cnns.runs.resume import FitClock

    own = tmp_path / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=own, monitor="val/acc")
    checkpoint.best_model_path = str(own / "epoch_001.ckpt")
    states = {
        "EarlyStopping{'monitor': 'val/acc'}": EarlyStopping(monitor="val/acc").state_dict(),
        "FitClock": FitClock().state_dict(),
        "ModelCheckpoint{'monitor': 'val/acc'}": checkpoint.state_dict(),
    }
    timer = Timer(duration="00:00:01:00")
    timer._start_time[RunningStage.TRAINING] = timer._end_time[RunningStage.TRAINING] = 0.0
    states["Timer"] = timer.state_dict()  # trainer.max_time
    assert rebuild_callback_states(states, [str(own)]).keys() == states.keys()
    with pytest.warns(UserWarning, match="the state of callback 'Mine' in the checkpoint is not restored"):
        assert rebuild_callback_states({"Mine": {"x": 1}}, [str(own)]) == {}
