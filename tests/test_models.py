import urllib.error

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from classic_cnns import ClassicCNNsError
from classic_cnns.models import AlexNet, LayerChoices, LeNet5
from classic_cnns.models.layers import (
    LocalResponseNorm,
    MinPool2d,
    SamePad2d,
    Subsampling2d,
    conv2d,
    lrn_divisor_spread,
    make_norm,
    make_pool,
    stage,
)
from classic_cnns.runs.config_checks import ConfigError, build_network, validate

CIFAR_ALEXNET = dict(  # conf/model/alexnet.yaml
    widths=(64, 192, 384, 256, 256),
    kernel_sizes=(3, 5, 3, 3, 3),
    strides=(1,) * 5,
    hidden_features=1024,
)
CIFAR_LAYERS = dict(padding="same", norm="batch")  # its layer choices


def cifar_alexnet(**kwargs) -> AlexNet:
    """conf/model/alexnet.yaml; keyword arguments of LayerChoices go to its `layers`."""
    choices = {key: kwargs.pop(key) for key in list(kwargs) if key in LayerChoices.__dataclass_fields__}
    return AlexNet(**{**CIFAR_ALEXNET, **kwargs}, layers=LayerChoices(**{**CIFAR_LAYERS, **choices}))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", [28, 32, 224, 227])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("build", [LeNet5, cifar_alexnet], ids=["lenet5", "alexnet_cifar"])
def test_output_shape_for_every_input_size(build, size, channels):
    # Shapes only: on the meta device (no memory, no arithmetic) the 224-pixel AlexNet takes
    # milliseconds instead of seconds; test_paper_alexnet_runs_at_imagenet_sizes computes for real.
    with torch.device("meta"):
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
    assert LeNet5(layers=LayerChoices(padding="valid")).classifier[1].in_features == 16 * 4 * 4  # 28-24-12-8-4
    assert LeNet5(layers=LayerChoices(padding="same")).classifier[1].in_features == 16 * 7 * 7  # 28-28-14-14-7
    assert LeNet5(input_size=(64, 64)).classifier[1].in_features == 16 * 14 * 14  # 64-64-32-28-14


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="32x32 input is too small"):
        AlexNet(input_size=(32, 32))  # the paper's 11x11/4 stem leaves nothing to pool


def test_min_pooling_is_minus_max_of_minus_x():
    x = torch.randn(2, 3, 8, 8)
    out = make_pool("min", 3, 2, 2)(x)
    assert isinstance(make_pool("min", 3, 2, 2), MinPool2d)
    torch.testing.assert_close(out, x.unfold(2, 2, 2).unfold(3, 2, 2).amin(dim=(-1, -2)))
    assert not torch.equal(out, make_pool("max", 3, 2, 2)(x))


def test_lp_pooling_is_the_power_average():
    x = torch.randn(2, 3, 8, 8)
    pool = LayerChoices(pooling="lp").pool_layer(3, 2, 2)
    windows = x.unfold(2, 2, 2).unfold(3, 2, 2)
    torch.testing.assert_close(pool(x), windows.square().sum(dim=(-1, -2)).sqrt())  # (sum of x^p)^(1/p), p = 2


def test_pooling_config_builds_the_layer_choices_both_networks_take(make_cfg):
    for model in ("lenet5", "alexnet"):
        cfg = make_cfg(f"model={model}", "pooling=lp", "activation=tanh")
        net = instantiate(cfg.model, in_channels=1, num_classes=10, input_size=(32, 32))
        assert [type(m) for m in net.features if stage(m) == "pool"] == [nn.LPPool2d] * (2 if model == "lenet5" else 3)
        assert sum(isinstance(m, nn.Tanh) for m in net.modules()) == (4 if model == "lenet5" else 7)


