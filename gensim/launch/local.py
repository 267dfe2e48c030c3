"""Local launcher: keeps N simulation worker processes busy on this machine."""

from __future__ import annotations

import json
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gensim.launch.records import Ledger, SimulationRecord

log = logging.getLogger("gensim.launch")

Sink = Callable[[Any], None]


class _Worker:
    """One worker process, the reader thread of its status pipe, and what it is running."""

    def __init__(self, index: int, cmd: list[str], log_path: Path | None, events: queue.Queue) -> None:
        self.index = index
        self.current: int | None = None
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        # A new session: a Ctrl-C in the terminal reaches the trainer only, which then stops
        # the workers in order, instead of every worker printing a KeyboardInterrupt.
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            text=True, bufsize=1, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, args=(events,), daemon=True,
                                        name=f"gensim-worker-{index}-status")
        self._reader.start()

    def _read(self, events: queue.Queue) -> None:
        for line in self.proc.stdout:
            try:
                events.put((self.index, json.loads(line)))
            except json.JSONDecodeError:
                log.warning("worker %d wrote a line that is not a status message: %r", self.index, line)
        events.put((self.index, None))  # end of stream: the process is exiting

    def assign(self, record: SimulationRecord) -> None:
        self.current = record.sim_id
        task = {"sim_id": record.sim_id, "params": record.params, "seed": record.seed}
        self.proc.stdin.write(json.dumps(task) + "\n")
        self.proc.stdin.flush()

    def stop(self, grace_s: float) -> None:
        """End the process: close its input, then SIGTERM, then SIGKILL."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=grace_s)
                break
            except subprocess.TimeoutExpired:
                continue
        self._reader.join(timeout=grace_s)
        if self._log is not subprocess.DEVNULL:
            self._log.close()


class LocalLauncher:
    """Keep ``n_parallel`` simulations running as separate OS processes on this machine.

    Each worker process runs several simulations in turn (see :mod:`gensim.launch.worker`). The
    launcher asks the sampler for a parameter vector whenever a worker is free, registers the new
    simulation with the receiver, records its state, and replaces workers that die.

    Parameters
    ----------
    simulation : mapping
        The simulation's Hydra config (with ``_target_``); every worker instantiates it.
    n_parallel : int
        Number of worker processes, i.e. simulations running at once.
    max_simulations : int
        Budget of training simulations for the study.
    max_worker_restarts : int
        Worker deaths tolerated before the launcher gives up (a broken simulation config would
        otherwise restart forever).
    log_dir : str, optional
        Folder for the workers' stderr (``worker-<k>.log``); None discards it.
    stop_grace_s : float
        Seconds given to a worker at each stage of shutdown (close input, SIGTERM, SIGKILL).
    """

    def __init__(
        self,
        simulation: Mapping[str, Any],
        n_parallel: int = 2,
        max_simulations: int = 128,
        max_worker_restarts: int = 10,
        log_dir: str | None = None,
        stop_grace_s: float = 2.0,
    ) -> None:
        if n_parallel < 1:
            raise ValueError(f"launcher.n_parallel must be >= 1, got {n_parallel}")
        if max_simulations < 0:
            raise ValueError(f"launcher.max_simulations must be >= 0, got {max_simulations}")
        self.simulation_config = dict(simulation)
        self.n_parallel = int(n_parallel)
        self.max_simulations = int(max_simulations)
        self.max_worker_restarts = int(max_worker_restarts)
        self.log_dir = Path(log_dir) if log_dir else None
        self.stop_grace_s = float(stop_grace_s)

        self.ledger = Ledger()
        self.error: str | None = None
        self._queue: deque[int] = deque()  # explicitly submitted simulations, served first
        self._sinks: dict[int, Sink] = {}
        self._events: queue.Queue = queue.Queue()
        self._workers: list[_Worker | None] = []
        self._restarts = 0
        self._next_id = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public API -------------------------------------------------------------------------
    def start(self, receiver, sampler, train_sink: Sink, seed: int = 0) -> None:
        """Start the workers and the dispatch thread.

        Parameters
        ----------
        receiver : gensim.transport.Receiver
            Started receiver; its ``address`` is handed to the workers.
        sampler : sampling.Sampler
            Source of training parameter vectors (``sample(1)``), in physical units.
        train_sink : callable
            Where accepted training samples go (e.g. a buffer's ``add``).
        seed : int
            Study seed; simulation ``k`` gets seed ``seed * 1_000_003 + k``.
        """
        if self._thread is not None:
            raise RuntimeError("this launcher is already started; build a new one per study")
        self._receiver, self._sampler, self._train_sink = receiver, sampler, train_sink
        self._seed = int(seed)
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self._cmd = [
            sys.executable, "-m", "gensim.launch.worker",
            "--address", receiver.address, "--token", receiver.token.hex(),
            "--simulation", json.dumps(self.simulation_config),
        ]
        self._workers = [self._spawn(i) for i in range(self.n_parallel)]
        self._thread = threading.Thread(target=self._loop, daemon=True, name="gensim-launcher")
        self._thread.start()

    def submit(self, params: np.ndarray, sink: Sink, purpose: str = "validation") -> list[int]:
        """Queue simulations of given parameters ahead of the sampler's.

        Parameters
        ----------
        params : ndarray, shape (n, n_params)
        sink : callable
            Receives their samples (e.g. a validation store).
        purpose : str
            Recorded with each simulation.

        Returns
        -------
        list of int
            The simulation ids, in order.
        """
        ids = []
        with self._lock:
            for p in np.atleast_2d(params):
                ids.append(self._new_record(p, purpose, sink).sim_id)
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
            return c["pending"] == 0 and c["running"] == 0 and self._train_started() >= self.max_simulations

    def shutdown(self) -> None:
        """Stop dispatching, end every worker process, and mark unfinished simulations cancelled.

        Safe to call several times, and from ``finally`` blocks after an error or Ctrl-C.
        """
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        for w in self._workers:
            if w is not None:
                w.stop(self.stop_grace_s)
        with self._lock:
            for r in self.ledger.records.values():
                if r.state in ("pending", "running"):
                    r.state = "cancelled"

    def state_dict(self) -> dict:
        with self._lock:
            return {"ledger": self.ledger.state_dict(), "next_id": self._next_id}

    def load_state_dict(self, state: dict) -> None:
        with self._lock:
            self.ledger.load_state_dict(state["ledger"])
            self._next_id = int(state["next_id"])

    # -- internals --------------------------------------------------------------------------
    def _spawn(self, index: int) -> _Worker:
        log_path = self.log_dir / f"worker-{index}.log" if self.log_dir else None
        return _Worker(index, self._cmd, log_path, self._events)

    def _train_started(self) -> int:
        return sum(1 for r in self.ledger.records.values() if r.purpose == "train")

    def _new_record(self, params: np.ndarray, purpose: str, sink: Sink) -> SimulationRecord:
        sim_id = self._next_id
        self._next_id += 1
        record = SimulationRecord(sim_id=sim_id, params=[float(v) for v in params],
                                  seed=self._seed * 1_000_003 + sim_id, purpose=purpose)
        self.ledger.add(record)
        self._sinks[sim_id] = sink
        return record

    def _next_task(self) -> SimulationRecord | None:
        """The next simulation to run: submitted ones first, then one from the sampler."""
        if self._queue:
            return self.ledger.records[self._queue.popleft()]
        if self._train_started() >= self.max_simulations:
            return None
        params = np.asarray(self._sampler.sample(1), dtype=float)[0]
        return self._new_record(params, "train", self._train_sink)

    def _dispatch(self) -> None:
        for w in self._workers:
            if w is None or w.current is not None:
                continue
            record = self._next_task()
            if record is None:
                return
            try:
                self._sampler.space.validate(record.params)
            except ValueError as exc:  # a bad parameter vector is recorded, never run
                record.state, record.error = "failed", str(exc)
                log.error("simulation %d not started: %s", record.sim_id, exc)
                continue
            self._receiver.register(record.sim_id, np.asarray(record.params), self._sinks[record.sim_id])
            record.state, record.worker = "running", w.index
            w.assign(record)

    def _handle(self, index: int, event: dict | None) -> None:
        w = self._workers[index]
        if event is None:  # the worker's output ended: it exited or crashed
            code = w.proc.wait()
            if w.current is not None:
                r = self.ledger.records[w.current]
                r.state, r.exit_code = "failed", code
                r.error = f"worker {index} exited with code {code} during the run"
                log.error("simulation %d failed: %s (see worker-%d.log)", r.sim_id, r.error, index)
            w.current = None
            if self._stop.is_set():
                return
            self._restarts += 1
            if self._restarts > self.max_worker_restarts:
                self.error = (f"simulation workers died {self._restarts} times (last exit code {code}); "
                              f"read {self.log_dir or 'the worker logs (set launcher.log_dir)'} for the cause")
                log.error(self.error)
                self._workers[index] = None
                return
            self._workers[index] = self._spawn(index)
            return
        r = self.ledger.records.get(event.get("sim_id"))
        if r is None:
            log.warning("worker %d reported an unknown simulation: %r", index, event)
            return
        if event.get("event") == "done":
            r.state, r.steps, r.seconds = "done", int(event.get("steps", 0)), float(event.get("seconds", 0.0))
        else:
            r.state, r.error = "failed", str(event.get("error"))
            log.error("simulation %d failed in worker %d: %s", r.sim_id, index, r.error)
        w.current = None

    def _loop(self) -> None:
        try:
            while not self._stop.is_set() and self.error is None:
                with self._lock:
                    self._dispatch()
                try:
                    index, event = self._events.get(timeout=0.1)
                except queue.Empty:
                    continue
                with self._lock:
                    if not self._stop.is_set():
                        self._handle(index, event)
        except Exception as exc:  # e.g. a sampler that raises: say so instead of dying silently
            self.error = f"the launcher stopped: {type(exc).__name__}: {exc}"
            log.exception(self.error)

