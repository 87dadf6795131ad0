"""Fixtures of the nn tests: the built extension and torch's intra-op threads."""
import pytest
import torch

from nq_plugin import native as loader


@pytest.fixture(scope="module")
def built():
    """The native extension (a test fails, naming why, where it did not build)."""
    module = loader.extension()
    assert module is not None, f"the native extension did not build: {loader.build_error()}"
    return module


@pytest.fixture
def threads():
    """set(n): torch's intra-op threads for the rest of the test, restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)
