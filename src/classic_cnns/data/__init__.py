from .base import DatasetNotFoundError, ImageDataModule
from .cifar10 import CIFAR10DataModule
from .cifar100 import CIFAR100DataModule
from .folder import ImageFolderDataModule
from .mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DatasetNotFoundError",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
]