@pytest.mark.parametrize("pooling", ["max", "avg", "min"])
def test_pooling_choice_reaches_both_networks(pooling):
    kinds = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "min": MinPool2d}
    for model in (LeNet5(layers=LayerChoices(pooling=pooling)), cifar_alexnet(pooling=pooling, input_size=(32, 32))):
        pools = [m for m in model.features if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
        assert pools and all(type(m) is kinds[pooling] for m in pools)


def test_pool_geometry_defaults_and_overrides():
    assert LeNet5().features[3].kernel_size == 2 and LeNet5().features[3].stride == 2
    alexnet_pool = AlexNet().features[3]
    assert (alexnet_pool.kernel_size, alexnet_pool.stride) == (3, 2)  # overlapping
    assert LeNet5(layers=LayerChoices(pool_kernel_size=3, pool_stride=2)).features[3].kernel_size == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pooling="median"), "unknown pooling 'median'; choose one of: max, avg, min, subsampling"),
        (dict(activation="gelu"), "unknown activation 'gelu'; choose one of: relu, tanh, sigmoid, scaled_tanh"),
        (dict(padding_mode="mirror"), "unknown padding mode 'mirror'; choose one of: zeros, reflect"),
        (dict(output="softmax"), "unknown output 'softmax'"),  # LeNet5's own argument
        (dict(norm="group"), "unknown norm 'group'; choose one of: none, batch, lrn"),
        (dict(padding="full"), "unknown padding 'full'"),
    ],
)
def test_unknown_choice_lists_the_valid_ones(kwargs, message):
    with pytest.raises(ValueError, match=message):
        choices = {key: value for key, value in kwargs.items() if key in LayerChoices.__dataclass_fields__}
        LeNet5(layers=LayerChoices(**choices), **{key: kwargs[key] for key in kwargs.keys() - choices.keys()})


def test_conv_padding_choices():
    assert [conv2d(1, 1, 5, padding=p, default_padding=2).padding for p in ("default", "same", "valid", 3)] == [
        (2, 2),
        (2, 2),
        (0, 0),
        (3, 3),
    ]
    assert conv2d(1, 1, 3, padding="same", padding_mode="reflect").padding_mode == "reflect"


