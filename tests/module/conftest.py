"""Fixtures for the nnpack_facts module tests; helpers live in nnpack_facts_helpers.py."""
import pytest

from nnpack_facts_helpers import make_fakes


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("nnpack_facts")


@pytest.fixture(scope="module")
def fakes(module_tmp):
    """Fake interpreters: each ignores its arguments and misbehaves in one way."""
    return make_fakes(module_tmp)
