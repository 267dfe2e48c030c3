"""Local executor: persistent simulation worker processes on this machine."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gensim.launch.executors.base import PARENT_ENV, PROGRESS_ENV, TOKEN_ENV, Executor, Outcome, Task, signal_name
from gensim.launch.orphans import SpawnThread

log = logging.getLogger("gensim.launch")

#: Progress reports come at most this often (seconds), and at least 10 per hang timeout, so that
#: a slow but live simulation is never taken for a hung one.
PROGRESS_MAX_S = 1.0
#: Extra seconds a task may wait, beyond the hang timeout, for its worker to start it: a worker
#: started for this task (after a crash) first pays the interpreter's start-up and imports.
STARTUP_GRACE_S = 60.0


class _Worker:
    """One worker process, the reader thread of its status pipe, and the simulation it runs."""

    def __init__(
        self, index: int, cmd: list[str], env: dict[str, str], log_path: Path | None, events: queue.Queue
    ) -> None:
        self.index = index
        self.current: int | None = None
        self.steps = 0  # steps the running simulation reported so far
        self.last_progress = time.monotonic()  # when it last reported (or was assigned)
        self.timed_out = False  # killed by the executor for a hang
        self.task_started = False  # the worker took the current task ("started" event)
        # No log folder: the worker writes to our stderr (a SLURM job's log, for instance).
        self._log = open(log_path, "ab") if log_path else None
        # A new session (and process group): a Ctrl-C in the terminal reaches the trainer only,
        # which then stops the workers in order, instead of every worker printing a
        # KeyboardInterrupt; and a hung worker is killed with whatever it started (its group).
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._reader = threading.Thread(
            target=self._read, args=(events,), daemon=True, name=f"gensim-worker-{index}-status"
        )
        self._reader.start()

    def _read(self, events: queue.Queue) -> None:
        for line in self.proc.stdout:
            try:
                events.put((self, json.loads(line)))
            except json.JSONDecodeError:
                log.warning("worker %d wrote a line that is not a status message: %r", self.index, line)
        events.put((self, None))  # end of stream: the process is exiting

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def assign(self, task: Task) -> None:
        self.current, self.steps, self.timed_out, self.task_started = task.sim_id, 0, False, False
        self.last_progress = time.monotonic()
        try:
            self.proc.stdin.write(json.dumps(task.to_json()) + "\n")
            self.proc.stdin.flush()
        except OSError:  # it died before reading: its reader reports the death and this task
            pass

    def kill_group(self) -> None:
        """SIGKILL the worker and every process of its group (a solver's own subprocesses)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # already gone
            pass

    def stop(self, grace_s: float) -> None:
        """End the process: close its input, then SIGTERM, then SIGKILL (its whole group)."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is signal.SIGKILL:
                self.kill_group()
            elif sig is not None and self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=grace_s)
                break
            except subprocess.TimeoutExpired:
                continue
        self._reader.join(timeout=grace_s)
        if self._log is not None:
            self._log.close()


class LocalExecutor(Executor):
    """Run simulations in ``n_parallel`` persistent worker processes on this machine.

    Each worker (``python -m gensim.launch.worker``) builds the simulation once and then runs
    the tasks it is given one at a time, so interpreter start-up and imports are paid once per
    worker, not per simulation. A worker that dies is reported (:attr:`Outcome.worker_lost`,
    with its exit code or the name of the signal that killed it) and replaced by a new process
    when its slot gets its next task; the launcher decides whether there is a next task.

    **Hangs.** Workers report when they take a task, after its first step, and then at least
    10 times per ``simulation_timeout_s`` (at most every second); a running simulation silent
    for ``simulation_timeout_s`` seconds is a hang: its worker's process group is killed with
    SIGKILL and the simulation reported failed with ``timed_out``. A worker that has not taken
    its task yet (a new process still importing) gets :data:`STARTUP_GRACE_S` more.

    **No orphans.** Every worker is started from one thread that lives until :meth:`shutdown`
    has stopped the workers (:class:`~gensim.launch.orphans.SpawnThread`), and asks the kernel
    to kill it when that thread's process dies (``PR_SET_PDEATHSIG`` on Linux); it also checks
    between time steps that its parent is alive. A trainer killed with SIGKILL leaves no worker
    behind.

    The study token reaches the workers through their environment (``GENSIM_TOKEN``), never
    their command line. Workers run in their own session, so a Ctrl-C in the terminal reaches
    the trainer only, which then stops them in order.

    Parameters
    ----------
    stop_grace_s : float
        Seconds given to a worker at each stage of shutdown: input closed, SIGTERM, SIGKILL.
    """

    def __init__(self, stop_grace_s: float = 2.0) -> None:
        if stop_grace_s < 0:
            raise ValueError(f"LocalExecutor.stop_grace_s must be >= 0 seconds, got {stop_grace_s}")
        self.stop_grace_s = float(stop_grace_s)
        self.simulation_timeout_s: float | None = None
        self._workers: list[_Worker | None] = []
        self._events: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._stopped = False
        self._spawner: SpawnThread | None = None

    def start(
        self,
        simulation: Mapping[str, Any],
        token: bytes,
        n_parallel: int,
        log_dir: Path | None,
        simulation_timeout_s: float | None = None,
    ) -> None:
        """Start ``n_parallel`` worker processes now, so their imports overlap the trainer's set-up.

        Parameters
        ----------
        simulation : mapping
            Simulation config with ``_target_``.
        token : bytes
            Study token, passed as ``GENSIM_TOKEN`` (hex) in the workers' environment.
        n_parallel : int
            Number of worker processes.
        log_dir : Path or None
            Each worker's stderr goes to ``log_dir/worker-<k>.log``; None: to this process's
            stderr.
        simulation_timeout_s : float or None
            Hang timeout (see the class doc); None: never.
        """
        if self._workers:
            raise RuntimeError("this LocalExecutor is already started; build a new one per study")
        if simulation_timeout_s is not None and not simulation_timeout_s > 0:
            raise ValueError(f"simulation_timeout_s must be positive seconds or None, got {simulation_timeout_s}")
        self.simulation_timeout_s = None if simulation_timeout_s is None else float(simulation_timeout_s)
        progress_s = (
            PROGRESS_MAX_S if self.simulation_timeout_s is None else min(PROGRESS_MAX_S, self.simulation_timeout_s / 10)
        )
        self._cmd = [sys.executable, "-m", "gensim.launch.worker", "--simulation", json.dumps(dict(simulation))]
        self._env = {
            **os.environ,
            TOKEN_ENV: bytes(token).hex(),
            PARENT_ENV: str(os.getpid()),
            PROGRESS_ENV: repr(progress_s),
        }
        self._log_dir = Path(log_dir) if log_dir else None
        if self._log_dir:
            self._log_dir.mkdir(parents=True, exist_ok=True)
        self._spawner = SpawnThread(name="gensim-local-spawn")
        with self._lock:
            self._workers = [self._spawn(k) for k in range(int(n_parallel))]

    def submit(self, task: Task) -> None:
        """Give the task to a free worker, starting a new process in its slot if the last one died.

        Raises
        ------
        RuntimeError
            If every worker is busy (the launcher submitted more than ``n_parallel`` tasks), or
            after :meth:`shutdown`.
        """
        with self._lock:
            if self._stopped:
                raise RuntimeError("this LocalExecutor is shut down; it takes no more tasks")
            free = [k for k, w in enumerate(self._workers) if w is None or w.current is None]
            if not free:
                raise RuntimeError(
                    f"all {len(self._workers)} local workers are busy; submit at most "
                    "n_parallel tasks before their outcomes arrive"
                )
            k = free[0]
            if self._workers[k] is None or not self._workers[k].alive:
                if self._workers[k] is not None:
                    self._workers[k].stop(0)
                self._workers[k] = self._spawn(k)
            self._workers[k].assign(task)

    def poll(self, timeout: float) -> list[Outcome]:
        """Status messages and worker deaths since the last call, as outcomes; kills hung workers."""
        outcomes: list[Outcome] = []
        try:
            item = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            item = None
        while item is not None:
            with self._lock:
                outcome = self._outcome(*item)
            if outcome is not None:
                outcomes.append(outcome)
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                item = None
        self._kill_hung()
        return outcomes

    def shutdown(self) -> None:
        """Close every worker's input, then SIGTERM, then SIGKILL, ``stop_grace_s`` apart."""
        with self._lock:
            self._stopped = True
            workers, self._workers = [w for w in self._workers if w is not None], []
        for w in workers:
            w.stop(self.stop_grace_s)
        if self._spawner is not None:  # after the workers: its end would SIGKILL them
            self._spawner.close()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        with self._lock:
            return [w.proc.pid for w in self._workers if w is not None and w.alive]

    # -- internals --------------------------------------------------------------------------
    def _spawn(self, index: int) -> _Worker:
        log_path = self._log_dir / f"worker-{index}.log" if self._log_dir else None
        # On the spawn thread: the workers' parent-death signal follows that thread's life.
        return self._spawner.call(_Worker, index, self._cmd, self._env, log_path, self._events)

    def _kill_hung(self) -> None:
        """Kill the workers whose simulation reported nothing for ``simulation_timeout_s``."""
        if self.simulation_timeout_s is None:
            return
        now = time.monotonic()
        with self._lock:
            for w in self._workers:
                if w is None or w.current is None or w.timed_out:
                    continue
                limit = self.simulation_timeout_s + (0.0 if w.task_started else STARTUP_GRACE_S)
                if now - w.last_progress > limit:
                    log.error(
                        "simulation %d in worker %d sent nothing for %.1f s (launcher."
                        "simulation_timeout_s): killing it",
                        w.current,
                        w.index,
                        now - w.last_progress,
                    )
                    w.timed_out = True
                    w.kill_group()  # its reader then sees the end of the output: the outcome

    def _outcome(self, w: _Worker, event: dict | None) -> Outcome | None:
        """Turn one status line (or the end of a worker's output) into an outcome."""
        if self._stopped:
            return None
        if event is None:  # the worker's output ended: it exited, crashed or was killed
            code = w.proc.wait()
            sim_id, w.current = w.current, None
            where = f"worker-{w.index}.log" if self._log_dir else "the worker's stderr"
            when = "during the run" if sim_id is not None else "while idle"
            sig = signal_name(code)
            if w.timed_out and sim_id is not None:
                error = (
                    f"no progress for {self.simulation_timeout_s:g} s (launcher.simulation_timeout_s): "
                    f"worker {w.index} killed after {w.steps} step(s) (see {where})"
                )
            elif sig is not None:
                error = f"worker {w.index} was killed by {sig} {when} (see {where})"
            else:
                error = f"worker {w.index} exited with code {code} {when} (see {where})"
            if sim_id is not None:
                log.error("simulation %d failed: %s", sim_id, error)
            return Outcome(
                sim_id,
                "failed",
                steps=w.steps if sim_id is not None else 0,
                error=error,
                exit_code=code if sig is None else None,
                signal=sig,
                timed_out=w.timed_out and sim_id is not None,
                worker=w.index,
                worker_lost=True,
            )
        sim_id = event.get("sim_id")
        if sim_id != w.current:
            log.warning("worker %d reported a simulation it was not running: %r", w.index, event)
            return None
        kind = event.get("event")
        if kind in ("started", "progress"):
            w.steps, w.last_progress = int(event.get("steps", w.steps)), time.monotonic()
            w.task_started = True
            return None
        w.current = None
        steps, seconds = int(event.get("steps", w.steps)), float(event.get("seconds", 0.0))
        if kind == "done":
            return Outcome(sim_id, "done", steps=steps, seconds=seconds, worker=w.index)
        log.error("simulation %d failed in worker %d: %s", sim_id, w.index, event.get("error"))
        return Outcome(
            sim_id,
            "failed",
            steps=steps,
            seconds=seconds,
            error=str(event.get("error")),
            exit_code=event.get("exit_code"),
            worker=w.index,
        )
