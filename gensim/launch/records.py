"""Bookkeeping of the simulations of a study: parameters, seed, state, outcome (never fields)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Life cycle of a simulation. ``cancelled``: still pending or running when the study stopped.
STATES = ("pending", "running", "done", "failed", "cancelled")


@dataclass
class SimulationRecord:
    """What the launcher knows of one simulation.

    Attributes
    ----------
    sim_id : int
        Unique id within the study; also the id on the wire.
    params : list of float
        Parameter vector, length n_params, physical units.
    seed : int
        Seed handed to the simulation (stochastic solvers use it).
    purpose : str
        ``"train"`` or ``"validation"``.
    state : str
        One of :data:`STATES`.
    worker : int or None
        Index of the local worker slot that ran it (:class:`~gensim.launch.executors.LocalExecutor`).
    job_id : str or None
        SLURM job id that ran it, e.g. ``"1234_5"`` for an array element
        (:class:`~gensim.launch.executors.SlurmExecutor`).
    rank : int or None
        Trainer rank its time steps stream to, set by the router when it is dispatched.
    exit_code : int or None
        Exit code of the worker process when it died during this simulation.
    error : str or None
        Why it failed.
    steps : int
        Time steps sent, as reported by the worker.
    seconds : float
        Wall time of the run inside the worker.
    """

    sim_id: int
    params: list[float]
    seed: int
    purpose: str
    state: str = "pending"
    worker: int | None = None
    job_id: str | None = None
    rank: int | None = None
    exit_code: int | None = None
    error: str | None = None
    steps: int = 0
    seconds: float = 0.0


@dataclass
class Ledger:
    """All simulation records of a study, in submission order."""

    records: dict[int, SimulationRecord] = field(default_factory=dict)

    def add(self, record: SimulationRecord) -> None:
        self.records[record.sim_id] = record

    def counts(self, purpose: str | None = None) -> dict[str, int]:
        """Number of simulations per state, for one purpose or all."""
        out = dict.fromkeys(STATES, 0)
        for r in self.records.values():
            if purpose is None or r.purpose == purpose:
                out[r.state] += 1
        return out

    def state_dict(self) -> dict:
        return {"records": [asdict(r) for r in self.records.values()]}

    def load_state_dict(self, state: dict) -> None:
        self.records = {r["sim_id"]: SimulationRecord(**r) for r in state["records"]}

    def write_json(self, path: str | Path) -> None:
        """Write every record (parameters, seeds, outcomes; no field data) as JSON."""
        Path(path).write_text(json.dumps(self.state_dict()["records"], indent=1))
