"""Bookkeeping of the simulations of a study: parameters, seed, state, attempts (never fields)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

#: Life cycle of a simulation. ``pending`` also covers a failed attempt waiting for its retry;
#: ``cancelled``: still pending or running when the study stopped.
STATES = ("pending", "running", "done", "failed", "cancelled")


@dataclass
class Attempt:
    """One run of a simulation by a worker: what became of it.

    Attributes
    ----------
    state : {"running", "done", "failed", "cancelled"}
        ``running`` until its outcome arrives.
    steps : int
        Time steps the worker handed to its client (ZeroMQ) during this attempt, as the worker
        reported them; a worker killed mid-run reports the steps sent before its last progress
        report (at most ``progress_s`` old).
    seconds : float
        Wall time of the attempt inside the worker.
    exit_code : int or None
        Exit code of the worker process when it exited during the attempt, or the non-zero exit code of an external command
        (``simulation=external``) that failed.
    signal : str or None
        Name of the signal that killed the worker process (e.g. ``"SIGKILL"``), if one did.
    timed_out : bool
        True when the executor killed the worker because no progress came for
        ``launcher.simulation_timeout_s`` seconds (a hang).
    error : str or None
        Why it failed.
    worker : int or None
        Local worker slot that ran it.
    job_id : str or None
        SLURM job id that ran it.
    """

    state: str = "running"
    steps: int = 0
    seconds: float = 0.0
    exit_code: int | None = None
    signal: str | None = None
    timed_out: bool = False
    error: str | None = None
    worker: int | None = None
    job_id: str | None = None


@dataclass
class SimulationRecord:
    """What the launcher knows of one simulation.

    The outcome fields (``worker`` to ``seconds``) are those of the last attempt; every attempt
    is in :attr:`attempts`.

    Attributes
    ----------
    sim_id : int
        Unique id within the study, also the id on the wire: a random 62-bit integer, so that
        no other process can guess the id of a running simulation.
    params : list of float
        Parameter vector, length n_params, physical units.
    seed : int
        Seed handed to the simulation (stochastic solvers use it); the same for every attempt.
    purpose : str
        ``"train"`` or ``"validation"``.
    index : int
        Order of creation within the study (0, 1, 2, ...); the seed derives from it, not from
        the random id, so that a study's seeds are reproducible.
    state : str
        One of :data:`STATES`.
    worker : int or None
        Index of the local worker slot that ran it (:class:`~gensim.launch.executors.LocalExecutor`).
    job_id : str or None
        SLURM job id that ran it, e.g. ``"1234_5"`` for an array element
        (:class:`~gensim.launch.executors.SlurmExecutor`).
    rank : int or None
        Trainer rank its time steps stream to, set by the router when it is first dispatched;
        retries stream to the same rank.
    exit_code : int or None
        Exit code of the worker process when it died during the last attempt, or the non-zero exit code of an external command
        (``simulation=external``) that failed.
    error : str or None
        Why the last attempt failed.
    steps : int
        Time steps sent in the last attempt, as reported by the worker.
    seconds : float
        Wall time of the last attempt inside the worker.
    attempts : list of Attempt
        Every run of this simulation, in order; retries keep the id, parameters and seed.
    replaced_by : int or None
        For a training simulation given up after its retries (``launcher.on_failure=redraw``):
        the id of the simulation drawn in its place.
    rejected : dict of str to int
        Messages of this simulation that the trainer's receivers rejected, by reason (see
        ``docs/wire-format.md``), filled at the end of the study; empty when none was.
    """

    sim_id: int
    params: list[float]
    seed: int
    purpose: str
    index: int = 0
    state: str = "pending"
    worker: int | None = None
    job_id: str | None = None
    rank: int | None = None
    exit_code: int | None = None
    error: str | None = None
    steps: int = 0
    seconds: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    replaced_by: int | None = None
    rejected: dict[str, int] = field(default_factory=dict)


_RECORD_FIELDS = {f.name for f in fields(SimulationRecord)}


@dataclass
class Ledger:
    """All simulation records of a study, in creation order (ids are random, not ordered)."""

    records: dict[int, SimulationRecord] = field(default_factory=dict)

    def add(self, record: SimulationRecord) -> None:
        if record.sim_id in self.records:
            raise ValueError(f"simulation id {record.sim_id} is already in the ledger; ids must be unique")
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
        records = {}
        for k, raw in enumerate(state["records"]):
            r = {key: value for key, value in raw.items() if key in _RECORD_FIELDS}
            r.setdefault("index", k)  # ledgers written before ``index`` existed: creation order
            r["attempts"] = [Attempt(**a) for a in r.get("attempts", [])]
            records[r["sim_id"]] = SimulationRecord(**r)
        self.records = records

    def write_json(self, path: str | Path) -> None:
        """Write every record (parameters, seeds, attempts; no field data) as JSON, in creation order."""
        Path(path).write_text(json.dumps(self.state_dict()["records"], indent=1))
