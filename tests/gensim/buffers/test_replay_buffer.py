"""Replay buffer: one contract test class, subclassed per insert policy, plus policy-specific tests.

Stochastic tests are seeded, so they are deterministic; each states the probability that a
correct implementation would fail it over random seeds, which is how its tolerance was chosen.
"""

from __future__ import annotations

import pickle
import threading
import time

import numpy as np
import pytest
from scipy import stats

from gensim.buffers import FIFO, FIRO, ConsumeOldest, ReplayBuffer, Reservoir, UniformDraw
from gensim.simulations.base import FieldSpec, Sample

# Two fields of different shapes and dtypes, to check flattening order and the float32 cast.
FIELDS = (FieldSpec("u", (3, 4), "float32"), FieldSpec("v", (5,), "float64"))
N_FEATURES = 12 + 5
N_PARAMS = 2
STEPS_PER_SIM = 10


def make_sample(i: int) -> Sample:
    """Sample number ``i``: every value is exact in float32 and identifies ``i``."""
    return Sample(
        sim_id=i // STEPS_PER_SIM,
        step=i % STEPS_PER_SIM,
        t=0.5 * i,
        params=np.array([i, -i / 4]),
        fields={
            "u": (np.arange(12, dtype=np.float32).reshape(3, 4) + 100 * i),
            "v": -(np.arange(5, dtype=np.float64) + 100 * i),
        },
    )


def sample_index(batch: dict, row: int) -> int:
    return int(batch["sim_id"][row]) * STEPS_PER_SIM + int(batch["step"][row])


def assert_rows_intact(batch: dict) -> list[int]:
    """Every row of ``batch`` equals the sample its ids name (no torn or mixed rows); its indices."""
    indices = []
    for row in range(len(batch["sim_id"])):
        i = sample_index(batch, row)
        s = make_sample(i)
        expected = np.concatenate([s.fields["u"].ravel(), s.fields["v"].ravel()]).astype(np.float32)
        np.testing.assert_array_equal(batch["fields"][row], expected)
        np.testing.assert_array_equal(batch["params"][row], s.params.astype(np.float32))
        assert batch["t"][row] == np.float32(s.t)
        indices.append(i)
    return indices


def assert_counters_consistent(buf: ReplayBuffer, n_seen: int, n_drawn: int) -> None:
    st = buf.stats()
    assert st["n_seen"] == n_seen
    assert st["n_stored"] + st["n_discarded"] == n_seen
    assert st["size"] == len(buf) == st["n_stored"] - st["n_evicted"] - st["n_consumed"]
    assert st["n_drawn"] == n_drawn
    assert 0 <= len(buf) <= buf.capacity


@pytest.fixture
def start_thread():
    """Start daemon threads; teardown closes their buffers (waking any wait) and joins them."""
    started: list[tuple[threading.Thread, ReplayBuffer]] = []

    def start(target, buffer: ReplayBuffer) -> threading.Thread:
        thread = threading.Thread(target=target, daemon=True)
        started.append((thread, buffer))
        thread.start()
        return thread

    yield start
    for thread, buffer in started:
        buffer.close()
        thread.join(timeout=5)
        assert not thread.is_alive(), "a test thread did not stop after close()"


