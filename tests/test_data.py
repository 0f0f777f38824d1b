import gzip
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.datasets

from classic_cnns import ClassicCNNsError
from classic_cnns.data import CIFAR10DataModule, DatasetNotFoundError, MNISTDataModule
from classic_cnns.data.mnist import read_idx
from classic_cnns.data.transforms import random_crop

from .conftest import image_ids, write_cifar10, write_idx, write_mnist


def test_read_idx_plain_and_gzipped(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), array)
    (tmp_path / "b-idx3-ubyte.gz").write_bytes(gzip.compress((tmp_path / "a-idx3-ubyte").read_bytes()))
    np.testing.assert_array_equal(read_idx(tmp_path / "b-idx3-ubyte"), array)


def test_truncated_idx_file_is_named(tmp_path):
    write_idx(tmp_path / "t-idx3-ubyte", np.zeros((10, 28, 28), np.uint8))
    data = (tmp_path / "t-idx3-ubyte").read_bytes()
    (tmp_path / "t-idx3-ubyte").write_bytes(data[:-100])
    with pytest.raises(ClassicCNNsError, match=r"t-idx3-ubyte holds .* truncated"):
        read_idx(tmp_path / "t-idx3-ubyte")


def test_wrong_magic_number_is_named(tmp_path):
    (tmp_path / "x-idx1-ubyte").write_bytes(b"\x1f\x8b\x08\x00" + bytes(20))
    with pytest.raises(ClassicCNNsError, match="x-idx1-ubyte is not an IDX file"):
        read_idx(tmp_path / "x-idx1-ubyte")


def test_mnist_validation_is_a_seeded_holdout_and_test_stays_apart(tmp_path):
    write_mnist(tmp_path, n_train=200, n_test=50)
    dm = MNISTDataModule(tmp_path, val_size=40, split_seed=3)
    dm.prepare_data()
    dm.setup()
    train, val, test = (image_ids(dm.splits[s].images) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (160, 40, 50)
    assert train | val == set(range(200)) and not train & val
    assert not test & (train | val)

    again = MNISTDataModule(tmp_path, val_size=40, split_seed=3)
    again.setup("fit")
    assert image_ids(again.splits["val"].images) == val
    other = MNISTDataModule(tmp_path, val_size=40, split_seed=4)
    other.setup("fit")
    assert image_ids(other.splits["val"].images) != val


def test_cifar10_reads_the_python_batches(tmp_path):
    write_cifar10(tmp_path, per_batch=20, n_test=30)
    dm = CIFAR10DataModule(tmp_path, val_size=10)
    dm.setup()
    assert dm.splits["train"].images.shape == (90, 3, 32, 32)
    assert dm.splits["test"].images.dtype == torch.uint8 and len(dm.splits["test"]) == 30
    assert image_ids(dm.splits["train"].images) | image_ids(dm.splits["val"].images) == set(range(100))


def test_corrupt_cifar_batch_is_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(ClassicCNNsError, match="data_batch_3 is not a readable CIFAR-10 batch"):
        CIFAR10DataModule(tmp_path).setup("fit")


def test_missing_data_without_download_names_directory_and_files(tmp_path):
    with pytest.raises(DatasetNotFoundError) as error:
        MNISTDataModule(tmp_path, download=False).prepare_data()
    message = str(error.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "data.data_dir" in message and "CLASSIC_CNNS_DATA_DIR" in message


@pytest.mark.parametrize("module, dataset", [(MNISTDataModule, "MNIST"), (CIFAR10DataModule, "CIFAR10")])
def test_failed_download_offline_is_one_clear_error(tmp_path, monkeypatch, module, dataset):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, dataset, offline)
    with pytest.raises(DatasetNotFoundError, match=r"the download failed \(URLError: .*Expected files there"):
        module(tmp_path).prepare_data()


def test_present_files_are_never_downloaded(tmp_path, monkeypatch):
    write_mnist(tmp_path)
    monkeypatch.setattr(torchvision.datasets, "MNIST", lambda *a, **k: pytest.fail("downloaded"))
    MNISTDataModule(tmp_path).prepare_data()


def test_batches_are_gathered_whole(tmp_path):
    write_mnist(tmp_path, n_train=100)
    dm = MNISTDataModule(tmp_path, val_size=10, batch_size=32)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, 28, 28) and images.dtype == torch.uint8 and labels.shape == (32,)
    assert sum(len(b[1]) for b in dm.train_dataloader()) == 90


def test_transform_normalizes_and_resizes():
    dm = MNISTDataModule("unused", mean=(0.5,), std=(0.25,), image_size=32)
    x = dm.transform(torch.full((4, 1, 28, 28), 255, dtype=torch.uint8))
    assert x.shape == (4, 1, 32, 32)
    torch.testing.assert_close(x, torch.full_like(x, 2.0))


def test_transforming_a_batch_on_another_device_leaves_the_normalization_constants_alone():
    dm = MNISTDataModule("unused", mean=(0.5,), std=(0.25,), image_size=32)
    x = dm.transform(torch.zeros(2, 1, 28, 28, dtype=torch.uint8, device="meta"))  # shapes only, no data
    assert x.device.type == "meta" and x.shape == (2, 1, 32, 32)
    assert dm.mean.device.type == dm.std.device.type == "cpu"  # what describe() and checkpoints read
    assert dm.describe()["mean"] == [0.5] and dm.describe()["std"] == [0.25]


