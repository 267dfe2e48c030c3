"""Wall-clock time beside every validation, for error-against-time curves."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import Callback


class WallClock(Callback):
    """Log ``elapsed_s``, the seconds since ``start``, at the end of every validation.

    With it a training log (``metrics.csv``) gives the held-out error against wall time, not only
    against optimizer steps: what the comparison of on-line training (simulations stream while
    it trains) and an off-line pipeline (simulate everything, then train) is about.

    Parameters
    ----------
    start : float, optional
        A ``time.perf_counter()`` reading in this process: the study's start (so the time of the
        simulations before training counts). When None, the start of ``fit``.
    """

    def __init__(self, start: float | None = None) -> None:
        self.start = start

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start is None:
            self.start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            # Every rank logs its own clock; rank 0's is the one the logger writes.
            pl_module.log("elapsed_s", time.perf_counter() - self.start, rank_zero_only=True)
