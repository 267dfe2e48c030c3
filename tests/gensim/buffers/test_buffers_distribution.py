"""Distribution-aware policy: the buffer contract, balanced strata whatever the arrival order, weights.

Arrivals imitate an on-line study: ``n_parallel`` simulations at a time, each streaming its steps
in order, the next wave starting when one ends. Stochastic tests are seeded; each says why its
tolerance holds.
"""

from __future__ import annotations

import numpy as np
import pytest
from buffer_contract import (  # noqa: F401 (start_thread is a fixture)
    ReplayBufferContract,
    UniformDrawContract,
    make_sample,
    start_thread,
)

from gensim.buffers import ConsumeOldest, DistributionAware, ReplayBuffer, Strata
from gensim.simulations.base import FieldSpec, Sample
from sampling import ParameterSpace, Sobol

# Covers the parameters of buffer_contract.make_sample, (i, -i / 4), for i < 2000.
CONTRACT_SPACE = ParameterSpace(["a", "b"], [0.0, -500.0], [2000.0, 0.0])
SPACE = ParameterSpace(["x", "logk"], [0.0, 1e-3], [1.0, 1.0], log=[False, True])
N_STEPS = 20
ONE_FIELD = (FieldSpec("u", (2,)),)


class TestDistributionAware(ReplayBufferContract, UniformDrawContract):
    weighted = True

    @staticmethod
    def policy() -> DistributionAware:
        return DistributionAware(Strata(CONTRACT_SPACE, n_steps=10, n_cells=4, n_time_bins=2), importance_weights=True)


def waves(params: np.ndarray, n_steps: int, n_parallel: int):
    """Samples in on-line order: ``n_parallel`` simulations interleaved, each in step order."""
    for start in range(0, len(params), n_parallel):
        group = range(start, min(start + n_parallel, len(params)))
        for step in range(n_steps):
            for sim in group:
                yield Sample(
                    sim_id=sim, step=step, t=float(step), params=params[sim], fields={"u": np.zeros(2, np.float32)}
                )


def stream(buf: ReplayBuffer, params: np.ndarray, n_steps: int = N_STEPS, n_parallel: int = 4) -> None:
    for sample in waves(params, n_steps, n_parallel):
        buf.add(sample, timeout=0)


def make_buffer(capacity: int, strata: Strata, seed: int = 0, **kwargs) -> ReplayBuffer:
    """A distribution-aware buffer, with importance weights unless ``kwargs`` say otherwise."""
    policy = DistributionAware(strata, **{"importance_weights": True} | kwargs)
    return ReplayBuffer(capacity, ONE_FIELD, SPACE.dim, policy=policy, seed=seed)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("capacity", [37, 200])
def test_time_strata_balanced_within_one(seed, capacity):
    # Strata over time only (one cell): equal masses, so "balanced" means counts within 1 of
    # each other. In-order arrival fills the buffer with early steps first; the later steps
    # must take their share back. 64 simulations x 20 steps give every bin >= 256 arrivals,
    # more than any quota (<= 40): the arrivals allow balance, so it must be exact (no
    # tolerance: the rule is deterministic in its counts).
    strata = Strata(SPACE, N_STEPS, n_cells=1, n_time_bins=5)
    buf = make_buffer(capacity, strata, seed=seed)
    stream(buf, Sobol(SPACE, seed=seed).sample(64))
    counts = buf.policy.counts
    assert counts.sum() == len(buf) == capacity
    assert counts.max() - counts.min() <= 1, counts
    np.testing.assert_array_equal(counts, np.bincount(strata.time_bin_of(buf.contents()["step"]), minlength=5))


@pytest.mark.parametrize("seed", range(3))
def test_cells_x_time_track_target_quotas(seed):
    # Voronoi cells x time bins have unequal masses: every count must equal its integer quota,
    # and that quota be within 1 of capacity * mass. 256 simulations reach every one of the 8
    # cells (each
    # has target mass >= 0.03, so >= 3 expected simulations; Sobol spreads them).
    strata = Strata(SPACE, N_STEPS, n_cells=8, n_time_bins=4, seed=seed)
    buf = make_buffer(300, strata, seed=seed)
    stream(buf, Sobol(SPACE, seed=10 + seed).sample(256), n_parallel=8)
    counts, quotas = buf.policy.counts, buf.policy.quotas()
    np.testing.assert_array_equal(counts, quotas)
    assert np.abs(quotas - 300 * strata.mass).max() < 1 and quotas.sum() == 300
    contents = buf.contents()
    np.testing.assert_array_equal(
        counts, np.bincount(strata.assign(contents["params"], contents["step"]), minlength=strata.n_strata)
    )


