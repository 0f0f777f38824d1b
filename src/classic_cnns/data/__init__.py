from .base import DatasetNotFoundError, ImageDataModule
from .cifar10 import CIFAR10DataModule
from .mnist import MNISTDataModule

__all__ = ["CIFAR10DataModule", "DatasetNotFoundError", "ImageDataModule", "MNISTDataModule"]
