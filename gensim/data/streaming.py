"""StreamingDataModule: training batches drawn from a replay buffer fed live by simulations.

With data-parallel training (``trainer=ddp``) every rank runs one :class:`StreamingDataModule`:
its own receiver and replay buffer, fed by the simulations routed to it; rank 0 alone runs the
launcher, the sampler and the held-out simulations (see :mod:`gensim.transport.routing`). The
ranks agree, through a few collectives (:mod:`gensim.data.ranks`), on when training may start
(every rank at its watermark) and when it must stop (a consuming buffer used up), so that every
rank takes the same optimizer steps and none is left alone in an all-reduce.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, StackDataset

from gensim.data.delivered import DeliveredSteps
from gensim.data.ranks import Ranks
from gensim.simulations.base import Sample, Simulation
from gensim.transport import wire
from gensim.transport.receiver import BatchSink, ReceiverStats
from gensim.transport.routing import Endpoint, RankRouter, Registrar, RoutingRule, advertised, control_address

log = logging.getLogger("gensim.data")

Batch = dict[str, np.ndarray]

#: One process, no distributed training (Ranks is frozen, so one instance serves every default).
SINGLE_PROCESS = Ranks()


def rows_per_chunk(n_features: int, max_bytes: int = 32 * 2**20) -> int:
    """Rows of ``n_features`` float32 values that fit ``max_bytes`` (at least 1, at most 512).

    The size of validation batches and evaluation chunks: the error computation makes a few
    float64 copies of a chunk, so a row count fixed whatever the field size (512 rows of a
    256 x 256 field are 128 MiB, 640 MiB with those copies) would make the peak memory grow with
    the fields.
    """
    return int(max(1, min(512, max_bytes // (4 * max(int(n_features), 1)))))


class ValidationStore:
    """Held-out simulations kept in memory once: one row per (simulation, step), all steps.

    Rows live in arrays preallocated for ``n_simulations x simulation.n_steps`` samples, in
    (simulation, step) order whatever the arrival order: a simulation's position is the place
    of its id in the list given to :meth:`expect` (ids are random; the order of the design is
    not). Thread-safe ``add`` (the receiver thread).

    The store holds complete simulations only: :meth:`tensors` leaves out every simulation
    with a missing step, and :meth:`drop` removes a simulation given up by the launcher (its
    partial steps included). A step received twice (a retried simulation resends its steps)
    overwrites its row with the same values.

    Parameters
    ----------
    simulation : Simulation
        For its fields, parameter dimension and number of steps.
    n_simulations : int
        Held-out simulations to hold.
    """

    def __init__(self, simulation: Simulation, n_simulations: int) -> None:
        self.simulation = simulation
        self.n_steps = int(simulation.n_steps)
        n = int(n_simulations) * self.n_steps
        self._params = np.zeros((n, simulation.space.dim), np.float32)
        self._t = np.zeros(n, np.float32)
        self._fields = np.zeros((n, sum(f.size for f in simulation.fields)), np.float32)
        self._sim_id = np.full(n, -1, np.int64)
        self._present = np.zeros(n, bool)
        self._position: dict[int, int] | None = None
        self._dropped: set[int] = set()
        self._early: list[Sample] = []  # arrivals before expect(): the launcher runs in its own thread
        self._lock = threading.Lock()

    def expect(self, sim_ids: list[int]) -> None:
        """Declare the held-out simulation ids; rows follow their order in ``sim_ids``."""
        if len(sim_ids) * self.n_steps > len(self._present):
            raise ValueError(
                f"{len(sim_ids)} held-out simulations do not fit a store made for {len(self._present) // self.n_steps}"
            )
        with self._lock:
            self._position = {int(s): k for k, s in enumerate(sim_ids)}
            early, self._early = self._early, []
        for sample in early:
            self.add(sample)

    def add(self, sample: Sample) -> None:
        """Store one held-out time step (the receiver's sink)."""
        with self._lock:
            if self._position is None:
                self._early.append(sample)
                return
            if sample.sim_id in self._dropped:  # a late step of a simulation given up
                return
            pos = self._position.get(sample.sim_id)
            if pos is None or not 0 <= sample.step < self.n_steps:
                log.warning(
                    "held-out sample (simulation %d, step %d) is not part of the held-out design of %d steps; dropped",
                    sample.sim_id,
                    sample.step,
                    self.n_steps,
                )
                return
            row = pos * self.n_steps + sample.step
            self._params[row] = sample.params
            self._t[row] = sample.t
            start = 0
            for f in self.simulation.fields:  # into the row's columns directly: no concatenated copy
                self._fields[row, start : start + f.size] = np.asarray(sample.fields[f.name]).reshape(-1)
                start += f.size
            self._sim_id[row] = sample.sim_id
            self._present[row] = True

    def drop(self, sim_id: int) -> int:
        """Remove a simulation from the held-out set (it failed): its rows and any later step.

        Returns
        -------
        int
            Rows of it that were stored (its partial steps), now removed.
        """
        with self._lock:
            self._dropped.add(int(sim_id))
            pos = None if self._position is None else self._position.get(int(sim_id))
            if pos is None:
                return 0
            rows = slice(pos * self.n_steps, (pos + 1) * self.n_steps)
            n = int(self._present[rows].sum())
            self._present[rows] = False
            return n

    def complete(self) -> list[int]:
        """Ids of the expected simulations whose every step is stored, in design order."""
        with self._lock:
            if self._position is None:
                return []
            present = self._present.reshape(-1, self.n_steps)
            return [s for s, k in self._position.items() if present[k].all()]

    def __len__(self) -> int:
        return int(self._present.sum())

    def state_dict(self) -> dict:
        """The held-out rows and which arrived (plain numpy arrays, for a checkpoint).

        Returns
        -------
        dict
            ``params`` (N, P), ``t`` (N,), ``fields`` (N, D), ``sim_id`` (N,), ``present`` (N,)
            with N = n_simulations x n_steps, and ``position`` (sim_id -> index).
        """
        with self._lock:
            if self._position is None:
                raise RuntimeError("the held-out set is not declared yet (expect() not called): nothing to save")
            return {
                "params": self._params.copy(),
                "t": self._t.copy(),
                "fields": self._fields.copy(),
                "sim_id": self._sim_id.copy(),
                "present": self._present.copy(),
                "position": dict(self._position),
            }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` saved for the same simulation and number of held-out runs."""
        if state["fields"].shape != self._fields.shape or state["params"].shape != self._params.shape:
            raise ValueError(
                f"the saved held-out set has fields {state['fields'].shape} and parameters "
                f"{state['params'].shape}, this study expects {self._fields.shape} and "
                f"{self._params.shape}: resume with the saved config (data.n_validation, "
                "simulation) unchanged"
            )
        with self._lock:
            for name in ("params", "t", "fields", "sim_id", "present"):
                getattr(self, f"_{name}")[...] = state[name]
            self._position = {int(k): int(v) for k, v in state["position"].items()}
            self._early = []

    def tensors(self) -> dict[str, torch.Tensor]:
        """``{"params": (N, P), "t": (N,), "fields": (N, D), "sim_id": (N,)}`` with N = sims x steps.

        Complete simulations only: a simulation with a missing step is left out whole (and
        logged). Shares memory with the store when every row arrived (no copy of the held-out
        set).
        """
        with self._lock:
            # Rows of simulations with a missing step: the held-out error must weigh every
            # simulation over its whole trajectory, not over the steps that happened to arrive.
            per_sim = self._present.reshape(-1, self.n_steps)
            partial = per_sim.any(axis=1) & ~per_sim.all(axis=1)
            if partial.any():
                log.warning(
                    "%d held-out simulation(s) have missing steps; left out of the held-out set", int(partial.sum())
                )
            keep = np.repeat(per_sim.all(axis=1), self.n_steps)
            if not keep.any():
                raise RuntimeError(
                    "no held-out data was received: every validation simulation failed; "
                    "read the worker logs in the run directory"
                )
            arrays = {"params": self._params, "t": self._t, "fields": self._fields, "sim_id": self._sim_id}
            if not keep.all():
                arrays = {k: v[keep] for k, v in arrays.items()}
            return {k: torch.from_numpy(v) for k, v in arrays.items()}


class StreamMean:
    """Running mean of every training field received (the trivial predictor), thread-safe.

    It runs on the receive thread for every time step, so each field is added into its own
    slice, no concatenated copy, in float32 over blocks of :attr:`BLOCK` samples that are then
    folded into a float64 sum: about three times cheaper than float64 additions for large
    fields, with a relative error of the mean below 1e-5 (at most ``BLOCK`` float32 roundings per
    block, about 4e-6 in the worst case).

    Parameters
    ----------
    simulation : Simulation
        For its fields, in order.
    """

    BLOCK = 64

    def __init__(self, simulation: Simulation) -> None:
        self._slices: list[tuple[str, slice]] = []
        start = 0
        for f in simulation.fields:
            self._slices.append((f.name, slice(start, start + f.size)))
            start += f.size
        self.sum = np.zeros(start, np.float64)
        self.count = 0
        self._block = np.zeros(start, np.float32)
        self._in_block = 0
        self._lock = threading.Lock()

    def add(self, fields: dict[str, np.ndarray]) -> None:
        """Add one sample's fields (``{name: array}`` of the declared shapes)."""
        self.add_many((fields,))

    def add_many(self, fields: Sequence[dict[str, np.ndarray]]) -> None:
        """Add the fields of several samples, in order: the same sums as one :meth:`add` each.

        Parameters
        ----------
        fields : sequence of dict of str to ndarray
            One ``{name: array}`` of the declared shapes per sample.
        """
        with self._lock:
            for one in fields:
                for name, cols in self._slices:
                    block = self._block[cols]
                    np.add(block, np.asarray(one[name]).reshape(-1), out=block, casting="unsafe")
                self.count += 1
                self._in_block += 1
                if self._in_block == self.BLOCK:
                    self._fold()

    def _fold(self) -> None:
        self.sum += self._block
        self._block[:] = 0.0
        self._in_block = 0

    def totals(self) -> tuple[np.ndarray, int]:
        """The float64 sum of every field received, shape (D,), and the number of samples."""
        with self._lock:
            self._fold()
            return self.sum.copy(), self.count

    def mean(self) -> np.ndarray:
        """Mean field, shape (D,) float32."""
        total, count = self.totals()
        if count == 0:
            raise RuntimeError("no training sample was received, so there is no mean field")
        return (total / count).astype(np.float32)


class _Prefetcher:
    """Draws the next batches on a background thread while the current one trains.

    Batches are converted to tensors there and, with ``pin_memory``, copied into page-locked
    memory, so that the copy to the GPU can be asynchronous (``non_blocking=True``). A None from
    ``draw`` ends the stream: it is passed on and the thread stops.
    """

    def __init__(self, draw: Callable[[], Batch | None], depth: int, pin_memory: bool) -> None:
        self._draw, self._pin = draw, pin_memory
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="gensim-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        item: object
        try:
            while not self._stop.is_set():
                batch = self._draw()
                item = None if batch is None else _as_tensors(batch, self._pin)
                self._put(item)
                if item is None:
                    return
        except BaseException as err:  # handed to the training thread, which raises it
            self._put(err)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def get(self) -> dict[str, torch.Tensor] | None:
        """The next batch; None, now and after, once the stream has ended."""
        if self._ended:
            return None
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        self._ended = item is None
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def _as_tensors(batch: Batch, pin_memory: bool) -> dict[str, torch.Tensor]:
    out = {k: torch.from_numpy(v) for k, v in batch.items()}
    return {k: v.pin_memory() for k, v in out.items()} if pin_memory else out


class BufferStream(IterableDataset):
    """An endless source of batches drawn from a live replay buffer, in pseudo-epochs.

    Each ``iter()`` yields ``steps_per_epoch`` batches. The first one waits until the buffer holds
    ``watermark`` samples, so early batches are not drawn from a handful of time steps.

    With several ranks, the watermark wait and, for a consuming buffer (FIFO), every draw are
    agreed upon by all ranks: training starts when every rank reached its watermark (or the
    stream ended), and an epoch ends on every rank as soon as one rank's consuming buffer is
    used up, so all ranks take the same steps.

    Parameters
    ----------
    buffer : gensim.buffers.ReplayBuffer
    batch_size : int
        This rank's batch size.
    steps_per_epoch : int
    watermark : int
        Minimum fill of this rank's buffer before the first batch.
    stream_ended : callable
        True when no more data can come (budget spent, or the launcher failed). Only the rank
        that runs the launcher knows; the others are told through the collectives.
    ranks : Ranks
        This process's rank; default a single process.
    prefetch : int
        Batches drawn ahead on a background thread (0: draw on the training thread). Ignored for
        a consuming buffer on several ranks, whose draws are collective.
    pin_memory : bool
        Batches in page-locked memory, for asynchronous copies to a GPU.
    wait_log_s : float
        Seconds between progress messages while waiting.
    flowing : callable, optional
        True once this rank received a sample in this process. A resumed study's buffer is full
        from the start; it waits until some rank's stream flows again (or the stream ended), as a
        fresh study waits for its first samples, so the time its simulations take to start again
        is not spent training on the saved data alone: without it, a resumed study trained its
        late simulations' data for fewer steps than an uninterrupted one (1.05x to 1.12x its
        held-out error, tests/gensim/test_resume.py). Default: never waits.
    """

    def __init__(
        self,
        buffer,
        batch_size: int,
        steps_per_epoch: int,
        watermark: int,
        stream_ended: Callable[[], bool],
        ranks: Ranks = SINGLE_PROCESS,
        prefetch: int = 0,
        pin_memory: bool = False,
        wait_log_s: float = 10.0,
        flowing: Callable[[], bool] | None = None,
    ) -> None:
        self.buffer, self.batch_size, self.steps_per_epoch = buffer, batch_size, steps_per_epoch
        self.watermark, self.stream_ended, self.wait_log_s = watermark, stream_ended, wait_log_s
        self.flowing = flowing or (lambda: True)
        self.ranks, self.prefetch, self.pin_memory = ranks, int(prefetch), bool(pin_memory)
        self._collective_draws = ranks.distributed and bool(getattr(buffer.draw_rule, "consumes", False))
        self._warm = False
        self._prefetcher: _Prefetcher | None = None
        #: True once a consuming buffer (FIFO) is empty and no more data can come.
        self.exhausted = False

    def _wait_watermark(self) -> None:
        last = time.monotonic()
        while True:
            reached = self.buffer.wait_for(self.watermark, timeout=0.5)
            # Every rank's (reached, stream ended, size, flowing): all ranks take the same decision.
            status = self.ranks.gather([reached, self.stream_ended(), len(self.buffer), self.flowing()])
            if status[:, 0].all() and (status[:, 3].any() or status[:, 1].any()):
                break
            if status[:, 1].any():
                empty = [r for r, n in enumerate(status[:, 2]) if n == 0]
                if empty:
                    where = "" if not self.ranks.distributed else f" to rank(s) {empty}"
                    raise RuntimeError(
                        f"the simulations ended before sending any training sample{where}; read the "
                        "worker logs in the run directory (launcher.log_dir) for the cause"
                    )
                log.warning(
                    "the stream ended with %d samples, below the watermark %d; training on them",
                    len(self.buffer),
                    self.watermark,
                )
                self.buffer.close()  # draws no longer wait for samples that will not come
                break
            if time.monotonic() - last > self.wait_log_s and status[:, 0].all():
                log.info(
                    "resumed study: waiting for its simulations to stream again (buffer %d samples)", len(self.buffer)
                )
                last = time.monotonic()
            elif time.monotonic() - last > self.wait_log_s:
                log.info(
                    "waiting for the buffer watermark: %d / %d samples (per rank: %s)",
                    len(self.buffer),
                    self.watermark,
                    status[:, 2].astype(int).tolist(),
                )
                last = time.monotonic()
        self._warm = True

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if not self._warm:
            self._wait_watermark()
        for _ in range(self.steps_per_epoch):
            batch = self._next()
            if batch is None:  # a consuming buffer (FIFO) is empty and no more data will come
                self.exhausted = True
                return
            yield batch

    def _next(self) -> dict[str, torch.Tensor] | None:
        if self._collective_draws:
            batch = self._draw_agreed()
            return None if batch is None else _as_tensors(batch, self.pin_memory)
        if self.prefetch > 0:
            if self._prefetcher is None:
                self._prefetcher = _Prefetcher(self._draw, self.prefetch, self.pin_memory)
            return self._prefetcher.get()
        batch = self._draw()
        return None if batch is None else _as_tensors(batch, self.pin_memory)

    def _draw(self) -> Batch | None:
        while True:
            try:
                return self.buffer.draw(self.batch_size, timeout=1.0)
            except TimeoutError:
                if self.stream_ended():
                    self.buffer.close()  # wakes a consuming draw to return what is left

    def _draw_agreed(self) -> Batch | None:
        """One consuming draw per rank, agreed by all: a batch on every rank, or None on every rank."""
        batch: Batch | None = None
        done = False  # this rank's buffer is closed and used up
        while True:
            if batch is None and not done:
                try:
                    batch = self.buffer.draw(self.batch_size, timeout=0.5)
                    done = batch is None
                except TimeoutError:
                    pass
            status = self.ranks.gather([batch is not None, done, self.stream_ended()])
            if status[:, 0].all():
                return batch
            if status[:, 1].any():
                # A batch drawn here goes back to no one: the epoch and training stop on every
                # rank now, and a consuming draw has already removed it from this buffer.
                if batch is not None:
                    log.info(
                        "rank %d drops its last batch of %d samples: another rank's stream is used up",
                        self.ranks.rank,
                        len(batch["t"]),
                    )
                return None
            if status[:, 2].any():
                self.buffer.close()  # the stream ended: a consuming draw returns what is left

    def close(self) -> None:
        """Stop the prefetch thread, if any. Idempotent."""
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None


class StreamingDataModule(L.LightningDataModule):
    """Runs the ensemble for a study and serves its stream to Lightning.

    At ``setup`` it starts the receiver and, on rank 0, the launcher; simulates the held-out
    design (a Sobol design with its own seed, all steps, kept in memory once, then sent to every
    rank); and streams training simulations into the replay buffers. Stop everything with
    :meth:`shutdown` (also called by ``teardown``).

    On several ranks, ``batch_size`` and ``watermark`` are global: each rank draws
    ``batch_size / world_size`` samples per step and waits for ``watermark / world_size`` samples
    in its own buffer before the first step.

    Parameters
    ----------
    simulation : Simulation
        The solver (for its parameter space and fields).
    sampler : sampling.Sampler
        Chooses the training simulations' parameters (used on rank 0).
    launcher : gensim.launch.Launcher
        Runs the simulations (started on rank 0 only).
    buffer : callable
        ``buffer(fields=..., n_params=...) -> ReplayBuffer`` (a Hydra partial).
    receiver : callable
        ``receiver(fields=..., token=..., n_steps=..., times=...) -> Receiver`` (a Hydra partial); its ``address`` is the
        bind address of every rank.
    validation_sampler : callable
        ``validation_sampler(space=...) -> Sampler`` for the held-out design.
    batch_size, steps_per_epoch, watermark : int
        See :class:`BufferStream`; ``batch_size`` and ``watermark`` over all ranks.
    n_validation : int
        Held-out simulations.
    validation_timeout_s : float
        Longest wait for the held-out simulations.
    seed : int
        Study seed, passed to the launcher.
    routing : RoutingRule, optional
        Which rank each training simulation streams to; default round-robin.
    advertise_host : str, optional
        Host name that simulations on other nodes use to reach a receiver bound to every
        interface (``tcp://*:*``); default this node's fully qualified name.
    prefetch : int, optional
        Batches drawn ahead on a background thread; default 1 when training on a GPU, 0 on the
        CPU, where it gained nothing on 2 cores (reports/scaleout/training.md) and its thread
        competes with training for them.
    pin_memory : bool, optional
        Page-locked batches, for asynchronous copies; default when training on a GPU.
    """

    def __init__(
        self,
        simulation: Simulation,
        sampler,
        launcher,
        buffer: Callable,
        receiver: Callable,
        validation_sampler: Callable,
        batch_size: int = 128,
        steps_per_epoch: int = 500,
        watermark: int = 1000,
        n_validation: int = 16,
        validation_timeout_s: float = 600.0,
        seed: int = 0,
        routing: RoutingRule | None = None,
        advertise_host: str | None = None,
        prefetch: int | None = None,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if watermark < batch_size:
            raise ValueError(f"data.watermark ({watermark}) must be >= data.batch_size ({batch_size})")
        if steps_per_epoch < 1:
            raise ValueError(f"data.steps_per_epoch must be >= 1, got {steps_per_epoch}")
        if n_validation < 1:
            raise ValueError(f"data.n_validation must be >= 1 (the held-out set scores the model), got {n_validation}")
        self.simulation, self.sampler, self.launcher = simulation, sampler, launcher
        self._buffer_factory, self._receiver_factory = buffer, receiver
        self.validation_sampler = validation_sampler(space=simulation.space)
        self.batch_size, self.steps_per_epoch, self.watermark = batch_size, steps_per_epoch, watermark
        self.n_validation, self.validation_timeout_s, self.seed = n_validation, validation_timeout_s, seed
        self.routing, self.advertise_host = routing or RoutingRule(), advertise_host
        self.prefetch, self.pin_memory = prefetch, pin_memory  # None: decided by the trainer's device
        self.ranks = Ranks()
        self.stream_mean = StreamMean(simulation)
        self.validation = ValidationStore(simulation, n_validation)
        # The buffer is built here (configs and tests read it before setup); the receiver needs
        # the study key, which rank 0 chooses and sends to the others at setup.
        self.buffer = buffer(fields=simulation.fields, n_params=simulation.space.dim)
        # The receiver's sink for training simulations: batches of samples in one call.
        self.train_sink = BatchSink(self._train_sink, self._train_sink_many)
        self.receiver = None
        self.registrar: Registrar | None = None
        self.router: RankRouter | None = None
        self._val: dict[str, torch.Tensor] | None = None
        self._stream: BufferStream | None = None
        #: Every (simulation, step) the training sink took: a pair arriving again (a simulation
        #: rerun after a resume or a retry) is dropped, so none enters the buffer twice.
        self.delivered = DeliveredSteps()
        self._restored = False  # load_state_dict was applied (before setup)
        self._heldout_restored = False  # the held-out set came from a checkpoint
        self._stream_restored = False  # this rank's buffer came from a checkpoint

    # -- the stream -------------------------------------------------------------------------
    def _train_sink(self, sample: Sample) -> None:
        self._train_sink_many([sample])

    def _train_sink_many(self, samples: list[Sample]) -> None:
        """Take consecutive training samples (the receiver's batch call), each pair once.

        The order matters for checkpoints (:meth:`stream_state_dict` snapshots the stream mean,
        then the buffer, then :attr:`delivered`): a pair is recorded as delivered before it
        enters the buffer, and enters the buffer before the stream mean, so a sample in a
        saved buffer or mean is always in the saved delivered set, and a resumed study never
        takes it again. ``buffer.add_many`` checks every sample before inserting any, so a
        faulty one raises before anything is taken, as
        :class:`~gensim.transport.receiver.BatchSink` requires; its pairs are released then.
        """
        fresh = self.delivered.claim(samples)
        if not fresh:
            return
        try:
            self.buffer.add_many(fresh)
        except BaseException:
            self.delivered.release(fresh)
            raise
        self.stream_mean.add_many([sample.fields for sample in fresh])

    def setup(self, stage: str) -> None:
        if self._val is not None:
            return
        self.ranks = Ranks.of(self.trainer)
        world, rank = self.ranks.world_size, self.ranks.rank
        if self.batch_size % world:
            raise ValueError(
                f"data.batch_size={self.batch_size} is the global batch: it must be a multiple of "
                f"the {world} trainer ranks"
            )
        token = self.ranks.broadcast(wire.new_key() if rank == 0 else None)
        # The simulation's step count and time grid (when it has one): the receiver refuses
        # steps and times outside them.
        self.receiver = self._receiver_factory(
            fields=self.simulation.fields,
            token=token,
            n_steps=self.simulation.n_steps,
            times=getattr(self.simulation, "times", None),
        )
        self.receiver.start()
        control = None
        if world > 1 and rank > 0:
            self.registrar = Registrar(
                self.receiver, {"train": self.train_sink}, token, control_address(self.receiver._bind_address)
            )
            control = advertised(self.registrar.address, self.advertise_host)
        endpoints = [
            Endpoint(r, data, ctl)
            for r, (data, ctl) in enumerate(
                self.ranks.gather_objects((advertised(self.receiver.address, self.advertise_host), control))
            )
        ]
        val = self._start_ensemble(endpoints, token) if rank == 0 else None
        # The held-out set, once per rank: every rank scores its share of it (val_dataloader).
        self._val = self.ranks.broadcast(val)
        if len(self._val["t"]) < world:  # every rank must validate, or one waits in the gather alone
            raise ValueError(
                f"the held-out set has {len(self._val['t'])} samples for {world} trainer ranks; raise data.n_validation"
            )
        if rank > 0:
            self.validation = None  # rank 0's store is the only one filled

    def _start_ensemble(self, endpoints: list[Endpoint], token: bytes) -> dict[str, torch.Tensor]:
        """Rank 0: start the launcher, simulate the held-out set, then release the training budget."""
        self.router = RankRouter(
            self.receiver, {"train": self.train_sink, "validation": self.validation.add}, endpoints, token, self.routing
        )
        # Training simulations start once the held-out set is in. One receiver thread feeds
        # both sinks, and a full buffer that waits for draws (FIFO, Melissa's reservoir) blocks
        # it: held-out samples queued behind would never arrive, and training, whose draws
        # would free space, only starts after them.
        if self._heldout_restored:  # a resumed study: the held-out set came with the checkpoint
            self.launcher.start(self.router, self.sampler, token, seed=self.seed)
            log.info(
                "held-out set restored from the checkpoint (%d samples); not simulated again", len(self.validation)
            )
            return self.validation.tensors()
        budget = self.launcher.budget
        self.launcher.set_budget(0)
        try:
            self.launcher.start(self.router, self.sampler, token, seed=self.seed)
            val_ids = self.launcher.submit(self.validation_sampler.sample(self.n_validation), purpose="validation")
            self.validation.expect(val_ids)
            log.info("simulating %d held-out simulations", len(val_ids))
            deadline = time.monotonic() + self.validation_timeout_s
            while not self._settled(val_ids):
                if self.launcher.error is not None:
                    raise RuntimeError(f"the launcher stopped: {self.launcher.error}")
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"held-out simulations not finished after {self.validation_timeout_s} s "
                        f"({self.launcher.counts('validation')}); raise data.validation_timeout_s "
                        "or use a smaller problem"
                    )
                time.sleep(0.1)
        finally:
            self.launcher.set_budget(budget)
        records = self.launcher.ledger.records
        # Given up after their retries (an END received before a worker's death means every
        # step is in): their partial steps must not be scored.
        failed = [i for i in val_ids if records[i].state == "failed" and not self.receiver.is_finished(i)]
        for i in failed:
            self.validation.drop(i)
        if failed:
            log.warning(
                "%d of %d held-out simulations failed all their attempts (%s); they are left out of the "
                "held-out set, which validates on the %d others",
                len(failed),
                len(val_ids),
                ", ".join(str(i) for i in failed),
                len(val_ids) - len(failed),
            )
        return self.validation.tensors()

    def _settled(self, ids: list[int]) -> bool:
        """Every id either finished on the wire or failed in the launcher."""
        recs = self.launcher.ledger.records
        return all(self.receiver.is_finished(i) or recs[i].state == "failed" for i in ids)

    def _flowing(self) -> bool:
        """This rank received a training sample in this process, or started without a saved stream."""
        return not self._stream_restored or (self.receiver is not None and self.receiver.stats().accepted > 0)

    def stream_ended(self) -> bool:
        """True when no more training data can arrive (known on rank 0, which runs the launcher)."""
        return self.ranks.rank == 0 and self.launcher.exhausted

    @property
    def exhausted(self) -> bool:
        """True when training cannot get another batch: the stream ended and the buffer is used up."""
        return self._stream is not None and self._stream.exhausted

    def train_dataloader(self) -> DataLoader:
        if self._stream is None:
            world = self.ranks.world_size
            on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
            prefetch = (1 if on_gpu else 0) if self.prefetch is None else int(self.prefetch)
            pin_memory = on_gpu if self.pin_memory is None else bool(self.pin_memory)
            self._stream = BufferStream(
                self.buffer,
                self.batch_size // world,
                self.steps_per_epoch,
                min(math.ceil(self.watermark / world), self.buffer.capacity),
                self.stream_ended,
                self.ranks,
                prefetch,
                pin_memory,
                flowing=self._flowing,
            )
        # num_workers=0: a worker process would get a copy of the buffer, not the live one.
        return DataLoader(self._stream, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        """This rank's contiguous share of the held-out set (every row once over all ranks)."""
        data = self.validation_tensors()
        n, world, rank = len(data["t"]), self.ranks.world_size, self.ranks.rank
        rows = slice(rank * n // world, (rank + 1) * n // world)
        return DataLoader(
            StackDataset(**{k: data[k][rows] for k in ("params", "t", "fields")}),
            batch_size=rows_per_chunk(data["fields"].shape[1]),
            shuffle=False,
        )

    def validation_tensors(self) -> dict[str, torch.Tensor]:
        """The whole held-out set (see :meth:`ValidationStore.tensors`), on every rank."""
        if self._val is None:
            raise RuntimeError("call setup() first: the held-out simulations are run there")
        return self._val

    # -- status and shutdown ----------------------------------------------------------------
    def status(self) -> dict[str, int]:
        """Ensemble and stream counters for progress display and metrics (this rank's stream)."""
        train = self.launcher.counts("train")
        stats = self.receiver.stats() if self.receiver is not None else None
        return {
            "running": train["running"],
            "done": train["done"],
            "failed": train["failed"],
            "started": sum(train[s] for s in ("running", "done", "failed", "cancelled")),
            "received": stats.accepted - self.heldout_samples_received(stats) if stats else 0,
            "rejected": stats.n_rejected if stats else 0,
            "buffer": len(self.buffer),
        }

    def heldout_samples_received(self, stats: ReceiverStats) -> int:
        """How many of the samples counted in ``stats`` came from held-out simulations.

        Held-out simulations stream to rank 0 only, so elsewhere this is 0; taking them out of
        ``stats.accepted`` leaves the training samples received.
        """
        validation_ids = self.launcher.sim_ids("validation")
        return sum(n for sim_id, n in stats.accepted_per_sim.items() if sim_id in validation_ids)

    def shutdown(self) -> None:
        """Stop the launcher (and every simulation process), the buffer and the receiver. Idempotent."""
        self.launcher.shutdown()
        self.buffer.close()  # before the stream: a prefetch thread waiting in a draw wakes up
        if self._stream is not None:
            self._stream.close()
        if self.router is not None:
            self.router.close()
        if self.registrar is not None:
            self.registrar.stop()
        if self.receiver is not None:
            self.receiver.stop()

    def teardown(self, stage: str) -> None:
        self.shutdown()

    # -- checkpoints (see gensim.resume) -----------------------------------------------------
    def state_dict(self) -> dict:
        """Rank 0's study state, saved by Lightning in every checkpoint: sampler, launcher
        (ledger) and routing. The per-rank stream state is :meth:`stream_state_dict`."""
        return {
            "sampler": self.sampler.state_dict(),
            "launcher": self.launcher.state_dict(),
            "routing": self.routing.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; must come before :meth:`setup`, which starts the simulations.

        Lightning calls it again after ``setup`` when ``trainer.fit`` gets the checkpoint
        (``ckpt_path``); that second call is a no-op when :func:`gensim.resume.restore` applied
        the state before, and an error otherwise (the launcher would already be running).
        """
        if self._val is not None:
            if self._restored:
                return
            raise RuntimeError(
                "the data module's state (sampler, launcher ledger) must be restored before "
                "setup starts the simulations; resume a study with `gensim-train resume=<run dir>`"
            )
        self.sampler.load_state_dict(state["sampler"])
        self.launcher.load_state_dict(state["launcher"])
        if "routing" in state:
            self.routing.load_state_dict(state["routing"])
        self._restored = True

    def stream_state_dict(self, with_buffer: bool = True) -> dict:
        """This rank's stream: the trivial predictor's sums, the delivered pairs and, optionally,
        the replay buffer's content. Snapshotted in the reverse order of the sink's updates (see
        :meth:`_train_sink_many`), while the receiver keeps adding.

        Returns
        -------
        dict
            ``stream_mean_sum`` (D,) float64, ``stream_mean_count``, ``delivered``
            (:meth:`DeliveredSteps.state_dict`) and ``buffer`` (``ReplayBuffer.state_dict``, or None).
        """
        total, count = self.stream_mean.totals()
        buffer = self.buffer.state_dict() if with_buffer else None
        return {
            "stream_mean_sum": total,
            "stream_mean_count": count,
            "buffer": buffer,
            "delivered": self.delivered.state_dict(),
        }

    def load_stream_state_dict(self, state: dict, other_delivered: Sequence[dict] = ()) -> None:
        """Restore :meth:`stream_state_dict` before :meth:`setup`.

        Parameters
        ----------
        state : dict
            This rank's saved stream.
        other_delivered : sequence of dict
            The other ranks' saved ``delivered`` sets: a rerun simulation may be routed to
            another rank than before, which must not take its saved steps again.
        """
        if self._val is not None:
            raise RuntimeError("the stream state must be restored before setup starts the receiver")
        if state.get("buffer") is not None:
            self.buffer.load_state_dict(state["buffer"])
        self.stream_mean.sum[:] = state["stream_mean_sum"]
        self.stream_mean.count = int(state["stream_mean_count"])
        self.delivered.load_state_dict(state["delivered"])
        for other in other_delivered:
            self.delivered.merge(other)
        self._stream_restored = True

    def heldout_state_dict(self) -> dict | None:
        """The held-out set (rank 0, after setup), or None on another rank."""
        return self.validation.state_dict() if self.validation is not None and self._val is not None else None

    def load_heldout_state_dict(self, state: dict) -> None:
        """Restore :meth:`heldout_state_dict` before setup: the held-out design is not simulated again."""
        if self._val is not None:
            raise RuntimeError("the held-out set must be restored before setup simulates it")
        self.validation.load_state_dict(state)
        self._heldout_restored = True
