"""The AlexNet paper's ImageNet protocol (experiment=alexnet_imagenet; docs/imagenet-protocol.md),
each part against the paper's text: Krizhevsky, Sutskever, Hinton (2012), "ImageNet
Classification with Deep Convolutional Neural Networks"."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from classic_cnns.classifier import ImageClassifier
from classic_cnns.data import CIFAR10DataModule, ImageFolderDataModule
from classic_cnns.data.folder import square
from classic_cnns.data.transforms import BatchTransform, lighting_noise, pixel_statistics, ten_crops
from classic_cnns.models import AlexNet
from classic_cnns.runs.train import train
from classic_cnns.schedules import reduce_on_plateau
from classic_cnns.tools.inference import evaluate

from .conftest import compose_config, tensorboard_run


def banded(width: int, height: int, margin: int, vertical: bool) -> Image.Image:
    """Blue, with red bands of `margin` pixels at both ends of the longer side."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 2] = 255
    ends = (slice(None), slice(0, margin)), (slice(None), slice(width - margin, width))
    if vertical:
        ends = (slice(0, margin), slice(None)), (slice(height - margin, height), slice(None))
    for rows, cols in ends:
        pixels[rows, cols] = (255, 0, 0)
    return Image.fromarray(pixels)


def test_shorter_side_resized_to_256_then_the_central_256x256():
    """The paper: "Given a rectangular image, we first rescaled the image such that the shorter
    side was of length 256, and then cropped out the central 256x256 patch from the resulting image."

    600x300: rescaled to 512x256, the central 256 columns are the original columns 150-450, so
    the red bands at 0-100 and 500-600 are cut away; the same for a 300x900 portrait (rows 300-600)."""
    for image, vertical in (
        (banded(600, 300, 100, vertical=False), False),
        (banded(300, 900, 200, vertical=True), True),
    ):
        kept = np.asarray(square(image, 256, "shorter_side"))
        assert kept.shape == (256, 256, 3)
        assert (kept[..., 0] == 0).all() and (kept[..., 2] == 255).all(), f"a red band survived (vertical={vertical})"
        stretched = np.asarray(square(image, 256, "stretch"))
        assert (stretched[..., 0] == 255).any()  # the other choice keeps the whole image


def index_image(size: int) -> torch.Tensor:
    """uint8 (1, 2, size, size): channel 0 holds each pixel's row, channel 1 its column."""
    rows = torch.arange(size).view(size, 1).expand(size, size)
    return torch.stack([rows, rows.T]).unsqueeze(0).to(torch.uint8)


def test_the_ten_test_crops_of_a_256_image():
    """The paper: "At test time, the network makes a prediction by extracting five 224x224
    patches (the four corner patches and the center patch) as well as their horizontal
    reflections (hence ten patches in all)". (top, left) on a 256x256 image: centre (16, 16),
    corners (0, 0), (0, 32), (32, 0), (32, 32); then the same five mirrored."""
    crops = ten_crops(index_image(256).float(), 224)
    assert crops.shape == (1, 10, 2, 224, 224)
    expected = [(16, 16), (0, 0), (0, 32), (32, 0), (32, 32)]
    for i, (top, left) in enumerate(expected):
        assert (crops[0, i, 0, 0, 0].item(), crops[0, i, 1, 0, 0].item()) == (top, left)
        assert (crops[0, i, 0, -1, -1].item(), crops[0, i, 1, -1, -1].item()) == (top + 223, left + 223)
        # the reflection: the same patch, columns reversed
        assert (crops[0, 5 + i, 0, 0, 0].item(), crops[0, 5 + i, 1, 0, 0].item()) == (top, left + 223)
        assert torch.equal(crops[0, 5 + i], crops[0, i].flip(-1))
    assert ten_crops(index_image(256).float(), 227)[0, 0, :, 0, 0].tolist() == [14, 14]  # 29 // 2, rounded down


