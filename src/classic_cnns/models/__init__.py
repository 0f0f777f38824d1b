from .alexnet import AlexNet
from .layers import LayerChoices
from .lenet import LeNet5

__all__ = ["AlexNet", "LayerChoices", "LeNet5"]
