"""No orphans: simulation workers end when the trainer that started them dies, however it dies.

Two mechanisms, one per place a worker can run:

- **Same machine** (:class:`~gensim.launch.executors.LocalExecutor`, and the worker a SLURM job
  starts inside itself): the worker asks the Linux kernel to SIGKILL it when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``, :func:`die_with_parent`), which works even while the
  simulation is stuck in native code, and also checks its parent between time steps
  (:func:`parent_alive`), which works on every POSIX system. The kernel's "parent" is the
  *thread* that started the worker, so executors start workers from a thread that lives as
  long as they do (:class:`SpawnThread`).
- **Another machine** (a SLURM job; the trainer is on a login or compute node elsewhere): the
  executor rewrites a heartbeat file in the job folder, which the nodes share, every few
  seconds (:class:`Heartbeat`); a job whose heartbeat stops changing for ``stale_s`` seconds
  (:class:`HeartbeatWatch`) stops its worker and ends.

This module must not import torch (workers import it).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from queue import Queue
from typing import Any

log = logging.getLogger("gensim.launch")

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int | None) -> bool:
    """Have the kernel SIGKILL this process when its parent dies (Linux); check it is alive now.

    Call it first thing in a worker. The parent may have died before the call (the kernel then
    never sends the signal), hence the check of :func:`os.getppid` after it.

    Parameters
    ----------
    parent_pid : int or None
        The process that started this one; None: not checked.

    Returns
    -------
    bool
        Whether the kernel will send the signal (False off Linux, or without a C library).
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if parent_pid is not None and not parent_alive(parent_pid):
        os._exit(_ORPHAN_EXIT)
    return armed


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` that arms the parent-death signal in the child.

    The C function is looked up here, in the parent, so that the child only calls it (no
    library loading between fork and exec). The parent is the thread that starts the child: a
    worker's external command dies with the worker. None off Linux.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


#: Exit code of a worker that found its trainer gone (``EX_UNAVAILABLE`` of sysexits.h).
_ORPHAN_EXIT = 69


def parent_alive(parent_pid: int | None) -> bool:
    """Whether the process ``parent_pid`` is still this process's parent.

    A process whose parent died is adopted by init or a subreaper, so its ``getppid()`` changes.
    """
    return parent_pid is None or os.getppid() == int(parent_pid)


class SpawnThread:
    """A thread that starts processes for its owner and lives as long as it does.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that started a process ends, not the whole
    parent process: a worker started from a short-lived thread (or from a launcher thread that
    ends before the executor stops its workers) would be killed with it. Every process an
    executor starts goes through this one thread, which ends in :meth:`close`, after the
    executor has stopped its workers.
    """

    def __init__(self, name: str = "gensim-spawn") -> None:
        self._calls: Queue = Queue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            fn, args, future = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # handed back to the caller, which raises it
                    future.set_exception(exc)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the thread and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            return fn(*args)
        if not self._thread.is_alive():
            raise RuntimeError("the spawn thread is closed; this executor starts no more processes")
        future: Future = Future()
        self._calls.put((fn, args, future))
        return future.result()

    def close(self) -> None:
        """End the thread (the processes it started get their parent-death signal). Idempotent."""
        if self._thread.is_alive():
            self._calls.put(None)
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=5.0)


class Heartbeat:
    """Rewrites ``path`` every ``interval_s`` seconds while the trainer lives.

    Each beat writes a new counter to a temporary file and renames it over ``path``: a reader on
    another node opens a new file each time, which NFS's close-to-open consistency makes visible
    at once (a bare ``utime`` would hide behind attribute caches for up to a minute).

    Parameters
    ----------
    path : Path
        File in a folder the jobs' nodes share.
    interval_s : float
        Seconds between beats.
    """

    def __init__(self, path: Path, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"the heartbeat interval must be positive seconds, got {interval_s}")
        self.path, self.interval_s = Path(path), float(interval_s)
        self._count = 0
        self._stop = threading.Event()
        self.beat()
        self._thread = threading.Thread(target=self._run, name="gensim-heartbeat", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        self._count += 1
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(f"{self._count} {time.time():.3f}\n")
        os.replace(tmp, self.path)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except OSError as exc:  # a full or unmounted disk: the jobs will stop, say why
                log.error("could not write the heartbeat %s: %s", self.path, exc)

    def stop(self) -> None:
        """Stop beating (jobs still running then stop within their ``stale_s``). Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)


class HeartbeatWatch:
    """Tells a job when its trainer's :class:`Heartbeat` has stopped.

    The content of the file is compared with the last one read, on this node's monotonic
    clock: clocks of different nodes need not agree.

    Parameters
    ----------
    path : Path
        The heartbeat file.
    stale_s : float
        Seconds without a change after which the trainer is taken for dead.
    """

    def __init__(self, path: Path, stale_s: float) -> None:
        if not stale_s > 0:
            raise ValueError(f"the heartbeat timeout must be positive seconds, got {stale_s}")
        self.path, self.stale_s = Path(path), float(stale_s)
        self._last: str | None = self._read()
        self._since = time.monotonic()

    def _read(self) -> str | None:
        try:
            return self.path.read_text()
        except OSError:
            return None

    def stale(self) -> bool:
        """True when the file has not changed for ``stale_s`` seconds (or has disappeared that long)."""
        now, content = time.monotonic(), self._read()
        if content is not None and content != self._last:
            self._last, self._since = content, now
        return now - self._since > self.stale_s
