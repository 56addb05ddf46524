"""Small grey-image data sets available offline.

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package (gzip IDX files under
``/usr/share/datasets/fashion-mnist``) or from a folder the user gives. Where it is missing,
:func:`load_image_dataset` falls back to scikit-learn's bundled 8x8 digits, with a notice.
"""

from __future__ import annotations

import gzip
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DataNotFoundError(FileNotFoundError):
    """A data set is not installed where we looked."""


@dataclass
class ImageDataset:
    """Images as float32 in [0, 1] with shape (N, H, W), integer labels, and class names."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    name: str

    def __len__(self) -> int:
        return int(self.images.shape[0])


def read_idx(path: Path) -> np.ndarray:
    """Read a (optionally gzip-compressed) IDX file into a numpy array.

    Raises:
        ValueError: if the header is malformed or the payload is truncated.

    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read IDX file {path}: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = raw[2], raw[3]
    if code not in dtypes:
        raise ValueError(f"{path}: unknown IDX element type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(dtypes[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: payload has {len(raw) - header} bytes, header promises {expected} "
            "(truncated or corrupted file)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def load_fashion_mnist(split: str = "train", root: Path | None = None) -> ImageDataset:
    """Load Fashion-MNIST (28x28, 10 classes) from Debian's package or ``root``.

    Raises:
        DataNotFoundError: naming the Debian package, if the files are missing.

    """
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    img_name, lab_name = _FILES[split]
    img_path, lab_path = root / img_name, root / lab_name
    if not img_path.exists() or not lab_path.exists():
        raise DataNotFoundError(
            f"Fashion-MNIST not found in {root} (expected {img_name}, {lab_name}). "
            "Install it with `apt-get install dataset-fashion-mnist` or pass the folder."
        )
    images = read_idx(img_path).astype(np.float32) / 255.0
    labels = read_idx(lab_path).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels")
    return ImageDataset(images, labels, FASHION_MNIST_CLASSES, "fashion-mnist")


def load_digits_images(split: str = "train", test_fraction: float = 0.2) -> ImageDataset:
    """Load scikit-learn's bundled 8x8 digits as images in [0, 1], split deterministically."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)
    labels = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    idx = order[n_test:] if split == "train" else order[:n_test]
    return ImageDataset(images[idx], labels[idx], tuple(str(i) for i in range(10)), "digits")


def load_image_dataset(split: str = "train", root: Path | None = None) -> ImageDataset:
    """Fashion-MNIST where installed, else scikit-learn digits with a warning (a notice)."""
    try:
        return load_fashion_mnist(split, root)
    except DataNotFoundError as err:
        warnings.warn(f"{err} Falling back to scikit-learn's 8x8 digits.", stacklevel=2)
        return load_digits_images(split)
