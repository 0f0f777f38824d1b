"""The eight implementations of the reference notebooks (../shared/seeds/), one experiment each
(conf/experiment/notebook/): every value checked against the notebook's text, quoted here."""

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from classic_cnns.data import CIFAR10DataModule, MNISTDataModule
from classic_cnns.models.layers import initialize, pool_with_padding
from classic_cnns.runs.config_checks import ConfigError, build_network, validate
from classic_cnns.runs.train import train

from .conftest import compose_config, image_ids

KERAS_ADAM = dict(lr=1e-3, betas=[0.9, 0.999], eps=1e-7, weight_decay=0.0)  # keras.optimizers.Adam() defaults
TORCH_ADAM = dict(lr=1e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.0)  # optim.Adam(params, lr=0.001)


def conv(k: int, c_in: int, c_out: int) -> int:
    return (k * k * c_in + 1) * c_out


def dense(n_in: int, n_out: int) -> int:
    return (n_in + 1) * n_out


# What each notebook's code says, the parameter count computed from its layers (the Keras
# summaries print 156 and 2416 for LeNet-5's C1 and C3, and 2688 and 614656 for AlexNet's conv1
# and conv2, then are cut off in the text), and, for the crashing ones, the flatten size their
# code hard-codes beside the one the data gives.
NOTEBOOKS = {
    "001_keras_lenet5": dict(
        # Conv2D(6,(5,5),padding="valid",activation="tanh",input_shape=(28,28,1)), AveragePooling2D(2, strides=2),
        # Conv2D(16,(5,5),"valid","tanh"), AveragePooling2D, Flatten (None, 256), Dense 120/84 tanh, Dense 10 softmax
        input=(1, 28, 28),
        layers=dict(activation="tanh", pooling="avg", padding="valid", norm="none"),
        params=conv(5, 1, 6) + conv(5, 6, 16) + dense(256, 120) + dense(120, 84) + dense(84, 10),
        flat=256,
        # model.fit(..., batch_size=128, epochs=3, validation_split=0.2), X / 255.0, Adam()
        optimizer=KERAS_ADAM,
        batch=128,
        epochs=3,
        val_from="end",
        val_size=12_000,
        mean=[0.0],
        std=[1.0],
        image_size=None,
        steps=375,  # "375/375" per epoch
        model=dict(init="keras"),
    ),
    "001_keras_alexnet": dict(
        # Conv2D(96,(3,3),same) relu, MaxPooling2D((3,3),(2,2)), Conv2D(256,(5,5),same), pool, Conv2D(384,(3,3)),
        # Conv2D(384,(3,3)), Conv2D(256,(3,3)), pool, Flatten, Dense(4096) relu Dropout(0.5) x2, Dense(10) softmax
        input=(3, 32, 32),
        layers=dict(activation="relu", pooling="max", padding="default", norm="none"),
        params=conv(3, 3, 96)
        + conv(5, 96, 256)
        + conv(3, 256, 384)
        + conv(3, 384, 384)
        + conv(3, 384, 256)
        + dense(256 * 3 * 3, 4096)
        + dense(4096, 4096)
        + dense(4096, 10),  # 32-15-7-3 ("valid" pooling)
        flat=256 * 3 * 3,
        # fit(X_train, y_train, epochs=3, batch_size=64, validation_split=0.2), / 255.0, Adam()
        optimizer=KERAS_ADAM,
        batch=64,
        epochs=3,
        val_from="end",
        val_size=10_000,
        mean=[0.0],
        std=[1.0],
        image_size=None,
        steps=625,  # "625/625"
        model=dict(
            widths=[96, 256, 384, 384, 256],
            kernel_sizes=[3, 5, 3, 3, 3],
            strides=[1] * 5,
            paddings=[1, 2, 1, 1, 1],
            hidden_features=4096,
            dropout=0.5,
            dropout_before=["fc7", "fc8"],
            pool_paddings=["valid"] * 3,
            init="keras",
        ),
    ),
    "002_keras_lenet5": dict(
        # Conv2D(6,(5,5),tanh,input_shape=(32,32,1),padding="same"), AveragePooling2D((2,2),(2,2)),
        # Conv2D(16,(5,5),tanh,padding='valid'), pool, Flatten, Dense 120/84 tanh, Dense 10 softmax;
        # x / 255.0, tf.image.resize(x, [32, 32]); compile(optimizer='adam'); fit(x_train, y_train, epochs=5,
        # validation_data=(x_test, y_test)): no batch_size, Keras's 32
        input=(1, 32, 32),
        layers=dict(activation="tanh", pooling="avg", padding="default", norm="none"),
        params=conv(5, 1, 6)
        + conv(5, 6, 16)
        + dense(16 * 6 * 6, 120)
        + dense(120, 84)
        + dense(84, 10),  # 32-32-16-12-6
        flat=16 * 6 * 6,
        optimizer=KERAS_ADAM,
        batch=32,
        epochs=5,
        val_from="test",
        val_size=0,
        mean=[0.0],
        std=[1.0],
        image_size=32,
        steps=1875,  # "1875/1875"
        model=dict(c1_padding=2, init="keras"),
    ),
    "002_keras_alexnet": dict(
        # InputLayer((28,28,1)), Resizing(64,64), Conv2D(48,(11,11),(4,4),'valid',relu), MaxPooling2D((3,3),(2,2),'valid'),
        # Conv2D(128,(5,5),'same'), MaxPooling2D(valid), Conv2D(192,(3,3),same) x2, Conv2D(128,(3,3),same),
        # MaxPooling2D((3,3),(2,2),padding='same'), Flatten, Dense(1024) relu Dropout(0.5) x2, Dense(10) softmax;
        # compile(optimizer='adam'); fit(x_train, y_train, epochs=3, validation_data=(x_test, y_test))
        input=(1, 64, 64),
        layers=dict(activation="relu", pooling="max", padding="default", norm="none"),
        params=conv(11, 1, 48)
        + conv(5, 48, 128)
        + conv(3, 128, 192)
        + conv(3, 192, 192)
        + conv(3, 192, 128)
        + dense(128 * 1 * 1, 1024)
        + dense(1024, 1024)
        + dense(1024, 10),  # 64-14-6-6-2-1
        flat=128,
        optimizer=KERAS_ADAM,
        batch=32,
        epochs=3,
        val_from="test",
        val_size=0,
        mean=[0.0],
        std=[1.0],
        image_size=64,
        steps=1875,
        model=dict(
            widths=[48, 128, 192, 192, 128],
            kernel_sizes=[11, 5, 3, 3, 3],
            strides=[4, 1, 1, 1, 1],
            paddings=[0, 2, 1, 1, 1],
            hidden_features=1024,
            dropout=0.5,
            dropout_before=["fc7", "fc8"],
            pool_paddings=["valid", "valid", "same"],
            init="keras",
        ),
    ),
    "000_torch_lenet5": dict(
        # nn.Conv2d(1, 6, 5, stride=1, padding=2), nn.Conv2d(6, 16, 5, padding=0), nn.AvgPool2d(2, 2), torch.tanh,
        # fc 120, 84, 10; transforms.Resize((32, 32)), ToTensor(); batch_size=64; optim.Adam(lr=0.001); epochs = 10
        input=(1, 32, 32),
        layers=dict(activation="tanh", pooling="avg", padding="default", norm="none"),
        params=conv(5, 1, 6) + conv(5, 6, 16) + dense(16 * 6 * 6, 120) + dense(120, 84) + dense(84, 10),
        flat=16 * 6 * 6,
        notebook_flat=16 * 5 * 5,  # nn.Linear(16 * 5 * 5, 120): the crash
        optimizer=TORCH_ADAM,
        batch=64,
        epochs=10,
        val_from="test",
        val_size=0,
        mean=[0.0],
        std=[1.0],
        image_size=32,
        steps=938,  # 60,000 / 64, the last batch of 32
        model=dict(c1_padding=2, init="torch"),
    ),
    "000_torch_alexnet": dict(
        # nn.Conv2d(3, 96, 11, stride=4, padding=0), (96, 256, 5, padding=2), (256, 384, 3, 1), (384, 384, 3, 1),
        # (384, 256, 3, 1), nn.MaxPool2d(3, 2), fc1 (256*6*6, 4096), fc2 4096, fc3 10, dropout after relu(fc1), relu(fc2);
        # Resize((224, 224)), Normalize([0.5]*3, [0.5]*3); batch_size=64; Adam(lr=0.001); epochs = 10
        input=(3, 224, 224),
        layers=dict(activation="relu", pooling="max", padding="default", norm="none"),
        params=conv(11, 3, 96)
        + conv(5, 96, 256)
        + conv(3, 256, 384)
        + conv(3, 384, 384)
        + conv(3, 384, 256)
        + dense(256 * 5 * 5, 4096)
        + dense(4096, 4096)
        + dense(4096, 10),  # 224-54-26-26-12-12-5
        flat=256 * 5 * 5,
        notebook_flat=256 * 6 * 6,
        optimizer=TORCH_ADAM,
        batch=64,
        epochs=10,
        val_from="test",
        val_size=0,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        image_size=224,
        steps=782,
        model=dict(
            widths=[96, 256, 384, 384, 256],
            kernel_sizes=[11, 5, 3, 3, 3],
            strides=[4, 1, 1, 1, 1],
            paddings=[0, 2, 1, 1, 1],
            hidden_features=4096,
            dropout=0.5,
            dropout_before=["fc7", "fc8"],
            pool_paddings=["valid"] * 3,
            init="torch",
        ),
    ),
    "004_torch_lenet5": dict(
        # nn.Conv2d(1, 6, kernel_size=5), nn.Conv2d(6, 16, kernel_size=5), AvgPool2d(2, 2), nn.ReLU(), fc 120, 84, 10;
        # ToTensor(), Normalize((0.5,), (0.5,)); batch_size=64; optim.Adam(lr=0.001); num_epochs = 10
        input=(1, 28, 28),
        layers=dict(activation="relu", pooling="avg", padding="valid", norm="none"),
        params=conv(5, 1, 6) + conv(5, 6, 16) + dense(16 * 4 * 4, 120) + dense(120, 84) + dense(84, 10),  # 28-24-12-8-4
        flat=16 * 4 * 4,
        notebook_flat=16 * 5 * 5,
        optimizer=TORCH_ADAM,
        batch=64,
        epochs=10,
        val_from="test",
        val_size=0,
        mean=[0.5],
        std=[0.5],
        image_size=None,
        steps=938,
        model=dict(init="torch"),
    ),
    "004_torch_alexnet": dict(
        # nn.Conv2d(3, 64, 11, stride=4, padding=2), (64, 192, 5, padding=2), (192, 384, 3, 1), (384, 256, 3, 1),
        # (256, 256, 3, 1), MaxPool2d(3, 2), fc1 (256*6*6, 4096), fc2 4096, fc3 10, dropout after relu(fc1), relu(fc2);
        # Resize((224, 224)), Normalize((0.5,)*3, (0.5,)*3); batch_size=64; Adam(lr=0.001); num_epochs = 10
        input=(3, 224, 224),
        layers=dict(activation="relu", pooling="max", padding="default", norm="none"),
        params=conv(11, 3, 64)
        + conv(5, 64, 192)
        + conv(3, 192, 384)
        + conv(3, 384, 256)
        + conv(3, 256, 256)
        + dense(256 * 6 * 6, 4096)
        + dense(4096, 4096)
        + dense(4096, 10),  # 224-55-27-27-13-13-6: it fits
        flat=256 * 6 * 6,
        optimizer=TORCH_ADAM,
        batch=64,
        epochs=10,
        val_from="test",
        val_size=0,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        image_size=224,
        steps=782,
        model=dict(
            widths=[64, 192, 384, 256, 256],
            kernel_sizes=[11, 5, 3, 3, 3],
            strides=[4, 1, 1, 1, 1],
            paddings=[2, 2, 1, 1, 1],
            hidden_features=4096,
            avgpool_size=None,
            pretrained=False,
            dropout=0.5,
            dropout_before=["fc7", "fc8"],
            pool_paddings=["valid"] * 3,
            init="torch",
        ),
    ),
}