def test_training_patches_are_random_224_windows_with_reflections():
    """The paper: "extracting random 224x224 patches (and their horizontal reflections) from the
    256x256 images": every patch is a window at offsets 0-32, some mirrored."""
    transform = BatchTransform(
        torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), 1 / 255), (224, 224), crop_size=224, horizontal_flip=True
    )
    torch.manual_seed(0)
    patches = transform(index_image(256).expand(64, -1, -1, -1), train=True).round().long()
    assert patches.shape == (64, 2, 224, 224)
    tops, lefts = patches[:, 0, 0, 0], patches[:, 1, 0, :].min(1).values
    assert tops.min() >= 0 and tops.max() <= 32 and lefts.min() >= 0 and lefts.max() <= 32
    assert len(set(zip(tops.tolist(), lefts.tolist()))) > 10
    assert torch.equal(patches[:, 0], tops.view(-1, 1, 1) + torch.arange(224).view(1, 224, 1).expand(64, 224, 224))
    mirrored = patches[:, 1, 0, 0] > patches[:, 1, 0, -1]
    assert 0 < mirrored.sum() < 64
    eval_patch = transform(index_image(256))
    assert eval_patch[0, :, 0, 0].round().tolist() == [16, 16]  # evaluation with test_crops=center: the centre patch


def test_the_mean_image_is_subtracted_per_pixel():
    """The paper: "We did not pre-process the images in any other way, except for subtracting the
    mean activity over the training set from each pixel. So we trained our network on the
    (centered) raw RGB values of the pixels." Three 1-channel 2x2 training images; their mean
    image by hand: [[2, 4], [6, 8]] (0-255 units)."""

    class Split:
        images = torch.tensor([[[[1, 2], [3, 4]]], [[[2, 4], [6, 8]]], [[[3, 6], [9, 12]]]], dtype=torch.uint8)

        def __len__(self):
            return 3

    statistics = pixel_statistics(Split(), chunk=2)
    torch.testing.assert_close(statistics["mean_image"] * 255, torch.tensor([[[[2.0, 4.0], [6.0, 8.0]]]]))
    transform = BatchTransform(torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), 1 / 255), (2, 2), mean_image=True)
    transform.fit(statistics)
    image = torch.tensor([[[[10, 10], [10, 10]]]], dtype=torch.uint8)
    torch.testing.assert_close(transform(image), torch.tensor([[[[8.0, 6.0], [4.0, 2.0]]]]), atol=1e-4, rtol=0)


def test_data_scale_paper_subtracts_the_training_splits_mean_image(data_dir):
    """data.scale=paper on CIFAR-10 (the tiny copy): the test images minus the mean of the
    training split's images, pixel by pixel, in 0-255 units; paper_channel: minus one value per channel."""
    paper = CIFAR10DataModule(str(data_dir), scale="paper", val_size=40, download=False)
    paper.setup("fit")
    test_images = paper.splits["test"].images[:8]
    mean_image = paper.splits["train"].images.double().mean(0)
    torch.testing.assert_close(
        paper.transform(test_images).double(), test_images.double() - mean_image, atol=1e-3, rtol=0
    )
    assert mean_image.std(dim=(1, 2)).min() > 1  # it varies from pixel to pixel: not a per-channel mean
    mean = (0.4914, 0.4822, 0.4465)
    channel = CIFAR10DataModule(str(data_dir), scale="paper_channel", mean=mean, download=False)
    expected = test_images.float() - torch.tensor(mean).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(channel.transform(test_images), expected, atol=1e-3, rtol=0)


def test_a_streamed_folder_gets_the_same_mean_image_as_a_decoded_one(tmp_path):
    """A folder decoded every epoch (data.decode=stream) reads its training images once, in
    chunks, for the mean image; the same as the one of the images held in memory."""
    rng = np.random.default_rng(1)
    for label in range(2):
        (tmp_path / f"c{label}").mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).save(tmp_path / f"c{label}" / f"{i}.png")
    mean_images = []
    for decode in ("once", "stream"):
        folder = ImageFolderDataModule(str(tmp_path), image_size=8, resize="shorter_side", decode=decode, scale="paper")
        folder.setup("fit")
        folder.fit_statistics()
        mean_images.append(folder.batch_transform.mean)
    torch.testing.assert_close(mean_images[0], mean_images[1])
    assert mean_images[0].shape == (1, 3, 8, 8)


