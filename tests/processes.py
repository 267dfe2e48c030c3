"""Teardown of the processes a test started: a study and everything it left running."""

from __future__ import annotations

import subprocess

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
