from .base import DatasetNotFoundError, ImageDataModule
from .cifar10 import CIFAR10DataModule
from .folder import ImageFolderDataModule
from .mnist import MNISTDataModule

__all__ = ["CIFAR10DataModule", "DatasetNotFoundError", "ImageDataModule", "ImageFolderDataModule", "MNISTDataModule"]
