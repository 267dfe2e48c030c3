"""Simulations that fail on purpose, for launcher tests (workers import this via PYTHONPATH)."""

import os
import time

from gensim.simulations import DecayingWave


class RaisesOnLargeAmplitude(DecayingWave):
    """Raises a Python error when a > 1.5: the worker survives and reports the failure."""

    def run(self, params, seed=None):
        if params[0] > 1.5:
            raise RuntimeError("solver diverged (on purpose)")
        yield from super().run(params, seed)


class CrashesOnLargeAmplitude(DecayingWave):
    """Kills its own process when a > 1.5, after one step: the worker dies mid-simulation."""

    def run(self, params, seed=None):
        for i, item in enumerate(super().run(params, seed)):
            if i == 1 and params[0] > 1.5:
                os._exit(3)
            yield item


class Slow(DecayingWave):
    """Sleeps ``delay_s`` per step, so that a test can look at its worker while it runs.

    ``tag`` does nothing but appear in the worker's command line (the simulation config), so
    that a test finds its own workers among those of other tests running on the machine.
    """

    def __init__(self, delay_s: float = 0.5, tag: str = "", **kwargs):
        super().__init__(**kwargs)
        self.delay_s, self.tag = delay_s, tag

    def run(self, params, seed=None):
        for item in super().run(params, seed):
            time.sleep(self.delay_s)
            yield item