def test_no_recency_bias_inside_strata():
    # Once strata are at their quotas, an arrival enters only through the reservoir inside its
    # stratum, so the buffer stays a uniform subset of the stream within each stratum: the
    # first half of 256 simulations (in on-line order) holds about half the samples: over 12
    # seeds of this set-up, mean 0.50 and standard deviation 0.02, so 0.1 is 5 of them. Quotas
    # that move (fractional, or following the arrivals) kept 0.27 in the first half here, and
    # stored 1 700 to 2 900 arrivals instead of 1 150 +- 19.
    strata = Strata(SPACE, N_STEPS, n_cells=8, n_time_bins=4)
    buf = make_buffer(300, strata)
    stream(buf, Sobol(SPACE, seed=1).sample(256), n_parallel=8)
    share = (buf.contents()["sim_id"] < 128).mean()
    assert abs(share - 0.5) < 0.1, share
    # A reservoir stores about capacity * (1 + ln(arrivals / capacity)) = 1 150 of 5 120 here.
    assert buf.stats()["n_stored"] < 1.3 * 300 * (1 + np.log(256 * N_STEPS / 300))


def test_capacity_lent_while_a_stratum_waits_then_taken_back():
    strata = Strata(SPACE, N_STEPS, n_cells=1, n_time_bins=2)
    buf = make_buffer(40, strata)
    params = Sobol(SPACE, seed=0).sample(8)
    # Only the first half of the steps for now: the late bin has no arrival, so the early bin
    # holds the whole capacity rather than leaving it empty.
    stream(buf, params, n_steps=N_STEPS // 2)
    np.testing.assert_array_equal(buf.policy.counts, [40, 0])
    stream(buf, params)  # now every step: the late bin gets its half back
    np.testing.assert_array_equal(buf.policy.counts, [20, 20])


def test_importance_weights_make_the_buffer_average_the_target():
    # One bin short of samples (arrivals do not allow balance yet): its samples weigh more,
    # so that the weighted share of every stratum is its target mass, exactly.
    strata = Strata(SPACE, N_STEPS, n_cells=1, n_time_bins=2)
    buf = make_buffer(40, strata)
    params = Sobol(SPACE, seed=0).sample(8)
    stream(buf, params, n_steps=N_STEPS // 2)
    late = [Sample(sim_id=0, step=N_STEPS - 1, t=0.0, params=params[0], fields={"u": np.zeros(2)})] * 5
    for sample in late:
        buf.add(sample, timeout=0)
    policy = buf.policy
    np.testing.assert_array_equal(policy.counts, [35, 5])
    slots = buf.storage.live_slots()
    weights = policy.batch_weights(slots, buf.storage).astype(np.float64)
    bins = strata.time_bin_of(buf.storage.step[slots])
    np.testing.assert_allclose(weights.mean(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.bincount(bins, weights=weights) / len(slots), strata.mass, rtol=1e-6)
    # And each batch carries them.
    batch = buf.draw(64)
    np.testing.assert_allclose(batch["weight"], policy.stratum_weights()[strata.time_bin_of(batch["step"])], rtol=1e-6)


def test_follow_arrivals_weighs_the_samplers_emphasis():
    # A sampler that puts 3 of 4 simulations in one of two cells on purpose. The buffer holds
    # the target shares either way (coverage); the weights make the loss follow the target
    # ("target": weighted shares = target masses rounded to the quotas, so every weight is 1)
    # or the arrivals ("arrivals": weighted shares = shares of the arrivals, here 0.75 / 0.25).
    # Exact: counts equal their quotas.
    strata = Strata(SPACE, N_STEPS, n_cells=2, n_time_bins=1, seed=3)
    candidates = SPACE.from_unit(np.random.default_rng(0).random((2000, 2)))
    cell = strata.assign(candidates, np.zeros(2000))
    params = np.concatenate([candidates[cell == 0][:300], candidates[cell == 1][:100]])
    for follow in ("target", "arrivals"):
        buf = make_buffer(200, strata, follow=follow)
        stream(buf, params)
        policy = buf.policy
        np.testing.assert_array_equal(policy.counts, policy.quotas())
        arrival_share = policy.arrivals / policy.arrivals.sum()
        np.testing.assert_allclose(arrival_share, [0.75, 0.25])
        weighted_share = policy.stratum_weights() * policy.counts / policy.counts.sum()
        expected = arrival_share if follow == "arrivals" else policy.quotas() / 200
        np.testing.assert_allclose(weighted_share, expected, rtol=1e-9)
    # The rounded target is within one sample of the exact one.
    assert np.abs(policy.quotas() - strata.mass * 200).max() < 1
    assert abs(strata.mass[0] - 0.75) > 0.1, "the emphasis must differ from the target to test anything"


def test_target_weights_are_one_once_strata_hold_their_quotas():
    # 8 cells x 3 time bins of unequal Voronoi masses: capacity * mass is not a whole number,
    # so weights from the exact masses would differ from 1 by the rounding of the quotas
    # (checked below); the weights correct strata short of their quotas, not that rounding.
    strata = Strata(SPACE, N_STEPS, n_cells=8, n_time_bins=3, seed=2)
    buf = make_buffer(301, strata)
    stream(buf, Sobol(SPACE, seed=0).sample(256))
    policy = buf.policy
    np.testing.assert_array_equal(policy.counts, policy.quotas())
    np.testing.assert_allclose(policy.stratum_weights(), np.ones(strata.n_strata), rtol=1e-12)
    exact = strata.mass * 301 / policy.quotas()
    assert np.abs(exact - 1).max() > 0.01, "the quotas must round for this test to tell anything"


def test_weights_are_off_by_default_as_in_the_config():
    strata = Strata(SPACE, N_STEPS, n_cells=2, n_time_bins=2)
    buf = ReplayBuffer(10, ONE_FIELD, SPACE.dim, policy=DistributionAware(strata), seed=0)
    stream(buf, Sobol(SPACE, seed=0).sample(2))
    assert "weight" not in buf.draw(4)


def test_consuming_draw_rule_keeps_counts_right():
    strata = Strata(SPACE, N_STEPS, n_cells=2, n_time_bins=2)
    buf = ReplayBuffer(30, ONE_FIELD, SPACE.dim, policy=DistributionAware(strata), draw_rule=ConsumeOldest())
    samples = waves(Sobol(SPACE, seed=0).sample(8), N_STEPS, 4)
    for _ in range(6):
        for _ in range(20):
            if buf.policy.ready(buf.storage):
                buf.add(next(samples), timeout=0)
        buf.draw(10)
        contents = buf.contents()
        np.testing.assert_array_equal(
            buf.policy.counts, np.bincount(strata.assign(contents["params"], contents["step"]), minlength=4)
        )


def test_state_refused_for_other_strata():
    state = make_buffer(8, Strata(SPACE, N_STEPS, n_cells=2, n_time_bins=2)).state_dict()
    other = make_buffer(8, Strata(SPACE, N_STEPS, n_cells=2, n_time_bins=2, seed=5))
    with pytest.raises(ValueError, match="build the policy with the checkpoint's strata settings"):
        other.load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"strata": "cells"}, TypeError, "strata must be a gensim.buffers.Strata, got str"),
        ({"follow": "both"}, ValueError, r"follow must be one of \('target', 'arrivals'\), got 'both'"),
    ],
    ids=["strata", "follow"],
)
def test_construction_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        DistributionAware(**{"strata": Strata(SPACE, N_STEPS, n_cells=2), **kwargs})


