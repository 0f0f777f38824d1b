from .alexnet import AlexNet
from .lenet import LeNet5

__all__ = ["AlexNet", "LeNet5"]
