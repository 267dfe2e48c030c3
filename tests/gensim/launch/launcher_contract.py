"""The launcher contract: what a Launcher must do whatever its executor.

:class:`LauncherContract` is subclassed once per executor (``test_local_executor.py``,
``test_slurm_executor.py``), as scipy.stats.qmc's engine tests are: a subclass says how to build
its executor and how to check that nothing it started is left; the tests are shared.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest

from gensim.launch import Executor, Launcher, SimulationRecord
from gensim.simulations import DecayingWave
from gensim.transport.receiver import Receiver
from sampling import Sobol

HERE = Path(__file__).parent
N_STEPS = 4
#: The stand-alone Python solver of the tutorial (docs/your-own-solver.md).
EXAMPLE_SOLVER = HERE.parents[2] / "examples" / "python" / "decay_solver.py"


def external_config(command: list[str]) -> dict:
    """``simulation=external`` for the contract's receiver: DecayingWave's space and fields."""
    return {
        "_target_": "gensim.simulations.ExternalSimulation",
        "command": command,
        "parameters": {"a": [1.0, 2.0], "k": [0.1, 1.0]},
        "n_steps": N_STEPS,
        "fields": [{"name": "u", "shape": [8], "dtype": "float32"}],
    }


class Collect:
    """A thread-safe sink."""

    def __init__(self) -> None:
        self.samples = []
        self._lock = threading.Lock()

    def __call__(self, sample) -> None:
        with self._lock:
            self.samples.append(sample)

    def per_sim(self) -> dict[int, int]:
        """Samples received per simulation, duplicates included."""
        with self._lock:
            out: dict[int, int] = {}
            for s in self.samples:
                out[s.sim_id] = out.get(s.sim_id, 0) + 1
            return out

    def unique_per_sim(self) -> dict[int, int]:
        """Distinct steps received per simulation."""
        with self._lock:
            out: dict[int, int] = {}
            for sim_id, _ in {(s.sim_id, s.step) for s in self.samples}:
                out[sim_id] = out.get(sim_id, 0) + 1
            return out


class OneRankRouter:
    """The smallest router: one real receiver (rank 0), the sink chosen by the record's purpose."""

    def __init__(self, receiver: Receiver, sinks: dict[str, Collect]) -> None:
        self.receiver, self.sinks = receiver, sinks

    def assign(self, record: SimulationRecord) -> str:
        self.receiver.register(record.sim_id, np.asarray(record.params), self.sinks[record.purpose])
        record.rank = 0
        return self.receiver.address


