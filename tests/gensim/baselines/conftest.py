"""Fixtures of the baseline tests."""

import pytest


@pytest.fixture(autouse=True)
def _single_threaded(single_threaded):
    """Every baseline test runs single-threaded (see ``single_threaded`` in tests/gensim/conftest.py)."""
    yield
