"""Insert policies: where an arriving sample goes, whether it is kept, and when ``add`` must wait.

An insert policy returns the slot to write (overwriting a live sample there is an eviction) or
``None`` to discard the sample, and says whether a sample can be placed now at all: when it
cannot, :meth:`gensim.buffers.ReplayBuffer.add` waits for draws to free space, which is the
back-pressure that reaches the simulations through the full ZeroMQ queue. Each policy names the
draw rule it is designed for (:meth:`InsertPolicy.default_draw_rule`). The stratified
:class:`~gensim.buffers.DistributionAware` policy lives in :mod:`gensim.buffers.distribution`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from gensim.buffers.draw import ConsumeOldest, DrawRule, UniformDraw
from gensim.buffers.storage import Storage
from gensim.simulations.base import Sample

#: Below this many bounds, :func:`bounded_integers` calls the generator once per bound: numpy's
#: array-bound path has a fixed cost of about four scalar calls (measured 26 us against 7 us
#: a call on the loaded 2-core machine), and a receiver that keeps up hands the buffer batches of
#: one or two samples.
SCALAR_DRAWS_BELOW = 4


def bounded_integers(rng: np.random.Generator, bounds: Sequence[int]) -> list[int]:
    """One uniform integer in ``[0, b)`` for each bound ``b``, in order.

    ``rng.integers(0, bounds)`` with an array of bounds gives the same integers, and leaves the
    generator in the same state, as one scalar call per bound in order; this picks whichever is
    cheaper for the number of bounds, so the draws do not depend on how arrivals are batched.

    Parameters
    ----------
    rng : numpy.random.Generator
    bounds : sequence of int, length n
        Exclusive upper bounds, each >= 1.

    Returns
    -------
    list of int, length n
    """
    if len(bounds) < SCALAR_DRAWS_BELOW:
        return [int(rng.integers(bound)) for bound in bounds]
    return rng.integers(0, np.asarray(bounds, dtype=np.int64)).tolist()


class InsertPolicy(ABC):
    """Decides the slot of each arriving sample.

    The buffer calls :meth:`bind` once, then, under its lock and for each arrival,
    :meth:`ready` (waiting while it is False) and :meth:`select_slot`.

    Attributes
    ----------
    capacity : int
        Number of slots, set by :meth:`bind`.
    rng : numpy.random.Generator
        Injected by :meth:`bind`; its state is part of :meth:`state_dict`.
    """

    def bind(self, capacity: int, rng: np.random.Generator) -> None:
        """Attach the policy to a buffer of ``capacity`` slots and reset its state.

        Parameters
        ----------
        capacity : int
            Number of slots of the storage.
        rng : numpy.random.Generator
            The policy's own random stream.
        """
        self.capacity = capacity
        self.rng = rng

    def ready(self, storage: Storage) -> bool:
        """Whether a sample can be placed now; False makes ``add`` wait for a draw.

        The default never waits: policies that evict or discard always have an answer.
        """
        return True

    @abstractmethod
    def select_slot(self, sample: Sample, seq: int, storage: Storage) -> int | None:
        """Choose where ``sample`` goes; called only when :meth:`ready` is True.

        Parameters
        ----------
        sample : Sample
            The arriving (validated) sample; stratified policies read its params or sim_id.
        seq : int
            Its arrival number: 0 for the first sample the buffer ever saw.
        storage : Storage
            Read only: occupancy, draw counts and stored data may guide the choice.

        Returns
        -------
        int or None
            Slot to write (``0 <= slot < capacity``), or None to discard the sample.
        """

    def select_slots(self, samples: Sequence[Sample], first_seq: int, storage: Storage) -> list[int | None] | None:
        """Choose the slots of consecutive arrivals at once, or return None to be asked one by one.

        The buffer's batch insert (:meth:`~gensim.buffers.ReplayBuffer.add_many`) offers the
        arrivals here first, under its lock; the default declines, and the buffer calls
        :meth:`ready` and :meth:`select_slot` for each. A policy that answers must give exactly
        what :meth:`select_slot` would give, arrival by arrival (same slots, same random stream,
        same state after), as if each chosen slot were written before the next arrival: a
        batch insert keeps the content of sequential ones. A subclass that overrides
        :meth:`select_slot` must override this too.

        Parameters
        ----------
        samples : sequence of Sample, length n
            The arrivals, in order.
        first_seq : int
            Arrival number of ``samples[0]``; the others follow.
        storage : Storage
            Read only; the buffer writes the chosen slots after this returns.

        Returns
        -------
        list of (int or None), length n, or None
            Slot (or None: discarded) of each arrival; None to decline the whole batch.
        """
        return None

    @abstractmethod
    def default_draw_rule(self) -> DrawRule:
        """A new instance of the draw rule this policy is designed for."""

    def released(self, slots: np.ndarray, storage: Storage) -> None:  # noqa: B027 (optional hook, no-op)
        """Called after a consuming draw freed ``slots``; policies that track their content update it.

        Parameters
        ----------
        slots : ndarray, shape (B,), int64
            Slots that no longer hold a live sample.
        storage : Storage
            Read only.
        """

    def batch_weights(self, slots: np.ndarray, storage: Storage) -> np.ndarray | None:
        """Importance weights of the samples of a batch, or None for an unweighted batch.

        Parameters
        ----------
        slots : ndarray, shape (B,), int64
            The batch's slots, as the draw rule chose them.
        storage : Storage
            Read only.

        Returns
        -------
        ndarray, shape (B,), float32, or None
            When given, the buffer adds them to the batch as ``"weight"``; a model that
            multiplies its per-sample loss by them trains toward the policy's target law.
        """
        return None

    def state_dict(self) -> dict[str, Any]:
        """The policy's state: its generator state (subclasses add their own entries)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.rng.bit_generator.state = state["rng"]