def test_pca_lighting_noise():
    """The paper: "to each RGB image pixel I_xy = [I^R_xy, I^G_xy, I^B_xy]^T we add the following
    quantity: [p1, p2, p3][a1 l1, a2 l2, a3 l3]^T where p_i and l_i are ith eigenvector and
    eigenvalue of the 3x3 covariance matrix of RGB pixel values, respectively, and a_i is [drawn]
    from a Gaussian with mean zero and standard deviation 0.1. Each a_i is drawn only once for
    all the pixels of a particular training image".

    The eigen-pairs are those of the training pixels' covariance (computed here with numpy); the
    noise's covariance is P diag((0.1 l_i)^2) P^T; one draw per image, the same at every pixel."""
    generator = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[60.0, 0, 0], [40, 20, 0], [30, 10, 8]])
    pixels = (128 + torch.randn(4 * 8 * 8, 3, generator=generator) @ mixing.T).clamp(0, 255).to(torch.uint8)

    class Split:
        images = pixels.view(4, 8, 8, 3).permute(0, 3, 1, 2)

        def __len__(self):
            return 4

    statistics = pixel_statistics(Split())
    covariance = np.cov(pixels.double().numpy().T / 255, bias=True)
    values, vectors = statistics["eigenvalues"].double().numpy(), statistics["eigenvectors"].double().numpy()
    np.testing.assert_allclose(covariance @ vectors, vectors * values, atol=1e-6)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(3), atol=1e-5)

    torch.manual_seed(0)
    noise = lighting_noise(200_000, statistics["eigenvalues"], statistics["eigenvectors"], 0.1).double().numpy()
    expected = vectors @ np.diag((0.1 * values) ** 2) @ vectors.T
    np.testing.assert_allclose(np.cov(noise.T), expected, rtol=0, atol=0.02 * np.abs(expected).max())
    np.testing.assert_allclose((noise @ vectors).std(0), 0.1 * values, rtol=0.02)  # a_i l_i along p_i

    transform = BatchTransform(torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1), (8, 8), lighting=0.1)
    transform.fit(statistics)
    images = Split.images
    shift = transform(images, train=True) - transform(images)
    assert torch.allclose(shift, shift[..., :1, :1].expand_as(shift), atol=1e-6)  # one draw per image, every pixel
    assert shift[..., 0, 0].abs().min() > 0


def test_top5_error_by_hand():
    """The paper: "the top-5 error rate is the fraction of test images for which the correct label
    is not among the five labels considered most probable by the model." Four images, seven
    classes; the labels rank 1st, 5th, 6th and 1st: top-1 error 2/4, top-5 error 1/4."""
    logits = torch.tensor(
        [[7.0, 6, 5, 4, 3, 2, 1], [7, 6, 5, 4, 3, 2, 1], [7, 6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6, 7]]
    )
    labels = torch.tensor([0, 4, 5, 6])
    model = ImageClassifier(nn.Identity(), optimizer=None, data_info={"class_names": list("abcdefg")}, top5=True)
    model._step((logits, labels), "test")
    assert 1 - model.metrics["test_acc"].compute().item() == pytest.approx(0.5)
    assert 1 - model.metrics["test_acc_top5"].compute().item() == pytest.approx(0.25)


def test_ten_crops_average_the_softmax():
    """The paper: "averaging the predictions made by the network's softmax layer on the ten
    patches". Two crops whose softmax is (0.7, 0.2, 0.1) and (0.1, 0.2, 0.7): the image's (0.4, 0.2, 0.4)."""
    model = ImageClassifier(nn.Flatten(), optimizer=None, data_info={"class_names": list("abc")})
    crops = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]]).log().view(1, 2, 3, 1, 1)
    torch.testing.assert_close(model(crops).softmax(1), torch.tensor([[0.4, 0.2, 0.4]]))


def test_paper_initialization():
    """The paper: "We initialized the weights in each layer from a zero-mean Gaussian distribution
    with standard deviation 0.01. We initialized the neuron biases in the second, fourth, and
    fifth convolutional layers, as well as in the fully-connected hidden layers, with the
    constant 1. [...] We initialized the neuron biases in the remaining layers with the constant 0."""
    torch.manual_seed(0)
    net = AlexNet(num_classes=10, widths=(32, 32, 32, 32, 32), hidden_features=256, init="paper")
    layers = [m for m in net.features.modules() if isinstance(m, nn.Conv2d)] + [
        m for m in net.classifier if isinstance(m, nn.Linear)
    ]
    names = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    bias_one = {"conv2", "conv4", "conv5", "fc6", "fc7"}  # "the fully-connected hidden layers": fc6, fc7
    assert len(layers) == len(names)
    for name, layer in zip(names, layers):
        assert torch.all(layer.bias == (1.0 if name in bias_one else 0.0)), name
        assert layer.weight.std().item() == pytest.approx(0.01, rel=0.1), name
        assert abs(layer.weight.mean().item()) < 0.002, name


