"""Rebuild a trained model from its checkpoint file alone."""

from pathlib import Path

import torch
from hydra.utils import instantiate

from classic_cnns import ClassicCNNsError
from classic_cnns.module import ImageClassifier


def load_classifier(path: str | Path, map_location: str = "cpu") -> ImageClassifier:
    """The ImageClassifier of a checkpoint written by train(), in eval mode.

    Loads with weights_only=True: a checkpoint holds tensors and plain containers only.
    `model.hparams.data_info` says how inputs must look (size, channels, normalization).
    """
    path = Path(path)
    if not path.is_file():
        raise ClassicCNNsError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        hparams = checkpoint["hyper_parameters"]
        config, info = hparams["config"], hparams["data_info"]
    except Exception as error:
        raise ClassicCNNsError(
            f"{path} is not a checkpoint written by classic-cnns' train ({type(error).__name__}: {error})"
        ) from None
    weights_from_checkpoint = {"pretrained": False} if "pretrained" in config["model"] else {}  # no download
    net = instantiate(
        config["model"] | weights_from_checkpoint, in_channels=info["channels"], num_classes=len(info["class_names"]), input_size=info["input_size"]
    )
    model = ImageClassifier(net=net, optimizer=None, **hparams)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