def test_contract_sample_space_covers_make_sample():
    # The contract's samples must lie in CONTRACT_SPACE for the strata to be meaningful.
    assert CONTRACT_SPACE.contains(np.stack([make_sample(i).params for i in (0, 1999)])).all()


class ScanningDistributionAware(DistributionAware):
    """The policy as first written (commit 7cdf2a4): a uniform member of a stratum is found by
    scanning every slot, the stratum by a nearest-center search on every arrival, and the counts
    are numpy arrays; since the batched draws, the reservoir's one draw ``v`` in ``[0, a_s)``
    also names the member it replaces (``v < n_s``) instead of a second draw. The reference the
    indexed implementation must reproduce sample for sample."""

    def bind(self, capacity, rng):
        super().bind(capacity, rng)
        self.ref_counts = np.zeros(self.strata.n_strata, dtype=np.int64)
        self.ref_arrivals = np.zeros(self.strata.n_strata, dtype=np.int64)

    @property
    def counts(self):
        return self.ref_counts.copy()

    @property
    def arrivals(self):
        return self.ref_arrivals.copy()

    def select_slot(self, sample, seq, storage):
        strata = self.strata
        step = min(max(int(sample.step), 0), strata.n_steps - 1)
        s = strata._cell_of_one(sample.params) * strata.n_time_bins + step * strata.n_time_bins // strata.n_steps
        self.ref_arrivals[s] += 1
        slot = storage.free_slot()
        if slot is None:
            if self.ref_counts[s] < self._quotas[s]:
                donor = int(np.argmax(self.ref_counts - self._quotas))
                slot = self._scan_member(donor)
            elif (v := int(self.rng.integers(self.ref_arrivals[s]))) < self.ref_counts[s]:
                slot = int(np.flatnonzero(self.slot_stratum == s)[v])
            else:
                return None
            self.ref_counts[self.slot_stratum[slot]] -= 1
        self.slot_stratum[slot] = s
        self.ref_counts[s] += 1
        return slot

    def _scan_member(self, stratum):
        members = np.flatnonzero(self.slot_stratum == stratum)
        return int(members[self.rng.integers(len(members))])

    def released(self, slots, storage):
        self.ref_counts -= np.bincount(self.slot_stratum[slots], minlength=self.strata.n_strata)
        self.slot_stratum[slots] = -1


