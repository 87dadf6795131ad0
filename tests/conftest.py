"""Fixtures shared by the suite. Under pytest-xdist (setup.cfg runs one worker per core) each
worker, and every command it starts, gets its share of the cores as threads: two workers with
two OpenMP threads each on two cores would wait at barriers for each other."""
import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    THREADS = max(1, (os.cpu_count() or 1) // _workers)
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    import torch
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session")
def demo_char_data(tmp_path_factory):
    """The shipped demo text (character level), binarized by fairseq-preprocess."""
    from tests.fairseq_utils import DEMO_TEXT, preprocess
    dest = tmp_path_factory.mktemp("demo-char-bin")
    return preprocess(DEMO_TEXT / "train.txt", DEMO_TEXT / "valid.txt", dest,
                      testpref=DEMO_TEXT / "valid.txt")


@pytest.fixture(scope="session")
def small_mnist(tmp_path_factory):
    """4,000 training and 1,000 test images of the real MNIST (../shared/data/mnist), as idx
    files; the test is skipped, saying why, where the real files are absent."""
    import struct

    from tests.fairseq_utils import SHARED_DATA
    mnist = SHARED_DATA / "mnist"
    if not mnist.exists():
        pytest.skip("real MNIST not found at ../shared/data/mnist")
    from nq_plugin.data.mnist import read_split
    out = tmp_path_factory.mktemp("mnist-small")
    for prefix, n in (("train", 4000), ("t10k", 1000)):
        images, labels = read_split(str(mnist), prefix)
        for kind, array, magic in (("images-idx3-ubyte", images[:n], 2051),
                                   ("labels-idx1-ubyte", labels[:n], 2049)):
            header = struct.pack(">i", magic) + struct.pack(">" + "i" * array.ndim, *array.shape)
            (out / f"{prefix}-{kind}").write_bytes(header + array.tobytes())
    return out


@pytest.fixture
def backend_choice():
    """``backend_choice(recurrence="python", ...)``: the execution choices for the rest of the
    test (nq_plugin.backend.use; the latest call wins), restored afterwards."""
    import contextlib

    from nq_plugin import backend
    with contextlib.ExitStack() as stack:
        yield lambda **changes: stack.enter_context(backend.use(**changes))


@pytest.fixture
def threads():
    """set(n): torch's intra-op threads for the rest of the test, restored afterwards."""
    import torch
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def two_threads(threads):
    """Two intra-op threads for the test (the native kernels' parallel paths: split batches,
    per-thread partial sums), whatever share of the cores the worker has."""
    threads(2)
