"""Draw rules: which stored samples make up the next training batch.

A draw rule picks slot indices among the live slots of a :class:`~gensim.buffers.storage.Storage`;
it never writes. A *consuming* rule removes what it draws (a queue); the buffer then frees those
slots so the insert policy can reuse them. (torchrl calls this part a "sampler"; gensim keeps that
word for the parameter samplers of :mod:`sampling`.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from gensim.buffers.storage import Storage


class DrawRule(ABC):
    """Chooses the slots of each batch.

    The buffer calls :meth:`bind` once, then :meth:`select` under its lock, only when the
    storage holds at least one live sample (and at least ``n`` for a consuming rule).

    Attributes
    ----------
    consumes : bool
        True when drawn samples leave the buffer (each is drawn once); the buffer then waits
        for ``n`` live samples before a draw and frees the drawn slots afterwards.
    rng : numpy.random.Generator
        Injected by :meth:`bind`; its state is part of :meth:`state_dict`.
    """

    consumes: ClassVar[bool] = False

    def bind(self, capacity: int, rng: np.random.Generator) -> None:
        """Attach the rule to a buffer of ``capacity`` slots and reset its state.

        Parameters
        ----------
        capacity : int
            Number of slots of the storage.
        rng : numpy.random.Generator
            The rule's own random stream.
        """
        self.capacity = capacity
        self.rng = rng

    @abstractmethod
    def select(self, n: int, storage: Storage) -> np.ndarray:
        """Pick the slots of one batch.

        Parameters
        ----------
        n : int
            Batch size, >= 1 (``<= storage.size`` for a consuming rule).
        storage : Storage
            Read only: ``live``, ``size``, ``seq``, ``draws`` and the data may guide the choice.

        Returns
        -------
        ndarray, shape (n,), int64
            Live slots, in batch order.
        """

    def state_dict(self) -> dict[str, Any]:
        """The rule's state: its generator state (subclasses add their own entries)."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.rng.bit_generator.state = state["rng"]


class UniformDraw(DrawRule):
    """Uniform draws with replacement over the live samples (FIRO, reservoir)."""

    def select(self, n: int, storage: Storage) -> np.ndarray:
        """Pick ``n`` live slots uniformly, independently, with replacement; see :meth:`DrawRule.select`."""
        live = storage.live_slots()
        return live[self.rng.integers(len(live), size=n)]


class ConsumeOldest(DrawRule):
    """Draws the ``n`` oldest live samples, in arrival order, and consumes them (FIFO queue)."""

    consumes = True

    def select(self, n: int, storage: Storage) -> np.ndarray:
        """Pick the ``n`` live slots with the smallest arrival numbers; see :meth:`DrawRule.select`."""
        live = storage.live_slots()
        seq = storage.seq[live]
        if n < len(live):
            # A partial selection is O(capacity); only the n chosen are then sorted.
            keep = np.argpartition(seq, n - 1)[:n]
            live, seq = live[keep], seq[keep]
        return live[np.argsort(seq)]
