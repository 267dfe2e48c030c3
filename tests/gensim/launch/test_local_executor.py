"""The launcher with the LocalExecutor: real worker processes, a real receiver, the tiny analytic simulation."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
from launcher_contract import LauncherContract, external_config, running_study, wait_until

from gensim.launch import Launcher, LocalExecutor
from gensim.launch.executors import TOKEN_ENV
from gensim.simulations import DecayingWave
from sampling import Sobol


class TestLocalExecutorContract(LauncherContract):
    timeout_s = 60.0

    def make_executor(self, tmp_path: Path) -> LocalExecutor:
        return LocalExecutor(stop_grace_s=2.0)

    def running_handles(self, launcher: Launcher) -> list[int]:
        return launcher.executor.worker_pids()

    def assert_nothing_left(self, launcher: Launcher, started: list[int]) -> None:
        procs = []
        for pid in started:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(procs, timeout=10)
        assert not alive, f"worker processes still alive after shutdown: {alive}"
        assert launcher.executor.worker_pids() == []

    def check_record_origin(self, records) -> None:
        assert all(r.worker in (0, 1) and r.job_id is None for r in records)

    def check_output_logged(self, launcher: Launcher, text: str) -> None:
        assert text in (launcher.log_dir / "worker-0.log").read_text()

    def check_broken_config_logs(self, launcher: Launcher) -> None:
        assert "NoSuchSolver" in (launcher.log_dir / "worker-0.log").read_text()
        crashed = [r for r in launcher.ledger.records.values() if r.state == "failed"]
        assert crashed and all("worker 0 exited with code" in r.error for r in crashed)


# -- what only the local executor does ------------------------------------------------------
@pytest.fixture
def study(tmp_path, monkeypatch):
    with running_study(lambda _: LocalExecutor(), tmp_path, monkeypatch) as s:
        yield s


def test_the_token_reaches_the_worker_through_its_environment(study):
    launcher = study.make(n_parallel=1, max_simulations=0)  # local workers start before any task
    launcher.start(study.router, Sobol(DecayingWave().space, seed=0), study.token)
    assert wait_until(lambda: launcher.executor.worker_pids(), 30)
    [pid] = launcher.executor.worker_pids()
    assert psutil.Process(pid).environ()[TOKEN_ENV] == study.token.hex()
    assert study.token.hex() not in Path(f"/proc/{pid}/cmdline").read_bytes().decode()


def test_a_failing_sampler_stops_the_launcher_with_a_clear_error(study):
    class BrokenSampler(Sobol):
        def sample(self, n):
            raise RuntimeError("acquisition failed")

    launcher = study.make(n_parallel=1, max_simulations=4)
    launcher.start(study.router, BrokenSampler(DecayingWave().space, seed=0), study.token)
    assert wait_until(lambda: launcher.error is not None, timeout=30)
    assert "RuntimeError: acquisition failed" in launcher.error
    assert launcher.exhausted


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="n_parallel must be >= 1, got 0"):
        Launcher({"_target_": "x"}, LocalExecutor(), n_parallel=0)
    with pytest.raises(TypeError, match="must be a gensim.launch.executors.Executor, got dict"):
        Launcher({"_target_": "x"}, {"_target_": "gensim.launch.executors.LocalExecutor"}, n_parallel=2)
    with pytest.raises(ValueError, match="stop_grace_s must be >= 0"):
        LocalExecutor(stop_grace_s=-1)
    for kwargs, message in [
        ({"max_retries": -1}, "max_retries must be >= 0"),
        ({"on_failure": "retry"}, r"on_failure must be one of \('redraw', 'drop'\)"),
        ({"simulation_timeout_s": 0}, "simulation_timeout_s must be positive seconds, or null"),
        ({"max_consecutive_failures": -1}, "max_consecutive_failures must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            Launcher({"_target_": "x"}, LocalExecutor(), n_parallel=2, **kwargs)


def test_the_worker_refuses_a_missing_token(monkeypatch, capsys):
    from gensim.launch import worker

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    with pytest.raises(SystemExit):
        worker.main(["--simulation", "{}"])
    assert f"environment variable {TOKEN_ENV}" in capsys.readouterr().err


def test_an_external_command_dies_with_its_worker(study):
    """A worker killed with SIGKILL (as when its trainer is) takes its external command along."""
    script = "import os, time; print('pid', os.getpid(), flush=True); time.sleep(60)"
    launcher = study.make(
        config=external_config(["{python}", "-c", script]),
        n_parallel=1,
        max_simulations=1,
        max_retries=0,
        on_failure="drop",
    )
    launcher.start(study.router, Sobol(DecayingWave().space, seed=0), study.token)
    log = launcher.log_dir / "worker-0.log"
    assert wait_until(lambda: log.is_file() and "pid " in log.read_text(), 30)
    command_pid = int(log.read_text().split("pid ", 1)[1].split()[0])
    [worker_pid] = launcher.executor.worker_pids()
    os.kill(worker_pid, signal.SIGKILL)  # the worker alone, not its process group

    def gone() -> bool:
        try:
            return psutil.Process(command_pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    assert wait_until(gone, 10), "the external command outlived its worker"
