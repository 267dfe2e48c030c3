"""The executor interface: how a simulation worker starts, independent of what it runs.

The :class:`~gensim.launch.Launcher` decides *what* runs (parameters, budget, ledger, restarts);
an :class:`Executor` decides *how*: local subprocesses, SLURM jobs through submitit, ... The
launcher hands it :class:`Task` objects and reads back :class:`Outcome` objects; it never sees a
process, a job or a command line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

#: Name of the environment variable that carries the study token (hex) to a worker process.
#: Credentials travel through the environment or a private file, never on a command line,
#: where every user of the machine can read them (``ps``, ``/proc/<pid>/cmdline``).
TOKEN_ENV = "GENSIM_TOKEN"

#: Environment variable that tells a worker process the id of the process that must outlive it
#: (its executor's): the worker exits when that process dies (see :mod:`gensim.launch.orphans`).
PARENT_ENV = "GENSIM_PARENT_PID"

#: Environment variable with the seconds between two progress reports of a worker (see
#: :mod:`gensim.launch.worker`); the executor sets it well below its hang timeout.
PROGRESS_ENV = "GENSIM_PROGRESS_S"


@dataclass(frozen=True)
class Task:
    """One simulation to run, as the worker receives it.

    Attributes
    ----------
    sim_id : int
        Simulation id, unique within the study; also the id on the wire.
    params : list of float
        Parameter vector, length n_params, physical units.
    seed : int
        Seed handed to the simulation.
    address : str
        ZeroMQ endpoint its time steps stream to (the receiver of the rank the router chose).
    """

    sim_id: int
    params: list[float]
    seed: int
    address: str

    def to_json(self) -> dict[str, Any]:
        """The task as the worker protocol carries it (see :mod:`gensim.launch.worker`)."""
        return asdict(self)


@dataclass(frozen=True)
class Outcome:
    """What an executor reports about a simulation that ended, or about a lost worker.

    Attributes
    ----------
    sim_id : int or None
        The simulation, or None when a worker died while it had no simulation (a broken
        simulation config typically kills the worker before its first task).
    state : {"done", "failed"}
        ``done``: the simulation sent all its steps and said so; ``failed`` otherwise.
    steps : int
        Time steps sent, as reported by the worker.
    seconds : float
        Wall time of the simulation inside the worker.
    error : str or None
        Why it failed.
    exit_code : int or None
        Exit code of the worker process when it exited during the simulation, or the non-zero exit code of an external command
        (``simulation=external``) that failed.
    signal : str or None
        Name of the signal that killed the worker process during the simulation (``"SIGKILL"``).
    timed_out : bool
        True when the executor killed the worker because the simulation reported no progress
        for ``simulation_timeout_s`` seconds (a hang).
    worker : int or None
        Local worker slot that ran it, when the executor has slots.
    job_id : str or None
        Scheduler job id that ran it, when the executor submits jobs.
    worker_lost : bool
        True when the process or job running the simulation died instead of reporting (a crash,
        a kill, a hang killed by the executor, a job that ended without result); a simulation
        that raised an error is failed but not lost. For diagnostics: the launcher retries and
        counts every failed attempt alike (``max_consecutive_failures``).
    """

    sim_id: int | None
    state: Literal["done", "failed"]
    steps: int = 0
    seconds: float = 0.0
    error: str | None = None
    exit_code: int | None = None
    signal: str | None = None
    timed_out: bool = False
    worker: int | None = None
    job_id: str | None = None
    worker_lost: bool = False


class Executor(ABC):
    """Start simulation workers and report what became of each simulation.

    Life cycle: :meth:`start` once, then any number of :meth:`submit` and :meth:`poll` calls
    from one thread (the launcher's), then :meth:`shutdown`. The launcher keeps at most
    ``n_parallel`` submitted tasks without an outcome; an executor may rely on it.

    Every submitted task gets exactly one :class:`Outcome` from :meth:`poll`, unless
    :meth:`shutdown` comes first. A simulation that reports no progress for
    ``simulation_timeout_s`` seconds is killed (its worker's whole process group) and reported
    failed with ``timed_out``. Workers must not outlive the process that runs the executor
    (the trainer), even when it is killed with SIGKILL. The worker must receive the study token without it appearing
    on any command line (environment variable :data:`TOKEN_ENV`, or a file readable by the
    user only).
    """

    @abstractmethod
    def start(
        self,
        simulation: Mapping[str, Any],
        token: bytes,
        n_parallel: int,
        log_dir: Path | None,
        simulation_timeout_s: float | None = None,
    ) -> None:
        """Prepare to run simulations (start workers, create folders).

        Parameters
        ----------
        simulation : mapping
            The simulation's Hydra config (with ``_target_``), JSON-serializable; every worker
            instantiates it.
        token : bytes
            Study token, 16 bytes; the workers send it with every message.
        n_parallel : int
            Most tasks the launcher will have submitted without an outcome at any time.
        log_dir : Path or None
            Folder for the workers' logs; None: the executor's default.
        simulation_timeout_s : float or None
            A simulation that reports no progress (no time step sent) for this many seconds
            is a hang: its worker is killed and the simulation reported failed with
            ``timed_out``. None: never.
        """

    @abstractmethod
    def submit(self, task: Task) -> None:
        """Hand over one simulation; must not block on the simulation itself.

        Parameters
        ----------
        task : Task
        """

    @abstractmethod
    def poll(self, timeout: float) -> list[Outcome]:
        """Outcomes that arrived since the last call, waiting at most ``timeout`` seconds for one.

        Parameters
        ----------
        timeout : float
            Seconds to wait when nothing has arrived yet; 0 returns at once.

        Returns
        -------
        list of Outcome
            Possibly empty.
        """

    @abstractmethod
    def shutdown(self) -> None:
        """Stop every worker, process or job this executor started, running or queued.

        Idempotent; callable from ``finally`` blocks after an error or a Ctrl-C. Tasks without
        an outcome get none.
        """


def signal_name(returncode: int | None) -> str | None:
    """The name of the signal that ended a process (``Popen.returncode`` < 0), else None.

    Examples
    --------
    >>> signal_name(-9)
    'SIGKILL'
    >>> signal_name(3) is None
    True
    """
    import signal

    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"