class _Ring(InsertPolicy):
    """Writes slots in ring order: 0, 1, ..., capacity - 1, 0, ...; the cursor is the oldest slot."""

    def bind(self, capacity: int, rng: np.random.Generator) -> None:
        """See :meth:`InsertPolicy.bind`; the write cursor starts at slot 0."""
        super().bind(capacity, rng)
        self.cursor = 0

    def select_slot(self, sample: Sample, seq: int, storage: Storage) -> int:
        """Write at the cursor and advance it; see :meth:`InsertPolicy.select_slot`."""
        slot = self.cursor
        self.cursor = (slot + 1) % self.capacity
        return slot

    def state_dict(self) -> dict[str, Any]:
        """Generator state and write cursor."""
        return {**super().state_dict(), "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        super().load_state_dict(state)
        self.cursor = int(state["cursor"])


class FIFO(_Ring):
    """A queue: each sample is drawn exactly once, in arrival order; ``add`` waits when full.

    A ring that never overwrites: the slot under the cursor holds the oldest sample, and it is
    free only once a draw consumed it.
    """

    def ready(self, storage: Storage) -> bool:
        """True while the slot under the cursor is free, i.e. the queue is not full."""
        return not storage.live[self.cursor]

    def default_draw_rule(self) -> DrawRule:
        """Oldest first, consuming: :class:`~gensim.buffers.draw.ConsumeOldest`."""
        return ConsumeOldest()


class FIRO(_Ring):
    """First in, random out: a ring that overwrites the oldest sample; uniform draws with replacement.

    The buffer holds the last ``capacity`` samples of the stream: a sliding window.
    """

    def select_slots(self, samples: Sequence[Sample], first_seq: int, storage: Storage) -> list[int]:
        """The next ``len(samples)`` slots of the ring; see :meth:`InsertPolicy.select_slots`."""
        slots = [(self.cursor + k) % self.capacity for k in range(len(samples))]
        self.cursor = (self.cursor + len(samples)) % self.capacity
        return slots

    def default_draw_rule(self) -> DrawRule:
        """Uniform with replacement: :class:`~gensim.buffers.draw.UniformDraw`."""
        return UniformDraw()


class Reservoir(InsertPolicy):
    """Vitter's algorithm R: a uniform random subset of everything seen; uniform draws.

    The first ``capacity`` samples fill the slots; after that, the ``n``-th arrival (1-based)
    is kept with probability ``capacity / n``, replacing a uniformly chosen slot. So after ``n``
    arrivals every one of them is in the buffer with probability ``capacity / n``, whatever
    its arrival time: early time steps are not forgotten as in a ring.
    """

    def select_slot(self, sample: Sample, seq: int, storage: Storage) -> int | None:
        """Slot ``seq`` while filling, then a uniform slot with probability capacity / n.

        See :meth:`InsertPolicy.select_slot`.
        """
        if seq < self.capacity:
            return seq
        # One integer in [0, n) decides both whether to keep (index < capacity, probability
        # capacity / n) and, given that, a uniform slot to replace.
        index = int(self.rng.integers(seq + 1))
        return index if index < self.capacity else None

    def select_slots(self, samples: Sequence[Sample], first_seq: int, storage: Storage) -> list[int | None]:
        """:meth:`select_slot` for consecutive arrivals, with one vectorized draw.

        The draws of :func:`bounded_integers`: the same integers, and the same generator
        state after, as one :meth:`select_slot` per arrival.
        """
        n_filling = min(max(self.capacity - first_seq, 0), len(samples))
        slots: list[int | None] = list(range(first_seq, first_seq + n_filling))
        bounds = range(first_seq + n_filling + 1, first_seq + len(samples) + 1)
        if len(bounds):
            slots += [i if i < self.capacity else None for i in bounded_integers(self.rng, bounds)]
        return slots

    def default_draw_rule(self) -> DrawRule:
        """Uniform with replacement: :class:`~gensim.buffers.draw.UniformDraw`."""
        return UniformDraw()


class MelissaReservoir(InsertPolicy):
    """Melissa's reservoir: a sample leaves the buffer only after it was drawn ``min_draws`` times.

    Arrivals fill the free slots. In a full buffer an arrival replaces a uniformly chosen sample
    among those drawn at least ``min_draws`` times; while none is, ``add`` waits for draws,
    which slows the simulations down through the full ZeroMQ queue instead of throwing data
    away unseen. Draws are uniform with replacement. As in Melissa, training starts only once
    the buffer holds a watermark of samples: that is the data module's ``data.watermark``,
    shared by every policy.

    Parameters
    ----------
    min_draws : int, default 1
        Draws a sample needs before it can be evicted, >= 1.
    """

    def __init__(self, min_draws: int = 1) -> None:
        if int(min_draws) != min_draws or min_draws < 1:
            raise ValueError(
                f"min_draws must be an integer >= 1, got {min_draws!r}; use the FIRO or "
                "Reservoir policy to evict samples that were never drawn"
            )
        self.min_draws = int(min_draws)

    def ready(self, storage: Storage) -> bool:
        """True while a slot is free or some stored sample was drawn ``min_draws`` times."""
        # A full storage has every slot live, so the draw counts of all slots are current.
        return storage.size < storage.capacity or bool((storage.draws >= self.min_draws).any())

    def select_slot(self, sample: Sample, seq: int, storage: Storage) -> int:
        """A free slot, else a uniform choice among the evictable slots; see :meth:`InsertPolicy.select_slot`."""
        free = storage.free_slot()
        if free is not None:
            return free
        evictable = np.flatnonzero(storage.draws >= self.min_draws)
        return int(evictable[self.rng.integers(len(evictable))])

    def default_draw_rule(self) -> DrawRule:
        """Uniform with replacement: :class:`~gensim.buffers.draw.UniformDraw`."""
        return UniformDraw()
