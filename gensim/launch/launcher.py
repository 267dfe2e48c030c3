"""The launcher: which simulations run, when, and what became of them."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gensim.launch.executors.base import Executor, Outcome, Task
from gensim.launch.records import Ledger, SimulationRecord

log = logging.getLogger("gensim.launch")


class Router(Protocol):
    """Binds each simulation to one trainer rank (implemented in :mod:`gensim.transport.routing`)."""

    def assign(self, record: SimulationRecord) -> str:
        """Register the simulation with one rank's receiver, set ``record.rank``, return the
        ZeroMQ address its worker must stream to."""


class Launcher:
    """Keep ``n_parallel`` simulations in flight, from a sampler and explicit submissions.

    The launcher decides *what* runs: it asks the sampler for a parameter vector whenever a slot
    is free and the training budget allows, serves explicitly submitted simulations (the
    held-out set) first, validates parameters, has the router bind each simulation to a trainer
    rank, records every simulation in the :attr:`ledger`, and gives up with a clear
    :attr:`error` when workers keep dying. *How* a simulation starts is the executor's business
    (:class:`~gensim.launch.executors.LocalExecutor`,
    :class:`~gensim.launch.executors.SlurmExecutor`).

    One dispatch thread does the work; every public method is thread-safe.

    Parameters
    ----------
    simulation : mapping
        The simulation's Hydra config (with ``_target_``); every worker instantiates it.
    executor : Executor
        How workers start.
    n_parallel : int
        Most simulations in flight (submitted to the executor, no outcome yet).
    max_simulations : int
        Initial budget of training simulations for the study; see :meth:`set_budget`.
    max_worker_restarts : int
        Lost workers (crashed processes, jobs ended without result) tolerated before the
        launcher gives up: a broken simulation config would otherwise restart forever.
    log_dir : str, optional
        Folder for the workers' logs, handed to the executor.

    Notes
    -----
    Simulation ``k`` of a study started with seed ``s`` gets seed ``s * 1_000_003 + k``.
    """

    def __init__(
        self,
        simulation: Mapping[str, Any],
        executor: Executor,
        n_parallel: int = 2,
        max_simulations: int = 128,
        max_worker_restarts: int = 10,
        log_dir: str | None = None,
    ) -> None:
        if n_parallel < 1:
            raise ValueError(f"launcher.n_parallel must be >= 1, got {n_parallel}")
        if max_simulations < 0:
            raise ValueError(f"launcher.max_simulations must be >= 0, got {max_simulations}")
        if max_worker_restarts < 0:
            raise ValueError(f"launcher.max_worker_restarts must be >= 0, got {max_worker_restarts}")
        if not isinstance(executor, Executor):
            raise TypeError(f"launcher.executor must be a gensim.launch.executors.Executor, got "
                            f"{type(executor).__name__}; set launcher.executor._target_ in the config")
        self.simulation_config = dict(simulation)
        self.executor = executor
        self.n_parallel = int(n_parallel)
        self.max_worker_restarts = int(max_worker_restarts)
        self.log_dir = Path(log_dir) if log_dir else None

        self.ledger = Ledger()
        self.error: str | None = None
        self._budget = int(max_simulations)
        self._queue: deque[int] = deque()  # explicitly submitted simulations, served first
        self._in_flight: set[int] = set()
        self._restarts = 0
        self._next_id = 0
        self._seed = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._executor_started = False

    # -- public API -------------------------------------------------------------------------
    @property
    def budget(self) -> int:
        """Training simulations the study may start in all (started ones included)."""
        with self._lock:
            return self._budget

    def set_budget(self, n: int) -> None:
        """Change the training budget; takes effect at the next dispatch. Thread-safe.

        Lowering it below the number already started stops new training simulations; running
        ones finish.

        Parameters
        ----------
        n : int
            New budget, >= 0.
        """
        if int(n) < 0:
            raise ValueError(f"the simulation budget must be >= 0, got {n}")
        with self._lock:
            self._budget = int(n)

    def start(self, router: Router, sampler, token: bytes, seed: int = 0) -> None:
        """Start the executor and the dispatch thread.

        Parameters
        ----------
        router : Router
            Binds each simulation to a trainer rank and gives its receiver address.
        sampler : sampling.Sampler
            Source of training parameter vectors (``sample(1)``, shape (1, n_params)), in
            physical units; its ``space.validate`` checks every vector before it runs.
        token : bytes
            Study token (16 bytes); reaches the workers without a command line.
        seed : int
            Study seed; simulation ``k`` gets seed ``seed * 1_000_003 + k``.
        """
        if self._thread is not None:
            raise RuntimeError("this launcher is already started; build a new one per study")
        self._router, self._sampler, self._seed = router, sampler, int(seed)
        with self._lock:  # records submitted before start get their seed now
            for r in self.ledger.records.values():
                if r.state == "pending":
                    r.seed = self._seed * 1_000_003 + r.sim_id
        self.executor.start(self.simulation_config, bytes(token), self.n_parallel, self.log_dir)
        self._executor_started = True
        self._thread = threading.Thread(target=self._loop, daemon=True, name="gensim-launcher")
        self._thread.start()

    def submit(self, params: np.ndarray, purpose: str = "validation") -> list[int]:
        """Queue simulations of given parameters ahead of the sampler's.

        Parameters
        ----------
        params : ndarray, shape (n, n_params)
            Physical units.
        purpose : str
            Recorded with each simulation; the router picks the sink from it.

        Returns
        -------
        list of int
            The simulation ids, in order.
        """
        ids = []
        with self._lock:
            for p in np.atleast_2d(np.asarray(params, dtype=float)):
                ids.append(self._new_record(p, purpose).sim_id)
            self._queue.extend(ids)
        return ids

    def counts(self, purpose: str | None = None) -> dict[str, int]:
        """Simulations per state (pending, running, done, failed, cancelled)."""
        with self._lock:
            return self.ledger.counts(purpose)

    @property
    def exhausted(self) -> bool:
        """True when no more training data will come: budget spent and nothing running, or an error."""
        with self._lock:
            if self.error is not None or self._stop.is_set():
                return True
            c = self.ledger.counts("train")
            return c["pending"] == 0 and c["running"] == 0 and self._train_started() >= self._budget

    def shutdown(self) -> None:
        """Stop dispatching, stop the executor's workers, and mark unfinished simulations cancelled.

        Safe to call several times, and from ``finally`` blocks after an error or Ctrl-C.
        """
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)
        if self._executor_started:
            self.executor.shutdown()
        with self._lock:
            for r in self.ledger.records.values():
                if r.state in ("pending", "running"):
                    r.state = "cancelled"
            self._in_flight.clear()

    def state_dict(self) -> dict:
        """The ledger and the next simulation id (budget and queue belong to the caller)."""
        with self._lock:
            return {"ledger": self.ledger.state_dict(), "next_id": self._next_id}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` to continue its study (before :meth:`start`).

        Finished and failed simulations stay as recorded and are never run again; those still
        pending, running or cancelled when the state was saved are queued again, ahead of new
        ones, with their parameters, seed and id, so the budget counts each once.
        """
        with self._lock:
            self.ledger.load_state_dict(state["ledger"])
            self._next_id = int(state["next_id"])
            for r in self.ledger.records.values():
                if r.state in ("pending", "running", "cancelled"):
                    r.state = "pending"
                    self._queue.append(r.sim_id)

    # -- internals --------------------------------------------------------------------------
    def _train_started(self) -> int:
        return sum(1 for r in self.ledger.records.values() if r.purpose == "train")

    def _new_record(self, params: np.ndarray, purpose: str) -> SimulationRecord:
        sim_id = self._next_id
        self._next_id += 1
        record = SimulationRecord(sim_id=sim_id, params=[float(v) for v in params],
                                  seed=self._seed * 1_000_003 + sim_id, purpose=purpose)
        self.ledger.add(record)
        return record

    def _next_task(self) -> SimulationRecord | None:
        """The next simulation to run: submitted ones first, then one from the sampler."""
        if self._queue:
            return self.ledger.records[self._queue.popleft()]
        if self._train_started() >= self._budget:
            return None
        params = np.asarray(self._sampler.sample(1), dtype=float)[0]
        return self._new_record(params, "train")

    def _dispatch(self) -> None:
        while len(self._in_flight) < self.n_parallel:
            record = self._next_task()
            if record is None:
                return
            try:
                self._sampler.space.validate(record.params)
            except ValueError as exc:  # a bad parameter vector is recorded, never run
                record.state, record.error = "failed", str(exc)
                log.error("simulation %d not started: %s", record.sim_id, exc)
                continue
            address = self._router.assign(record)
            record.state = "running"
            self._in_flight.add(record.sim_id)
            self.executor.submit(Task(record.sim_id, list(record.params), record.seed, address))

    def _handle(self, outcome: Outcome) -> None:
        if outcome.worker_lost:
            self._restarts += 1
            if self._restarts > self.max_worker_restarts:
                where = self.log_dir or "the worker logs (set launcher.log_dir)"
                self.error = (f"simulation workers died {self._restarts} times (last exit code "
                              f"{outcome.exit_code}: {outcome.error}); read {where} for the cause")
                log.error(self.error)
        r = self.ledger.records.get(outcome.sim_id) if outcome.sim_id is not None else None
        if r is None:
            if outcome.sim_id is not None:
                log.warning("the executor reported an unknown simulation: %r", outcome)
            return
        self._in_flight.discard(r.sim_id)
        r.state, r.steps, r.seconds = outcome.state, outcome.steps, outcome.seconds
        r.error, r.exit_code = outcome.error, outcome.exit_code
        r.worker, r.job_id = outcome.worker, outcome.job_id

    def _loop(self) -> None:
        try:
            while not self._stop.is_set() and self.error is None:
                with self._lock:
                    self._dispatch()
                outcomes = self.executor.poll(0.1)
                with self._lock:
                    if self._stop.is_set():
                        return
                    for outcome in outcomes:
                        self._handle(outcome)
        except Exception as exc:  # e.g. a sampler that raises: say so instead of dying silently
            self.error = f"the launcher stopped: {type(exc).__name__}: {exc}"
            log.exception(self.error)
