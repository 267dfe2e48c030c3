"""The launcher: which simulations run, when, and what became of them."""

from __future__ import annotations

import logging
import secrets
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gensim.launch.executors.base import Executor, Outcome, Task
from gensim.launch.records import Attempt, Ledger, SimulationRecord

log = logging.getLogger("gensim.launch")

#: What happens to a training simulation that still fails after its retries.
ON_FAILURE = ("redraw", "drop")
#: Simulation ids are random integers of this many bits (positive in the wire's int64).
ID_BITS = 62


class Router(Protocol):
    """Binds each simulation to one trainer rank (implemented in :mod:`gensim.transport.routing`)."""

    def assign(self, record: SimulationRecord) -> str:
        """Register the simulation with one rank's receiver, set ``record.rank``, return the
        ZeroMQ address its worker must stream to."""


class Launcher:
    """Keep ``n_parallel`` simulations in flight, from a sampler and explicit submissions.

    The launcher decides *what* runs: it asks the sampler for a parameter vector whenever a slot
    is free and the training budget allows, serves retries and explicitly submitted simulations
    (the held-out set) first, validates parameters, has the router bind each simulation to a
    trainer rank, records every simulation and every attempt in the :attr:`ledger`, and gives
    up with a clear :attr:`error` when simulations keep failing. *How* a simulation starts is
    the executor's business (:class:`~gensim.launch.executors.LocalExecutor`,
    :class:`~gensim.launch.executors.SlurmExecutor`).

    **Faults.** A simulation fails when it raises, when its worker exits or is killed by a
    signal, or when it reports no progress for ``simulation_timeout_s`` seconds (the executor
    then kills it). A failed simulation is run again with the same id, parameters, seed and
    stream address up to ``max_retries`` times; the receiver drops the (simulation, step)
    messages it already has, so a retry adds only the steps that were missing. A training
    simulation that still fails is then replaced by a new draw of the sampler
    (``on_failure="redraw"``, which does not consume the budget) or given up
    (``on_failure="drop"``); a held-out simulation is given up (the held-out design is fixed),
    and the data module leaves it out of the held-out set.

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
    max_retries : int
        Extra attempts of a failed simulation, with the same parameters and seed.
    on_failure : {"redraw", "drop"}
        What becomes of a training simulation that failed all its attempts.
    simulation_timeout_s : float or None
        A running simulation that sends no time step for this many seconds is a hang: it is
        killed and counts as a failed attempt. It covers the start of a simulation (building
        it, its first step) too. None: never.
    max_consecutive_failures : int
        Failed attempts in a row (no simulation finishing in between) tolerated before the
        launcher gives up with :attr:`error`: a broken simulation config (every worker dies, or
        every run raises) would otherwise retry and redraw forever, while isolated faults in a
        long study never add up to it.
    log_dir : str, optional
        Folder for the workers' logs, handed to the executor.

    Notes
    -----
    Simulation ids are random 62-bit integers (:mod:`secrets`): an id seen on the wire tells
    nothing of another. Seeds are reproducible: the ``k``-th simulation created by a study
    started with seed ``s`` (held-out ones first, then training ones in order) gets seed
    ``s * 1_000_003 + k``, on every attempt.
    """

    def __init__(
        self,
        simulation: Mapping[str, Any],
        executor: Executor,
        n_parallel: int,
        max_simulations: int = 160,
        max_retries: int = 2,
        on_failure: str = "redraw",
        simulation_timeout_s: float | None = 600.0,
        max_consecutive_failures: int = 10,
        log_dir: str | None = None,
    ) -> None:
        if n_parallel < 1:
            raise ValueError(f"launcher.n_parallel must be >= 1, got {n_parallel}")
        if max_simulations < 0:
            raise ValueError(f"launcher.max_simulations must be >= 0, got {max_simulations}")
        if max_retries < 0:
            raise ValueError(f"launcher.max_retries must be >= 0 (0: no retry), got {max_retries}")
        if on_failure not in ON_FAILURE:
            raise ValueError(f"launcher.on_failure must be one of {ON_FAILURE}, got {on_failure!r}")
        if simulation_timeout_s is not None and not simulation_timeout_s > 0:
            raise ValueError(
                f"launcher.simulation_timeout_s must be positive seconds, or null for no "
                f"timeout, got {simulation_timeout_s}"
            )
        if max_consecutive_failures < 0:
            raise ValueError(f"launcher.max_consecutive_failures must be >= 0, got {max_consecutive_failures}")
        if not isinstance(executor, Executor):
            raise TypeError(
                f"launcher.executor must be a gensim.launch.executors.Executor, got "
                f"{type(executor).__name__}; set launcher.executor._target_ in the config"
            )
        self.simulation_config = dict(simulation)
        self.executor = executor
        self.n_parallel = int(n_parallel)
        self.max_retries = int(max_retries)
        self.on_failure = on_failure
        self.simulation_timeout_s = None if simulation_timeout_s is None else float(simulation_timeout_s)
        self.max_consecutive_failures = int(max_consecutive_failures)
        self.log_dir = Path(log_dir) if log_dir else None

        self.ledger = Ledger()
        self.error: str | None = None
        self._budget = int(max_simulations)
        self._queue: deque[int] = deque()  # retries and submitted simulations, served first
        self._in_flight: set[int] = set()
        self._addresses: dict[int, str] = {}  # stream address of every simulation dispatched
        self._failures_in_a_row = 0
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

    @property
    def unstarted(self) -> int:
        """Training simulations of the budget not started (yet, or ever: training ended first)."""
        with self._lock:
            return max(0, self._budget - self._train_started())

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
            Study seed; the ``k``-th simulation gets seed ``seed * 1_000_003 + k``.
        """
        if self._thread is not None:
            raise RuntimeError("this launcher is already started; build a new one per study")
        self._router, self._sampler, self._seed = router, sampler, int(seed)
        with self._lock:  # records submitted before start get their seed now
            for r in self.ledger.records.values():
                if r.state == "pending" and not r.attempts:
                    r.seed = self._seed_of(r.index)
        self.executor.start(
            self.simulation_config,
            bytes(token),
            self.n_parallel,
            self.log_dir,
            simulation_timeout_s=self.simulation_timeout_s,
        )
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

    def sim_ids(self, purpose: str) -> set[int]:
        """The ids of the ledger's simulations of one purpose ("train" or "validation")."""
        with self._lock:
            return {r.sim_id for r in self.ledger.records.values() if r.purpose == purpose}

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
                    if r.attempts and r.attempts[-1].state == "running":
                        r.attempts[-1].state = "cancelled"
            self._in_flight.clear()

    def check_streams(self, received: Sequence[Mapping[str, Any]]) -> list[SimulationRecord]:
        """Fail the simulations that ended well but whose time steps the trainer never took.

        A process that exits normally after streaming only rejected messages (a wrong dtype or
        shape, another study's key) would otherwise count as done. Called at the end of a
        study with every rank's receiver counters; each simulation records its rejections by
        reason, and one that is ``done`` with no accepted time step, while it sent its END or
        had messages rejected, becomes ``failed`` with the first rejection's reason and
        details (expected versus received header) as its error.

        Parameters
        ----------
        received : sequence of mapping
            Per rank: ``accepted_per_sim``, ``finished``, ``rejected_per_sim`` and
            ``rejection_details``, as in :class:`gensim.transport.ReceiverStats`.

        Returns
        -------
        list of SimulationRecord
            The simulations marked failed by this call.
        """
        accepted: dict[int, int] = {}
        finished: set[int] = set()
        rejected: dict[int, dict[str, int]] = {}
        details: dict[int, str] = {}
        for rank in received:
            for sim_id, n in rank["accepted_per_sim"].items():
                accepted[int(sim_id)] = accepted.get(int(sim_id), 0) + int(n)
            finished.update(int(i) for i in rank["finished"])
            for sim_id, reasons in rank["rejected_per_sim"].items():
                mine = rejected.setdefault(int(sim_id), {})
                for reason, n in reasons.items():
                    mine[reason] = mine.get(reason, 0) + int(n)
            for sim_id, text in rank["rejection_details"].items():
                details.setdefault(int(sim_id), text)
        failed = []
        with self._lock:
            for r in self.ledger.records.values():
                # Only simulations this process's receivers registered (not those of a run
                # before a resume, whose record stays as it was), and only on evidence: its
                # END came, or rejections did.
                if r.sim_id not in accepted:
                    continue
                r.rejected = rejected.get(r.sim_id, {})
                if r.state != "done" or accepted[r.sim_id] != 0:
                    continue
                if r.rejected:
                    n = sum(r.rejected.values())
                    r.error = (
                        f"all {n} message(s) it sent were rejected by the trainer "
                        f"({', '.join(f'{k}: {v}' for k, v in sorted(r.rejected.items()))}); first: "
                        f"{details.get(r.sim_id, '?')}"
                    )
                elif r.sim_id in finished:
                    r.error = "it sent END but no time step reached the trainer"
                else:
                    continue
                r.state = "failed"
                if r.attempts:
                    r.attempts[-1].state, r.attempts[-1].error = "failed", r.error
                failed.append(r)
                log.error("%s simulation %d failed: %s", r.purpose, r.sim_id, r.error)
        return failed

    def state_dict(self) -> dict:
        """The ledger (budget and queue of submissions belong to the caller)."""
        with self._lock:
            return {"ledger": self.ledger.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the ledger of an interrupted study, before :meth:`start`.

        Simulations that were pending, running or cancelled are queued to run again first, with
        their ids, parameters and seeds; finished and failed ones are not rerun.
        """
        with self._lock:
            self.ledger.load_state_dict(state["ledger"])
            self._queue.clear()
            for r in self.ledger.records.values():
                if r.state in ("pending", "running", "cancelled"):
                    r.state = "pending"
                    if r.attempts and r.attempts[-1].state == "running":
                        r.attempts[-1].state = "cancelled"
                    self._queue.append(r.sim_id)

    # -- internals --------------------------------------------------------------------------
    def _seed_of(self, index: int) -> int:
        return self._seed * 1_000_003 + index

    def _train_started(self) -> int:
        """Training simulations that count against the budget (redrawn ones are replaced)."""
        return sum(1 for r in self.ledger.records.values() if r.purpose == "train" and r.replaced_by is None)

    def _new_id(self) -> int:
        while True:  # a collision among 2**62 ids is all but impossible; it would still be caught
            sim_id = secrets.randbits(ID_BITS)
            if sim_id not in self.ledger.records:
                return sim_id

    def _new_record(self, params: np.ndarray, purpose: str) -> SimulationRecord:
        index = len(self.ledger.records)
        record = SimulationRecord(
            sim_id=self._new_id(),
            params=[float(v) for v in params],
            seed=self._seed_of(index),
            purpose=purpose,
            index=index,
        )
        self.ledger.add(record)
        return record

    def _next_task(self) -> SimulationRecord | None:
        """The next simulation to run: retries and submitted ones first, then one from the sampler."""
        if self._queue:
            return self.ledger.records[self._queue.popleft()]
        if self._train_started() >= self._budget:
            return None
        return self._draw()

    def _draw(self) -> SimulationRecord:
        params = np.asarray(self._sampler.sample(1), dtype=float)[0]
        return self._new_record(params, "train")

    def _dispatch(self) -> None:
        while len(self._in_flight) < self.n_parallel:
            record = self._next_task()
            if record is None:
                return
            address = self._addresses.get(record.sim_id)
            if address is None:  # a first attempt (or the first in this process, after a resume)
                try:
                    self._sampler.space.validate(record.params)
                except ValueError as exc:  # a bad parameter vector is recorded, never run
                    record.state, record.error = "failed", str(exc)
                    log.error("simulation %d not started: %s", record.sim_id, exc)
                    continue
                address = self._addresses[record.sim_id] = self._router.assign(record)
            # A retry keeps its registration with the receiver (registering an id twice is an
            # error there), so it streams to the same rank and sink as its first attempt.
            record.state = "running"
            record.attempts.append(Attempt())
            self._in_flight.add(record.sim_id)
            self.executor.submit(Task(record.sim_id, list(record.params), record.seed, address))

    def _handle(self, outcome: Outcome) -> None:
        if outcome.state == "failed":
            self._failures_in_a_row += 1
            if self._failures_in_a_row > self.max_consecutive_failures:
                where = self.log_dir or "the worker logs (set launcher.log_dir)"
                self.error = (
                    f"simulations failed {self._failures_in_a_row} times in a row (last: "
                    f"{outcome.error}); read {where} for the cause, or raise "
                    "launcher.max_consecutive_failures if faults are expected this often"
                )
                log.error(self.error)
        else:
            self._failures_in_a_row = 0
        r = self.ledger.records.get(outcome.sim_id) if outcome.sim_id is not None else None
        if r is None:
            if outcome.sim_id is not None:
                log.warning("the executor reported an unknown simulation: %r", outcome)
            return
        self._in_flight.discard(r.sim_id)
        attempt = r.attempts[-1] if r.attempts else Attempt()
        attempt.state, attempt.steps, attempt.seconds = outcome.state, outcome.steps, outcome.seconds
        attempt.exit_code, attempt.signal, attempt.timed_out = outcome.exit_code, outcome.signal, outcome.timed_out
        attempt.error, attempt.worker, attempt.job_id = outcome.error, outcome.worker, outcome.job_id
        r.steps, r.seconds, r.error, r.exit_code = outcome.steps, outcome.seconds, outcome.error, outcome.exit_code
        r.worker, r.job_id = outcome.worker, outcome.job_id
        if outcome.state == "done":
            r.state = "done"
        elif len(r.attempts) <= self.max_retries and self.error is None:
            r.state = "pending"
            self._queue.appendleft(r.sim_id)  # before new simulations: its steps are partly in
            log.warning(
                "simulation %d failed (attempt %d of %d): %s; retrying it with the same parameters and seed",
                r.sim_id,
                len(r.attempts),
                self.max_retries + 1,
                outcome.error,
            )
        else:
            r.state = "failed"
            self._give_up(r)

    def _give_up(self, r: SimulationRecord) -> None:
        """A simulation failed all its attempts: redraw it (training, ``redraw``) or leave it."""
        n = len(r.attempts)
        if r.purpose == "train" and self.on_failure == "redraw" and self.error is None:
            new = self._draw()
            r.replaced_by = new.sim_id
            self._queue.appendleft(new.sim_id)
            log.warning(
                "training simulation %d failed %d attempt(s); replaced by a new draw, simulation %d",
                r.sim_id,
                n,
                new.sim_id,
            )
        else:
            log.warning("%s simulation %d failed %d attempt(s); given up", r.purpose, r.sim_id, n)

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
