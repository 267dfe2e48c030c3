"""RunningNormalizer: exact streaming statistics, frozen after warm-up, restored by checkpoints."""

import numpy as np
import pytest
import torch

from gensim.models.components import RunningNormalizer


def test_streamed_statistics_equal_the_batch_statistics():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, [1.0, 10.0, 0.1], size=(1000, 3))
    norm = RunningNormalizer(3, warmup_batches=100)
    for chunk in np.array_split(data, 17):  # uneven batches
        norm.update(torch.from_numpy(chunk))
    # Chan's merge is exact up to float64 round-off.
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(norm.std().numpy(), data.std(0, ddof=1), rtol=1e-10)
    z = norm.normalize(torch.from_numpy(data))
    np.testing.assert_allclose(norm.denormalize(z).numpy(), data, rtol=1e-12)


def test_frozen_after_warmup():
    norm = RunningNormalizer(2, warmup_batches=2)
    norm.update(torch.randn(10, 2))
    norm.update(torch.randn(10, 2))
    assert norm.frozen
    before = norm.mean.clone()
    norm.update(torch.full((10, 2), 1e6))
    assert torch.equal(norm.mean, before)


def test_std_floor_keeps_near_constant_features_finite():
    x = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]], dtype=torch.float64)
    norm = RunningNormalizer(2, warmup_batches=1, rel_floor=0.01)
    norm.update(x)
    std = norm.std()
    assert std[1] == pytest.approx(0.01 * (2.0 + 0.0) / 2)  # floored at 1% of the mean std


def test_state_dict_restores_exactly():
    norm = RunningNormalizer(4, warmup_batches=3)
    for _ in range(3):
        norm.update(torch.randn(8, 4))
    fresh = RunningNormalizer(4, warmup_batches=3)
    fresh.load_state_dict(norm.state_dict())
    assert fresh.frozen
    x = torch.randn(5, 4)
    assert torch.equal(fresh.normalize(x), norm.normalize(x))


def test_using_an_unfitted_normalizer_is_a_clear_error():
    with pytest.raises(RuntimeError, match="call update"):
        RunningNormalizer(2).normalize(torch.zeros(1, 2))
