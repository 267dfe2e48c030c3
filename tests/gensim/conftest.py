"""Fixtures shared by the gensim tests."""

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture
def single_threaded():
    """One BLAS and one torch thread, for tests whose networks and fits are tiny.

    On a loaded 2-core machine thread pools spinning over tiny problems made a 40-point
    Gaussian-process fit 5 times slower (15 s vs 3 s) and 150 steps of a small MLP 6 times slower
    (53 s vs 9 s), measured.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)
