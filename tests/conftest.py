"""Tiny MNIST and CIFAR-10 sets in the real on-disk formats, and configs composed from conf/."""

import pickle
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from classic_cnns.job import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

register_resolvers()  # as the entry points do: ${unique_id:}, ${auto_precision:}, ...


def fake_images(n: int, channels: int, size: int, first_id: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images whose first two pixels encode a unique id, and random labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)
    ids = np.arange(first_id, first_id + n)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = ids % 256, ids // 256
    return images, rng.integers(0, 10, size=n).astype(np.uint8)


def image_ids(images) -> set[int]:
    images = np.asarray(images)
    return set((images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int)).tolist())


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 240, n_test: int = 100) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, first_id in (("train", n_train, 0), ("t10k", n_test, 10_000)):
        images, labels = fake_images(n, 1, 28, first_id, seed=first_id)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[:, 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def write_cifar10(root: Path, per_batch: int = 48, n_test: int = 100) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for index, name in enumerate(names):
        n = n_test if name == "test_batch" else per_batch
        first_id = 10_000 if name == "test_batch" else index * per_batch
        images, labels = fake_images(n, 3, 32, first_id, seed=index)
        batch = {"data": images.reshape(n, -1), "labels": labels.astype(int).tolist(), "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return root


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """One directory holding both tiny sets, as a user's data/ would."""
    root = tmp_path_factory.mktemp("data")
    write_mnist(root)
    write_cifar10(root)
    return root


def compose_config(overrides: list[str], output_dir: Path, data_dir: Path) -> DictConfig:
    """The config `python train.py OVERRIDES` would get, with the Hydra runtime set up."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"paths.output_dir={output_dir}", f"paths.data_dir={data_dir}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg


FAST = [
    "trainer=debug",
    "data.batch_size=32",
    "data.eval_batch_size=50",
    "data.val_size=40",
    "+trainer.enable_model_summary=false",
]


@pytest.fixture
def make_cfg(tmp_path, data_dir):
    """make_cfg(*overrides): a fast CPU config over the tiny data, writing into tmp_path."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        return compose_config([*FAST, *overrides], output_dir or tmp_path / "run", data_dir)

    return make