class ReplayBufferContract:
    """Tests every insert policy must pass; subclasses set ``policy`` and ``waits_when_full``."""

    policy: str
    waits_when_full = False
    capacity = 16

    def make(self, capacity: int | None = None, seed: int = 0) -> ReplayBuffer:
        return ReplayBuffer(capacity or self.capacity, FIELDS, N_PARAMS, policy=self.policy(), seed=seed)

    def fill(self, buf: ReplayBuffer, indices) -> None:
        for i in indices:
            buf.add(make_sample(i), timeout=0)

    def test_size_bounded(self):
        buf = self.make()
        n_drawn = 0
        for i in range(3 * self.capacity):
            if self.waits_when_full and len(buf) == buf.capacity:
                with pytest.raises(TimeoutError, match="no free slot"):
                    buf.add(make_sample(i), timeout=0.01)
                n_drawn += len(buf.draw(1)["step"])
            # timeout=0: a policy that does not wait when full must never wait.
            buf.add(make_sample(i), timeout=0)
            assert len(buf) <= buf.capacity
        assert len(buf) == buf.capacity
        assert_counters_consistent(buf, n_seen=3 * self.capacity, n_drawn=n_drawn)

    def test_batch_shapes_and_dtypes(self):
        buf = self.make()
        self.fill(buf, range(self.capacity))
        batch = buf.draw(5)
        expected = {
            "params": ((5, N_PARAMS), np.float32),
            "t": ((5,), np.float32),
            "fields": ((5, N_FEATURES), np.float32),
            "sim_id": ((5,), np.int64),
            "step": ((5,), np.int64),
        }
        assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected

    def test_fields_round_trip_in_fieldspec_order(self):
        buf = self.make()
        self.fill(buf, range(self.capacity))
        batch = buf.draw(self.capacity)
        assert_rows_intact(batch)
        # The documented column slices give each field back in its declared shape.
        u = batch["fields"][:, buf.field_slices["u"]].reshape(-1, 3, 4)
        for row in range(self.capacity):
            np.testing.assert_array_equal(u[row], make_sample(sample_index(batch, row)).fields["u"])

    def test_state_dict_round_trip_reproduces_next_draws(self):
        a = self.make(seed=1)
        self.fill(a, range(self.capacity))
        for _ in range(2):
            a.draw(4)
        if not self.waits_when_full:
            # Evictions and discards, so the policy state and its generator matter.
            self.fill(a, range(self.capacity, 3 * self.capacity))
        state = a.state_dict()

        def advance(buf: ReplayBuffer) -> list[dict]:
            batches = [buf.draw(4, timeout=1) for _ in range(2)]
            self.fill(buf, range(1000, 1008))  # a FIFO has 8 free slots here
            batches += [buf.draw(2, timeout=1) for _ in range(3)]
            return batches

        after_a = advance(a)  # mutates a after state_dict(): the state must be a copy
        b = self.make(seed=99)  # a different seed: the generator states come from the checkpoint
        b.load_state_dict(pickle.loads(pickle.dumps(state)))
        after_b = advance(b)
        for batch_a, batch_b in zip(after_a, after_b):
            for key in batch_a:
                np.testing.assert_array_equal(batch_a[key], batch_b[key])
        assert a.stats() == b.stats()
        np.testing.assert_array_equal(a.draw_counts(), b.draw_counts())

    def test_concurrent_add_and_draw_lose_nothing(self, start_thread):
        buf = self.make()
        n = 2000
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                for i in range(n):
                    buf.add(make_sample(i), timeout=5)
            except BaseException as exc:  # surfaced in the main thread below
                errors.append(exc)
            finally:
                buf.close()

        start_thread(produce, buf)
        drawn: list[int] = []
        while True:
            batch = buf.draw(4, timeout=5)
            if batch is None:  # consuming rule: closed and empty
                break
            drawn += assert_rows_intact(batch)
            if buf.closed and not buf.draw_rule.consumes:
                break
        assert not errors, errors
        assert_counters_consistent(buf, n_seen=n, n_drawn=len(drawn))
        if buf.draw_rule.consumes:
            assert drawn == list(range(n))
        else:
            before = int(buf.draw_counts().sum())
            buf.draw(7)
            assert int(buf.draw_counts().sum()) == before + 7

    def test_close_wakes_blocked_draw(self, start_thread):
        buf = self.make()
        result: dict = {}
        thread = start_thread(lambda: result.update(batch=buf.draw(4, timeout=10)), buf)
        time.sleep(0.05)
        assert thread.is_alive(), "draw on an empty buffer should wait"
        started = time.monotonic()
        buf.close()
        thread.join(timeout=2)
        assert not thread.is_alive()
        assert time.monotonic() - started < 2
        assert result == {"batch": None}

    def test_draw_timeout_raises(self):
        buf = self.make()
        buf.add(make_sample(0))
        with pytest.raises(TimeoutError, match="1 of the 4 samples needed arrived within 0.05 s"):
            buf.draw(4, timeout=0.05)

    def test_wait_for_watermark(self):
        buf = self.make()
        assert buf.wait_for(0, timeout=0)
        assert not buf.wait_for(3, timeout=0.01)
        self.fill(buf, range(3))
        assert buf.wait_for(3, timeout=0)
        buf.close()
        assert not buf.wait_for(buf.capacity, timeout=None)  # closed: returns, no hang
        with pytest.raises(ValueError, match="watermark must be in"):
            buf.wait_for(buf.capacity + 1, timeout=0)

    def test_add_after_close_is_refused(self):
        buf = self.make()
        buf.close()
        assert buf.add(make_sample(0)) is False
        assert len(buf) == 0 and buf.stats()["n_seen"] == 0

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (lambda s: s.fields.pop("v"), r"expected fields \['u', 'v'\], got \['u'\]"),
            (lambda s: s.fields.update(v=np.zeros(6)), r"field 'v' expected shape \(5,\), got \(6,\)"),
            (lambda s: setattr(s, "params", np.zeros(3)), r"expected params of shape \(2,\), got \(3,\)"),
        ],
        ids=["missing field", "wrong shape", "wrong params"],
    )
    def test_add_rejects_malformed_sample(self, change, message):
        buf = self.make()
        sample = make_sample(0)
        change(sample)
        with pytest.raises(ValueError, match=message):
            buf.add(sample)
        assert len(buf) == 0 and buf.stats()["n_seen"] == 0


class UniformDrawContract:
    """Policies whose batches are uniform draws with replacement over the stored samples."""

    def test_draws_uniform_over_stored_samples(self):
        buf = self.make(seed=3)
        self.fill(buf, range(buf.capacity))
        counts = np.zeros(buf.capacity, dtype=np.int64)
        for _ in range(200):
            batch = buf.draw(100)
            np.add.at(counts, batch["sim_id"] * STEPS_PER_SIM + batch["step"], 1)
        # Pearson chi-square, capacity - 1 degrees of freedom. Tolerance: a correct uniform
        # rule exceeds the 1 - 1e-4 quantile with probability 1e-4 over seeds.
        expected = counts.sum() / buf.capacity
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert chi2 < stats.chi2.ppf(1 - 1e-4, buf.capacity - 1)
        # The per-sample draw counts agree with what was handed out (the buffer is full, so
        # slot order is arrival order for FIRO and reservoir).
        np.testing.assert_array_equal(buf.draw_counts(), counts)


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
        assert sorted(buf.storage.sim_id * STEPS_PER_SIM + buf.storage.step) == list(
            range(4, self.capacity + 4)
        )
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
            assert outside.size == 0, (
                f"n={n}: items {outside} kept {counts[outside]} times, bounds [{low}, {high}]"
            )
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
