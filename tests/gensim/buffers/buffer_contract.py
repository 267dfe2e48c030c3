"""The replay-buffer contract: tests every insert policy must pass, shared by the policy test files.

A test file subclasses :class:`ReplayBufferContract` (and :class:`UniformDrawContract` for
uniform draws) once per policy, and imports the :func:`start_thread` fixture with it.

Stochastic tests are seeded, so they are deterministic; each states the probability that a
correct implementation would fail it over random seeds, which is how its tolerance was chosen.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from gensim.buffers import InsertPolicy, ReplayBuffer
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
    # Every sample that left the buffer, or never entered it, is in the retired histogram once.
    assert buf.retired_draws().sum() == st["n_evicted"] + st["n_consumed"] + st["n_discarded"]


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
    """Tests every insert policy must pass.

    Subclasses set ``policy`` (a callable returning a new policy), ``waits_when_full`` (``add``
    into a full buffer waits for draws) and ``weighted`` (batches carry importance weights).
    """

    policy: Callable[[], InsertPolicy]
    waits_when_full = False
    weighted = False
    capacity = 16

    def make(self, capacity: int | None = None, seed: int = 0) -> ReplayBuffer:
        return ReplayBuffer(capacity or self.capacity, FIELDS, N_PARAMS, policy=self.policy(), seed=seed)

    def fill(self, buf: ReplayBuffer, indices) -> None:
        for i in indices:
            buf.add(make_sample(i), timeout=0)

    def make_room(self, buf: ReplayBuffer, n: int) -> list[dict]:
        """Draw until ``n`` adds can go in without waiting; the batches drawn.

        Nothing to do by default: policies that never wait need no room, and a FIFO that
        just had 8 samples consumed has 8 free slots.
        """
        return []

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
        if self.weighted:
            expected["weight"] = ((5,), np.float32)
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
            batches += self.make_room(buf, 8)
            self.fill(buf, range(1000, 1008))
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
        np.testing.assert_array_equal(a.retired_draws(), b.retired_draws())

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
        buf.close()
        thread.join(timeout=2)  # an event's deadline, not a speed bound: the draw wakes at close
        assert not thread.is_alive()
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