def notebook_config(name: str, tmp_path: Path, data_dir: Path, *overrides: str):
    return compose_config([f"experiment=notebook/{name}", *overrides], tmp_path / "run", data_dir)


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_each_notebook_experiment_is_the_notebooks_network_and_protocol(name, tmp_path, data_dir):
    expected = NOTEBOOKS[name]
    cfg = notebook_config(name, tmp_path, data_dir)
    validate(cfg)
    channels, height, width = expected["input"]
    assert {key: cfg.layers[key] for key in expected["layers"]} == expected["layers"]
    model = OmegaConf.to_container(cfg.model)
    assert {key: model[key] for key in expected["model"]} == expected["model"]
    optimizer = OmegaConf.to_container(cfg.optimizer)
    assert optimizer.pop("_target_") == "torch.optim.Adam" and optimizer.pop("_partial_") is True
    assert optimizer == expected["optimizer"] and not cfg.get("scheduler")  # a constant learning rate
    assert cfg.label_smoothing == 0.0
    data = cfg.data
    assert (data.batch_size, data.val_from, data.val_size) == (
        expected["batch"],
        expected["val_from"],
        expected["val_size"],
    )
    assert (list(data.mean), list(data.std), data.scale) == (expected["mean"], expected["std"], "standard")
    assert (data.image_size, data.pad_to, data.crop_padding, data.horizontal_flip) == (
        expected["image_size"],
        None,
        0,
        False,
    )
    assert cfg.trainer.max_epochs == expected["epochs"] and cfg.trainer.precision == "32-true"
    assert cfg.callbacks.model_checkpoint.monitor is None  # the last epoch's weights are tested, as in the notebooks
    data_set = instantiate(data)
    assert data_set.channels == channels and data_set.input_size == (height, width)
    held_out = data.val_size if data.val_from == "end" else 0
    assert math.ceil((data_set.train_size - held_out) / data.batch_size) == expected["steps"]

    net = build_network(cfg, data_set)
    assert sum(p.numel() for p in net.parameters()) == expected["params"]
    linear = next(m for m in net.modules() if isinstance(m, torch.nn.Linear))
    assert linear.in_features == expected["flat"] != expected.get("notebook_flat")
    assert net.eval()(torch.zeros(2, channels, height, width)).shape == (2, 10)


