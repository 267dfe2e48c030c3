"""Any executable as a simulation: a command line run once per parameter vector.

The process streams its own time steps to the trainer (with :meth:`gensim.client.Client.from_env`
in Python, or the C client of ``clients/c``); gensim only starts it, hands it its parameters and
credentials, and records how it ended. Configured by ``conf/simulation/external.yaml``::

    gensim-train simulation=external simulation.command='{python} my_solver.py'

What the process receives (``docs/wire-format.md``, "Environment"):

- always, in its environment: ``GENSIM_ADDRESS``, ``GENSIM_TOKEN`` (the study key: never on a
  command line), ``GENSIM_SIM_ID``, ``GENSIM_SEED``, ``GENSIM_N_STEPS``, ``GENSIM_PARAMS_FILE``
  (a JSON file ``{"sim_id", "seed", "n_steps", "params": {name: value}, "fields": [...]}``, in a
  private folder removed after the run) and one ``GENSIM_PARAM_<name>`` per parameter (``repr``
  of the float: exact);
- on its command line, where it asks for them: ``{<name>}`` (a parameter), ``{params_file}``,
  ``{seed}``, ``{sim_id}``, ``{n_steps}`` and ``{python}`` (the worker's interpreter, so that a
  Python solver runs in the study's environment).

Its standard output and error go to the worker's log; the last lines are kept in the error of
a run that exits with a non-zero code or outlives ``timeout_s``. This module imports no torch.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gensim.simulations.base import FieldSpec, Simulation
from sampling import ParameterSpace

__all__ = ["ExternalSimulation", "ExternalRunError"]

#: Lines of a failed run's output quoted in its error (the whole output is in the worker log).
TAIL_LINES = 20
#: Seconds between two heartbeats (progress reports to the executor) while the process runs.
BEAT_S = 0.2
#: Seconds a stopped process gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 2.0


class ExternalRunError(RuntimeError):
    """An external run that failed: a non-zero exit code, a signal, or its time limit.

    Attributes
    ----------
    exit_code : int or None
        The process's exit code (None when a signal ended it).
    """

    def __init__(self, message: str, exit_code: int | None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ExternalSimulation(Simulation):
    """Run ``command`` once per simulation; the process streams its steps itself.

    Parameters
    ----------
    command : str or sequence of str
        The command line: a string is split like a POSIX shell would (:func:`shlex.split`, no
        shell runs); placeholders in braces are filled per run (see the module doc). A literal
        brace is written twice (``{{``).
    parameters : mapping of str to [float, float]
        Parameter names and their bounds ``[lower, upper]``, physical units, in order.
    fields : sequence of mapping
        Output fields, each ``{name, shape, dtype}`` (dtype ``float32`` or ``float64``): what the
        receiver accepts, and what the process must send.
    n_steps : int
        Time steps one run sends.
    log_parameters : sequence of str
        Parameters sampled on a log10 scale (bounds > 0).
    times : sequence of float, optional
        The time grid of a run: the receiver rejects times outside its range. None: any time.
    cwd : str, optional
        Working directory of the process. None: the trainer's (where ``gensim-train`` started).
    env : mapping of str to str, optional
        More environment variables for the process.
    timeout_s : float, optional
        Wall-clock limit of one run, in seconds: the process (and everything it started) is
        killed beyond it and the run fails. The launcher's hang detection sees a running
        process as alive, whatever it sends, so this is what bounds a stuck solver. None: no
        limit.

    Attributes
    ----------
    streams_itself : bool
        True: the worker runs :meth:`stream` instead of sending :meth:`run`'s steps.
    """

    streams_itself = True

    def __init__(
        self,
        command: str | Sequence[str],
        parameters: Mapping[str, Sequence[float]],
        fields: Sequence[Mapping[str, Any]],
        n_steps: int,
        log_parameters: Sequence[str] = (),
        times: Sequence[float] | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self.command = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        if not self.command:
            raise ValueError(
                "simulation.command is empty; give the solver's command line, e.g. "
                "simulation.command='{python} my_solver.py'"
            )
        if not parameters:
            raise ValueError(
                "simulation.parameters is empty; give each parameter's bounds, e.g. "
                "simulation.parameters='{a: [1.0, 2.0]}'"
            )
        names = [str(n) for n in parameters]
        bounds = [tuple(float(v) for v in parameters[n]) for n in parameters]
        if any(len(b) != 2 for b in bounds):
            raise ValueError(f"simulation.parameters: each parameter needs [lower, upper], got {dict(parameters)}")
        unknown = sorted(set(log_parameters) - set(names))
        if unknown:
            raise ValueError(f"simulation.log_parameters names {unknown}, which are not parameters {names}")
        self.space = ParameterSpace(
            names, [b[0] for b in bounds], [b[1] for b in bounds], log=[n in set(log_parameters) for n in names]
        )
        if not fields:
            raise ValueError("simulation.fields is empty; declare each field as {name, shape, dtype}")
        self.fields = tuple(
            FieldSpec(str(f["name"]), tuple(f["shape"]), str(f.get("dtype", "float32"))) for f in fields
        )
        if int(n_steps) < 1:
            raise ValueError(f"simulation.n_steps must be >= 1, got {n_steps}")
        self.n_steps = int(n_steps)
        if times is not None:
            self.times = np.asarray(times, dtype=float).reshape(-1)
            if len(self.times) != self.n_steps:
                raise ValueError(f"simulation.times has {len(self.times)} values; expected n_steps = {self.n_steps}")
        self.cwd = cwd
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"simulation.timeout_s must be positive seconds or null, got {timeout_s}")
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self._check_placeholders()

    def _check_placeholders(self) -> None:
        """Fail now, not in every worker, on a placeholder that no run can fill."""
        try:
            self._command(np.mean([self.space.lower, self.space.upper], axis=0), 0, 0, "file")
        except (KeyError, IndexError, ValueError) as err:
            known = ["python", "params_file", "seed", "sim_id", "n_steps", *self.space.names]
            raise ValueError(
                f"simulation.command {' '.join(self.command)!r}: bad placeholder {err}; "
                f"known ones are {', '.join('{' + k + '}' for k in known)} "
                "(write a literal brace twice: {{)"
            ) from None

    def _command(self, params: np.ndarray, seed: int, sim_id: int, params_file: str) -> list[str]:
        values = {name: repr(float(v)) for name, v in zip(self.space.names, params)}
        return [
            part.format(
                python=sys.executable, params_file=params_file, seed=seed, sim_id=sim_id, n_steps=self.n_steps, **values
            )
            for part in self.command
        ]

    def environment(
        self, params: np.ndarray, seed: int, sim_id: int, address: str, token: str, params_file: str
    ) -> dict[str, str]:
        """The process's environment: this one's, ``env``, and the run's ``GENSIM_*`` variables."""
        from gensim.client import ENV_ADDRESS, ENV_SIM_ID, ENV_TOKEN

        run = {
            ENV_ADDRESS: address,
            ENV_TOKEN: token,
            ENV_SIM_ID: str(sim_id),
            "GENSIM_SEED": str(seed),
            "GENSIM_N_STEPS": str(self.n_steps),
            "GENSIM_PARAMS_FILE": params_file,
        }
        run |= {f"GENSIM_PARAM_{name}": repr(float(v)) for name, v in zip(self.space.names, params)}
        return {**os.environ, **self.env, **run}

    def stream(
        self,
        params: np.ndarray,
        seed: int | None,
        sim_id: int,
        address: str,
        token: str,
        heartbeat: Callable[[], None] = lambda: None,
    ) -> float:
        """Run the command once; it streams its steps to ``address`` itself.

        Parameters
        ----------
        params : ndarray, shape (n_params,)
            Physical units, inside :attr:`space`.
        seed : int or None
            Handed to the process (``GENSIM_SEED``, ``{seed}``); None is sent as 0.
        sim_id : int
            The simulation id the process must put in its headers (``GENSIM_SIM_ID``).
        address : str
            The receiver's endpoint (``GENSIM_ADDRESS``).
        token : str
            The study key, hex (``GENSIM_TOKEN``); only ever in the process's environment.
        heartbeat : callable
            Called about every :data:`BEAT_S` seconds while the process runs.

        Returns
        -------
        float
            Wall time of the run, in seconds.

        Raises
        ------
        ExternalRunError
            If the process exits with a non-zero code, is killed by a signal, or runs past
            ``timeout_s``; the message quotes the end of its output.
        """
        params = self.space.validate(params)[0]
        seed = 0 if seed is None else int(seed)
        folder = tempfile.mkdtemp(prefix="gensim-run-")  # mode 0700: the parameters stay private
        try:
            params_file = str(Path(folder) / "params.json")
            Path(params_file).write_text(
                json.dumps(
                    {
                        "sim_id": int(sim_id),
                        "seed": seed,
                        "n_steps": self.n_steps,
                        "params": {n: float(v) for n, v in zip(self.space.names, params)},
                        "fields": [{"name": f.name, "shape": list(f.shape), "dtype": f.dtype} for f in self.fields],
                    }
                )
            )
            cmd = self._command(params, seed, int(sim_id), params_file)
            env = self.environment(params, seed, int(sim_id), address, token, params_file)
            return self._execute(cmd, env, heartbeat)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _execute(self, cmd: list[str], env: dict[str, str], heartbeat: Callable[[], None]) -> float:
        start = time.perf_counter()
        from gensim.launch.orphans import die_with_parent_preexec

        try:
            # In the worker's process group, which the executor kills on a hang or at shutdown,
            # and killed by the kernel if the worker dies (a trainer killed with SIGKILL).
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=env,
                preexec_fn=die_with_parent_preexec(),
            )
        except OSError as err:
            raise ExternalRunError(
                f"cannot start {cmd[0]!r} ({err.strerror}); check simulation.command "
                f"and simulation.cwd ({self.cwd or os.getcwd()})",
                None,
            ) from None
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        reader = threading.Thread(target=_tee, args=(proc.stdout, tail), daemon=True, name="gensim-external-output")
        reader.start()
        timed_out = False
        try:
            while proc.poll() is None:
                heartbeat()
                if self.timeout_s is not None and time.perf_counter() - start > self.timeout_s:
                    timed_out = True
                    _stop_tree(proc)
                    break
                try:
                    proc.wait(BEAT_S)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            if proc.poll() is None:  # the worker itself is stopping (an exception, a signal)
                _stop_tree(proc)
            reader.join(STOP_GRACE_S)
        seconds = time.perf_counter() - start
        code = proc.returncode
        if code == 0 and not timed_out:
            return seconds
        last = "\n".join(tail) or "(no output)"
        if timed_out:
            why = f"ran past simulation.timeout_s = {self.timeout_s:g} s and was killed"
        elif code < 0:
            from gensim.launch.executors.base import signal_name

            why = f"was killed by {signal_name(code)}"
        else:
            why = f"exited with code {code}"
        raise ExternalRunError(
            f"command `{shlex.join(cmd)}` {why}; last output:\n{last}", None if code is None or code < 0 else code
        )

    def run(self, params: np.ndarray, seed: int | None = None) -> Iterator[tuple[int, float, Mapping[str, np.ndarray]]]:
        """Run the command in this process's reach and yield what it streams (off-line use).

        A private receiver on loopback, with a key of its own, takes the process's messages;
        the steps are yielded in the order they arrive. Used where no study streams (the
        off-line baselines' re-simulation, tests); in a study the worker calls :meth:`stream`.

        Raises
        ------
        ExternalRunError
            If the process fails (see :meth:`stream`), or sends no END, or any of its messages
            is rejected (the reason, with what was expected and what came).
        """
        import queue

        from gensim.transport import Receiver, wire

        key = wire.new_key()
        samples: queue.Queue = queue.Queue()
        failure: list[BaseException] = []
        done = threading.Event()
        with Receiver(self.fields, key, n_steps=self.n_steps, times=getattr(self, "times", None)) as rx:
            rx.register(0, np.asarray(params, float), samples.put)

            def execute() -> None:
                try:
                    self.stream(params, seed, 0, rx.address, key.hex())
                except BaseException as exc:  # re-raised in the generator's thread
                    failure.append(exc)
                finally:
                    done.set()

            thread = threading.Thread(target=execute, daemon=True, name="gensim-external-run")
            thread.start()
            while not (done.is_set() and samples.empty()):
                try:
                    s = samples.get(timeout=0.05)
                except queue.Empty:
                    continue
                yield s.step, s.t, {name: np.array(a) for name, a in s.fields.items()}
            thread.join()
            if failure:
                raise failure[0]
            finished = rx.wait_finished([0], timeout=5.0)
            while not samples.empty():  # steps that came in with the END
                s = samples.get()
                yield s.step, s.t, {name: np.array(a) for name, a in s.fields.items()}
            stats = rx.stats()
        if stats.rejected:
            detail = stats.rejection_details.get(0, "")
            raise ExternalRunError(
                f"command {' '.join(self.command)!r}: messages rejected {stats.rejected}: {detail}", 0
            )
        if not finished:
            raise ExternalRunError(
                f"command {' '.join(self.command)!r} exited with code 0 but no END "
                "reached the receiver: call client.end() after the last step, and check "
                "each field's dtype and shape against simulation.fields (ZeroMQ drops a "
                "frame over the receiver's size limit unseen)",
                0,
            )


def _tee(stream, tail: deque) -> None:
    """Copy the process's output to this process's stderr (the worker log), keeping the last lines."""
    for raw in stream:
        line = raw.decode(errors="replace")
        sys.stderr.write(line)
        tail.append(line.rstrip("\n"))
    sys.stderr.flush()


def _stop_tree(proc: subprocess.Popen) -> None:
    """SIGTERM the process and everything it started, then SIGKILL what is left after a grace period."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=STOP_GRACE_S)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
