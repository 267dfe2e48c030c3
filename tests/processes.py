"""Teardown of the processes a test started: a study and everything it left running."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psutil


def stop_process_tree(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and its descendants (simulation workers, DDP ranks), if still running."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def run_study(cmd: list[str], run_dir: Path, timeout_s: float = 240) -> tuple[str, dict]:
    """Run a ``gensim-train`` command to its end; its output and ``run_dir/metrics.json``.

    Fails with the output's tail when it exits non-zero or outlives ``timeout_s`` (a bound on a
    hang, not on speed: below pytest's 300 s so that the output is shown; a loaded 2-core
    machine takes 2 to 3 times the idle time); stops everything it left running.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_process_tree(proc)
        out, _ = proc.communicate()
        raise AssertionError(f"the study ran over {timeout_s} s; its output's tail:\n{out[-4000:]}") from None
    finally:
        stop_process_tree(proc)
    assert proc.returncode == 0, out[-4000:]
    return out, json.loads((run_dir / "metrics.json").read_text())
