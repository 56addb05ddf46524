"""Loaders for the embedded, offline data sets (Fashion-MNIST from Debian, sklearn digits)."""

from tamis.data.images import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    DataNotFoundError,
    ImageDataset,
    load_digits_images,
    load_fashion_mnist,
    load_image_dataset,
    read_idx,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "DataNotFoundError",
    "ImageDataset",
    "load_digits_images",
    "load_fashion_mnist",
    "load_image_dataset",
    "read_idx",
]
