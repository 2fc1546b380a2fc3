"""Fixtures shared by the test modules."""
import pytest
from helpers import write_learnable_mnist


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """The tiny learnable MNIST (helpers.write_learnable_mnist), written once per test module."""
    return write_learnable_mnist(tmp_path_factory.mktemp("data"))
