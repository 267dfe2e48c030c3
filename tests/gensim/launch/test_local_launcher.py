"""LocalLauncher with real worker processes and a real receiver, on the tiny analytic simulation."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from gensim.launch import LocalLauncher
from gensim.simulations import DecayingWave
from gensim.transport.receiver import Receiver
from sampling import Sobol

HERE = Path(__file__).parent
N_STEPS = 4


class Collect:
    """A thread-safe sink."""

    def __init__(self) -> None:
        self.samples = []
        self._lock = threading.Lock()

    def __call__(self, sample) -> None:
        with self._lock:
            self.samples.append(sample)


@pytest.fixture
def receiver():
    sim = DecayingWave(size=8, n_steps=N_STEPS)
    rec = Receiver(sim.fields, token=os.urandom(16)).start()
    yield rec
    rec.stop()


@pytest.fixture
def make_launcher(tmp_path, monkeypatch):
    """Build launchers whose workers can import tests/gensim/launch/faulty.py; stop them all."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    made: list[LocalLauncher] = []

    def make(target: str = "gensim.simulations.DecayingWave", **kwargs) -> LocalLauncher:
        cfg = {"_target_": target, "size": 8, "n_steps": N_STEPS}
        launcher = LocalLauncher(cfg, log_dir=str(tmp_path / "workers"), **kwargs)
        made.append(launcher)
        return launcher

    yield make
    for launcher in made:
        launcher.shutdown()