def test_keras_lenet5_parameter_count_is_the_44426_of_notebook_001(tmp_path, data_dir):
    """The figure the issue quotes, from the notebook's summary lines: 156 + 2416 + Dense(256 -> 120) + ..."""
    assert NOTEBOOKS["001_keras_lenet5"]["params"] == 156 + 2416 + 30_840 + 10_164 + 850 == 44_426
    cfg = compose_config(["experiment=lenet5_keras"], tmp_path / "run", data_dir)  # the old name: notebook 001
    assert sum(p.numel() for p in build_network(cfg, instantiate(cfg.data)).parameters()) == 44_426
    assert cfg.optimizer.eps == 1e-7 and cfg.data.val_from == "end" and cfg.trainer.max_epochs == 3


def test_keras_validation_split_holds_out_the_last_images_unshuffled(data_dir):
    """Keras's validation_split=0.2 takes the last 20% of the arrays, before any shuffling."""
    data = MNISTDataModule(str(data_dir), val_from="end", val_size=48, download=False)  # 20% of the 240 images
    data.setup("fit")
    assert image_ids(data.splits["val"].images) == set(range(192, 240))
    assert image_ids(data.splits["train"].images) == set(range(192))
    assert torch.equal(data.splits["val"].images[:, 0, 0, 0], torch.arange(192, 240, dtype=torch.uint8))  # in order


