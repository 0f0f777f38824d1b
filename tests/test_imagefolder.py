"""data=imagefolder: your own images in class folders (docs/own-images.md)."""

import io
import json
import os
import random
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from classic_cnns import ClassicCNNsError
from classic_cnns.data import ImageFolderDataModule
from classic_cnns.data.folder import hold_out, scan_folder
from classic_cnns.data.transforms import BatchTransform, normalization
from classic_cnns.runs.checkpoint_loading import load_classifier
from classic_cnns.runs.config_checks import validate
from classic_cnns.runs.train import train
from classic_cnns.tools.inference import evaluate, predict

from .conftest import compose_config

CLASSES = ["bird", "cat", "dog"]  # sorted folder names: labels 0, 1, 2


def tinted(rng, label: int, size: tuple[int, int]) -> Image.Image:
    """Noise with one channel at full strength, chosen by the class: something a network can learn."""
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    pixels[..., label] = 255
    return Image.fromarray(pixels)


def write_images(folder: Path, label: int, count: int, rng) -> None:
    """`count` images of odd sizes in L, RGB, RGBA and P modes, as JPEG and PNG."""
    folder.mkdir(parents=True)
    sizes, modes = [(17, 23), (40, 9), (31, 31), (12, 50)], ["L", "RGB", "RGBA", "P"]
    for i in range(count):
        mode = modes[(i + label) % 4]
        image = tinted(rng, label, sizes[i % 4]).convert(mode)
        image.save(folder / f"{i:02d}.{'png' if mode in ('RGBA', 'P') or i % 2 else 'jpg'}")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """One folder of class folders, with every kind of bad entry the scan must report."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        write_images(root / name, label, 12, rng)
    jpeg = io.BytesIO()
    tinted(rng, 1, (64, 64)).save(jpeg, "JPEG")
    (root / "cat" / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) * 2 // 3])  # header intact
    (root / "dog" / "notes.txt").write_text("not an image")
    Image.new("RGB", (200, 200)).save(root / "dog" / "bomb.png")
    os.mkfifo(root / "bird" / "pipe")  # opening it would block: the scan must not
    (root / "bird" / "loop").symlink_to(root / "bird" / "loop")
    (root / "bird" / "nested").mkdir()
    (root / "bird" / "nested" / "up").symlink_to(root / "bird")  # a folder inside itself
    return root


def test_the_scan_reports_images_classes_and_every_unreadable_file(photos, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 25_000)  # bomb.png's 40,000 pixels: over, Pillow only warns
    scan = scan_folder(photos, CLASSES)
    reasons = {path.relative_to(photos).as_posix(): reason for path, reason in scan.bad}
    assert reasons == {
        "bird/loop": "symlink loop",
        "bird/nested/up": "symlink loop (a folder inside itself)",
        "bird/pipe": "not a regular file (FIFO; not opened)",
        "dog/notes.txt": "not an image (Pillow does not know its format)",
        "dog/bomb.png": reasons["dog/bomb.png"],
    }
    assert reasons["dog/bomb.png"] == "over Pillow's decompression-bomb limit (200x200 pixels, more than 25000)"
    assert [len(scan.files["train"])] == [37]  # 36 images and the truncated JPEG, whose header is fine
    summary = scan.summary()
    assert summary.startswith(f"{photos}: 37 images (in class folders), 3 classes; modes: ")
    assert (
        "5 unreadable files (skipped unless data.on_bad_file=error):" in summary
        and f"{photos}/bird/pipe: not a regular file (FIFO" in summary
    )


def test_decoding_finds_the_truncated_file_and_on_bad_file_chooses_skip_or_error(photos, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    dm = ImageFolderDataModule(str(photos), image_size=12, val_fraction=0.25, test_fraction=0.25)
    dm.setup()
    assert "cat/truncated.jpg" in "\n".join(f"{path}: {reason}" for path, reason in dm.scan.bad)
    assert any("cannot be decoded (OSError: image file is truncated" in reason for _, reason in dm.scan.bad)
    printed = capsys.readouterr().out
    assert f"{photos}: 36 images (in class folders)" in printed and "6 unreadable files (skipped" in printed
    assert sum(len(dm.splits[s]) for s in ("train", "val", "test")) == 36  # all good images, none twice
    with pytest.raises(
        ClassicCNNsError, match=r"6 problem\(s\) found \(above\); fix them or set data.on_bad_file=skip"
    ):
        ImageFolderDataModule(str(photos), image_size=12, on_bad_file="error").setup()


def test_the_hold_out_is_seeded_per_class_and_independent_of_listing_order():
    files = [(Path(f"c{label}/{i}.png"), label) for label in range(3) for i in range(20)]
    train, val, test = hold_out(files, [0.1, 0.25], seed=0)
    assert [sum(1 for _, label in val if label == c) for c in range(3)] == [2, 2, 2]
    assert [sum(1 for _, label in test if label == c) for c in range(3)] == [5, 5, 5]
    assert sorted(train + val + test) == sorted(files)
    shuffled = files[:]
    random.Random(1).shuffle(shuffled)
    assert hold_out(shuffled, [0.1, 0.25], seed=0) == (train, val, test)
    assert hold_out(files, [0.1, 0.25], seed=1)[1] != val


def test_class_names_channels_and_decoded_splits(photos):
    dm = ImageFolderDataModule(str(photos), image_size=12)
    assert dm.class_names == CLASSES and dm.num_classes == 3 and dm.channels == 3  # before any image is decoded
    assert dm.describe()["class_names"] == CLASSES and dm.describe()["input_size"] == [12, 12]
    dm.setup()
    train = dm.splits["train"]
    assert train.images.shape[1:] == (3, 12, 12) and train.images.dtype == torch.uint8
    # each class's tint survived the conversion from every mode (L images are grey: all channels alike)
    colour = train.images.float().mean((2, 3))
    strongest = colour.argmax(1)[colour.std(1) > 20]
    assert torch.equal(strongest, train.labels[colour.std(1) > 20])
    assert ImageFolderDataModule(str(photos), image_size=12, channels=1).channels == 1


def test_streaming_decodes_in_the_loader_and_leaves_out_what_cannot_be_decoded(photos):
    resident = ImageFolderDataModule(str(photos), image_size=12, batch_size=8, eval_batch_size=64)
    streamed = ImageFolderDataModule(str(photos), image_size=12, batch_size=8, eval_batch_size=64, decode="stream")
    for dm in (resident, streamed):
        dm.setup()
    assert streamed.streaming and isinstance(streamed.test_dataloader(), torch.utils.data.DataLoader)
    images, labels = streamed.on_after_batch_transfer(next(iter(streamed.test_dataloader())), 0)
    expected_images, expected_labels = resident.on_after_batch_transfer(next(iter(resident.test_dataloader())), 0)
    torch.testing.assert_close(images, expected_images)
    assert torch.equal(labels, expected_labels)
    assert torch.equal(streamed.splits["val"].images[:2], resident.splits["val"].images[:2])  # a few, decoded on demand
    train = [streamed.on_after_batch_transfer(batch, 0)[1] for batch in streamed.train_dataloader()]
    assert sum(len(labels) for labels in train) == len(resident.splits["train"])  # the truncated JPEG left out
    assert len(streamed.skipped) == 1 and "truncated.jpg" in next(iter(streamed.skipped))


def test_split_folders_and_class_sets_that_differ(tmp_path):
    rng = np.random.default_rng(1)
    for split, names in (("train", ["a", "b", "c"]), ("val", ["a", "b", "zebra"])):
        for label, name in enumerate(names):
            write_images(tmp_path / split / name, label, 4, rng)
    dm = ImageFolderDataModule(str(tmp_path), image_size=8)
    dm.setup()
    assert dm.class_names == ["a", "b", "c"]
    assert dm.scan.class_differences == [
        "val/ has classes that train/ lacks, left out: zebra",
        "val/ has no folder for: c",
    ]
    assert len(dm.splits["train"]) == 12 and len(dm.splits["val"]) == 8
    assert dm.splits["test"] is dm.splits["val"]  # no test/: ImageNet's layout, reported on val/
    with pytest.raises(ClassicCNNsError, match="2 problem"):
        ImageFolderDataModule(str(tmp_path), image_size=8, on_bad_file="error").setup()


def test_a_missing_folder_or_one_without_class_folders_is_one_clear_error(tmp_path):
    with pytest.raises(ClassicCNNsError, match=r"the image folder .*nowhere does not exist: point data.data_dir=DIR"):
        _ = ImageFolderDataModule(str(tmp_path / "nowhere")).class_names
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(ClassicCNNsError, match="has no class folders: put each class's images in a folder"):
        _ = ImageFolderDataModule(str(tmp_path)).class_names
    with pytest.raises(ClassicCNNsError, match="data.image_size=None is not allowed: every image is resized to it"):
        ImageFolderDataModule(str(tmp_path), image_size=None)


def test_train_evaluate_predict_with_class_names(photos, tmp_path):
    overrides = ["data=imagefolder", "trainer=debug", "data.batch_size=8", "data.image_size=28", "callbacks=fast"]
    train(compose_config(overrides, tmp_path / "run", photos))
    checkpoint = json.loads((tmp_path / "run" / "metrics.json").read_text())["best_checkpoint"]
    model = load_classifier(checkpoint)
    assert model.hparams.data_info["class_names"] == CLASSES and model.hparams.data_info["native_size"] == [28, 28]
    table = evaluate(checkpoint, output_dir=str(tmp_path / "evaluation"), data_dir=str(photos))["per_class"]
    assert [row["class"] for row in table] == CLASSES
    (prediction,) = predict(checkpoint, str(photos / "cat" / "00.jpg"), topk=3)
    assert sorted(prediction.classes) == CLASSES
    other = tmp_path / "other_classes"  # evaluating on another class set would mislabel every row
    other.mkdir()
    for name in CLASSES:
        (other / ("zebra" if name == CLASSES[0] else name)).symlink_to(photos / name, target_is_directory=True)
    with pytest.raises(ClassicCNNsError, match=r"the classes in .* are .*zebra.*, the checkpoint's are"):
        evaluate(checkpoint, output_dir=str(tmp_path / "evaluation2"), data_dir=str(other))


def test_per_channel_normalization_must_fit_the_channels(photos, tmp_path):
    validate(
        compose_config(["data=imagefolder", "data.mean=[0.5,0.4,0.3]", "data.std=[0.2,0.2,0.2]"], tmp_path, photos)
    )
    with pytest.raises(
        ClassicCNNsError, match=r"data.mean=\[0.5, 0.4\] has 2 values: image folder images have 3 channels"
    ):
        validate(compose_config(["data=imagefolder", "data.channels=3", "data.mean=[0.5,0.4]"], tmp_path, photos))
    with pytest.raises(ClassicCNNsError, match=r"data.mean has 3 values but the images of .* have 1 channel\(s\)"):
        _ = ImageFolderDataModule(str(photos), channels=1, mean=(0.5, 0.4, 0.3), std=(0.2,)).channels


def test_crops_and_flips_on_uint8_give_the_values_of_crops_and_flips_after_normalizing():
    """BatchTransform crops and flips the uint8 images before the float steps when nothing per
    pixel comes first (scripts/folder_throughput.py: a quarter of the bytes): the same values,
    drawing the same random numbers, as cropping and flipping the normalized images."""
    mean, std = normalization([0.4, 0.5, 0.6], [0.2, 0.25, 0.3], "standard")
    transform = BatchTransform(mean, std, (20, 20), pad_to=20, crop_padding=3, horizontal_flip=True)
    images = torch.randint(0, 256, (16, 3, 18, 18), dtype=torch.uint8)
    torch.manual_seed(0)
    fast = transform(images, train=True)
    torch.manual_seed(0)
    reference = (transform._geometry(images.float() / 255, train=True) - mean) / std
    assert torch.allclose(fast, reference, atol=1e-6)
    assert not torch.equal(fast, (transform._geometry(images.float() / 255, train=False) - mean) / std)  # it did crop


def splits_of(dm: ImageFolderDataModule) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {name: (split.images.clone(), split.labels.clone()) for name, split in dm.splits.items()}


def assert_same_splits(one: dict, other: dict) -> None:
    assert one.keys() == other.keys()
    for name in one:
        assert torch.equal(one[name][0], other[name][0]) and torch.equal(one[name][1], other[name][1]), name


def cached(photos: Path, cache: Path, **options) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(str(photos), image_size=12, decode="cache", cache_dir=str(cache), **options)
    dm.setup()
    return dm


def test_the_cache_holds_what_decoding_once_gives_and_a_later_run_decodes_nothing(photos, tmp_path, monkeypatch):
    resident = ImageFolderDataModule(str(photos), image_size=12)
    resident.setup()
    first = cached(photos, tmp_path / "cache")
    assert_same_splits(splits_of(first), splits_of(resident))
    assert sorted(map(str, first.scan.undecodable)) == sorted(map(str, resident.scan.undecodable)) != []
    assert len(list((tmp_path / "cache").iterdir())) == 3  # one entry per split, no temporary directory left

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached split was decoded again")

    monkeypatch.setattr("classic_cnns.data.folder.decode_image", no_decoding)
    second = cached(photos, tmp_path / "cache", batch_size=8)
    assert_same_splits(splits_of(second), splits_of(resident))
    assert "truncated.jpg" in " ".join(str(path) for path, _ in second.scan.bad)  # the failure is remembered
    labels = torch.cat([second.on_after_batch_transfer(batch, 0)[1] for batch in second.train_dataloader()])
    assert sorted(labels.tolist()) == sorted(resident.splits["train"].labels.tolist())


def test_a_changed_folder_gets_a_new_cache_entry_and_the_old_one_goes(photos, tmp_path):
    folder = tmp_path / "photos"
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
        for image in sorted((photos / name).glob("0*.png"))[:4]:
            (folder / name / image.name).write_bytes(image.read_bytes())
    cache, fractions = tmp_path / "cache", {"val_fraction": 0.25, "test_fraction": 0.25}
    cached(folder, cache, **fractions)
    before = {entry.name for entry in cache.iterdir()}
    changed = sorted((folder / "cat").iterdir())[0]
    tinted(np.random.default_rng(1), 0, (20, 20)).save(changed)  # same name, new pixels
    after = cached(folder, cache, **fractions)
    fresh = ImageFolderDataModule(str(folder), image_size=12, **fractions)
    fresh.setup()
    assert_same_splits(splits_of(after), splits_of(fresh))
    entries = {entry.name for entry in cache.iterdir()}
    assert len(entries) == 3 and len(entries - before) == 1  # the changed file's split: a new entry, the old one gone


CACHE_FILES = ("images.npy", "labels.npy", "meta.json")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.sampled_from(CACHE_FILES),
    damage=st.sampled_from(["truncate", "flip", "pickle", "empty", "labels_out_of_range", "symlink", "huge_meta"]),
    where=st.floats(0, 1),
)
def test_a_damaged_or_crafted_cache_is_rebuilt_never_trusted(photos, tmp_path_factory, target, damage, where):
    """Whatever was done to an entry's files, the run gets the images decoding gives, and
    nothing outside the cache directory is read as data, run or removed. A changed pixel byte
    is the one change no check sees: any byte is a pixel value (as in an edited image file)."""
    tmp = tmp_path_factory.mktemp("damaged")
    cache, outside = tmp / "cache", tmp / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    expected = splits_of(cached(photos, cache))
    entry = max(cache.iterdir(), key=lambda e: (e / "images.npy").stat().st_size)  # the training split's
    path = entry / target
    data = path.read_bytes()
    at = int(where * (len(data) - 1))
    pixel = target == "images.npy" and damage == "flip" and at >= np.load(path, mmap_mode="r").offset
    if damage == "truncate":
        path.write_bytes(data[:at])
    elif damage == "flip":
        path.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :])
    elif damage == "pickle":
        np.save(entry / ("labels.npy" if target == "meta.json" else target), np.array([{"x": 1}], dtype=object))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "labels_out_of_range":
        np.save(entry / "labels.npy", np.full(len(np.load(entry / "labels.npy")), 7, dtype=np.int64))
    elif damage == "symlink":
        path.unlink()
        path.symlink_to(outside / "keep.txt")
    else:
        (entry / "meta.json").write_text(json.dumps({"count": 1, "failed": [["x", "y" * (2 << 20)]]}))
    got = splits_of(cached(photos, cache))
    if pixel:
        assert torch.equal(got["train"][1], expected["train"][1])
        assert (got["train"][0] != expected["train"][0]).sum() == 1  # that byte, nothing else
        got["train"] = expected["train"]
    assert_same_splits(got, expected)
    assert [p.name for p in outside.iterdir()] == ["keep.txt"] and (outside / "keep.txt").read_text() == "keep"


def test_a_killed_writers_temporary_directory_is_removed_and_a_running_ones_kept(photos, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    (cache / f"abc.partial-{host}-{dead.pid}").mkdir()
    (cache / f"abc.partial-{host}-1").mkdir()  # pid 1 runs
    (cache / f"abc.partial-othernode-{dead.pid}").mkdir()  # a writer on another node: not ours to judge
    cached(photos, cache)
    assert not (cache / f"abc.partial-{host}-{dead.pid}").exists()
    assert (cache / f"abc.partial-{host}-1").exists() and (cache / f"abc.partial-othernode-{dead.pid}").exists()


def test_jpegs_decoded_on_the_device_match_the_workers_decoding_and_a_bad_one_is_skipped_or_refused(photos, tmp_path):
    """decode_on=device (here the CPU: the same decode_jpeg call nvJPEG answers on a GPU)."""
    options = {"image_size": 12, "batch_size": 8, "eval_batch_size": 64, "decode": "stream"}
    workers = ImageFolderDataModule(str(photos), **options)
    device = ImageFolderDataModule(str(photos), decode_on="device", **options)
    for dm in (workers, device):
        dm.setup()
    batch = next(iter(device.test_dataloader()))
    assert sum(item.dim() == 1 for item in batch.items) > 0  # JPEGs came as bytes
    assert sum(item.dim() == 3 for item in batch.items) > 0  # the PNGs decoded in the workers
    images, labels = device.on_after_batch_transfer(device.on_before_batch_transfer(batch, 0), 0)
    expected_images, expected_labels = workers.on_after_batch_transfer(next(iter(workers.test_dataloader())), 0)
    assert torch.equal(labels, expected_labels)
    level = 1 / 255 / 0.25  # one of 255 levels, normalized (std 0.25)
    assert (images - expected_images).abs().max() <= 2 * level + 1e-6  # torchvision's decode and resize vs Pillow's
    train = [
        device.on_after_batch_transfer(device.on_before_batch_transfer(b, 0), 0)[1] for b in device.train_dataloader()
    ]
    assert sum(len(labels) for labels in train) == len(workers.splits["train"]) - 1  # the truncated JPEG left out
    assert len(device.skipped) == 1 and "truncated.jpg" in next(iter(device.skipped))

    clean = tmp_path / "clean"  # only the truncated JPEG is wrong here: the scan finds nothing
    for name in CLASSES:
        (clean / name).mkdir(parents=True)
        for image in [*(photos / name).glob("0*.jpg"), *(photos / name).glob("truncated.jpg")]:
            (clean / name / image.name).write_bytes(image.read_bytes())
    strict = ImageFolderDataModule(
        str(clean),
        decode_on="device",
        on_bad_file="error",
        val_fraction=0.3,
        test_fraction=0.3,
        **(options | {"batch_size": 2}),
    )
    strict.setup()
    with pytest.raises(ClassicCNNsError, match=r"truncated\.jpg: RuntimeError: cannot be decoded"):
        for loader in (strict.train_dataloader(), strict.val_dataloader(), strict.test_dataloader()):
            for b in loader:
                strict.on_before_batch_transfer(b, 0)
    with pytest.raises(ClassicCNNsError, match="data.decode_on=device decodes the batches of a streamed folder"):
        ImageFolderDataModule(str(photos), decode="once", decode_on="device")


@pytest.mark.parametrize("decoding", [["data.decode=stream", "data.decode_on=device"], ["data.decode=cache"]])
def test_a_run_trains_and_tests_on_jpegs_decoded_on_the_device_or_from_the_cache(photos, tmp_path, decoding):
    """Through Lightning's own batch hooks (on_before_batch_transfer decodes on the trainer's device)."""
    overrides = ["data=imagefolder", "trainer=debug", "data.batch_size=8", "data.image_size=28", "callbacks=fast"]
    train(compose_config([*overrides, *decoding, f"data.cache_dir={tmp_path / 'cache'}"], tmp_path / "run", photos))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["epochs"] == 1