def wait_until(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def worker_pids(launcher: LocalLauncher) -> list[int]:
    return [w.proc.pid for w in launcher._workers if w is not None]


def test_runs_the_budget_and_records_everything(make_launcher, receiver):
    sink = Collect()
    launcher = make_launcher(n_parallel=2, max_simulations=6)
    sampler = Sobol(DecayingWave().space, seed=1)
    launcher.start(receiver, sampler, sink, seed=5)
    assert wait_until(lambda: launcher.exhausted)
    assert launcher.counts("train") == {"pending": 0, "running": 0, "done": 6, "failed": 0, "cancelled": 0}
    assert wait_until(lambda: len(sink.samples) == 6 * N_STEPS, timeout=10)
    # Parameters come from the sampler, in order, and seeds are distinct and reproducible.
    expected = Sobol(DecayingWave().space, seed=1).sample(6)
    records = sorted(launcher.ledger.records.values(), key=lambda r: r.sim_id)
    np.testing.assert_allclose([r.params for r in records], expected)
    assert len({r.seed for r in records}) == 6
    assert all(r.steps == N_STEPS and r.worker in (0, 1) for r in records)
    # Each simulation's samples carry its own parameters.
    by_id = {r.sim_id: r.params for r in records}
    for s in sink.samples:
        np.testing.assert_allclose(s.params, by_id[s.sim_id])


def test_submitted_simulations_run_first_and_go_to_their_sink(make_launcher, receiver):
    train, val = Collect(), Collect()
    launcher = make_launcher(n_parallel=1, max_simulations=2)
    launcher.start(receiver, Sobol(DecayingWave().space, seed=1), train)
    ids = launcher.submit(np.array([[1.2, 0.5], [1.8, 0.2]]), val.__call__, purpose="validation")
    assert wait_until(lambda: launcher.exhausted and receiver.wait_finished(ids, 0.1))
    assert {s.sim_id for s in val.samples} == set(ids)
    assert len(val.samples) == 2 * N_STEPS and len(train.samples) == 2 * N_STEPS
    assert launcher.counts("validation")["done"] == 2


def test_a_failing_simulation_is_recorded_and_the_study_goes_on(make_launcher, receiver):
    launcher = make_launcher("faulty.RaisesOnLargeAmplitude", n_parallel=2, max_simulations=8)
    launcher.start(receiver, Sobol(DecayingWave().space, seed=3), Collect())
    assert wait_until(lambda: launcher.exhausted)
    records = list(launcher.ledger.records.values())
    failed = [r for r in records if r.state == "failed"]
    assert failed and all(r.params[0] > 1.5 for r in failed)
    assert all("diverged" in r.error for r in failed)
    assert all(r.state == "done" for r in records if r.params[0] <= 1.5)


def test_a_dying_worker_is_replaced_and_its_simulation_failed(make_launcher, receiver):
    launcher = make_launcher("faulty.CrashesOnLargeAmplitude", n_parallel=2, max_simulations=8)
    launcher.start(receiver, Sobol(DecayingWave().space, seed=3), Collect())
    assert wait_until(lambda: launcher.exhausted)
    records = list(launcher.ledger.records.values())
    crashed = [r for r in records if r.state == "failed"]
    assert crashed and all(r.exit_code == 3 for r in crashed)
    assert all(r.state == "done" for r in records if r.params[0] <= 1.5)
    assert launcher.error is None


def test_a_broken_simulation_config_stops_the_launcher_with_a_clear_error(make_launcher, receiver):
    launcher = make_launcher("gensim.simulations.NoSuchSolver", n_parallel=1, max_simulations=4,
                             max_worker_restarts=2)
    launcher.start(receiver, Sobol(DecayingWave().space, seed=0), Collect())
    assert wait_until(lambda: launcher.error is not None)
    assert "died 3 times" in launcher.error and "worker" in launcher.error
    assert launcher.exhausted
    assert "NoSuchSolver" in (launcher.log_dir / "worker-0.log").read_text()


def test_out_of_bounds_parameters_are_recorded_not_run(make_launcher, receiver):
    launcher = make_launcher(n_parallel=1, max_simulations=1)
    launcher.start(receiver, Sobol(DecayingWave().space, seed=0), Collect())
    [bad] = launcher.submit(np.array([[5.0, 0.5]]), Collect(), purpose="validation")
    assert wait_until(lambda: launcher.exhausted)
    record = launcher.ledger.records[bad]
    assert record.state == "failed" and "'a'" in record.error and "[1.0, 2.0]" in record.error


def test_shutdown_ends_every_worker_and_cancels_unfinished(make_launcher, receiver):
    launcher = make_launcher(n_parallel=2, max_simulations=10_000)
    launcher.start(receiver, Sobol(DecayingWave().space, seed=0), Collect())
    assert wait_until(lambda: launcher.counts("train")["done"] >= 2)
    pids = worker_pids(launcher)
    procs = [psutil.Process(p) for p in pids]
    launcher.shutdown()
    gone, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive
    counts = launcher.counts("train")
    assert counts["running"] == 0 and counts["pending"] == 0
    launcher.shutdown()  # idempotent


def test_state_round_trip(make_launcher, receiver):
    launcher = make_launcher(n_parallel=1, max_simulations=2)
    launcher.start(receiver, Sobol(DecayingWave().space, seed=0), Collect())
    assert wait_until(lambda: launcher.exhausted)
    restored = make_launcher(n_parallel=1, max_simulations=2)
    restored.load_state_dict(launcher.state_dict())
    assert restored.ledger.state_dict() == launcher.ledger.state_dict()
    assert restored.counts("train")["done"] == 2


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="n_parallel must be >= 1, got 0"):
        LocalLauncher({"_target_": "x"}, n_parallel=0)


def test_a_failing_sampler_stops_the_launcher_with_a_clear_error(make_launcher, receiver):
    class BrokenSampler(Sobol):
        def sample(self, n):
            raise RuntimeError("acquisition failed")

    launcher = make_launcher(n_parallel=1, max_simulations=4)
    launcher.start(receiver, BrokenSampler(DecayingWave().space, seed=0), Collect())
    assert wait_until(lambda: launcher.error is not None, timeout=30)
    assert "RuntimeError: acquisition failed" in launcher.error
    assert launcher.exhausted
