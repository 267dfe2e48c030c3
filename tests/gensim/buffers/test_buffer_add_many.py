"""``ReplayBuffer.add_many``: the content of sequential ``add`` calls, for every policy.

Each test feeds the same seeded on-line stream (waves of simulations, steps in order) to two
buffers built alike, one sample at a time into one and in batches of varying size into the
other, and requires bit-identical state: storage, counters, retired draws and the policy's
state, generator included.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_buffers_distribution import SPACE, ScanningDistributionAware, assert_same_buffer

from gensim.buffers import (
    FIFO,
    FIRO,
    ConsumeOldest,
    DistributionAware,
    MelissaReservoir,
    ReplayBuffer,
    Reservoir,
    Strata,
)
from gensim.simulations.base import FieldSpec, Sample
from sampling import Sobol

N_STEPS = 20
FIELDS = (FieldSpec("u", (3,)), FieldSpec("v", (2, 2)))


def online_stream(seed: int, n_sims: int = 64, n_parallel: int = 6) -> list[Sample]:
    """Seeded samples in on-line order; every step of a simulation shares its params array."""
    rng = np.random.default_rng(seed)
    params = Sobol(SPACE, seed=seed).sample(n_sims)
    out = []
    for start in range(0, n_sims, n_parallel):
        group = range(start, min(start + n_parallel, n_sims))
        for step in range(N_STEPS):
            for sim in group:
                out.append(
                    Sample(
                        sim,
                        step,
                        0.1 * step,
                        params[sim],
                        {"u": rng.random(3, dtype=np.float32), "v": rng.random((2, 2), dtype=np.float32)},
                    )
                )
    return out


def batches(samples: list[Sample], seed: int):
    """``samples`` cut into consecutive batches of 1 to 70 samples."""
    rng = np.random.default_rng(seed + 100)
    pos = 0
    while pos < len(samples):
        n = int(rng.integers(1, 71))
        yield samples[pos : pos + n]
        pos += n


def strata(seed: int) -> Strata:
    return Strata(SPACE, N_STEPS, n_cells=8, n_time_bins=4, seed=seed)


POLICIES = {
    "reservoir": lambda seed: Reservoir(),
    "firo": lambda seed: FIRO(),
    "distribution": lambda seed: DistributionAware(strata(seed)),
    "distribution_arrivals": lambda seed: DistributionAware(strata(seed), follow="arrivals"),
}


def assert_same_state(batched: ReplayBuffer, sequential: ReplayBuffer) -> None:
    a, b = batched.state_dict(), sequential.state_dict()
    for name, value in b["storage"].items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(a["storage"][name], value, err_msg=name)
        else:
            assert a["storage"][name] == value, name
    assert a["counters"] == b["counters"]
    np.testing.assert_array_equal(a["retired_draws"], b["retired_draws"])
    for name, value in b["policy"].items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(a["policy"][name], value, err_msg=name)
        else:
            assert a["policy"][name] == value, name
    assert a["draw_rule"]["rng"] == b["draw_rule"]["rng"]


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("seed", range(3))
def test_add_many_same_content_as_add(policy, seed):
    # Capacity far below the stream, so the full-buffer paths (evictions, discards, slots
    # chosen twice within one batch) run most of the time; draws between batches make the
    # draw counts of evicted samples matter.
    samples = online_stream(seed)
    batched = ReplayBuffer(61, FIELDS, SPACE.dim, policy=POLICIES[policy](seed), seed=seed)
    sequential = ReplayBuffer(61, FIELDS, SPACE.dim, policy=POLICIES[policy](seed), seed=seed)
    for k, batch in enumerate(batches(samples, seed)):
        stored = batched.add_many(batch, timeout=0)
        assert stored == [sequential.add(sample, timeout=0) for sample in batch]
        if k % 3 == 0 and len(sequential) >= 8:
            for batch_of in (batched.draw(8), sequential.draw(8)):
                assert batch_of is not None
        assert_same_state(batched, sequential)


@pytest.mark.parametrize("seed", range(2))
def test_add_many_same_content_as_the_scanning_algorithm(seed):
    # The distribution-aware batch path against the policy as first written, fed one by one.
    samples = online_stream(seed)
    batched = ReplayBuffer(61, FIELDS, SPACE.dim, policy=DistributionAware(strata(seed)), seed=seed)
    old = ReplayBuffer(61, FIELDS, SPACE.dim, policy=ScanningDistributionAware(strata(seed)), seed=seed)
    for batch in batches(samples, seed):
        assert batched.add_many(batch, timeout=0) == [old.add(sample, timeout=0) for sample in batch]
    assert_same_buffer(batched, old)


def test_add_many_melissa_same_content_as_add():
    # No batch path: arrival by arrival, waiting for evictable samples. Once the buffer is
    # near full, 8 batches of its whole size between batches of at most 20 arrivals leave
    # enough evictable samples (a slot is missed by all with probability about e^-8).
    samples = online_stream(2)
    bufs = [ReplayBuffer(61, FIELDS, SPACE.dim, policy=MelissaReservoir(), seed=2) for _ in range(2)]
    for start in range(0, len(samples), 20):
        batch = samples[start : start + 20]
        assert bufs[0].add_many(batch, timeout=0) == [bufs[1].add(sample, timeout=0) for sample in batch]
        if len(bufs[1]) > 40:
            for buf in bufs:
                for _ in range(8):
                    buf.draw(len(buf))
        assert_same_state(*bufs)


def test_add_many_with_a_consuming_draw_fills_the_freed_slots_as_add():
    # DistributionAware under a consuming draw rule: a storage with free slots declines the
    # batch path, and every arrival goes through select_slot as in add.
    samples = online_stream(1)
    bufs = [
        ReplayBuffer(40, FIELDS, SPACE.dim, policy=DistributionAware(strata(1)), seed=1, draw_rule=ConsumeOldest())
        for _ in range(2)
    ]
    for batch in batches(samples, 1):
        assert bufs[0].add_many(batch) == [bufs[1].add(sample) for sample in batch]
        if len(bufs[1]) >= 30:
            for buf in bufs:
                buf.draw(25)
        assert_same_state(*bufs)


def test_add_many_fifo_waits_per_sample_and_keeps_the_samples_before_a_timeout():
    samples = online_stream(0)[:15]
    buf = ReplayBuffer(10, FIELDS, SPACE.dim, policy=FIFO())
    with pytest.raises(TimeoutError, match="no free slot"):
        buf.add_many(samples, timeout=0.01)
    assert len(buf) == 10
    np.testing.assert_array_equal(buf.draw(10)["step"], [s.step for s in samples[:10]])
    assert buf.add_many(samples[10:], timeout=0) == [True] * 5


def test_add_many_checks_every_sample_before_inserting_any():
    samples = online_stream(0)[:5]
    bad = Sample(99, 0, 0.0, samples[0].params, {"u": np.zeros(4, np.float32), "v": np.zeros((2, 2), np.float32)})
    buf = ReplayBuffer(10, FIELDS, SPACE.dim)
    with pytest.raises(ValueError, match="field 'u' expected shape"):
        buf.add_many([*samples, bad])
    assert len(buf) == 0 and buf.stats()["n_seen"] == 0


def test_add_many_after_close_stores_nothing():
    buf = ReplayBuffer(10, FIELDS, SPACE.dim)
    buf.close()
    assert buf.add_many(online_stream(0)[:3]) == [False] * 3
    assert buf.stats()["n_seen"] == 0


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 17])
def test_bounded_integers_draws_what_one_scalar_call_per_bound_draws(n):
    """The scalar path (few bounds) and the array path (many) give the integers and the generator state
    of one ``rng.integers(b)`` per bound, so what a buffer holds does not depend on its batch sizes."""
    from gensim.buffers.policies import bounded_integers

    bounds = [int(b) for b in np.random.default_rng(n).integers(1, 10**6, size=n)]
    fast, slow = np.random.default_rng(7), np.random.default_rng(7)
    assert bounded_integers(fast, bounds) == [int(slow.integers(b)) for b in bounds]
    assert fast.bit_generator.state == slow.bit_generator.state
