"""Checks of a composed study config before anything starts.

Every size, count, rate and duration of ``conf/`` that a study reads is checked here, on the
config as Hydra composed it, before a single simulation, socket or thread exists. A bad value
would otherwise surface late (a negative batch size after the held-out phase), as a misleading
error from deep inside a component, or not at all (``data.steps_per_epoch=0`` trained forever
on empty epochs). All problems are reported at once, each with the key, the value given, what
is expected and an example of a valid override.

Keys a config does not have are skipped: config groups differ (a buffer without ``capacity``,
a launcher without a SLURM section), and each component still checks what it receives.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gensim.launch.executors.slurm import MIN_TIME_MINUTES
from gensim.launch.launcher import ON_FAILURE

_MISSING = object()


class ConfigError(ValueError):
    """A study config with invalid values; the message lists every problem and its fix."""


@dataclass(frozen=True)
class Rule:
    """What one numeric key of the study config accepts.

    Attributes
    ----------
    key : str
        Dotted key, e.g. ``"data.batch_size"``.
    integer : bool
        True for counts and sizes (bools are refused), False for any finite real.
    minimum : float
        Smallest accepted value.
    strict : bool
        True when ``minimum`` itself is refused (``> minimum`` instead of ``>=``).
    also : tuple
        Other accepted values, e.g. ``(None,)`` for an optional key or ``(-1,)`` for "unbounded".
    meaning : str
        What the value is, for the message.
    example : str
        A valid override, for the message.
    """

    key: str
    integer: bool
    minimum: float
    meaning: str
    example: str
    strict: bool = False
    also: tuple = ()

    def problem(self, value: object) -> str | None:
        """The message for ``value``, or None when it is accepted."""
        if any(value is None if a is None else (type(value) is type(a) and value == a) for a in self.also):
            return None
        if self.integer:
            ok_type, kind = isinstance(value, Integral) and not isinstance(value, bool), "an integer"
        else:
            ok_type = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
            kind = "a finite number"
        bound = f"> {self.minimum:g}" if self.strict else f">= {self.minimum:g}"
        if ok_type and (value > self.minimum if self.strict else value >= self.minimum):
            return None
        extra = "".join(f" or {a!r}" if a is not None else " or null" for a in self.also)
        return f"{self.key}={value!r}: expected {kind} {bound}{extra} ({self.meaning}); e.g. {self.example}"


#: The numeric keys of the shipped config groups.
RULES: tuple[Rule, ...] = (
    Rule("data.batch_size", True, 1, "samples per optimizer step over all ranks", "data.batch_size=128"),
    Rule(
        "data.steps_per_epoch",
        True,
        1,
        "batches per pseudo-epoch; validation runs after each",
        "data.steps_per_epoch=500",
    ),
    Rule("data.watermark", True, 1, "samples in the buffers before the first step", "data.watermark=1000"),
    Rule("data.n_validation", True, 1, "held-out simulations: they score the surrogate", "data.n_validation=16"),
    Rule(
        "data.validation_timeout_s",
        False,
        0,
        "seconds the held-out simulations may take",
        "data.validation_timeout_s=600",
        strict=True,
    ),
    Rule("data.prefetch", True, 0, "batches drawn ahead on a thread", "data.prefetch=1", also=(None,)),
    Rule("launcher.n_parallel", True, 1, "simulations in flight", "launcher.n_parallel=2"),
    Rule(
        "launcher.max_simulations",
        True,
        1,
        "training simulations; with none, no training sample would ever arrive",
        "launcher.max_simulations=160",
    ),
    Rule(
        "launcher.max_consecutive_failures",
        True,
        0,
        "failed attempts in a row before the study stops",
        "launcher.max_consecutive_failures=10",
    ),
    Rule("launcher.max_retries", True, 0, "new attempts of a failed simulation", "launcher.max_retries=2"),
    Rule(
        "launcher.simulation_timeout_s",
        False,
        0,
        "seconds without a message before a simulation is hung",
        "launcher.simulation_timeout_s=300",
        strict=True,
        also=(None,),
    ),
    Rule("launcher.executor.sims_per_job", True, 1, "simulations per SLURM job", "launcher.executor.sims_per_job=4"),
    Rule("launcher.executor.cpus_per_task", True, 1, "CPUs per SLURM job", "launcher.executor.cpus_per_task=1"),
    Rule(
        "launcher.executor.heartbeat_s",
        False,
        0,
        "seconds between the trainer's heartbeats to SLURM jobs",
        "launcher.executor.heartbeat_s=5",
        strict=True,
    ),
    Rule(
        "launcher.executor.heartbeat_stale_s",
        False,
        0,
        "seconds without a heartbeat before a job ends",
        "launcher.executor.heartbeat_stale_s=60",
        strict=True,
    ),
    Rule(
        "launcher.executor.time",
        True,
        MIN_TIME_MINUTES,
        "minutes per SLURM job (above the end-of-time warning)",
        "launcher.executor.time=60",
    ),
    Rule("buffer.capacity", True, 1, "samples the replay buffer holds", "buffer.capacity=8000"),
    Rule(
        "buffer.max_bytes",
        False,
        0,
        "bound on the buffer's storage in bytes",
        "buffer.max_bytes=1e9",
        strict=True,
        also=(None,),
    ),
    Rule("transport.rcvhwm", True, 1, "messages ZeroMQ queues per receiver", "transport.rcvhwm=64"),
    Rule("transport.tag_threads", True, 1, "threads hashing message tags per receiver", "transport.tag_threads=2"),
    Rule(
        "transport.wake_interval_s",
        False,
        0,
        "seconds between two wake-ups of the receive thread",
        "transport.wake_interval_s=0.02",
    ),
    Rule(
        "transport.max_message_bytes",
        True,
        1,
        "largest accepted message",
        "transport.max_message_bytes=null (twice a valid message)",
        also=(None,),
    ),
    Rule(
        "trainer.max_steps",
        True,
        1,
        "optimizer steps of the study; -1: until the stream ends",
        "trainer.max_steps=6000",
        also=(-1,),
    ),
    Rule(
        "schedule.steps_per_simulation",
        True,
        1,
        "optimizer steps per training simulation (sets trainer.max_steps)",
        "schedule.steps_per_simulation=80",
        also=(None,),
    ),
    Rule("trainer.num_nodes", True, 1, "nodes of the trainer job", "trainer.num_nodes=1"),
    Rule("model.lr", False, 0, "learning rate", "model.lr=1e-3", strict=True),
    Rule("model.warmup_steps", True, 0, "learning-rate warm-up steps", "model.warmup_steps=200"),
    Rule(
        "model.normalizer_warmup_batches",
        True,
        1,
        "batches the normalizers are fitted on",
        "model.normalizer_warmup_batches=100",
    ),
    Rule(
        "checkpoint.every_n_steps",
        True,
        1,
        "optimizer steps between checkpoints",
        "checkpoint.every_n_steps=500",
        also=(None,),
    ),
    Rule(
        "checkpoint.every_minutes",
        False,
        0,
        "wall-clock minutes between checkpoints",
        "checkpoint.every_minutes=10",
        strict=True,
        also=(None,),
    ),
    Rule(
        "checkpoint.buffer_max_bytes",
        False,
        0,
        "largest buffer saved with checkpoint.buffer=auto",
        "checkpoint.buffer_max_bytes=1e9",
        strict=True,
    ),
    Rule("simulation.n_steps", True, 1, "time steps per simulation", "simulation.n_steps=100"),
)


def _get(cfg: DictConfig, key: str) -> object:
    """The resolved value at a dotted key, or ``_MISSING``."""
    return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)


def world_size(cfg: DictConfig) -> int | None:
    """Trainer ranks the config asks for (devices x nodes), or None when not a plain count
    (``devices: auto`` or a list of device indices)."""
    devices = _get(cfg, "trainer.devices")
    nodes = _get(cfg, "trainer.num_nodes")
    nodes = 1 if nodes is _MISSING else nodes
    if isinstance(devices, bool) or not isinstance(devices, Integral) or not isinstance(nodes, Integral):
        return None
    return int(devices) * int(nodes)


#: The mandatory keys of ``simulation=external`` and an example override of each.
EXTERNAL_EXAMPLES = {
    "command": "'simulation.command=\"{python} my_solver.py\"'",
    "parameters": "'simulation.parameters={a: [1.0, 2.0], k: [0.1, 1.0]}'",
    "fields": "'simulation.fields=[{name: u, shape: [16], dtype: float32}]'",
    "n_steps": "simulation.n_steps=10",
}


def _config_dirs() -> list[Path]:
    """The folders of the running Hydra app's config search path (``--config-dir``,
    ``hydra.searchpath``), or none outside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        sources = HydraConfig.get().runtime.config_sources
    except (ImportError, ValueError):  # not inside a Hydra app (a test, a script)
        return []
    return [Path(s.path) for s in sources if s.schema == "file"]


