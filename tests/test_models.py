import pytest
import torch
from torch import nn

from classic_cnns.models import AlexNet, LeNet5
from classic_cnns.models.layers import MinPool2d, conv_padding, make_pool

CIFAR_ALEXNET = dict(  # conf/model/alexnet.yaml
    widths=(64, 192, 384, 256, 256), kernel_sizes=(3, 5, 3, 3, 3), strides=(1,) * 5,
    hidden_features=1024, padding="same", norm="batch",
)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", [28, 32, 224, 227])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("build", [LeNet5, lambda **kw: AlexNet(**CIFAR_ALEXNET, **kw)], ids=["lenet5", "alexnet_cifar"])
def test_output_shape_for_every_input_size(build, size, channels):
    model = build(in_channels=channels, num_classes=7, input_size=(size, size)).eval()
    assert model(torch.zeros(2, channels, size, size)).shape == (2, 7)


@pytest.mark.parametrize("size", [224, 227])
def test_paper_alexnet_runs_at_imagenet_sizes(size):
    model = AlexNet(num_classes=10, input_size=(size, size)).eval()
    assert model(torch.zeros(1, 3, size, size)).shape == (1, 10)


def test_paper_alexnet_parameters_and_feature_maps():
    model = AlexNet()  # the paper's defaults: 1000 classes, 227x227
    assert n_params(model) == 62_378_344
    widths, x = [], torch.zeros(1, 3, 227, 227)
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            widths.append(x.shape[-1])
    assert widths == [55, 27, 27, 13, 13, 13, 13, 6]  # conv1 pool1 conv2 pool2 conv3 conv4 conv5 pool5


def test_lenet5_default_has_the_classic_16x5x5_features_on_28x28():
    model = LeNet5()
    assert model.features(torch.zeros(1, 1, 28, 28)).shape == (1, 16, 5, 5)
    assert model.classifier[1].in_features == 400


def test_classifier_is_sized_from_the_features():
    assert LeNet5(padding="valid").classifier[1].in_features == 16 * 4 * 4  # 28-24-12-8-4
    assert LeNet5(padding="same").classifier[1].in_features == 16 * 7 * 7  # 28-28-14-14-7
    assert LeNet5(input_size=(64, 64)).classifier[1].in_features == 16 * 14 * 14  # 64-64-32-28-14


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="32x32 input is too small"):
        AlexNet(input_size=(32, 32))  # the paper's 11x11/4 stem leaves nothing to pool


def test_min_pooling_is_minus_max_of_minus_x():
    x = torch.randn(2, 3, 8, 8)
    out = make_pool("min", 2, 2)(x)
    assert isinstance(make_pool("min", 2, 2), MinPool2d)
    torch.testing.assert_close(out, x.unfold(2, 2, 2).unfold(3, 2, 2).amin(dim=(-1, -2)))
    assert not torch.equal(out, make_pool("max", 2, 2)(x))


@pytest.mark.parametrize("pooling", ["max", "avg", "min"])
def test_pooling_choice_reaches_both_networks(pooling):
    kinds = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "min": MinPool2d}
    for model in (LeNet5(pooling=pooling), AlexNet(pooling=pooling, **{**CIFAR_ALEXNET, "input_size": (32, 32)})):
        pools = [m for m in model.features if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
        assert pools and all(type(m) is kinds[pooling] for m in pools)


def test_pool_geometry_defaults_and_overrides():
    assert LeNet5().features[3].kernel_size == 2 and LeNet5().features[3].stride == 2
    alexnet_pool = AlexNet().features[3]
    assert (alexnet_pool.kernel_size, alexnet_pool.stride) == (3, 2)  # overlapping
    assert LeNet5(pool_kernel_size=3, pool_stride=2).features[3].kernel_size == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pooling="median"), "unknown pooling 'median'; choose one of: max, avg, min"),
        (dict(activation="gelu"), "unknown activation 'gelu'; choose one of: relu, tanh, sigmoid"),
        (dict(norm="group"), "unknown norm 'group'; choose one of: none, batch, lrn"),
        (dict(padding="full"), "unknown padding 'full'"),
    ],
)
def test_unknown_choice_lists_the_valid_ones(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LeNet5(**kwargs)


def test_conv_padding_formula():
    assert [conv_padding(p, 5, default=2) for p in ("default", "same", "valid", 3)] == [2, 2, 0, 3]
    assert conv_padding("same", 11, default=0) == 5


def test_lrn_only_after_conv1_and_conv2_batch_norm_after_every_conv():
    def count(model, kind):
        return sum(isinstance(m, kind) for m in model.features)

    assert count(AlexNet(), nn.LocalResponseNorm) == 2
    assert count(AlexNet(norm="batch"), nn.BatchNorm2d) == 5
    assert count(LeNet5(norm="batch"), nn.BatchNorm2d) == 2
