"""A routing rule for tests: the first training simulations all go to rank 0, then round-robin.

Rank 1 therefore gets no simulation for a while, as when its simulations are slow or paused.
"""

from __future__ import annotations

from gensim.transport.routing import RoutingRule


class FirstToRankZero(RoutingRule):
    """Route the first ``first`` training simulations to rank 0, the rest round-robin."""

    def __init__(self, first: int, ranks: list[int] | None = None) -> None:
        super().__init__(ranks)
        self.first = int(first)
        self._seen = 0

    def choose(self, purpose: str, world_size: int) -> int:
        if purpose == "train" and self._seen < self.first:
            self._seen += 1
            return 0
        return super().choose(purpose, world_size)
