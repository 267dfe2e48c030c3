"""Simulation worker: a separate OS process that runs simulations in turn and streams their steps.

An executor starts ``python -m gensim.launch.worker --simulation <config JSON>`` once per slot,
so interpreter start-up and imports are paid once per worker, not once per simulation. The study
key comes from the environment variable ``GENSIM_TOKEN`` (64 hex characters), never from the
command line, which every user of the machine can read. Protocol, one JSON object per line:

- stdin (executor -> worker): ``{"sim_id": 3, "params": [...], "seed": 17, "address": "tcp://..."}``;
  each task names the receiver it streams to (simulations of one study may stream to different
  trainer ranks). End of input means "no more work": the worker exits 0.
- stdout (worker -> executor): ``{"sim_id": 3, "event": "started"}`` when it takes the task,
  ``{"sim_id": 3, "event": "progress", "steps": 40}`` after the
  first time step and then at most every ``GENSIM_PROGRESS_S`` seconds (the executor's hang
  detection: a simulation silent for ``simulation_timeout_s`` is killed), then
  ``{"sim_id": 3, "event": "done", "steps": 100, "seconds": 0.2}``
  or ``{"sim_id": 3, "event": "failed", "error": "...", "steps": 12, "seconds": 0.1}`` (with
  ``"exit_code"`` when an external command exited with a non-zero code).

The worker ends when the process that started it dies (``GENSIM_PARENT_PID``; see
:mod:`gensim.launch.orphans`): the kernel kills it, and it checks between time steps.

The fields themselves go over ZeroMQ through :class:`gensim.client.Client`, never through these
pipes or the disk. Anything the simulation prints goes to stderr, so it cannot corrupt the protocol.

:func:`run_tasks` is the body of a SLURM job (:class:`~gensim.launch.executors.SlurmExecutor`):
it runs a group of tasks through this same worker, started as a local subprocess inside the job.

This module must not import torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from gensim.launch import orphans
from gensim.launch.executors.base import PARENT_ENV, PROGRESS_ENV, TOKEN_ENV

#: Default seconds between two progress reports, when ``GENSIM_PROGRESS_S`` is not set.
PROGRESS_S = 1.0


def _build_simulation(config_json: str):
    """Instantiate the simulation from its Hydra config (a JSON object with ``_target_``)."""
    from hydra.utils import instantiate

    return instantiate(json.loads(config_json))


class _Progress:
    """Counts the steps of the running simulation and reports them, throttled, on ``status``.

    Also checks between steps that the executor's process still lives: a worker whose trainer
    died exits here at once (the kernel's parent-death signal covers the time inside a step).
    """

    def __init__(self, status: IO[str], sim_id: int, every_s: float, parent_pid: int | None) -> None:
        self.status, self.sim_id, self.every_s, self.parent_pid = status, sim_id, every_s, parent_pid
        self.steps = 0
        self._last = -math.inf

    def step(self) -> None:
        self.steps += 1
        self.beat()

    def beat(self) -> None:
        """Report that the simulation is alive (steps unchanged), throttled; exit if orphaned."""
        if not orphans.parent_alive(self.parent_pid):
            print(f"gensim worker: the trainer (pid {self.parent_pid}) is gone; exiting", file=sys.stderr)
            os._exit(orphans._ORPHAN_EXIT)
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            _report(self.status, {"sim_id": self.sim_id, "event": "progress", "steps": self.steps})


def _report(status: IO[str], message: dict) -> None:
    status.write(json.dumps(message) + "\n")
    status.flush()


def _run_one(simulation, task: dict, token: str, progress: _Progress, send_meshes: bool = False) -> int:
    """Run one simulation and stream it to ``task["address"]``; return the number of steps sent.

    The simulation's environment names its stream (``GENSIM_ADDRESS``, ``GENSIM_SIM_ID``, and
    ``GENSIM_TOKEN`` from the executor), so that code it runs or starts can call
    :meth:`gensim.client.Client.from_env`. A simulation that ``streams_itself`` (an external
    command, :class:`~gensim.simulations.external.ExternalSimulation`) sends its own steps; the
    worker then reports no step count (0) and beats while the process runs. With
    ``send_meshes``, the geometry of every field on a mesh goes first (a MESH message each).
    """
    from gensim.client import ENV_ADDRESS, ENV_SIM_ID, Client

    os.environ[ENV_ADDRESS], os.environ[ENV_SIM_ID] = str(task["address"]), str(int(task["sim_id"]))
    params = np.asarray(task["params"], dtype=float)
    if getattr(simulation, "streams_itself", False):
        simulation.stream(
            params, task.get("seed"), int(task["sim_id"]), task["address"], token, heartbeat=progress.beat
        )
        return progress.steps
    with Client(task["address"], token, int(task["sim_id"]), fields=simulation.fields) as client:
        for spec in simulation.fields if send_meshes else ():
            if spec.mesh is not None:
                client.send_mesh(spec.name, spec.mesh)
        for step, t, fields in simulation.run(params, seed=task.get("seed")):
            client.send(step, t, fields)
            progress.step()
        client.end()
    return progress.steps


def serve(
    tasks: IO[str],
    status: IO[str],
    simulation,
    token: str,
    progress_s: float = PROGRESS_S,
    parent_pid: int | None = None,
) -> None:
    """Run every task read from ``tasks`` and report its progress and outcome on ``status``.

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
    progress_s : float
        Seconds between two progress reports of a running simulation (the first step is
        reported at once).
    parent_pid : int, optional
        The executor's process: the worker exits when it is gone (checked between steps).
    """
    # The meshes go once per worker process, with its first simulation: the receiver checks
    # that this process's geometry is the declared one; data messages carry node values only.
    meshes_sent = False
    for line in tasks:
        if not line.strip():
            continue
        task = json.loads(line)
        start = time.perf_counter()
        # The executor's hang clock runs from here: the worker's own start-up is not the task's.
        _report(status, {"sim_id": task["sim_id"], "event": "started"})
        progress = _Progress(status, task["sim_id"], progress_s, parent_pid)
        try:
            steps = _run_one(simulation, task, token, progress, send_meshes=not meshes_sent)
            meshes_sent = True
        except Exception as exc:  # a failing simulation must not take the worker down
            traceback.print_exc(file=sys.stderr)
            report = {
                "sim_id": task["sim_id"],
                "event": "failed",
                "error": f"{type(exc).__name__}: {exc}",
                "steps": progress.steps,
                "seconds": round(time.perf_counter() - start, 4),
            }
            if getattr(exc, "exit_code", None) is not None:  # an external command's own exit code
                report["exit_code"] = int(exc.exit_code)
        else:
            report = {
                "sim_id": task["sim_id"],
                "event": "done",
                "steps": steps,
                "seconds": round(time.perf_counter() - start, 4),
            }
        _report(status, report)


def run_tasks(
    simulation: Mapping[str, Any],
    tasks: Sequence[Mapping[str, Any]],
    token: str,
    poll_s: float = 0.2,
    simulation_timeout_s: float | None = None,
    heartbeat: str | None = None,
    heartbeat_stale_s: float = 60.0,
) -> list[dict[str, Any]]:
    """Run a group of tasks through one worker subprocess and return their outcomes.

    The body of a SLURM job: submitit pickles this function with its arguments (the token
    included) into a folder readable by the user only, and calls it on the compute node. The
    simulations run in a child worker process, exactly as on a local machine, so a simulation
    that kills its process (a segfault in a solver) fails alone: the job reports it with the
    exit code or signal, starts a new worker and runs the rest of the group; a simulation
    silent for ``simulation_timeout_s`` is killed and reported as timed out. When the trainer's
    ``heartbeat`` file stops changing for ``heartbeat_stale_s`` seconds (the trainer died), the
    job stops its worker and raises, so that nothing of a dead study keeps a node busy.

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
    simulation_timeout_s : float, optional
        Hang timeout of one simulation (see :class:`~gensim.launch.executors.LocalExecutor`).
    heartbeat : str, optional
        Path of the trainer's heartbeat file (:class:`gensim.launch.orphans.Heartbeat`); None:
        not watched.
    heartbeat_stale_s : float
        Seconds without a heartbeat after which the trainer is taken for dead.

    Returns
    -------
    list of dict
        One :class:`~gensim.launch.executors.Outcome` per task, as a dict, in completion order,
        plus one with ``sim_id`` None per worker that died between tasks.

    Raises
    ------
    RuntimeError
        If the trainer's heartbeat stopped (its worker is stopped first).
    """
    from dataclasses import asdict

    from gensim.launch.executors.base import Task
    from gensim.launch.executors.local import LocalExecutor

    watch = orphans.HeartbeatWatch(Path(heartbeat), heartbeat_stale_s) if heartbeat else None
    executor = LocalExecutor()
    executor.start(
        simulation, bytes.fromhex(token), n_parallel=1, log_dir=None, simulation_timeout_s=simulation_timeout_s
    )
    outcomes = []
    try:
        pending = [Task(**t) for t in tasks]
        running: int | None = None
        while pending or running is not None:
            if watch is not None and watch.stale():
                raise RuntimeError(
                    f"the trainer's heartbeat {heartbeat} has not changed for "
                    f"{heartbeat_stale_s} s: the trainer is gone, this job stops"
                )
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
    parent = os.environ.get(PARENT_ENV)
    parent_pid = int(parent) if parent else None
    # First: a worker started just as its trainer died must not run a whole simulation.
    orphans.die_with_parent(parent_pid)
    token = os.environ.get(TOKEN_ENV)
    if not token:
        parser.error(
            f"the study token must be in the environment variable {TOKEN_ENV} (hex); "
            "it is never accepted on the command line, where other users can read it"
        )

    # Keep the real stdout for the protocol and send everything else printed to stderr.
    status = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        simulation = _build_simulation(args.simulation)
        serve(
            sys.stdin,
            status,
            simulation,
            token,
            progress_s=float(os.environ.get(PROGRESS_ENV, PROGRESS_S)),
            parent_pid=parent_pid,
        )
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
