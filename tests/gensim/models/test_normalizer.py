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


# --- checkpoint format, cache and host synchronization -------------------------------------------


def frozen_normalizer(seed: int = 0, dim: int = 4) -> RunningNormalizer:
    torch.manual_seed(seed)
    norm = RunningNormalizer(dim, warmup_batches=3)
    for _ in range(3):
        norm.update(torch.randn(8, dim) * 3.0 + 1.0)
    return norm


def test_checkpoint_format_is_the_four_buffers_and_loading_restores_the_frozen_state():
    norm = frozen_normalizer()
    state = norm.state_dict()
    assert list(state) == ["count", "updates", "mean", "m2"]  # as before: old checkpoints load
    assert state["updates"].dtype == torch.int64 and state["mean"].dtype == torch.float64
    # Loaded into a normalizer that was itself frozen and had cached other statistics: the
    # loaded ones are used, not the cache.
    other = frozen_normalizer(seed=1)
    x = torch.randn(5, 4)
    other.normalize(x)
    other.load_state_dict(state)
    assert other.frozen and torch.equal(other.normalize(x), norm.normalize(x))
    # Inside a parent module, as in a Lightning checkpoint (prefixed keys).
    parent, fresh = torch.nn.ModuleDict({"n": norm}), torch.nn.ModuleDict({"n": RunningNormalizer(4, 3)})
    fresh.load_state_dict(parent.state_dict())
    assert fresh["n"].frozen and torch.equal(fresh["n"].denormalize(x), norm.denormalize(x))


def test_frozen_is_read_from_the_python_mirror_not_the_buffer():
    fresh = RunningNormalizer(4, warmup_batches=3)
    fresh.load_state_dict(frozen_normalizer().state_dict())
    fresh.updates.fill_(0)  # were `frozen` reading the tensor, this would unfreeze it
    assert fresh.frozen


class HostSyncs(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the ops that copy a tensor's value to Python (`item()`, `int()`, `float()`, `if t:`):
    on a GPU each one waits for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_no_host_synchronization_while_learning_nor_once_frozen():
    norm = RunningNormalizer(4, warmup_batches=3)
    x = torch.randn(16, 4)
    with HostSyncs() as syncs:
        for _ in range(4):  # three learning updates, then one after the freeze
            norm.update(x)
            norm.denormalize(norm.normalize(x))
    assert syncs.count == 0


def test_frozen_statistics_are_cached_per_dtype_and_follow_the_module_to_another_device():
    norm = frozen_normalizer()
    x = torch.randn(5, 4)
    first = norm.normalize(x)
    mean, std = norm._frozen_cache[torch.float32]
    norm.normalize(x)
    assert norm._frozen_cache[torch.float32][0] is mean  # computed once
    # The cached copies are in the compute dtype; float64 gets its own.
    assert mean.dtype == std.dtype == torch.float32
    assert norm.normalize(x.double()).dtype == torch.float64
    # Moving the module (model.to(device) after the freeze) drops the cache: a stale CPU copy
    # would meet the moved inputs. The meta device stands in for a GPU.
    norm.to("meta")
    out = norm.normalize(x.to("meta"))
    assert out.device.type == "meta" and out.shape == first.shape