def import_problem(key: str, target: str) -> str | None:
    """Why the module of a ``_target_`` cannot be imported, with the folder to add, or None.

    The module is looked up (``importlib.util.find_spec``), not imported. When it is missing, the
    folder that holds it is searched for in the working directory, the config folders and
    their parents, so that the message can name the ``PYTHONPATH`` to set.
    """
    module = target.rpartition(".")[0] or target
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package is missing
        found = False
    if found:
        return None
    top = module.split(".")[0]
    places = [Path.cwd(), *(d for c in _config_dirs() for d in (c, *c.parents[:2]))]
    holders = [d.resolve() for d in places if (d / f"{top}.py").is_file() or (d / top / "__init__.py").is_file()]
    if holders:
        fix = f"{top} is in {holders[0]}: run PYTHONPATH={holders[0]} gensim-train ..."
    else:
        fix = f"put the folder that holds {top}.py (or the package {top}/) on PYTHONPATH: PYTHONPATH=<folder> gensim-train ..."
    return (
        f"{key}={target}: cannot import the module {module!r}, which is not on the Python path; {fix} "
        "(the simulation workers inherit PYTHONPATH); see docs/your-own-solver.md"
    )


def _cross_checks(cfg: DictConfig) -> Iterable[str]:
    """Problems that involve several keys; each assumes the keys passed their own rule."""
    target = _get(cfg, "simulation._target_")
    if isinstance(target, str):
        problem = import_problem("simulation._target_", target)
        if problem is not None:
            yield problem
        elif target.endswith("ExternalSimulation"):
            missing = [k for k in EXTERNAL_EXAMPLES if OmegaConf.is_missing(cfg.simulation, k)]
            if missing:
                yield (
                    f"simulation=external needs {', '.join('simulation.' + k for k in missing)}: the command "
                    "line run once per simulation and what it sends, e.g. "
                    + " ".join(EXTERNAL_EXAMPLES[k] for k in missing)
                    + " (docs/your-own-solver.md)"
                )
    strategy = str(_get(cfg, "trainer.strategy") if _get(cfg, "trainer.strategy") is not _MISSING else "auto")
    if "spawn" in strategy or "fork" in strategy:
        yield (
            f"trainer.strategy={strategy}: it starts ranks by copying the trainer, which holds the live "
            "stream (threads, sockets); Lightning's ddp strategy starts each rank as a new process running "
            "gensim-train instead: e.g. trainer.strategy=ddp, or the config trainer=ddp"
        )
    batch, watermark = _get(cfg, "data.batch_size"), _get(cfg, "data.watermark")
    if isinstance(batch, int) and isinstance(watermark, int) and watermark < batch:
        yield (
            f"data.watermark={watermark} is below data.batch_size={batch}: the first batches would repeat a "
            f"handful of samples; e.g. data.watermark={max(batch, 8 * batch)}"
        )
    on_failure = _get(cfg, "launcher.on_failure")
    if on_failure is not _MISSING and on_failure not in ON_FAILURE:
        yield (
            f"launcher.on_failure={on_failure!r}: expected one of {', '.join(ON_FAILURE)} (what becomes of a "
            "training simulation still failing after its retries); e.g. launcher.on_failure=redraw"
        )
    saved = _get(cfg, "checkpoint.buffer")
    if saved is not _MISSING and saved not in (True, False, "auto"):
        yield (
            f"checkpoint.buffer={saved!r}: expected true, false or auto (whether checkpoints hold the replay "
            "buffer); e.g. checkpoint.buffer=auto"
        )
    heartbeat, stale = _get(cfg, "launcher.executor.heartbeat_s"), _get(cfg, "launcher.executor.heartbeat_stale_s")
    if isinstance(heartbeat, Real) and isinstance(stale, Real) and stale < 2 * heartbeat:
        yield (
            f"launcher.executor.heartbeat_stale_s={stale} must be at least twice heartbeat_s={heartbeat}, or a job "
            "would end while its trainer is alive; e.g. launcher.executor.heartbeat_stale_s="
            f"{max(60, 12 * heartbeat):g}"
        )
    world = world_size(cfg)
    if world is not None and world > 1:
        if isinstance(batch, int) and batch % world:
            yield (
                f"data.batch_size={batch} is the global batch, split over {world} ranks: use a multiple of "
                f"{world}, e.g. data.batch_size={world * max(1, round(batch / world))}"
            )
        n_val = _get(cfg, "data.n_validation")
        if isinstance(n_val, int) and n_val < world:
            yield (
                f"data.n_validation={n_val} held-out simulations cannot be sharded over {world} ranks: "
                f"use at least {world}, e.g. data.n_validation={world}"
            )


def check_config(
    cfg: DictConfig, rules: Iterable[Rule] = RULES, extra: Iterable[Callable[[DictConfig], Iterable[str]]] = ()
) -> None:
    """Check every known key of a composed study config; raise one error listing all problems.

    Parameters
    ----------
    cfg : DictConfig
        The study config as composed by Hydra (interpolations are resolved here).
    rules : iterable of Rule
        Per-key rules; keys absent from ``cfg`` are skipped.
    extra : iterable of callable
        More checks, each yielding messages (tests and extensions).

    Raises
    ------
    ConfigError
        When any value is invalid: the message names each key, its value, what is expected and
        a valid override, and says that nothing was started.
    """
    problems = []
    for rule in rules:
        value = _get(cfg, rule.key)
        if value is _MISSING:
            continue
        message = rule.problem(value)
        if message is not None:
            problems.append(message)
    if not problems:  # cross checks read values that passed their own rule
        problems.extend(_cross_checks(cfg))
        for check in extra:
            problems.extend(check(cfg))
    if problems:
        raise ConfigError("invalid study configuration (nothing was started):\n  - " + "\n  - ".join(problems))