def test_the_learning_rate_is_divided_by_10_when_validation_stops_improving():
    """The paper: "The heuristic which we followed was to divide the learning rate by 10 when the
    validation error rate stopped improving with the current learning rate. The learning rate was
    initialized at 0.01"."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01, momentum=0.9, weight_decay=5e-4)
    scheduler = reduce_on_plateau(optimizer, total_steps=100, patience=1)
    for accuracy in (0.30, 0.40, 0.40):  # one epoch without improvement: still within the patience
        scheduler.step(accuracy)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    scheduler.step(0.39)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)


def test_the_experiment_is_the_papers_protocol(tmp_path):
    """The paper: "We trained our models using stochastic gradient descent with a batch size of 128
    examples, momentum of 0.9, and weight decay of 0.0005" (v <- 0.9 v - 0.0005 e w - e grad:
    plain momentum, no Nesterov), lr 0.01, and the data parts above."""
    cfg = compose_config(["experiment=alexnet_imagenet"], tmp_path, tmp_path)
    assert (
        cfg.optimizer._target_,
        cfg.optimizer.lr,
        cfg.optimizer.momentum,
        cfg.optimizer.weight_decay,
        cfg.optimizer.nesterov,
    ) == (
        "torch.optim.SGD",
        0.01,
        0.9,
        5e-4,
        False,
    )
    assert (cfg.scheduler._target_, cfg.scheduler.factor) == ("classic_cnns.schedules.reduce_on_plateau", 0.1)
    data = cfg.data
    assert (data.batch_size, data.image_size, data.resize, data.crop_size, data.horizontal_flip) == (
        128,
        256,
        "shorter_side",
        227,
        True,
    )
    assert (data.test_crops, data.lighting, data.scale) == ("ten", 0.1, "paper")
    assert (cfg.model.init, cfg.model.kernel_sizes[0], cfg.model.strides[0], cfg.top5) == ("paper", 11, 4, True)


def test_alexnet_imagenet_trains_on_an_imagenet_layout_folder(tmp_path):
    """End to end on a generated folder in ImageNet's layout (6 classes, small PNGs of odd widths), with a tiny
    network: the experiment composes, trains a step and reports top-1 and top-5 errors."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2)):
        for label in range(6):
            folder = tmp_path / "imagenet" / split / f"n0{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (20, 24 + 4 * i, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    overrides = [
        "experiment=alexnet_imagenet",
        "trainer=debug",
        "trainer.max_epochs=1",
        "trainer.detect_anomaly=false",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "callbacks.views.worst_images=2",
        "data.image_size=20",
        "data.crop_size=16",
        "data.batch_size=6",
        "data.eval_batch_size=6",
        "model.widths=[4,4,4,4,4]",
        "model.kernel_sizes=[3,3,3,3,3]",
        "model.strides=[1,1,1,1,1]",
        "model.paddings=[1,1,1,1,1]",
        "model.hidden_features=8",
    ]
    train(compose_config(overrides, tmp_path / "run", tmp_path / "imagenet"))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for stage in ("val", "test"):
        assert 0 <= metrics[f"{stage}/top5_error"] <= metrics[f"{stage}/top1_error"] <= 1
        assert metrics[f"{stage}/top1_error"] == pytest.approx(1 - metrics[f"{stage}/acc"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tensorboard_run(tmp_path / "run")))
    events.Reload()
    assert {"val/top1_error", "val/top5_error", "train/top5_error"} <= set(events.Tags()["scalars"])
    # evaluating the checkpoint recomputes the mean image from the training split; ten crops, one prediction per image
    evaluation = evaluate(
        metrics["best_checkpoint"], output_dir=str(tmp_path / "evaluation"), data_dir=str(tmp_path / "imagenet")
    )
    assert evaluation["images"] == 12 and [row["class"] for row in evaluation["per_class"]] == [
        f"n0{i}" for i in range(6)
    ]
