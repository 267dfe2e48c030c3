"""Melissa's reservoir: the replay-buffer contract, and the rule that only drawn samples are evicted."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from buffer_contract import (
    FIELDS,
    N_PARAMS,
    ReplayBufferContract,
    UniformDrawContract,
    make_sample,
)

from gensim.buffers import MelissaReservoir, ReplayBuffer


class TestMelissaReservoir(ReplayBufferContract, UniformDrawContract):
    policy = MelissaReservoir
    waits_when_full = True

    def make_room(self, buf: ReplayBuffer, n: int) -> list[dict]:
        """Draw whole-buffer batches until ``n`` stored samples were drawn (so are evictable)."""
        batches = []
        while (buf.draw_counts() >= 1).sum() < n:
            batches.append(buf.draw(buf.capacity, timeout=1))
        return batches


@pytest.mark.parametrize("min_draws", [1, 3])
@pytest.mark.parametrize("seed", range(5))
def test_evicts_only_samples_drawn_min_draws_times(min_draws, seed):
    # A random interleaving of arrivals and draws (seeded): every sample that ever left the
    # buffer had been drawn >= min_draws times, and none was discarded. The retired-draws
    # histogram records the draw count of each evicted sample at its eviction.
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(12, FIELDS, N_PARAMS, policy=MelissaReservoir(min_draws=min_draws), seed=seed)
    arrived = refused = 0
    while arrived < 300:
        # About 0.9 draws per arrival: fewer than evictions need, so the buffer does fill up.
        if rng.random() < 0.3 and len(buf) >= 2:
            buf.draw(2)
            continue
        try:
            buf.add(make_sample(arrived), timeout=0)
            arrived += 1
        except TimeoutError:
            refused += 1
            # Refused only while no stored sample is evictable.
            assert (buf.draw_counts() < min_draws).all()
    retired = buf.retired_draws()
    assert retired[:min_draws].sum() == 0, f"evicted with fewer than {min_draws} draws: {retired}"
    st = buf.stats()
    assert st["n_discarded"] == 0 and st["n_evicted"] == retired.sum() == arrived - buf.capacity
    assert refused > 0, "the interleaving never filled the buffer: the test checked nothing"


def test_add_waits_for_enough_draws_then_resumes(start_thread):
    buf = ReplayBuffer(4, FIELDS, N_PARAMS, policy=MelissaReservoir(min_draws=2))
    for i in range(4):
        buf.add(make_sample(i), timeout=0)
    stored = threading.Event()
    start_thread(lambda: buf.add(make_sample(4), timeout=10) and stored.set(), buf)
    buf.draw(1)  # one sample drawn once: not evictable with min_draws=2
    assert not stored.wait(0.1), "add should wait while no sample has been drawn twice"
    while not stored.is_set() and (buf.draw_counts() < 2).all():
        buf.draw(1)
    # A non-consuming draw must wake the waiting add (the buffer notifies after every draw).
    assert stored.wait(2), "add should resume once a sample was drawn twice"
    assert buf.retired_draws()[2:].sum() == 1


def test_min_draws_validated():
    with pytest.raises(ValueError, match="min_draws must be an integer >= 1, got 0"):
        MelissaReservoir(min_draws=0)