@pytest.mark.parametrize("size", [7, 8, 31, 32, 227])
@pytest.mark.parametrize("kernel_size, stride", [(11, 4), (3, 2), (2, 1), (5, 3)])
def test_same_padding_gives_ceil_n_over_s_also_when_strided(size, kernel_size, stride):
    conv = conv2d(2, 4, kernel_size, stride=stride, padding="same")
    out = conv(torch.randn(1, 2, size, size))
    assert out.shape[-2:] == (-(-size // stride),) * 2
    assert isinstance(conv[0], SamePad2d) and conv[1].padding == (0, 0)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_mode_reaches_strided_same_padding(mode):
    pad = SamePad2d(3, 2, mode)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    expected = torch.nn.functional.pad(x, (0, 1, 0, 1), mode=mode)
    torch.testing.assert_close(pad(x), expected)


def test_lrn_only_after_conv1_and_conv2_batch_norm_after_every_conv():
    def count(model, kind):
        return sum(isinstance(m, kind) for m in model.features)

    assert count(AlexNet(), LocalResponseNorm) == 2
    assert count(AlexNet(layers=LayerChoices(norm="batch")), nn.BatchNorm2d) == 5
    assert count(LeNet5(layers=LayerChoices(norm="batch")), nn.BatchNorm2d) == 2


def test_lrn_is_the_papers_formula():
    """Krizhevsky et al. 2012, section 3.3, written out: b[i] = a[i] / (k + alpha * sum_j a[j]^2)^beta
    over the maps j from max(0, i - n/2) to min(N - 1, i + n/2), with k=2, n=5, alpha=1e-4, beta=0.75."""
    k, n, alpha, beta = 2.0, 5, 1e-4, 0.75
    a = torch.randn(2, 7, 3, 4, dtype=torch.float64) * 60  # 0-255 scale inputs: the sum term matters
    expected = torch.empty_like(a)
    for i in range(a.shape[1]):
        window = a[:, max(0, i - n // 2) : min(a.shape[1] - 1, i + n // 2) + 1]
        expected[:, i] = a[:, i] / (k + alpha * window.square().sum(dim=1)) ** beta
    torch.testing.assert_close(make_norm("lrn", 7)(a), expected)  # what norm=lrn builds
    assert not torch.allclose(expected, a / k**beta, rtol=0.05)  # the inputs make the window term count


def test_lrn_divisor_spread_says_whether_lrn_was_more_than_a_constant_factor():
    net = cifar_alexnet(norm="lrn", widths=(8, 8, 8, 8, 8), hidden_features=8, input_size=(32, 32))
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    unit, paper = lrn_divisor_spread(net, x), lrn_divisor_spread(net, x * 64)  # unit variance vs 0-255 values
    assert set(unit) == {"lrn1/divisor_median", "lrn1/divisor_max", "lrn2/divisor_median", "lrn2/divisor_max"}
    assert 1.0 <= unit["lrn1/divisor_median"] <= unit["lrn1/divisor_max"] < 1.01  # k=2 dominates: a constant factor
    assert paper["lrn1/divisor_max"] > 1.1
    assert lrn_divisor_spread(cifar_alexnet(input_size=(32, 32)), x) == {}  # no LRN, nothing to say


def per_layer_params(model: nn.Module) -> list[int]:
    return [sum(p.numel() for p in m.parameters()) for m in model.modules() if not list(m.children())]


def lenet5_1998() -> LeNet5:  # conf/model/lenet5_1998.yaml on 32x32 input
    layers = LayerChoices(activation="scaled_tanh", pooling="subsampling")
    return LeNet5(input_size=(32, 32), layers=layers, c1_padding=0, c3_table=True, output="rbf")


def test_lenet5_1998_has_exactly_the_papers_parameters():
    model = lenet5_1998()
    assert n_params(model) == 60_000
    counts = [c for c in per_layer_params(model) if c]
    assert counts == [156, 12, 1_516, 32, 48_120, 10_164]  # C1 S2 C3 S4 C5 F6
    assert model.classifier[-1].prototypes.numel() == 840 and not any(
        p is model.classifier[-1].prototypes for p in model.parameters()
    )
    assert model(torch.zeros(3, 1, 32, 32)).shape == (3, 10)


def test_c3_connection_table_cuts_the_right_connections():
    from classic_cnns.models.lenet import C3_TABLE, ConnectionTableConv2d

    conv = ConnectionTableConv2d(C3_TABLE, 6, 5)
    for source in range(6):
        x = torch.zeros(1, 6, 5, 5)
        x[0, source] = torch.randn(5, 5)
        out = conv(x)[0, :, 0, 0] - conv.bias
        for target, inputs in enumerate(C3_TABLE):
            assert (out[target].abs() > 0) == (source in inputs), (source, target)


def test_subsampling_is_window_sum_times_coefficient_plus_bias():
    pool = Subsampling2d(2, 2, 2)
    with torch.no_grad():
        pool.weight.copy_(torch.tensor([0.5, -1.0]))
        pool.bias.copy_(torch.tensor([1.0, 0.0]))
    x = torch.arange(32.0).view(1, 2, 4, 4)
    sums = x.unfold(2, 2, 2).unfold(3, 2, 2).sum(dim=(-1, -2))
    torch.testing.assert_close(
        pool(x), sums * torch.tensor([0.5, -1.0]).view(1, 2, 1, 1) + torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    )


def test_rbf_output_is_minus_squared_distance_to_fixed_bitmaps():
    rbf = lenet5_1998().classifier[-1]
    prototypes = rbf.prototypes
    assert set(prototypes.unique().tolist()) == {-1.0, 1.0} and len({tuple(p.tolist()) for p in prototypes}) == 10
    out = rbf(prototypes[3:4])
    assert out.argmax().item() == 3 and out[0, 3].item() == 0.0


def test_alexnet_two_gpu_split_and_torchvision_variant():
    assert n_params(AlexNet(groups=2)) == 60_965_224
    torchvision_style = AlexNet(
        widths=(64, 192, 384, 256, 256),
        paddings=(2, 2, 1, 1, 1),
        layers=LayerChoices(norm="none"),
        input_size=(224, 224),
    )
    assert n_params(torchvision_style) == 61_100_840  # torchvision.models.alexnet()


@pytest.mark.parametrize("pooling", ["max", "avg", "min", "subsampling", "lp"])
@pytest.mark.parametrize("padding", ["valid", "same", 1])
@pytest.mark.parametrize("size", [28, 32])
def test_every_pooling_and_padding_on_both_networks(pooling, padding, size):
    lenet = LeNet5(input_size=(size, size), layers=LayerChoices(pooling=pooling, padding=padding)).eval()
    assert lenet(torch.zeros(1, 1, size, size)).shape == (1, 10)

    def build():
        return cifar_alexnet(padding=padding, pooling=pooling, input_size=(size, size))

    if padding == "valid":  # five unpadded convolutions and three pools leave nothing of 32x32
        with pytest.raises(ValueError, match="too small"):
            build()
    else:
        assert build().eval()(torch.zeros(1, 3, size, size)).shape == (1, 1000)


@pytest.fixture(scope="module")
def torchvision_alexnet():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.alexnet().eval()


def _alexnet_torchvision_config(make_cfg, *overrides):
    cfg = make_cfg("model=alexnet_torchvision", *overrides)
    assert cfg.data.image_size == 224  # torchvision's AlexNet input
    return cfg


def test_alexnet_torchvision_loads_torchvisions_state_dict_unchanged_and_computes_the_same(
    make_cfg, torchvision_alexnet
):
    cfg = _alexnet_torchvision_config(make_cfg)
    net = instantiate(cfg.model, in_channels=3, num_classes=1000, input_size=(224, 224)).eval()
    assert list(net.state_dict()) == list(torchvision_alexnet.state_dict())
    net.load_state_dict(torchvision_alexnet.state_dict())  # strict: same keys, same shapes
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(net(x), torchvision_alexnet(x))
        y = torch.randn(1, 3, 256, 256)  # the adaptive 6x6 average pooling too
        assert torch.equal(net(y), torchvision_alexnet(y))


def test_pretrained_goes_through_torchvisions_weights_api_and_keeps_fc8_for_other_classes(
    make_cfg, torchvision_alexnet, monkeypatch
):
    from torchvision.models import AlexNet_Weights

    asked = {}
    monkeypatch.setattr(
        AlexNet_Weights, "get_state_dict", lambda self, **kw: asked.update(kw) or torchvision_alexnet.state_dict()
    )
    cfg = _alexnet_torchvision_config(make_cfg, "model.pretrained=true")
    net = build_network(cfg, instantiate(cfg.data))  # CIFAR-10
    assert asked["weights_only"]  # tensors only: a cached file cannot run code
    state, reference = net.state_dict(), torchvision_alexnet.state_dict()
    assert all(torch.equal(state[k], reference[k]) for k in reference if not k.startswith("classifier.6."))
    assert state["classifier.6.weight"].shape == (10, 4096)  # FC8: a new layer for CIFAR-10's classes
    with pytest.raises(ClassicCNNsError, match="this network differs: size mismatch for features.0.weight"):
        build_network(cfg, instantiate(cfg.data, _target_="classic_cnns.data.MNISTDataModule"))


def test_pretrained_offline_is_one_line_naming_the_file_for_torchs_cache(make_cfg, tmp_path, monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cfg = _alexnet_torchvision_config(make_cfg, "model.pretrained=true")
    with pytest.raises(ClassicCNNsError) as error:
        build_network(cfg, instantiate(cfg.data))
    message = str(error.value)
    assert (
        "\n" not in message
        and f"place https://download.pytorch.org/models/alexnet-owt-7be5be79.pth as {tmp_path}/hub/checkpoints/alexnet-owt-7be5be79.pth"
        in message
    )


# The issue's (and torchvision's weights' documented) ImageNet statistics, per RGB channel.
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def test_pretrained_alexnet_gets_imagenets_normalization_by_itself(make_cfg):
    cfg = _alexnet_torchvision_config(make_cfg, "model.pretrained=true")
    validate(cfg)
    assert (list(cfg.data.mean), list(cfg.data.std)) == (IMAGENET_MEAN, IMAGENET_STD)
    data = instantiate(cfg.data)
    assert data.describe()["mean"] == pytest.approx(IMAGENET_MEAN) and data.describe()["std"] == pytest.approx(
        IMAGENET_STD
    )
    cfg = _alexnet_torchvision_config(make_cfg)  # trained from scratch: CIFAR-10's own statistics
    assert list(cfg.data.mean) == [0.4914, 0.4822, 0.4465] and list(cfg.data.std) == [0.2470, 0.2435, 0.2616]


@pytest.mark.parametrize("override", ["data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]", "data.scale=paper"])
def test_pretrained_alexnet_with_another_normalization_is_one_line_before_training(make_cfg, override):
    cfg = _alexnet_torchvision_config(make_cfg, "model.pretrained=true", override)
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    message = str(error.value)
    assert "\n" not in message and "model.pretrained=true loads weights trained on ImageNet's normalization" in message
    assert "use data.mean=[0.485,0.456,0.406] data.std=[0.229,0.224,0.225]" in message
