"""MNIST in LeCun's idx format (gzipped or not), validated, with the paper's splits.

Files: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte (each optionally with .gz). Every file is checked: magic number, item
count (images and labels agree), row/column sizes and body length; the standard files (60,000
and 10,000 items) must also match the SHA-256 of their decompressed content (the .gz bytes of
copies in circulation differ, their content does not). Other sizes are treated as a custom
subset and only the structure is checked.

Splits (Hou et al., NeurIPS 2019, after Cooijmans et al.): train = the first 50,000 training
images, valid = the last 10,000 training images, test = the 10,000 test images.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from ..errors import DataNotFoundError, UserError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SHA256 = {  # of the decompressed standard files
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
STANDARD_COUNTS = {"train": 60000, "t10k": 10000}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
MEAN, STD = 0.1307, 0.3081  # of the training pixels scaled to [0, 1]


class MNISTFormatError(ValueError, UserError):
    """An MNIST file that is not what it should be; the message names the file and the fix."""


def find_file(directory: str, name: str) -> str:
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    raise DataNotFoundError(
        f"{name}(.gz) not found in {directory}: the MNIST directory needs the four idx files "
        f"({', '.join(FILES.values())}); recipes/smnist/prepare.sh downloads them")


def read_bytes(path: str) -> bytes:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as err:
        raise MNISTFormatError(f"{path}: cannot decompress ({err}); the download is truncated "
                               "or corrupt, fetch it again") from None


def parse_idx(data: bytes, path: str, expect_magic: int) -> np.ndarray:
    """Parse an idx1 (labels) or idx3 (images) buffer with full structural checks."""
    ndim = 1 if expect_magic == LABEL_MAGIC else 3
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MNISTFormatError(f"{path}: {len(data)} bytes, shorter than an idx header")
    magic = struct.unpack(">i", data[:4])[0]
    if magic != expect_magic:
        kind = "label (idx1)" if expect_magic == LABEL_MAGIC else "image (idx3)"
        raise MNISTFormatError(f"{path}: magic number {magic}, expected {expect_magic} for an "
                               f"MNIST {kind} file; wrong or corrupt file")
    dims = struct.unpack(">" + "i" * ndim, data[4:header])
    if ndim == 3 and dims[1:] != (28, 28):
        raise MNISTFormatError(f"{path}: images of {dims[1]}x{dims[2]}, expected 28x28")
    body = int(np.prod(dims))
    if len(data) - header != body:
        raise MNISTFormatError(f"{path}: header announces {dims[0]} items ({body} bytes) but the "
                               f"body has {len(data) - header} bytes; truncated or corrupt file")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_split(directory: str, prefix: str, verify: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of ``train`` or ``t10k``."""
    arrays = []
    for kind, magic in (("images-idx3-ubyte", IMAGE_MAGIC), ("labels-idx1-ubyte", LABEL_MAGIC)):
        name = f"{prefix}-{kind}"
        path = find_file(directory, name)
        data = read_bytes(path)
        array = parse_idx(data, path, magic)
        if verify and array.shape[0] == STANDARD_COUNTS[prefix]:
            digest = hashlib.sha256(data).hexdigest()
            if digest != SHA256[name]:
                raise MNISTFormatError(
                    f"{path}: SHA-256 of the content is {digest}, expected {SHA256[name]} for the "
                    f"standard {name}; the file is corrupt or modified, fetch it again")
        arrays.append(array)
    images, labels = arrays
    if images.shape[0] != labels.shape[0]:
        raise MNISTFormatError(f"{directory}: {images.shape[0]} {prefix} images but "
                               f"{labels.shape[0]} labels; the files do not belong together")
    if labels.size and labels.max() > 9:
        raise MNISTFormatError(f"{directory}: {prefix} labels outside 0-9")
    return images, labels


def load_mnist(directory: str, valid_size: int = 10000, verify: bool = True
               ) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
    """{"train", "valid", "test"}: (pixels (N, 784) uint8, labels (N,) int64); valid is the last
    ``valid_size`` training images."""
    if not os.path.isdir(directory):
        raise DataNotFoundError(f"MNIST directory {directory!r} not found")
    train_x, train_y = read_split(directory, "train", verify)
    test_x, test_y = read_split(directory, "t10k", verify)
    if not 0 < valid_size < train_x.shape[0]:
        raise ValueError(f"valid_size={valid_size} must lie between 0 and the number of training "
                         f"images ({train_x.shape[0]})")
    cut = train_x.shape[0] - valid_size

    def pack(x, y):
        return (torch.from_numpy(x.reshape(x.shape[0], -1).copy()),
                torch.from_numpy(y.astype(np.int64)))

    return {"train": pack(train_x[:cut], train_y[:cut]), "valid": pack(train_x[cut:], train_y[cut:]),
            "test": pack(test_x, test_y)}


def pixel_permutation(seed: Optional[int], length: int = 784) -> Optional[torch.Tensor]:
    """The fixed pixel order of permuted MNIST (pMNIST): a bijection of range(length) drawn from
    its own generator seeded with ``seed``; None for the natural order."""
    if seed is None:
        return None
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(length, generator=generator)


def to_sequence(pixels: torch.Tensor, permutation: Optional[torch.Tensor] = None,
                pixels_per_step: int = 1, standardize: bool = False) -> torch.Tensor:
    """(N, 784) uint8 -> (N, 784 / pixels_per_step, pixels_per_step) float in [0, 1] (or
    standardized with the training mean/std), in the permuted order if given."""
    if 784 % pixels_per_step:
        raise ValueError(f"--pixels-per-step must divide 784, got {pixels_per_step}")
    x = pixels.float() / 255.0
    if standardize:
        x = (x - MEAN) / STD
    if permutation is not None:
        x = x[:, permutation]
    return x.reshape(x.shape[0], -1, pixels_per_step)
