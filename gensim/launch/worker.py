"""Simulation worker: a separate OS process that runs simulations in turn and streams their steps.

The launcher starts ``python -m gensim.launch.worker`` once per slot, so interpreter start-up and
imports are paid once per worker, not once per simulation. Protocol, one JSON object per line:

- stdin (launcher -> worker): ``{"sim_id": 3, "params": [...], "seed": 17}``; end of input means
  "no more work": the worker exits 0.
- stdout (worker -> launcher): ``{"sim_id": 3, "event": "done", "steps": 100, "seconds": 0.2}``
  or ``{"sim_id": 3, "event": "failed", "error": "..."}``.

The fields themselves go over ZeroMQ through :class:`gensim.client.Client`, never through these
pipes or the disk. Anything the simulation prints goes to stderr, so it cannot corrupt the protocol.
This module must not import torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import IO

import numpy as np


def _build_simulation(config_json: str):
    """Instantiate the simulation from its Hydra config (a JSON object with ``_target_``)."""
    from hydra.utils import instantiate

    return instantiate(json.loads(config_json))


def _run_one(simulation, task: dict, address: str, token: str) -> int:
    """Run one simulation and stream it; return the number of steps sent."""
    from gensim.client import Client

    params = np.asarray(task["params"], dtype=float)
    n_sent = 0
    with Client(address, token, int(task["sim_id"]), fields=simulation.fields) as client:
        for step, t, fields in simulation.run(params, seed=task.get("seed")):
            client.send(step, t, fields)
            n_sent += 1
        client.end()
    return n_sent


def serve(tasks: IO[str], status: IO[str], simulation, address: str, token: str) -> None:
    """Run every task read from ``tasks`` and report each outcome on ``status``.

    Parameters
    ----------
    tasks : text stream
        JSON lines ``{"sim_id", "params", "seed"}``; the loop ends at end of stream.
    status : text stream
        Receives one JSON line per task: ``done`` or ``failed``.
    simulation : gensim.simulations.Simulation
        The solver, built once for the worker's lifetime.
    address, token : str
        Receiver endpoint and study token (hex) handed to the client.
    """
    for line in tasks:
        if not line.strip():
            continue
        task = json.loads(line)
        start = time.perf_counter()
        try:
            steps = _run_one(simulation, task, address, token)
        except Exception as exc:  # a failing simulation must not take the worker down
            traceback.print_exc(file=sys.stderr)
            report = {"sim_id": task["sim_id"], "event": "failed", "error": f"{type(exc).__name__}: {exc}"}
        else:
            report = {"sim_id": task["sim_id"], "event": "done", "steps": steps,
                      "seconds": round(time.perf_counter() - start, 4)}
        status.write(json.dumps(report) + "\n")
        status.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m gensim.launch.worker``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="receiver endpoint, e.g. tcp://127.0.0.1:5555")
    parser.add_argument("--token", required=True, help="study token, 32 hex characters")
    parser.add_argument("--simulation", required=True, help="simulation config as JSON with _target_")
    args = parser.parse_args(argv)

    # Keep the real stdout for the protocol and send everything else printed to stderr.
    status = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        simulation = _build_simulation(args.simulation)
        serve(sys.stdin, status, simulation, args.address, args.token)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
