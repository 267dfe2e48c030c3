"""Simulation worker: a separate OS process that runs simulations in turn and streams their steps.

An executor starts ``python -m gensim.launch.worker --simulation <config JSON>`` once per slot,
so interpreter start-up and imports are paid once per worker, not once per simulation. The study
token comes from the environment variable ``GENSIM_TOKEN`` (32 hex characters), never from the
command line, which every user of the machine can read. Protocol, one JSON object per line:

- stdin (executor -> worker): ``{"sim_id": 3, "params": [...], "seed": 17, "address": "tcp://..."}``;
  each task names the receiver it streams to (simulations of one study may stream to different
  trainer ranks). End of input means "no more work": the worker exits 0.
- stdout (worker -> executor): ``{"sim_id": 3, "event": "done", "steps": 100, "seconds": 0.2}``
  or ``{"sim_id": 3, "event": "failed", "error": "..."}``.

The fields themselves go over ZeroMQ through :class:`gensim.client.Client`, never through these
pipes or the disk. Anything the simulation prints goes to stderr, so it cannot corrupt the protocol.

:func:`run_tasks` is the body of a SLURM job (:class:`~gensim.launch.executors.SlurmExecutor`):
it runs a group of tasks through this same worker, started as a local subprocess inside the job.

This module must not import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import IO, Any

import numpy as np

from gensim.launch.executors.base import TOKEN_ENV


def _build_simulation(config_json: str):
    """Instantiate the simulation from its Hydra config (a JSON object with ``_target_``)."""
    from hydra.utils import instantiate

    return instantiate(json.loads(config_json))


def _run_one(simulation, task: dict, token: str) -> int:
    """Run one simulation and stream it to ``task["address"]``; return the number of steps sent."""
    from gensim.client import Client

    params = np.asarray(task["params"], dtype=float)
    n_sent = 0
    with Client(task["address"], token, int(task["sim_id"]), fields=simulation.fields) as client:
        for step, t, fields in simulation.run(params, seed=task.get("seed")):
            client.send(step, t, fields)
            n_sent += 1
        client.end()
    return n_sent


def serve(tasks: IO[str], status: IO[str], simulation, token: str) -> None:
    """Run every task read from ``tasks`` and report each outcome on ``status``.

    Parameters
    ----------
    tasks : text stream
        JSON lines ``{"sim_id", "params", "seed", "address"}``; the loop ends at end of stream.
    status : text stream
        Receives one JSON line per task: ``done`` or ``failed``.
    simulation : gensim.simulations.Simulation
        The solver, built once for the worker's lifetime.
    token : str
        Study token (hex) handed to the client.
    """
    for line in tasks:
        if not line.strip():
            continue
        task = json.loads(line)
        start = time.perf_counter()
        try:
            steps = _run_one(simulation, task, token)
        except Exception as exc:  # a failing simulation must not take the worker down
            traceback.print_exc(file=sys.stderr)
            report = {"sim_id": task["sim_id"], "event": "failed", "error": f"{type(exc).__name__}: {exc}"}
        else:
            report = {"sim_id": task["sim_id"], "event": "done", "steps": steps,
                      "seconds": round(time.perf_counter() - start, 4)}
        status.write(json.dumps(report) + "\n")
        status.flush()


def run_tasks(simulation: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]], token: str,
              poll_s: float = 0.2) -> list[dict[str, Any]]:
    """Run a group of tasks through one worker subprocess and return their outcomes.

    The body of a SLURM job: submitit pickles this function with its arguments (the token
    included) into a folder readable by the user only, and calls it on the compute node. The
    simulations run in a child worker process, exactly as on a local machine, so a simulation
    that kills its process (a segfault in a solver) fails alone: the job reports it with the
    exit code, starts a new worker and runs the rest of the group.

    Parameters
    ----------
    simulation : mapping
        Simulation config with ``_target_``.
    tasks : sequence of mapping
        Task dicts (:meth:`gensim.launch.executors.Task.to_json`).
    token : str
        Study token, hex; given to the child worker in its environment.
    poll_s : float
        Seconds between checks of the child worker.

    Returns
    -------
    list of dict
        One :class:`~gensim.launch.executors.Outcome` per task, as a dict, in completion order,
        plus one with ``sim_id`` None per worker that died between tasks.
    """
    from dataclasses import asdict

    from gensim.launch.executors.base import Task
    from gensim.launch.executors.local import LocalExecutor

    executor = LocalExecutor()
    executor.start(simulation, bytes.fromhex(token), n_parallel=1, log_dir=None)
    outcomes = []
    try:
        pending = [Task(**t) for t in tasks]
        running: int | None = None
        while pending or running is not None:
            if running is None:  # one simulation at a time: the job's CPUs are the solver's
                task = pending.pop(0)
                executor.submit(task)
                running = task.sim_id
            for outcome in executor.poll(poll_s):
                outcomes.append(asdict(outcome))
                if outcome.sim_id == running:
                    running = None
    finally:
        executor.shutdown()
    return outcomes


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m gensim.launch.worker``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulation", required=True, help="simulation config as JSON with _target_")
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV)
    if not token:
        parser.error(f"the study token must be in the environment variable {TOKEN_ENV} (hex); "
                     "it is never accepted on the command line, where other users can read it")

    # Keep the real stdout for the protocol and send everything else printed to stderr.
    status = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        simulation = _build_simulation(args.simulation)
        serve(sys.stdin, status, simulation, token)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
