"""Simulations that fail on purpose, for launcher tests (workers import this via PYTHONPATH)."""

import os
import signal
import time
from pathlib import Path

import numpy as np

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


class HangsOnce(DecayingWave):
    """Sleeps forever at step 1 of its first attempt per seed (attempts counted in ``state_dir``)."""

    def __init__(self, state_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.state_dir = state_dir

    def run(self, params, seed=None):
        first = attempt_number(self.state_dir, seed) == 0
        for i, item in enumerate(super().run(params, seed)):
            if first and i == 1:
                while True:  # a hang: nothing is sent, nothing is reported
                    time.sleep(60)
            yield item


class KilledBySignal(DecayingWave):
    """SIGKILLs its own process at step 1 when a > 1.5 (a crash by signal, e.g. the OOM killer)."""

    def run(self, params, seed=None):
        for i, item in enumerate(super().run(params, seed)):
            if i == 1 and params[0] > 1.5:
                os.kill(os.getpid(), signal.SIGKILL)
            yield item


class InjectedFaults(DecayingWave):
    """Fault injection for the acceptance test: random SIGKILLs and one hang, all seeded.

    Every attempt of a simulation (counted per seed in ``state_dir``) is killed with SIGKILL
    with probability ``p_kill``, before a random step (0 .. n_steps - 1, so 0 to n_steps - 1
    steps were sent). The simulation of seed ``hang_seed`` hangs at step 2 of its first attempt.
    Each decision is written to ``state_dir/<seed>.<attempt>`` first (``kill <step>``,
    ``hang``, ``ok``), so that the test knows which attempts it faulted.
    """

    def __init__(
        self, state_dir: str, p_kill: float = 0.2, fault_seed: int = 0, hang_seed: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        self.state_dir, self.p_kill, self.fault_seed, self.hang_seed = state_dir, p_kill, fault_seed, hang_seed

    def run(self, params, seed=None):
        attempt = attempt_number(self.state_dir, seed)
        rng = np.random.default_rng([self.fault_seed, int(seed), attempt])
        kill_at = int(rng.integers(0, self.n_steps)) if rng.random() < self.p_kill else None
        hang = seed == self.hang_seed and attempt == 0
        decision = "hang" if hang else (f"kill {kill_at}" if kill_at is not None else "ok")
        (Path(self.state_dir) / f"{seed}.{attempt}").write_text(decision)
        for i, item in enumerate(super().run(params, seed)):
            if hang and i == 2:
                while True:
                    time.sleep(60)
            if i == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            yield item


def attempt_number(state_dir: str, seed: int) -> int:
    """0 for the first call with this seed, then 1, 2, ... (marker files, atomic across processes)."""
    k = 0
    while True:
        try:
            os.close(os.open(Path(state_dir) / f"{seed}.{k}.n", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return k
        except FileExistsError:
            k += 1


class EchoesItsEnvironment(DecayingWave):
    """Checks the documented environment of a simulation process (GENSIM_ADDRESS, GENSIM_TOKEN,
    GENSIM_SIM_ID: ``Client.from_env`` connects with it) and sends its id's last 6 digits as
    ``u[0]`` (exact in float32), so that a test can match each stream to the id it was given."""

    def run(self, params, seed=None):
        from gensim.client import Client

        with Client.from_env(fields=self.fields) as client:  # the variables are all there
            sim_id = client.sim_id
        client_ok = client.address == os.environ["GENSIM_ADDRESS"]
        for step, t, fields in super().run(params, seed):
            u = fields["u"].copy()
            u[0] = sim_id % 1_000_000 if client_ok else -1.0
            yield step, t, {"u": u}