def test_augmentation_only_in_training():
    dm = CIFAR10DataModule("unused", crop_padding=4, horizontal_flip=True)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(dm.transform(images), dm.transform(images))
    assert not torch.equal(dm.transform(images, train=True), dm.transform(images))


def test_random_crop_cuts_each_image_at_its_own_offset():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    out = random_crop(x, padding=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert matches, f"image {i} is not a crop of its padded self"
        offsets.add(matches[0])
    assert len(offsets) > 1


def _ids(batches) -> list[int]:
    return [i for images, _ in batches for i in sorted(image_ids(images))]


def test_device_batches_cover_the_split_once_per_epoch_in_a_new_order(tmp_path):
    write_mnist(tmp_path, n_train=200, n_test=50)
    dm = MNISTDataModule(tmp_path, val_size=40, batch_size=32)
    dm.setup("fit")
    batches = dm.device_batches("train", "cpu", shuffle=True)
    first, second = list(batches), list(batches)
    assert len(first) == len(batches) == 5 and [len(y) for _, y in first] == [32, 32, 32, 32, 32]
    assert first[0][0].dtype == torch.uint8  # transforms run later, batched, on the device
    ids_first, ids_second = _ids(first), _ids(second)
    assert sorted(ids_first) == sorted(ids_second) == sorted(image_ids(dm.splits["train"].images))
    order = [sorted(image_ids(x)) for x, _ in first]
    assert order != [sorted(image_ids(x)) for x, _ in second]  # reshuffled every epoch
    # the order of an epoch depends on (seed, epoch) only: a resumed run replays it
    replay = dm.device_batches("train", "cpu", shuffle=True, epoch=lambda: 0)
    assert [sorted(image_ids(x)) for x, _ in replay] == order


def test_device_batches_give_every_ddp_rank_its_own_equal_share(tmp_path):
    write_mnist(tmp_path, n_train=203, n_test=50)
    dm = MNISTDataModule(tmp_path, val_size=40, batch_size=16, eval_batch_size=16)
    dm.setup()
    train = [dm.device_batches("train", "cpu", shuffle=True, rank=r, world_size=3, epoch=lambda: 2) for r in range(3)]
    shares = [_ids(b) for b in train]
    assert [len(s) for s in shares] == [54, 54, 54] and len({len(b) for b in train}) == 1
    assert not set(shares[0]) & set(shares[1]) and not set(shares[1]) & set(shares[2])
    # evaluation: disjoint shares that cover the split once, no image repeated to pad a share
    test = [dm.device_batches("test", "cpu", shuffle=False, rank=r, world_size=3) for r in range(3)]
    shares = [_ids(b) for b in test]
    assert sorted(sum(shares, [])) == sorted(image_ids(dm.splits["test"].images))
    assert [len(s) for s in shares] == [17, 17, 16] and [len(b) for b in test] == [2, 2, 1]


def test_one_batch_size_rule_for_both_placements(tmp_path):
    write_mnist(tmp_path, n_train=100, n_test=20)
    for placement in ("device", "dataloader"):
        dm = MNISTDataModule(tmp_path, val_size=20, batch_size=16, eval_batch_size=7, placement=placement)
        dm.setup()
        assert [len(y) for _, y in dm.train_dataloader()] == [16] * 5, placement  # 80 training images
        assert [len(y) for _, y in dm.val_dataloader()] == [7, 7, 6], placement
        assert [len(y) for _, y in dm.test_dataloader()] == [7, 7, 6], placement


def test_placement_picks_the_loader(tmp_path):
    write_mnist(tmp_path, n_train=100, n_test=20)
    device = MNISTDataModule(tmp_path, val_size=20, batch_size=32)
    loader = MNISTDataModule(tmp_path, val_size=20, batch_size=32, placement="dataloader")
    for dm in (device, loader):
        dm.setup()
    assert type(device.train_dataloader()).__name__ == "DeviceBatches"
    assert isinstance(loader.train_dataloader(), torch.utils.data.DataLoader)
    images, labels = next(iter(loader.test_dataloader()))
    assert images.shape == (20, 1, 28, 28) and images.dtype == torch.uint8 and labels.shape == (20,)
    with pytest.raises(
        ClassicCNNsError, match=r"data.placement='gpu' is not allowed: use one of auto, device, dataloader"
    ):
        MNISTDataModule(tmp_path, placement="gpu")


def test_paper_channel_scale_feeds_0_255_values_minus_the_channel_mean():
    """data.scale=paper_channel (the per-pixel mean image, scale=paper: tests/test_imagenet_protocol.py)."""
    mean = (0.4914, 0.4822, 0.4465)
    dm = CIFAR10DataModule("unused", mean=mean, std=(0.2470, 0.2435, 0.2616), scale="paper_channel")
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    expected = images.float() - torch.tensor(mean).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(dm.transform(images), expected, rtol=0, atol=1e-3)
    assert dm.describe()["std"] == [pytest.approx(1 / 255)] * 3  # inference on its checkpoints scales alike
    with pytest.raises(
        ClassicCNNsError, match=r"data.scale='raw' is not allowed: use one of standard, paper, paper_channel"
    ):
        CIFAR10DataModule("unused", scale="raw")


def test_a_batch_larger_than_the_training_split_is_one_clear_error(tmp_path):
    write_mnist(tmp_path, n_train=100, n_test=10)
    with pytest.raises(
        ClassicCNNsError, match=r"data.batch_size=128 is larger than the 90 training images left after data.val_size"
    ):
        dm = MNISTDataModule(tmp_path, val_size=10, batch_size=128)
        dm.setup("fit")
        dm.train_dataloader()
