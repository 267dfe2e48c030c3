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


def run_study(cmd: list[str], run_dir: Path, timeout_s: float = 120) -> tuple[str, dict]:
    """Run a ``gensim-train`` command to its end; its output and ``run_dir/metrics.json``.

    Fails with the output's tail when it exits non-zero; stops everything it left running.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    finally:
        stop_process_tree(proc)
    assert proc.returncode == 0, out[-4000:]
    return out, json.loads((run_dir / "metrics.json").read_text())
