"""Run a function in a real 2-process gloo group, as DDP's ranks would, for tests."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
TIMEOUT_S = 180.0  # two cold interpreters importing torch + Lightning on a shared 2-core machine


def _rank_entry(worker, rank: int, root: str) -> None:
    """Join the gloo group through a FileStore (no port to pick), run the worker, save its result."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{root}/store", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        torch.save(worker(rank), f"{root}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(worker, root: Path) -> list:
    """``worker(rank)`` in ``WORLD`` spawned processes of one gloo group; their results, by rank.

    The processes are killed when they outlive ``TIMEOUT_S`` or the test fails.
    """
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank_entry, args=(worker, rank, str(root))) for rank in range(WORLD)]
    for proc in procs:
        proc.start()
    try:
        deadline = time.monotonic() + TIMEOUT_S
        for proc in procs:
            proc.join(max(deadline - time.monotonic(), 0.0))
        codes = [proc.exitcode for proc in procs]
        assert codes == [0] * WORLD, f"rank exit codes {codes} (None: still running after {TIMEOUT_S} s)"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    return [torch.load(root / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD)]
