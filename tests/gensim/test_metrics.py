"""Relative L2 and its summaries."""

import numpy as np
import pytest
import torch

from gensim.metrics import relative_l2, summarize_errors
from gensim.simulations import FieldSpec

FIELDS = (FieldSpec("a", (2,)), FieldSpec("b", (1, 2)))


def test_relative_l2_per_field_matches_hand_computation():
    true = torch.tensor([[3.0, 4.0, 1.0, 0.0], [0.0, 0.0, 2.0, 2.0]])
    pred = torch.tensor([[3.0, 5.0, 1.0, 1.0], [1.0, 0.0, 2.0, 2.0]])
    err = relative_l2(pred, true, FIELDS)
    assert err.shape == (2, 2)
    # sample 0: field a |(0, 1)| / |(3, 4)| = 1/5; field b |(0, 1)| / |(1, 0)| = 1
    # sample 1: field a has a zero truth -> absolute error 1; field b exact -> 0
    np.testing.assert_allclose(err.numpy(), [[0.2, 1.0], [1.0, 0.0]])


def test_summary_mean_and_p99():
    errors = torch.arange(1, 101, dtype=torch.float64)
    s = summarize_errors(errors)
    assert s["mean"] == pytest.approx(50.5)
    assert s["p99"] == pytest.approx(np.quantile(np.arange(1, 101), 0.99))
