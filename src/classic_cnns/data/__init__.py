from .base import DatasetNotFoundError, ImageDataModule
from .cifar10 import CIFAR10DataModule
from .folder import ImageFolderDataModule
from .mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "CIFAR10DataModule",
    "DatasetNotFoundError",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
]
