"""Which (simulation, step) pairs a rank's training sink has taken, over a whole study.

A study that resumes from a checkpoint runs its interrupted simulations again from their first
step; their steps taken before the checkpoint are in the restored replay buffer already (or
were consumed or evicted from it). :class:`DeliveredSteps` remembers every pair taken, is saved
with the checkpoint, and drops a pair that arrives again, so no (simulation, step) enters the
buffer or the stream mean twice, whatever restarts and retries happen.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from gensim.simulations.base import Sample


class DeliveredSteps:
    """The set of (simulation, step) pairs taken, one bit per step (thread-safe).

    A simulation's steps are held as the bits of one Python int, so memory is about
    ``n_simulations * n_steps / 8`` bytes (12.5 MB for 100,000 simulations of 1,000 steps).
    A sample with a negative step is passed through unrecorded: the receiver rejects such
    steps before any sink sees them, and a bit cannot represent them.
    """

    def __init__(self) -> None:
        self._masks: dict[int, int] = {}
        self._lock = threading.Lock()
        #: Samples dropped by :meth:`claim` because their pair had been taken before.
        self.n_duplicates = 0

    def claim(self, samples: Sequence[Sample]) -> list[Sample]:
        """Record the samples' pairs; return those not taken before, in order.

        Parameters
        ----------
        samples : sequence of Sample

        Returns
        -------
        list of Sample
            The new ones; a caller that then fails to store them must :meth:`release` them.
        """
        fresh = []
        with self._lock:
            for sample in samples:
                if sample.step < 0:
                    fresh.append(sample)
                    continue
                bit = 1 << int(sample.step)
                mask = self._masks.get(sample.sim_id, 0)
                if mask & bit:
                    self.n_duplicates += 1
                    continue
                self._masks[sample.sim_id] = mask | bit
                fresh.append(sample)
        return fresh

    def release(self, samples: Iterable[Sample]) -> None:
        """Forget pairs returned by :meth:`claim` that were not stored after all."""
        with self._lock:
            for sample in samples:
                if sample.step >= 0 and sample.sim_id in self._masks:
                    self._masks[sample.sim_id] &= ~(1 << int(sample.step))

    def count(self, sim_id: int) -> int:
        """Number of steps of simulation ``sim_id`` taken."""
        with self._lock:
            return bin(self._masks.get(sim_id, 0)).count("1")

    def state_dict(self) -> dict:
        """``{"masks": {sim_id: int bit mask}, "n_duplicates": int}`` (picklable)."""
        with self._lock:
            return {"masks": dict(self._masks), "n_duplicates": self.n_duplicates}

    def load_state_dict(self, state: dict) -> None:
        """Replace the recorded pairs by a :meth:`state_dict`'s."""
        with self._lock:
            self._masks = {int(k): int(v) for k, v in state["masks"].items()}
            self.n_duplicates = int(state.get("n_duplicates", 0))

    def merge(self, state: dict) -> None:
        """Add the pairs of another rank's :meth:`state_dict` (a simulation interrupted on one
        rank may be routed to another when it runs again)."""
        with self._lock:
            for sim_id, mask in state["masks"].items():
                self._masks[int(sim_id)] = self._masks.get(int(sim_id), 0) | int(mask)