def wait_until(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def command_lines() -> list[tuple[int, str]]:
    """(pid, command line) of every process on the machine that we may read."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info.get("cmdline")
        if cmd:
            out.append((p.info["pid"], " ".join(cmd)))
    return out


class Study:
    """What a test needs: a started receiver, its router and sinks, the token, a launcher factory."""

    def __init__(self, receiver: Receiver, token: bytes, make) -> None:
        self.receiver, self.token, self.make = receiver, token, make
        self.sinks = {"train": Collect(), "validation": Collect()}
        self.router = OneRankRouter(receiver, self.sinks)


@contextlib.contextmanager
def running_study(make_executor, tmp_path: Path, monkeypatch):
    """A :class:`Study` whose launchers and receiver are stopped on exit, also when a test fails."""
    # Workers (local processes, SLURM jobs inheriting our environment) import faulty.py.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    token = os.urandom(32)
    receiver = Receiver(DecayingWave(size=8, n_steps=N_STEPS).fields, token=token).start()
    made: list[Launcher] = []

    def make(
        target: str = "gensim.simulations.DecayingWave",
        extra: dict | None = None,
        executor: Executor | None = None,
        config: dict | None = None,
        **kwargs,
    ) -> Launcher:
        cfg = config or {"_target_": target, "size": 8, "n_steps": N_STEPS, **(extra or {})}
        launcher = Launcher(
            cfg, executor or make_executor(tmp_path), log_dir=str(tmp_path / "workers"), **{"n_parallel": 2} | kwargs
        )
        made.append(launcher)
        return launcher

    try:
        yield Study(receiver, token, make)
    finally:
        for launcher in made:
            launcher.shutdown()
        receiver.stop()


class LauncherContract:
    """Shared tests; subclasses implement :meth:`make_executor` and :meth:`assert_nothing_left`."""

    #: Seconds a subclass's simulations may take to run a small study (SLURM is slower to start).
    timeout_s = 60.0
    #: ``n_parallel`` of the tests where concurrency is not the point: 1 where starting a
    #: worker costs more than running the study serially (local), more where jobs wait on
    #: start-up latency (SLURM). Concurrency itself is tested with 2 everywhere.
    parallel = 1

    def make_executor(self, tmp_path: Path) -> Executor:
        raise NotImplementedError

    def assert_nothing_left(self, launcher: Launcher, started: list) -> None:
        """Fail if a process or job ``launcher``'s executor started still runs after shutdown.

        ``started`` is what :meth:`running_handles` returned while it ran."""
        raise NotImplementedError

    def running_handles(self, launcher: Launcher) -> list:
        """Process ids or job ids of what runs now (for :meth:`assert_nothing_left`)."""
        raise NotImplementedError

    @staticmethod
    def worker_command_lines(tag: str) -> list[tuple[int, str]]:
        """(pid, command line) of the worker processes running a simulation tagged ``tag``."""
        return [(pid, cmd) for pid, cmd in command_lines() if "gensim.launch.worker" in cmd and tag in cmd]

    # -- fixtures ---------------------------------------------------------------------------
    @pytest.fixture
    def study(self, tmp_path, monkeypatch):
        with running_study(self.make_executor, tmp_path, monkeypatch) as s:
            yield s

    # -- the contract -----------------------------------------------------------------------
    def test_every_simulation_runs_once_and_the_ledger_matches(self, study):
        launcher = study.make(n_parallel=2, max_simulations=6)
        launcher.start(study.router, Sobol(DecayingWave().space, seed=1), study.token, seed=5)
        assert wait_until(lambda: launcher.exhausted, self.timeout_s), launcher.counts()
        assert launcher.error is None
        assert launcher.counts("train") == {"pending": 0, "running": 0, "done": 6, "failed": 0, "cancelled": 0}
        records = list(launcher.ledger.records.values())  # in creation order
        # Each simulation streamed all its steps exactly once, to the sink of its purpose.
        assert wait_until(lambda: study.sinks["train"].per_sim() == {r.sim_id: N_STEPS for r in records}, 10)
        # Parameters come from the sampler, in order; seeds follow the documented rule, from the
        # order of creation, not from the ids, which are random 62-bit integers.
        np.testing.assert_allclose([r.params for r in records], Sobol(DecayingWave().space, seed=1).sample(6))
        assert [r.index for r in records] == list(range(6))
        assert [r.seed for r in records] == [5 * 1_000_003 + k for k in range(6)]
        ids = [r.sim_id for r in records]
        assert len(set(ids)) == 6 and all(0 <= i < 2**62 for i in ids)
        assert max(ids) > 2**40, f"simulation ids look guessable: {ids}"  # P(fail) = 6 * 2**-22
        assert all(r.steps == N_STEPS and r.rank == 0 and r.error is None for r in records)
        assert all(len(r.attempts) == 1 and r.attempts[0].state == "done" for r in records)
        by_id = {r.sim_id: r.params for r in records}
        for s in study.sinks["train"].samples:
            np.testing.assert_allclose(s.params, by_id[s.sim_id])
        self.check_record_origin(records)

    def test_simulation_code_gets_the_documented_environment(self, study):
        launcher = study.make("faulty.EchoesItsEnvironment", n_parallel=self.parallel, max_simulations=3)
        launcher.start(study.router, Sobol(DecayingWave().space, seed=1), study.token)
        assert wait_until(lambda: launcher.exhausted, self.timeout_s), launcher.counts()
        assert launcher.counts("train")["done"] == 3, [r.error for r in launcher.ledger.records.values()]
        ids = set(launcher.ledger.records)
        assert wait_until(lambda: set(study.sinks["train"].per_sim()) == ids, 10)
        # Each stream carries the GENSIM_SIM_ID its process was given: its own id.
        assert all(s.fields["u"][0] == s.sim_id % 1_000_000 for s in study.sinks["train"].samples)

    def test_an_external_command_streams_by_itself(self, study):
        command = ["{python}", str(EXAMPLE_SOLVER), "--size", "8", "--n-steps", str(N_STEPS)]
        launcher = study.make(config=external_config(command), n_parallel=self.parallel, max_simulations=2)
        launcher.start(study.router, Sobol(DecayingWave().space, seed=1), study.token)
        assert wait_until(lambda: launcher.exhausted, self.timeout_s), launcher.counts()
        assert launcher.counts("train")["done"] == 2, [r.error for r in launcher.ledger.records.values()]
        records = launcher.ledger.records
        assert wait_until(lambda: study.sinks["train"].per_sim() == {i: N_STEPS for i in records}, 10)
        exact = DecayingWave(size=8, n_steps=N_STEPS)
        for s in study.sinks["train"].samples:  # float32 rounding of values <= 2: 2.4e-7
            np.testing.assert_allclose(s.fields["u"], exact.exact(records[s.sim_id].params, s.t), atol=2.4e-7)

    def test_an_external_command_that_fails_is_recorded_with_its_exit_code(self, study):
        command = ["{python}", "-c", "import sys; print('the mesh is inverted'); sys.exit(5)"]
        launcher = study.make(
            config=external_config(command), n_parallel=1, max_simulations=1, max_retries=0, on_failure="drop"
        )
        launcher.start(study.router, Sobol(DecayingWave().space, seed=1), study.token)
        assert wait_until(lambda: launcher.exhausted, self.timeout_s), launcher.counts()
        [record] = launcher.ledger.records.values()
        assert record.state == "failed" and record.exit_code == 5 and record.attempts[0].exit_code == 5
        assert "exited with code 5" in record.error and "the mesh is inverted" in record.error
        self.check_output_logged(launcher, "the mesh is inverted")

    def check_output_logged(self, launcher: Launcher, text: str) -> None:
        """Subclasses check that a simulation's output reached their worker log."""

    def check_record_origin(self, records: list[SimulationRecord]) -> None:
        """Subclasses check what their executor records of where each simulation ran."""

    def test_submitted_simulations_run_first_and_go_to_their_sink(self, study):
        launcher = study.make(n_parallel=self.parallel, max_simulations=2)
        ids = launcher.submit(np.array([[1.2, 0.5], [1.8, 0.2]]), purpose="validation")
        launcher.start(study.router, Sobol(DecayingWave().space, seed=1), study.token)
        assert wait_until(
            lambda: (
                launcher.exhausted
                and launcher.counts("validation")["done"] == 2
                and study.receiver.wait_finished(ids, 0.1)
            ),
            self.timeout_s,
        )
        assert study.sinks["validation"].per_sim() == {i: N_STEPS for i in ids}
        assert len(study.sinks["train"].samples) == 2 * N_STEPS
        records = launcher.ledger.records
        assert [records[i].index for i in ids] == [0, 1]
        assert min(r.index for r in records.values() if r.purpose == "train") == 2

    def test_the_budget_is_set_through_a_method(self, study):
        launcher = study.make(n_parallel=self.parallel, max_simulations=5)
        launcher.set_budget(0)
        assert launcher.budget == 0
        launcher.start(study.router, Sobol(DecayingWave().space, seed=2), study.token)
        ids = launcher.submit(np.array([[1.2, 0.5], [1.4, 0.3]]))
        assert wait_until(lambda: launcher.counts("validation")["done"] == 2, self.timeout_s)
        assert launcher.exhausted and launcher.counts("train")["done"] == 0
        launcher.set_budget(3)
        assert launcher.budget == 3 and not launcher.exhausted
        assert wait_until(lambda: launcher.exhausted, self.timeout_s)
        assert launcher.counts("train") == {"pending": 0, "running": 0, "done": 3, "failed": 0, "cancelled": 0}
        assert set(study.sinks["validation"].per_sim()) == set(ids)
        with pytest.raises(ValueError, match="budget must be >= 0, got -1"):
            launcher.set_budget(-1)

    def test_a_simulation_that_raises_is_retried_recorded_and_the_study_goes_on(self, study):
        launcher = study.make(
            "faulty.RaisesOnLargeAmplitude",
            n_parallel=self.parallel,
            max_simulations=8,
            max_retries=1,
            on_failure="drop",
        )
        launcher.start(study.router, Sobol(DecayingWave().space, seed=3), study.token)
        assert wait_until(lambda: launcher.exhausted, self.timeout_s)
        records = list(launcher.ledger.records.values())
        failed = [r for r in records if r.state == "failed"]
        assert failed and all(r.params[0] > 1.5 and "diverged" in r.error for r in failed)
        # Each failure was retried once, with the same id and seed, and both attempts recorded.
        assert all(len(r.attempts) == 2 and all("diverged" in a.error for a in r.attempts) for r in failed)
        assert all(r.replaced_by is None for r in failed)  # "drop": not redrawn
        assert all(r.state == "done" and len(r.attempts) == 1 for r in records if r.params[0] <= 1.5)
        assert len(records) == 8 and launcher.error is None

    def test_a_training_simulation_that_keeps_failing_is_redrawn(self, study):
        launcher = study.make(
            "faulty.RaisesOnLargeAmplitude",
            n_parallel=self.parallel,
            max_simulations=6,
            max_retries=1,
            on_failure="redraw",
            max_consecutive_failures=50,
        )
        launcher.start(study.router, Sobol(DecayingWave().space, seed=3), study.token)
        assert wait_until(lambda: launcher.exhausted, self.timeout_s)
        records = launcher.ledger.records
        failed = [r for r in records.values() if r.state == "failed"]
        assert failed and launcher.error is None
        # Every failure was replaced by a new draw, and the budget counts the replacements only.
        assert all(r.replaced_by in records and records[r.replaced_by].index > r.index for r in failed)
        assert launcher.counts("train")["done"] == 6
        assert len(records) == 6 + len(failed)

    def test_a_simulation_that_kills_its_worker_is_retried_and_recorded(self, study):
        launcher = study.make(
            "faulty.CrashesOnLargeAmplitude",
            n_parallel=self.parallel,
            max_simulations=8,
            max_retries=1,
            on_failure="drop",
        )
        launcher.start(study.router, Sobol(DecayingWave().space, seed=3), study.token)
        assert wait_until(lambda: launcher.exhausted, self.timeout_s)
        records = list(launcher.ledger.records.values())
        crashed = [r for r in records if r.state == "failed"]
        assert crashed and all(r.exit_code == 3 and r.params[0] > 1.5 for r in crashed)
        assert all(
            [a.exit_code for a in r.attempts] == [3, 3] and a.signal is None for r in crashed for a in r.attempts
        )
        assert all(r.state == "done" for r in records if r.params[0] <= 1.5)
        assert launcher.error is None

    def test_a_crash_by_signal_is_recorded_with_the_signal_name(self, study):
        launcher = study.make(
            "faulty.KilledBySignal", n_parallel=self.parallel, max_simulations=8, max_retries=0, on_failure="drop"
        )
        launcher.start(study.router, Sobol(DecayingWave().space, seed=3), study.token)
        assert wait_until(lambda: launcher.exhausted, self.timeout_s)
        records = list(launcher.ledger.records.values())
        crashed = [r for r in records if r.state == "failed"]
        assert crashed and all(r.params[0] > 1.5 for r in crashed)
        for r in crashed:
            [a] = r.attempts
            assert a.signal == "SIGKILL" and a.exit_code is None and not a.timed_out
            assert "SIGKILL" in a.error
        assert launcher.error is None

    def test_a_hung_simulation_is_killed_and_retried(self, study, tmp_path):
        state = tmp_path / "attempts"
        state.mkdir()
        launcher = study.make(
            "faulty.HangsOnce",
            extra={"state_dir": str(state)},
            n_parallel=self.parallel,
            max_simulations=2,
            simulation_timeout_s=3.0,
        )
        launcher.start(study.router, Sobol(DecayingWave().space, seed=0), study.token)
        assert wait_until(lambda: launcher.exhausted, self.timeout_s + 20)
        assert launcher.error is None and launcher.counts("train")["done"] == 2
        for r in launcher.ledger.records.values():
            hung, retry = r.attempts
            assert hung.state == "failed" and hung.timed_out and hung.signal == "SIGKILL"
            assert "simulation_timeout_s" in hung.error
            assert retry.state == "done" and retry.steps == N_STEPS
        # Every step arrived (duplicates of resent steps are the receiver's to drop: see
        # test_faults.py, which counts them).
        assert wait_until(
            lambda: study.sinks["train"].unique_per_sim() == dict.fromkeys(launcher.ledger.records, N_STEPS), 10
        )

    def test_a_broken_simulation_config_stops_the_launcher_with_a_clear_error(self, study):
        launcher = study.make(
            "gensim.simulations.NoSuchSolver", n_parallel=1, max_simulations=4, max_consecutive_failures=1
        )
        launcher.start(study.router, Sobol(DecayingWave().space, seed=0), study.token)
        assert wait_until(lambda: launcher.error is not None, self.timeout_s)
        assert "failed 2 times in a row" in launcher.error and "read" in launcher.error
        assert launcher.exhausted
        self.check_broken_config_logs(launcher)

    def check_broken_config_logs(self, launcher: Launcher) -> None:
        """Subclasses check that the cause (``NoSuchSolver``) is in their executor's logs."""

    def test_out_of_bounds_parameters_are_recorded_not_run(self, study):
        launcher = study.make(n_parallel=1, max_simulations=1)
        launcher.start(study.router, Sobol(DecayingWave().space, seed=0), study.token)
        [bad] = launcher.submit(np.array([[5.0, 0.5]]))
        assert wait_until(lambda: launcher.exhausted and launcher.counts("validation")["failed"] == 1, self.timeout_s)
        record = launcher.ledger.records[bad]
        assert record.state == "failed" and "'a'" in record.error and "[1.0, 2.0]" in record.error
        assert record.rank is None and bad not in study.sinks["validation"].per_sim()

    def test_shutdown_stops_everything_and_cancels_unfinished(self, study):
        launcher = study.make("faulty.Slow", extra={"delay_s": 0.2}, n_parallel=2, max_simulations=10_000)
        launcher.start(study.router, Sobol(DecayingWave().space, seed=0), study.token)
        assert wait_until(
            lambda: launcher.counts("train")["done"] >= 1 and self.running_handles(launcher), self.timeout_s
        )
        started = self.running_handles(launcher)
        launcher.shutdown()
        self.assert_nothing_left(launcher, started)
        counts = launcher.counts("train")
        assert counts["running"] == 0 and counts["pending"] == 0 and counts["cancelled"] >= 1
        launcher.shutdown()  # idempotent

    def test_the_token_is_never_on_a_command_line(self, study):
        tag = uuid.uuid4().hex
        launcher = study.make(
            "faulty.Slow", extra={"delay_s": 0.25, "tag": tag}, n_parallel=self.parallel, max_simulations=2
        )
        launcher.start(study.router, Sobol(DecayingWave().space, seed=0), study.token)
        workers: list = []
        assert wait_until(lambda: workers.extend(self.worker_command_lines(tag)) or workers, self.timeout_s)
        secret = study.token.hex()
        leaks = [(pid, cmd) for pid, cmd in command_lines() if secret in cmd.lower()]
        assert not leaks, f"the study token is on a command line: {leaks}"
        assert all("--token" not in cmd for _, cmd in workers)
        assert wait_until(lambda: launcher.exhausted, self.timeout_s)
        assert launcher.counts("train")["done"] == 2  # the token did reach the workers

    def test_state_round_trip(self, study):
        launcher = study.make(n_parallel=1, max_simulations=2)
        launcher.start(study.router, Sobol(DecayingWave().space, seed=0), study.token)
        assert wait_until(lambda: launcher.exhausted, self.timeout_s)
        restored = study.make(n_parallel=1, max_simulations=2)
        restored.load_state_dict(launcher.state_dict())
        assert restored.ledger.state_dict() == launcher.ledger.state_dict()
        assert restored.counts("train")["done"] == 2

    def test_a_restored_ledger_reruns_interrupted_simulations_only(self, study):
        first = study.make(n_parallel=1, max_simulations=2)
        first.start(study.router, Sobol(DecayingWave().space, seed=0), study.token)
        assert wait_until(lambda: first.exhausted, self.timeout_s)
        state = first.state_dict()
        # As if the trainer had died while the second simulation ran.
        done, interrupted = state["ledger"]["records"]
        interrupted["state"], interrupted["attempts"][-1]["state"] = "running", "running"
        restored = study.make(n_parallel=1, max_simulations=2)
        restored.load_state_dict(state)
        # A resumed study has a new receiver, with which the rerun registers again.
        receiver = Receiver(DecayingWave(size=8, n_steps=N_STEPS).fields, token=study.token).start()
        try:
            restored.start(OneRankRouter(receiver, study.sinks), Sobol(DecayingWave().space, seed=0), study.token)
            assert wait_until(lambda: restored.exhausted, self.timeout_s)
            assert receiver.wait_finished([interrupted["sim_id"]], 10)
        finally:
            restored.shutdown()
            receiver.stop()
        records = restored.ledger.records
        assert len(records) == 2 and restored.counts("train")["done"] == 2
        assert [a.state for a in records[done["sim_id"]].attempts] == ["done"]  # not rerun
        rerun = records[interrupted["sim_id"]]  # same id and seed, one more attempt
        assert [a.state for a in rerun.attempts] == ["cancelled", "done"] and rerun.seed == interrupted["seed"]
