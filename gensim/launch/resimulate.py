"""Run a fixed list of simulations in parallel through an executor and keep every step.

The off-line baselines re-simulate a finished study's simulations (its ``simulations.json``):
serially in-process by default, or here, ``n_parallel`` at a time in the study's own kind of
workers (local processes, SLURM jobs), each streaming to a private receiver in this process
exactly as in a study. No launcher is involved: the list, the seeds and the ids are fixed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gensim.launch.executors.base import Executor, Task
from gensim.simulations.base import FieldSpec, Sample
from gensim.transport import wire
from gensim.transport.receiver import Receiver

log = logging.getLogger("gensim.launch")

#: One simulation's steps as :meth:`Simulation.run` yields them: (step, t, fields).
Steps = list[tuple[int, float, dict[str, np.ndarray]]]


def run_in_parallel(
    simulation: Mapping[str, Any],
    fields: Sequence[FieldSpec],
    n_steps: int,
    params: np.ndarray,
    seeds: Sequence[int | None],
    executor: Executor,
    n_parallel: int,
    address: str = "tcp://127.0.0.1:*",
    timeout_s: float | None = 600.0,
    log_dir: Path | None = None,
) -> list[Steps]:
    """Run every parameter vector once, ``n_parallel`` at a time, and return their steps.

    Parameters
    ----------
    simulation : mapping
        The simulation's config with ``_target_`` (what every worker builds).
    fields : sequence of FieldSpec
        Its fields (the receiver's declaration).
    n_steps : int
        Its steps per run.
    params : ndarray, shape (S, P)
        Parameter vectors, physical units.
    seeds : sequence of int or None, length S
        The seed of each run (a study's recorded seeds: the same fields again).
    executor : Executor
        A fresh executor (``LocalExecutor()``, the study's ``launcher.executor``); shut down here.
    n_parallel : int
        Simulations in flight at once.
    address : str
        Where the private receiver binds: loopback for local workers, an interface the compute
        nodes reach for SLURM.
    timeout_s : float or None
        Hang timeout of one simulation (as ``launcher.simulation_timeout_s``).
    log_dir : Path, optional
        Folder of the workers' logs.

    Returns
    -------
    list of Steps
        Per parameter vector, in order, its steps sorted by step index.

    Raises
    ------
    RuntimeError
        If a simulation fails (with its error), or sends fewer than ``n_steps`` steps.
    """
    params = np.atleast_2d(np.asarray(params, float))
    if len(seeds) != len(params):
        raise ValueError(f"expected one seed per parameter vector ({len(params)}), got {len(seeds)}")
    if n_parallel < 1:
        raise ValueError(f"n_parallel must be >= 1, got {n_parallel}")
    key = wire.new_key()
    got: list[list[Sample]] = [[] for _ in params]
    start = time.perf_counter()
    with Receiver(fields, key, address=address, n_steps=n_steps) as rx:
        for i, p in enumerate(params):
            rx.register(i, p, got[i].append)
        executor.start(dict(simulation), key, n_parallel, log_dir, simulation_timeout_s=timeout_s)
        try:
            pending, running = list(range(len(params))), 0
            while pending or running:
                while pending and running < n_parallel:
                    i = pending.pop(0)
                    seed = None if seeds[i] is None else int(seeds[i])
                    executor.submit(Task(i, [float(v) for v in params[i]], seed, rx.address))
                    running += 1
                for outcome in executor.poll(0.1):
                    if outcome.sim_id is None:
                        continue  # a worker lost between tasks: the executor restarts it
                    running -= 1
                    if outcome.state != "done":
                        raise RuntimeError(
                            f"re-simulation {outcome.sim_id} (params {params[outcome.sim_id].tolist()}) "
                            f"failed: {outcome.error}"
                        )
            if not rx.wait_finished(range(len(params)), timeout=30.0):
                raise RuntimeError("re-simulations finished but not every END reached the receiver within 30 s")
        finally:
            executor.shutdown()
    log.info(
        "re-simulated %d simulations, %d at a time, in %.1f s", len(params), n_parallel, time.perf_counter() - start
    )
    out = []
    for i, samples in enumerate(got):
        if len(samples) != n_steps:
            raise RuntimeError(f"re-simulation {i} sent {len(samples)} of its {n_steps} steps")
        out.append(
            [
                (s.step, s.t, {k: np.array(v) for k, v in s.fields.items()})
                for s in sorted(samples, key=lambda s: s.step)
            ]
        )
    return out
