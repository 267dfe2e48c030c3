"""No orphans (issue 12 item 5): simulation workers end when their trainer dies, however it dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
from processes import stop_process_tree

from gensim.launch.executors.base import PARENT_ENV, TOKEN_ENV, Task
from gensim.launch.orphans import Heartbeat, HeartbeatWatch
from gensim.launch.worker import run_tasks
from gensim.transport import wire

HERE = Path(__file__).parent
# The tiny study of tests/gensim/test_train.py on the analytic problem, with a simulation that
# sleeps inside its steps: the trainer dies while every worker is in the middle of one.
TINY = [
    "simulation=decaying_wave",
    "simulation.n_steps=10",
    "launcher.max_simulations=24",
    "data.n_validation=4",
    "data.watermark=64",
    "data.batch_size=32",
    "data.steps_per_epoch=100",
    "buffer.capacity=200",
    "model.net.hidden=[64,64]",
    "trainer.max_steps=300",
]


def workers_of(pid: int, tag: str) -> list[psutil.Process]:
    """The simulation worker processes under ``pid`` whose simulation config carries ``tag``."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in children:
        try:
            cmd = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if "gensim.launch.worker" in cmd and tag in cmd:
            out.append(p)
    return out


@pytest.mark.slow
def test_a_trainer_killed_with_sigkill_leaves_no_worker_behind(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    # 30 s per step: a worker can only end within the test's 10 s by being killed, not by
    # noticing the trainer's death between two steps.
    cmd = [
        sys.executable,
        "-m",
        "gensim.train",
        *TINY,
        "simulation._target_=faulty.Slow",
        "+simulation.delay_s=30",
        f"+simulation.tag={tag}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    log = open(tmp_path / "study.log", "w")  # noqa: SIM115 - closed in the finally
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
            workers = workers_of(proc.pid, tag)
            time.sleep(0.2)
        assert len(workers) == 2, (
            "the study did not start its two workers within 90 s:\n" + (tmp_path / "study.log").read_text()[-4000:]
        )
        # Let them take their held-out simulations and sleep inside a step.
        logs = tmp_path / "run" / "workers"
        time.sleep(5.0)
        assert proc.poll() is None, (tmp_path / "study.log").read_text()[-4000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = time.monotonic()
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"workers alive 10 s after the trainer's SIGKILL: {[p.pid for p in alive]}"
        print(f"workers gone {time.monotonic() - killed_at:.2f} s after the trainer's SIGKILL")
        assert logs.is_dir()
    finally:
        stop_process_tree(proc)
        for p in workers:  # not children of the killed trainer any more: stop them here
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        log.close()


def test_a_worker_whose_parent_is_already_gone_exits_at_once(tmp_path: Path) -> None:
    # GENSIM_PARENT_PID names a process that is not the worker's parent: its parent has died
    # (and it was adopted) before it could arm the parent-death signal.
    env = {**os.environ, TOKEN_ENV: "00" * 16, PARENT_ENV: str(os.getpid() + 1_000_000)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gensim.launch.worker",
            "--simulation",
            json.dumps({"_target_": "gensim.simulations.DecayingWave"}),
        ],
        env=env,
        input="",
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 69


def test_a_slurm_job_body_stops_its_worker_when_the_heartbeat_stops(tmp_path: Path, monkeypatch) -> None:
    """``run_tasks`` (what a SLURM job runs) with a heartbeat that never beats: it ends, worker included."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    tag = uuid.uuid4().hex
    heartbeat = tmp_path / "heartbeat"
    heartbeat.write_text("1 0.0\n")  # written once: the trainer died right after
    simulation = {"_target_": "faulty.Slow", "delay_s": 30.0, "tag": tag, "size": 8, "n_steps": 4}
    task = Task(123, [1.5, 0.5], 0, "tcp://127.0.0.1:9").to_json()
    key = os.urandom(getattr(wire, "KEY_BYTES", 16)).hex()  # the study key's length on the wire
    result: dict = {}

    def job() -> None:
        try:
            run_tasks(simulation, [task], key, poll_s=0.1, heartbeat=str(heartbeat), heartbeat_stale_s=3.0)
        except Exception as exc:
            result["error"] = exc

    thread = threading.Thread(target=job, daemon=True)
    start = time.monotonic()
    thread.start()
    workers: list[psutil.Process] = []
    while time.monotonic() - start < 60 and not workers:
        workers = workers_of(os.getpid(), tag)
        time.sleep(0.1)
    assert workers, "run_tasks did not start its worker"
    thread.join(timeout=60)
    assert not thread.is_alive(), "run_tasks did not end although the heartbeat stopped"
    assert "heartbeat" in str(result.get("error")) and "trainer is gone" in str(result["error"])
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive


def test_the_heartbeat_is_seen_while_it_beats_and_stale_once_it_stops(tmp_path: Path) -> None:
    path = tmp_path / "heartbeat"
    beat = Heartbeat(path, interval_s=0.1)
    try:
        watch = HeartbeatWatch(path, stale_s=0.5)
        for _ in range(10):  # 1 s: twice the staleness, while it beats
            time.sleep(0.1)
            assert not watch.stale()
    finally:
        beat.stop()
    time.sleep(0.8)
    assert watch.stale()
    with pytest.raises(ValueError, match="positive"):
        Heartbeat(path, interval_s=0)
