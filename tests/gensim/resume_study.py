"""Run, SIGKILL and resume tiny ``gensim-train`` studies (tests/gensim/test_resume.py and
reports/resume/measure.py).

The study: :class:`faulty.Slow` decaying waves (tests/gensim/launch/faulty.py), 0.03 s per step
x 10 steps, 2 in parallel, 16 training simulations released by
:class:`~gensim.callbacks.SimulationPacing` from 4 at the start to all 16 at step 180 of 3000:
simulations run while the first checkpoints are written (the trainer is killed after one, of
step 50 or later, that has a simulation in flight), and all of them end long before the last
step, in an uninterrupted study and in a resumed one alike (whose workers must start again
first), so both train on the same budget. The simulations' time is sleeps, which a quiet machine
does not shorten, while the tiny model's steps take about 4 ms there: with 900 steps a resumed
study on an idle machine trained its last 850 steps in 3.3 s and ended with its last simulation
not started (CI, 2026-12-02; with 600 steps, all released by step 120, that had happened once
before). 3000 steps leave about 10 s after the last release. (Released by step 60 instead, the
resumed studies, whose workers start again while training goes on, trained on their data later
than uninterrupted ones: 1.064x their error.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from processes import stop_process_tree

HERE = Path(__file__).resolve().parent
#: Optimizer steps of the study.
MAX_STEPS = 3000
STUDY = [
    "simulation=decaying_wave",
    "simulation._target_=faulty.Slow",
    "+simulation.delay_s=0.03",
    "+simulation.tag=gensim-resume-test",
    "simulation.n_steps=10",
    "launcher.n_parallel=2",
    "launcher.max_simulations=16",
    "data.n_validation=4",
    "data.watermark=40",
    "data.batch_size=32",
    "data.steps_per_epoch=100",
    "buffer.capacity=400",
    "model.net.hidden=[64,64]",
    "model.warmup_steps=20",
    "model.normalizer_warmup_batches=10",
    f"trainer.max_steps={MAX_STEPS}",
    "checkpoint.every_n_steps=25",
    "checkpoint.every_minutes=null",
    "+callbacks.pacing._target_=gensim.callbacks.SimulationPacing",
    "+callbacks.pacing.n_initial=4",
    "+callbacks.pacing.release_until=0.06",
]


def env() -> dict[str, str]:
    """The environment of a study: ``faulty`` importable by the trainer and its workers; one
    torch thread (the machine's cores are shared by the trainer and its workers)."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(HERE / "launch"), out.get("PYTHONPATH", "")])
    out["OMP_NUM_THREADS"] = "1"
    return out


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gensim.train", *args]


def run_study(run_dir: Path, *extra: str, timeout: float = 180) -> dict:
    """Run one uninterrupted study; return its metrics."""
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        proc = subprocess.Popen(
            train_cmd(*STUDY, *extra, f"hydra.run.dir={run_dir}"), stdout=log, stderr=subprocess.STDOUT, env=env()
        )
        try:
            proc.wait(timeout=timeout)
        finally:
            stop_process_tree(proc)
    assert proc.returncode == 0, (run_dir.parent / f"{run_dir.name}.log").read_text()[-4000:]
    return json.loads((run_dir / "metrics.json").read_text())


def in_flight(ckpt: dict) -> list[dict]:
    """The training simulations pending or running in a checkpoint's ledger."""
    records = ckpt["StreamingDataModule"]["launcher"]["ledger"]["records"]
    return [r for r in records if r["purpose"] == "train" and r["state"] in ("pending", "running")]


def alive(processes: list[psutil.Process]) -> list[int]:
    """Pids of the processes still running (zombies and processes gone meanwhile excluded)."""
    out = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def kill_after_checkpoint(run_dir: Path, *extra: str, min_step: int = 50, timeout: float = 120) -> dict:
    """Start a study, SIGKILL its trainer once a checkpoint of step >= ``min_step`` with a
    training simulation in flight exists.

    Returns
    -------
    dict
        ``workers`` (psutil processes of its simulation workers at the kill), ``killed_at``
        (time.monotonic()), ``ckpt`` (the checkpoint's study state, read after the kill).
    """
    log = open(run_dir.parent / f"{run_dir.name}.log", "w")  # noqa: SIM115 - closed in the finally
    proc = subprocess.Popen(
        train_cmd(*STUDY, *extra, f"hydra.run.dir={run_dir}"), stdout=log, stderr=subprocess.STDOUT, env=env()
    )
    ckpt_file = run_dir / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, (
                "the study ended before a checkpoint with a simulation in flight: "
                + (run_dir.parent / f"{run_dir.name}.log").read_text()[-3000:]
            )
            assert time.monotonic() < deadline, f"no checkpoint of step >= {min_step} after {timeout} s"
            workers = [
                p
                for p in psutil.Process(proc.pid).children(recursive=True)
                if "gensim.launch.worker" in " ".join(p.cmdline())
            ]
            try:  # last.ckpt may be half-written: then read it at the next turn
                ckpt = torch.load(ckpt_file, weights_only=False, map_location="cpu")
            except Exception:
                ckpt = None
            if ckpt is not None and ckpt["global_step"] >= min_step and in_flight(ckpt):
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(timeout=10)
    finally:
        stop_process_tree(proc)  # only the trainer: its workers are left to their own devices
        log.close()
    # The checkpoint that was read may have been replaced by a later one before the kill.
    ckpt = torch.load(ckpt_file, weights_only=False, map_location="cpu")
    return {"workers": workers, "killed_at": killed_at, "ckpt": ckpt}


def resume(run_dir: Path, *extra: str, timeout: float = 180) -> tuple[int, str]:
    """``gensim-train resume=<run_dir>``; its return code and output."""
    proc = subprocess.Popen(
        train_cmd(f"resume={run_dir}", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env(),
        cwd=run_dir.parent,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        stop_process_tree(proc)
    return proc.returncode, out
