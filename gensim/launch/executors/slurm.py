"""SLURM executor: simulations as job-array elements submitted through submitit."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gensim.launch.executors.base import Executor, Outcome, Task
from gensim.launch.orphans import Heartbeat

log = logging.getLogger("gensim.launch")


#: Shortest job time limit (minutes): above submitit's warning signal, 90 s + SLURM's 60 s of slack.
MIN_TIME_MINUTES = 3


class SlurmExecutor(Executor):
    """Run simulations as SLURM jobs through `submitit <https://github.com/facebookincubator/submitit>`_.

    **Jobs.** The tasks submitted between two :meth:`poll` calls (typically all the free slots
    the launcher fills at once) go to SLURM as *one job array* (``submitit``'s ``map_array``:
    one ``sbatch`` call, however many simulations), each array element running a group of up to
    ``sims_per_job`` simulations one after the other. Arrays keep the load on the controller
    at one submission per dispatch round and let SLURM cap the elements running at once
    (``array_parallelism``); groups amortize what a job costs before the first time step
    (scheduling, Python start-up, building the simulation) over several short simulations. A
    group fails element by element: a simulation that raises or kills its process fails
    alone (the job runs :func:`gensim.launch.worker.run_tasks`: the same worker as local runs,
    started as a subprocess inside the job, and restarted there if it dies).

    **Credentials.** The study token travels inside submitit's pickled payload, in a folder
    created with mode 0700, deleted when its job ends or is cancelled; never in ``argv`` nor in
    the sbatch script. Each task carries the
    address of the receiver it streams to. The compute nodes must reach that address: bind the
    receivers on an interface the nodes see (not loopback) on a real cluster, and put
    ``folder`` on a filesystem shared with the nodes.

    **Hangs and orphans.** Inside a job, the simulations run under a
    :class:`~gensim.launch.executors.LocalExecutor`, which kills a simulation silent for the
    launcher's ``simulation_timeout_s``. The trainer is on another node, so the workers cannot
    watch it as local ones do: the executor rewrites ``<folder>/heartbeat`` every
    ``heartbeat_s`` seconds, and a job whose heartbeat has not changed for
    ``heartbeat_stale_s`` seconds (the trainer died without cancelling it) stops its worker and
    ends (:class:`~gensim.launch.orphans.HeartbeatWatch`).

    **States.** A job's outcome is its returned list of per-simulation outcomes; a job that
    ends without a result (killed by SLURM: time limit, memory, ``scancel``, node failure)
    fails all its simulations and counts as one lost worker. submitit learns that a job ended
    without result from ``sacct``; on a cluster without accounting, such a job is only seen
    when the executor shuts down, so give ``time`` a comfortable margin there.

    Parameters
    ----------
    partition : str, optional
        SLURM partition (``--partition``); None: the cluster's default.
    time : int
        Time limit of one job, in minutes (``--time``): enough for ``sims_per_job``
        simulations plus start-up.
    cpus_per_task : int
        CPUs of one job (``--cpus-per-task``), for the solver's own threads.
    mem_gb : float, optional
        Memory of one job in GB (``--mem``); None: the partition's default.
    array_parallelism : int
        Most elements of one array running at once (``--array=0-N%P``). The launcher's
        ``n_parallel`` bounds the simulations in flight over all arrays.
    sims_per_job : int
        Simulations per array element, run one after the other.
    additional_parameters : mapping, optional
        Extra sbatch options, e.g. ``{"account": "proj42", "qos": "debug"}``
        (submitit's ``slurm_additional_parameters``).
    folder : str, optional
        Folder of submitit's payloads, scripts and job logs; created with mode 0700. None:
        ``<log_dir>/slurm`` of the study (the run directory's ``workers/slurm``).
    heartbeat_s : float
        Seconds between two rewrites of the heartbeat file.
    heartbeat_stale_s : float
        Seconds without a new heartbeat after which a job takes the trainer for dead and ends;
        several times ``heartbeat_s``, with room for the shared filesystem's delays.
    """

    def __init__(
        self,
        partition: str | None = None,
        time: int = 60,
        cpus_per_task: int = 1,
        mem_gb: float | None = 4,
        array_parallelism: int = 256,
        sims_per_job: int = 1,
        additional_parameters: Mapping[str, Any] | None = None,
        folder: str | None = None,
        heartbeat_s: float = 5.0,
        heartbeat_stale_s: float = 60.0,
    ) -> None:
        for name, value in (
            ("time", time),
            ("cpus_per_task", cpus_per_task),
            ("array_parallelism", array_parallelism),
            ("sims_per_job", sims_per_job),
        ):
            if int(value) < 1:
                raise ValueError(f"SlurmExecutor.{name} must be >= 1, got {value}")
        if int(time) < MIN_TIME_MINUTES:
            # submitit asks SLURM for USR2 90 s before the time limit (its preemption signal),
            # and SLURM may send it up to 60 s early: a shorter job can be signalled at its start.
            raise ValueError(
                f"SlurmExecutor.time must be >= {MIN_TIME_MINUTES} minutes, got {time}: SLURM sends "
                "the job its end-of-time warning (USR2) up to 150 s before the limit"
            )
        if mem_gb is not None and mem_gb <= 0:
            raise ValueError(f"SlurmExecutor.mem_gb must be positive or None, got {mem_gb}")
        if not heartbeat_s > 0:
            raise ValueError(f"SlurmExecutor.heartbeat_s must be positive seconds, got {heartbeat_s}")
        if not heartbeat_stale_s >= 2 * heartbeat_s:
            raise ValueError(
                f"SlurmExecutor.heartbeat_stale_s ({heartbeat_stale_s}) must be at least twice "
                f"heartbeat_s ({heartbeat_s}), or live trainers would be taken for dead; raise it"
            )
        self.heartbeat_s, self.heartbeat_stale_s = float(heartbeat_s), float(heartbeat_stale_s)
        self.simulation_timeout_s: float | None = None
        self._heartbeat: Heartbeat | None = None
        self.partition = partition
        self.time = int(time)
        self.cpus_per_task = int(cpus_per_task)
        self.mem_gb = mem_gb
        self.array_parallelism = int(array_parallelism)
        self.sims_per_job = int(sims_per_job)
        self.additional_parameters = dict(additional_parameters or {})
        self.folder = Path(folder) if folder else None
        self._executor = None
        self._queued: list[Task] = []  # submitted, not yet given to SLURM
        self._jobs: list[tuple[Any, list[Task]]] = []  # (submitit job, its group), unfinished
        self._stopped = False

    def start(
        self,
        simulation: Mapping[str, Any],
        token: bytes,
        n_parallel: int,
        log_dir: Path | None,
        simulation_timeout_s: float | None = None,
    ) -> None:
        """Create the private job folder, start the heartbeat and the submitit executor.

        Parameters
        ----------
        simulation : mapping
            Simulation config with ``_target_``; pickled into every job.
        token : bytes
            Study token; pickled into every job, inside the 0700 folder.
        n_parallel : int
            Unused here: the launcher bounds the simulations in flight, SLURM the elements
            running at once.
        log_dir : Path or None
            Study log folder; the job folder defaults to ``log_dir/slurm``.
        simulation_timeout_s : float or None
            Hang timeout of one simulation, applied inside each job; None: never.

        Raises
        ------
        RuntimeError
            If submitit is not installed or no ``folder`` can be chosen.
        """
        if self._executor is not None:
            raise RuntimeError("this SlurmExecutor is already started; build a new one per study")
        try:
            import submitit
        except ImportError as exc:
            raise RuntimeError("the SLURM executor needs submitit: pip install 'gensim-surrogates[slurm]'") from exc
        folder = self.folder or (Path(log_dir) / "slurm" if log_dir else None)
        if folder is None:
            raise RuntimeError(
                "SlurmExecutor needs a folder for its jobs: set launcher.executor.folder or give the launcher a log_dir"
            )
        self.folder = _private_folder(folder)
        self._simulation = dict(simulation)
        self._token = bytes(token).hex()
        self.simulation_timeout_s = simulation_timeout_s
        self._heartbeat = Heartbeat(self.folder / "heartbeat", self.heartbeat_s)
        params: dict[str, Any] = {
            "time": self.time,
            "cpus_per_task": self.cpus_per_task,
            "array_parallelism": self.array_parallelism,
            "job_name": "gensim-sim",
            # One task per job, said explicitly: a job submitted from the trainer's own step
            # (rank 0 under srun) inherits its SLURM_NTASKS, and the job's srun would otherwise
            # ask for that many tasks and fail ("More processors requested than permitted").
            # SLURM sets the job's own value over the inherited one; the trainer's environment,
            # which Lightning reads on another thread, is never touched.
            "ntasks_per_node": 1,
        }
        if self.partition:
            params["partition"] = self.partition
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb * 1024)}MB"  # sbatch --mem takes integer units
        if self.additional_parameters:
            params["additional_parameters"] = self.additional_parameters
        submitit_log = logging.getLogger("submitit")
        if not any(isinstance(f, _FirstSacctErrorOnly) for f in submitit_log.filters):
            submitit_log.addFilter(_FirstSacctErrorOnly())
        self._executor = submitit.SlurmExecutor(folder=self.folder)
        self._executor.update_parameters(**params)

    def submit(self, task: Task) -> None:
        """Queue the task; it goes to SLURM, with the others of its round, at the next :meth:`poll`."""
        if self._stopped or self._executor is None:
            raise RuntimeError("this SlurmExecutor is not running (not started, or shut down)")
        self._queued.append(task)

    def poll(self, timeout: float) -> list[Outcome]:
        """Submit the queued tasks as one array, then collect the outcomes of finished jobs.

        Job results are files that submitit's jobs write; their states come from ``sacct``
        through submitit (rate-limited by submitit itself).
        """
        if self._queued and not self._stopped:
            self._submit_array()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            outcomes = self._collect()
            if outcomes or time.monotonic() >= deadline:
                return outcomes
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def shutdown(self) -> None:
        """Cancel every unfinished job (``scancel`` through submitit) and forget queued tasks."""
        self._stopped = True
        self._queued.clear()
        jobs, self._jobs = self._jobs, []
        for job, _ in jobs:
            if not job.done():
                try:
                    job.cancel(check=False)
                except OSError as exc:  # scancel missing or failing: say which job may linger
                    log.error("could not cancel SLURM job %s: %s", job.job_id, exc)
            _forget_payload(job)
        if self._heartbeat is not None:
            self._heartbeat.stop()

    def job_ids(self) -> list[str]:
        """SLURM ids of the unfinished jobs (for tests and diagnostics)."""
        return [job.job_id for job, _ in self._jobs]

    # -- internals --------------------------------------------------------------------------
    def _submit_array(self) -> None:
        from gensim.launch.worker import run_tasks

        tasks, self._queued = self._queued, []
        groups = [tasks[i : i + self.sims_per_job] for i in range(0, len(tasks), self.sims_per_job)]
        payloads = [[t.to_json() for t in g] for g in groups]
        n = len(groups)
        jobs = self._executor.map_array(
            run_tasks,
            [self._simulation] * n,
            payloads,
            [self._token] * n,
            [0.2] * n,
            [self.simulation_timeout_s] * n,
            [str(self._heartbeat.path)] * n,
            [self.heartbeat_stale_s] * n,
        )
        self._jobs.extend(zip(jobs, groups))
        log.info(
            "submitted %d simulation(s) to SLURM as %d job(s): %s", len(tasks), n, ", ".join(j.job_id for j in jobs)
        )

    def _collect(self) -> list[Outcome]:
        outcomes: list[Outcome] = []
        unfinished = []
        for job, group in self._jobs:
            if not job.done():
                unfinished.append((job, group))
                continue
            outcomes.extend(self._job_outcomes(job, group))
        self._jobs = unfinished
        return outcomes

    def _job_outcomes(self, job, group: list[Task]) -> list[Outcome]:
        """Per-simulation outcomes of a finished job: its result, or failures if it has none."""
        _forget_payload(job)
        try:
            reported = job.result()
        except Exception as exc:  # killed, timed out, or the job's Python failed outside a task
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            error = (
                f"SLURM job {job.job_id} ended without a result (state {job.state}): {first_line}; "
                f"see {job.paths.stderr}"
            )
            log.error(error)
            # One lost worker per job, whatever the size of its group.
            return [
                Outcome(t.sim_id, "failed", error=error, job_id=job.job_id, worker_lost=(i == 0))
                for i, t in enumerate(group)
            ]
        outcomes = [Outcome(**{**o, "job_id": job.job_id, "worker": None}) for o in reported]
        missing = {t.sim_id for t in group} - {o.sim_id for o in outcomes}
        outcomes += [
            Outcome(s, "failed", error=f"SLURM job {job.job_id} did not report this simulation", job_id=job.job_id)
            for s in sorted(missing)
        ]
        return outcomes


class _FirstSacctErrorOnly(logging.Filter):
    """Let through the first of submitit's "Bypassing sacct error" warnings only.

    Without SLURM accounting every state check fails, and submitit warns each time (every 2 s
    while jobs start): once says it all.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        first, self.seen = not self.seen, True
        return first


def _forget_payload(job) -> None:
    """Delete a job's pickled payload once the job no longer needs it: it holds the study token."""
    try:
        job.paths.submitted_pickle.unlink(missing_ok=True)
    except OSError as exc:  # the folder is private anyway; say so rather than fail the study
        log.warning("could not delete %s: %s", job.paths.submitted_pickle, exc)


def _private_folder(folder: Path) -> Path:
    """Create ``folder`` (and parents) and make it readable by its owner only: it holds the token."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask, and the folder may exist
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode != 0o700:
        raise PermissionError(
            f"SLURM job folder {folder} has mode {oct(mode)}, expected 0o700 (it holds the "
            "study token); use a folder you own"
        )
    return folder
