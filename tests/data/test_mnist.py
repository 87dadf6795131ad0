"""MNIST idx loader: real files (skipped if absent), synthetic files and every corruption."""
import gzip
import struct

import numpy as np
import pytest
import torch

from nq_plugin.data.mnist import (MNISTFormatError, load_mnist, pixel_permutation, read_split,
                                  to_sequence)
from tests.fairseq_utils import SHARED_DATA

MNIST = SHARED_DATA / "mnist"


def write_idx(path, array, magic, gz=False, truncate=0, count=None):
    dims = list(array.shape)
    if count is not None:
        dims[0] = count
    data = struct.pack(">i", magic) + struct.pack(">" + "i" * array.ndim, *dims) + array.tobytes()
    if truncate:
        data = data[:-truncate]
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def synthetic(directory, n_train=30, n_test=10, gz=False, **corrupt):
    rng = np.random.default_rng(0)
    parts = {"train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, 28, 28), np.uint8), 2051),
             "train-labels-idx1-ubyte": (rng.integers(0, 10, n_train, np.uint8), 2049),
             "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, 28, 28), np.uint8), 2051),
             "t10k-labels-idx1-ubyte": (rng.integers(0, 10, n_test, np.uint8), 2049)}
    target = corrupt.pop("target", None)
    for name, (array, magic) in parts.items():
        kwargs = corrupt if name == target else {}
        write_idx(directory / name, array, kwargs.get("magic", magic), gz=gz,
                  truncate=kwargs.get("truncate", 0), count=kwargs.get("count"))
    return parts


@pytest.mark.parametrize("gz", [False, True])
def test_synthetic_round_trip(tmp_path, gz):
    parts = synthetic(tmp_path, gz=gz)
    splits = load_mnist(str(tmp_path), valid_size=5)
    assert [len(splits[s][1]) for s in ("train", "valid", "test")] == [25, 5, 10]
    images = parts["train-images-idx3-ubyte"][0]
    assert torch.equal(splits["valid"][0], torch.from_numpy(images[25:].reshape(5, 784)))
    assert splits["train"][1].dtype == torch.int64


@pytest.mark.parametrize("target,corruption,message", [
    ("train-images-idx3-ubyte", {"magic": 2049}, "magic number 2049, expected 2051"),
    ("t10k-labels-idx1-ubyte", {"magic": 1234}, "magic number 1234, expected 2049"),
    ("train-images-idx3-ubyte", {"truncate": 100}, "truncated or corrupt"),
    ("t10k-images-idx3-ubyte", {"count": 11}, "announces 11 items"),
])
def test_corruptions_are_refused(tmp_path, target, corruption, message):
    synthetic(tmp_path, target=target, **corruption)
    with pytest.raises(MNISTFormatError, match=f"{target}: .*{message}"):
        load_mnist(str(tmp_path), valid_size=5)


def test_images_and_labels_must_agree(tmp_path):
    synthetic(tmp_path)
    rng = np.random.default_rng(1)
    write_idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 29, np.uint8), 2049)
    with pytest.raises(MNISTFormatError, match="30 train images but 29 labels"):
        load_mnist(str(tmp_path), valid_size=5)


def test_truncated_gzip_refused(tmp_path):
    synthetic(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(MNISTFormatError, match="cannot decompress"):
        load_mnist(str(tmp_path), valid_size=5)


def test_missing_directory_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_mnist(str(tmp_path / "nope"))
    synthetic(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist(str(tmp_path), valid_size=5)


def test_standard_sized_file_must_match_checksum(tmp_path):
    """A file with the standard count of 10,000 test labels but other content is refused."""
    synthetic(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(10000, np.uint8), 2049)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10000, 28, 28), np.uint8), 2051)
    with pytest.raises(MNISTFormatError, match="SHA-256"):
        load_mnist(str(tmp_path), valid_size=5)


def test_permutation_is_a_fixed_bijection():
    p = pixel_permutation(7)
    assert torch.equal(torch.sort(p).values, torch.arange(784))
    assert torch.equal(p, pixel_permutation(7)) and not torch.equal(p, pixel_permutation(8))
    x = torch.arange(2 * 784).reshape(2, 784).remainder(256).to(torch.uint8)
    seq = to_sequence(x, p)
    assert seq.shape == (2, 784, 1)
    torch.testing.assert_close(seq[:, :, 0], x.float()[:, p] / 255)
    rows = to_sequence(x, None, pixels_per_step=28)
    assert rows.shape == (2, 28, 28)
    with pytest.raises(ValueError, match="divide 784"):
        to_sequence(x, None, pixels_per_step=5)


@pytest.mark.skipif(not MNIST.exists(), reason="real MNIST not found at ../shared/data/mnist")
def test_real_mnist_splits_and_statistics():
    splits = load_mnist(str(MNIST))
    assert [len(splits[s][1]) for s in ("train", "valid", "test")] == [50000, 10000, 10000]
    hist = torch.bincount(splits["train"][1], minlength=10)
    assert hist.sum() == 50000 and hist.min() > 4000 and hist.max() < 6000
    assert hist.tolist()[1] == hist.max()  # ones are the most frequent digit
    full_train = torch.cat([splits["train"][0], splits["valid"][0]]).float() / 255
    assert full_train.mean().item() == pytest.approx(0.1307, abs=5e-4)
    assert full_train.std().item() == pytest.approx(0.3081, abs=5e-4)
    images, labels = read_split(str(MNIST), "t10k")
    assert images.shape == (10000, 28, 28) and int(labels[0]) == 7  # the first test digit is a 7
