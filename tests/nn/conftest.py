"""Fixtures of the nn tests: the built extension."""
import pytest

from nq_plugin import native as loader


@pytest.fixture(scope="module")
def built():
    """The native extension (a test fails, naming why, where it did not build)."""
    module = loader.extension()
    assert module is not None, f"the native extension did not build: {loader.build_error()}"
    return module