def assert_same_buffer(new: ReplayBuffer, old: ReplayBuffer) -> None:
    """Bit-identical storage, counters and policy state (generator state included)."""
    new_state, old_state = new.state_dict(), old.state_dict()
    for name, value in old_state["storage"].items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(new_state["storage"][name], value, err_msg=name)
        else:
            assert new_state["storage"][name] == value, name
    assert new_state["counters"] == old_state["counters"]
    for name in ("slot_stratum", "counts", "arrivals"):
        np.testing.assert_array_equal(new_state["policy"][name], old_state["policy"][name], err_msg=name)
    assert new_state["policy"]["rng"] == old_state["policy"]["rng"]


@pytest.mark.parametrize("seed", range(4))
def test_same_content_as_the_scanning_algorithm(seed):
    # A seeded on-line stream through buffers that differ only in the implementation: capacity
    # lent to early bins then taken back (donor evictions), reservoirs inside strata (discards
    # and replacements), and a checkpoint restored mid-stream (the slot lists are rebuilt from
    # slot_stratum). The content must be identical at every checkpoint, not just alike.
    strata = Strata(SPACE, N_STEPS, n_cells=8, n_time_bins=4, seed=seed)
    params = Sobol(SPACE, seed=seed).sample(128)
    samples = list(waves(params, N_STEPS, 8))
    new = make_buffer(97, strata, seed=seed)
    old = ReplayBuffer(97, ONE_FIELD, SPACE.dim, policy=ScanningDistributionAware(strata), seed=seed)
    for start in range(0, len(samples), 500):
        for sample in samples[start : start + 500]:
            assert new.add(sample, timeout=0) == old.add(sample, timeout=0)
        assert_same_buffer(new, old)
        restored = make_buffer(97, strata, seed=seed + 1)
        restored.load_state_dict(new.state_dict())
        new = restored
    assert new.stats()["n_evicted"] > 200 and new.stats()["n_discarded"] > 1000


def test_same_content_as_the_scanning_algorithm_with_consuming_draws():
    # Draws that free slots (ConsumeOldest): released() and refills of freed slots.
    strata = Strata(SPACE, N_STEPS, n_cells=4, n_time_bins=2)
    samples = waves(Sobol(SPACE, seed=0).sample(32), N_STEPS, 4)
    new = ReplayBuffer(30, ONE_FIELD, SPACE.dim, policy=DistributionAware(strata), draw_rule=ConsumeOldest())
    old = ReplayBuffer(30, ONE_FIELD, SPACE.dim, policy=ScanningDistributionAware(strata), draw_rule=ConsumeOldest())
    for _ in range(20):
        for sample in (next(samples) for _ in range(25)):
            assert new.add(sample, timeout=0) == old.add(sample, timeout=0)
        batch_new, batch_old = new.draw(7), old.draw(7)
        for key in batch_old:
            np.testing.assert_array_equal(batch_new[key], batch_old[key], err_msg=key)
        assert_same_buffer(new, old)


def test_one_draw_reservoir_keeps_every_arrival_with_probability_capacity_over_arrivals():
    # Inside one stratum (one cell, one time bin) the policy is a reservoir: after 40 arrivals
    # in a buffer of 8, each arrival is in it with probability 8 / 40 = 0.2, whatever its
    # place in the stream, when the draw that decides a replacement (v < n_s) also names the
    # member it replaces. Over 1500 seeds an arrival's frequency has standard deviation
    # sqrt(0.2 * 0.8 / 1500) = 0.0103; 0.05 is 4.8 of them, for each of the 40 arrivals
    # (probability of a false failure about 40 * 1.6e-6). The arrivals after the fill go
    # through add_many, the batched draws.
    strata = Strata(SPACE, N_STEPS, n_cells=1, n_time_bins=1)
    samples = [Sample(i, i % N_STEPS, 0.0, np.array([0.5, 0.1]), {"u": np.zeros(2, np.float32)}) for i in range(40)]
    kept = np.zeros(40)
    for seed in range(1500):
        buf = make_buffer(8, strata, seed=seed)
        for sample in samples[:8]:
            buf.add(sample, timeout=0)
        for start in range(8, 40, 16):
            buf.add_many(samples[start : start + 16])
        kept[buf.contents()["sim_id"]] += 1
    np.testing.assert_allclose(kept / 1500, 0.2, atol=0.05)