def test_validation_on_the_test_set_trains_on_every_training_image(data_dir):
    data = CIFAR10DataModule(str(data_dir), val_from="test", val_size=0, download=False)
    data.setup("fit")
    assert len(data.splits["train"]) == 240 and data.splits["val"] is data.splits["test"]


def test_the_test_set_cannot_choose_the_checkpoint(tmp_path, data_dir):
    cfg = notebook_config("002_keras_lenet5", tmp_path, data_dir, "callbacks.model_checkpoint.monitor=val/acc")
    with pytest.raises(ConfigError, match="data.val_from=test.*callbacks.model_checkpoint.monitor=null"):
        validate(cfg)
    cfg = notebook_config("001_keras_lenet5", tmp_path, data_dir, "data.val_size=0")
    with pytest.raises(ConfigError, match="data.val_size=0"):
        validate(cfg)


def test_notebook_run_scores_its_last_epoch_on_the_test_set_each_epoch(tmp_path, data_dir):
    """One tiny run of notebook 002's protocol: the per-epoch figure is the test set's, and the
    weights scored at the end are the last epoch's (so val/acc and test/acc are the same number)."""
    cfg = notebook_config("002_keras_lenet5", tmp_path, data_dir, "trainer=debug", "trainer.max_epochs=2")
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val/acc"] == metrics["test/acc"] and metrics["epochs"] == 2
    assert Path(metrics["best_checkpoint"]).name == "epoch_001.ckpt"  # the second (last) epoch


def test_keras_initialization_is_glorot_uniform_with_zero_biases():
    """keras.layers.Dense/Conv2D: kernel_initializer="glorot_uniform", bias_initializer="zeros";
    Glorot uniform draws from U(-a, a), a = sqrt(6 / (fan_in + fan_out))."""
    net = torch.nn.Sequential(torch.nn.Conv2d(6, 16, 5), torch.nn.Linear(256, 120))
    initialize(net, "keras")
    conv_bound, dense_bound = math.sqrt(6 / (6 * 25 + 16 * 25)), math.sqrt(6 / (256 + 120))
    for layer, bound in zip(net, (conv_bound, dense_bound)):
        assert layer.bias.abs().max() == 0
        assert bound * 0.95 < layer.weight.abs().max() <= bound  # fills the interval, stays inside it


def test_keras_same_max_pooling_pads_with_minus_infinity_to_ceil_n_over_s():
    """MaxPooling2D((3,3), (2,2), padding='same'): O = ceil(N / S); padded cells never win."""
    pool = pool_with_padding(torch.nn.MaxPool2d(3, 2), "same", 3, 2)
    x = -1 - torch.rand(1, 4, 2, 2)  # all negative: a zero padding would win
    assert torch.equal(pool(x), x.amax(dim=(2, 3), keepdim=True))
    assert pool(torch.zeros(1, 1, 13, 13)).shape[-1] == math.ceil(13 / 2)
    with pytest.raises(ValueError, match="max pooling only"):
        pool_with_padding(torch.nn.AvgPool2d(3, 2), "same", 3, 2)
