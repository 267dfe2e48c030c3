"""Replay buffer with the FIFO, FIRO and reservoir policies (the contract is in buffer_contract.py).

Stochastic tests are seeded, so they are deterministic; each states the probability that a
correct implementation would fail it over random seeds, which is how its tolerance was chosen.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from buffer_contract import (
    FIELDS,
    N_PARAMS,
    STEPS_PER_SIM,
    ReplayBufferContract,
    UniformDrawContract,
    assert_rows_intact,
    make_sample,
)
from scipy import stats

from gensim.buffers import FIFO, FIRO, ConsumeOldest, ReplayBuffer, Reservoir, UniformDraw
from gensim.simulations.base import FieldSpec, Sample


class TestFIFO(ReplayBufferContract):
    policy = FIFO
    waits_when_full = True

    def test_arrival_order_each_sample_drawn_once(self):
        buf = self.make()
        drawn: list[int] = []
        # Add 10, draw 9, six times: the queue grows to 15 of 16 and wraps the ring 3 times.
        for start in range(0, 60, 10):
            self.fill(buf, range(start, start + 10))
            drawn += assert_rows_intact(buf.draw(9))
        buf.close()
        while (batch := buf.draw(4)) is not None:
            drawn += assert_rows_intact(batch)
        assert drawn == list(range(60))
        assert buf.stats()["n_drawn"] == 60 and len(buf) == 0

    def test_add_blocks_when_full_and_resumes_after_draw(self, start_thread):
        buf = self.make()
        self.fill(buf, range(self.capacity))
        stored = threading.Event()
        start_thread(lambda: buf.add(make_sample(self.capacity), timeout=10) and stored.set(), buf)
        assert not stored.wait(0.1), "add into a full FIFO should wait"
        assert assert_rows_intact(buf.draw(1)) == [0]
        assert stored.wait(2), "add should resume once a draw freed a slot"
        assert len(buf) == self.capacity

    def test_close_wakes_blocked_add(self, start_thread):
        buf = self.make()
        self.fill(buf, range(self.capacity))
        result: dict = {}
        thread = start_thread(lambda: result.update(stored=buf.add(make_sample(99), timeout=10)), buf)
        time.sleep(0.05)
        buf.close()
        thread.join(timeout=2)
        assert result == {"stored": False}

    def test_end_of_stream_returns_remainder_then_none(self):
        buf = self.make()
        self.fill(buf, range(5))
        buf.close()
        assert assert_rows_intact(buf.draw(4)) == [0, 1, 2, 3]
        assert assert_rows_intact(buf.draw(4)) == [4]
        assert buf.draw(4) is None

    def test_batch_larger_than_capacity_is_refused(self):
        with pytest.raises(ValueError, match="exceeds the capacity 16"):
            self.make().draw(17)


class TestFIRO(ReplayBufferContract, UniformDrawContract):
    policy = FIRO

    def test_oldest_overwritten(self):
        buf = self.make()
        self.fill(buf, range(self.capacity + 4))
        assert sorted(buf.storage.sim_id * STEPS_PER_SIM + buf.storage.step) == list(range(4, self.capacity + 4))
        assert buf.stats()["n_evicted"] == 4


class TestReservoir(ReplayBufferContract, UniformDrawContract):
    policy = Reservoir

    def test_each_item_kept_with_probability_capacity_over_n(self):
        # Algorithm R: after n arrivals, each of them is stored with probability p = capacity / n.
        # Checked at n = 30 and n = 60 over 2000 seeded repeats, so item i's keep count k_i is
        # Binomial(2000, p). Two tolerances, each failing a correct reservoir with probability
        # < 1e-3 over seeds (< 3e-3 in all):
        # - per item, exact two-sided binomial bounds, Bonferroni-corrected over the 90 (item, n)
        #   pairs: catches any single item kept too often or too rarely (e.g. a ring);
        # - per n, a chi-square of all k_i at its 1 - 1e-3 / 2 quantile: catches diffuse biases
        #   (an off-by-one in the keep probability fails it at n = 30). The kept set is a uniform
        #   subset, whose indicators have covariance p (1 - p) n / (n - 1) (I - 1 1^T / n), so
        #   sum (k_i - 2000 p)^2 / (2000 p (1 - p) n / (n - 1)) is asymptotically chi2(n - 1).
        capacity, repeats, checkpoints = 6, 2000, (30, 60)
        fields = (FieldSpec("x", (1,)),)
        kept = {n: np.zeros(n, dtype=np.int64) for n in checkpoints}
        for seed in range(repeats):
            buf = ReplayBuffer(capacity, fields, 1, policy=Reservoir(), seed=seed)
            for i in range(checkpoints[-1]):
                buf.add(Sample(sim_id=0, step=i, t=0.0, params=np.zeros(1), fields={"x": np.zeros(1)}))
                if i + 1 in kept:
                    kept[i + 1][buf.storage.step] += 1
        alpha = 1e-3 / sum(checkpoints)
        for n, counts in kept.items():
            p = capacity / n
            law = stats.binom(repeats, p)
            low, high = law.ppf(alpha / 2), law.isf(alpha / 2)
            outside = np.flatnonzero((counts < low) | (counts > high))
            assert outside.size == 0, f"n={n}: items {outside} kept {counts[outside]} times, bounds [{low}, {high}]"
            chi2 = ((counts - repeats * p) ** 2).sum() / (repeats * p * (1 - p) * n / (n - 1))
            assert chi2 < stats.chi2.isf(1e-3 / len(checkpoints), n - 1), f"n={n}: chi2 = {chi2:.1f}"

    def test_fills_before_discarding(self):
        buf = self.make()
        self.fill(buf, range(self.capacity))
        assert buf.stats()["n_discarded"] == buf.stats()["n_evicted"] == 0
        np.testing.assert_array_equal(buf.storage.step, np.arange(self.capacity) % STEPS_PER_SIM)


def test_policy_resolution_errors():
    with pytest.raises(TypeError, match="policy must be an InsertPolicy instance, got str"):
        ReplayBuffer(4, FIELDS, N_PARAMS, policy="fifo")
    with pytest.raises(TypeError, match="policy must be an InsertPolicy instance"):
        ReplayBuffer(4, FIELDS, N_PARAMS, policy=FIFO)


def test_load_state_dict_refuses_other_layout_or_policy():
    state = ReplayBuffer(8, FIELDS, N_PARAMS, policy=FIRO()).state_dict()
    with pytest.raises(ValueError, match="build the buffer with the checkpoint's capacity"):
        ReplayBuffer(9, FIELDS, N_PARAMS, policy=FIRO()).load_state_dict(state)
    with pytest.raises(ValueError, match=r"saved with \(policy, draw rule\) = \('FIRO', 'UniformDraw'\)"):
        ReplayBuffer(8, FIELDS, N_PARAMS, policy=Reservoir()).load_state_dict(state)


def test_new_policy_plugs_in_without_touching_others():
    """The extension point: a policy is a slot choice plus a draw rule, nothing else."""

    class EvenStepsQueue(FIFO):
        def select_slot(self, sample, seq, storage):
            return super().select_slot(sample, seq, storage) if sample.step % 2 == 0 else None

    buf = ReplayBuffer(8, FIELDS, N_PARAMS, policy=EvenStepsQueue())
    for i in range(10):
        buf.add(make_sample(i))
    assert isinstance(buf.draw_rule, ConsumeOldest)
    assert assert_rows_intact(buf.draw(5)) == [0, 2, 4, 6, 8]
    assert buf.stats()["n_discarded"] == 5

    # A draw rule can also be swapped: a reservoir drawn as a queue.
    buf = ReplayBuffer(8, FIELDS, N_PARAMS, policy=Reservoir(), draw_rule=ConsumeOldest())
    for i in range(4):
        buf.add(make_sample(i))
    assert assert_rows_intact(buf.draw(4)) == [0, 1, 2, 3] and len(buf) == 0
    assert isinstance(ReplayBuffer(8, FIELDS, N_PARAMS).draw_rule, UniformDraw)
