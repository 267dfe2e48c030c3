"""StreamingDataModule: training batches drawn from a replay buffer fed live by simulations."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, StackDataset

from gensim.simulations.base import Sample, Simulation

log = logging.getLogger("gensim.data")


def flatten_fields(sample: Sample, simulation: Simulation) -> np.ndarray:
    """Concatenate a sample's fields in the simulation's field order. Returns shape (D,) float32."""
    return np.concatenate([np.asarray(sample.fields[f.name], np.float32).reshape(-1) for f in simulation.fields])


class ValidationStore:
    """Held-out simulations kept in memory: one row per (simulation, step), all steps.

    Thread-safe ``add`` (called by the receiver thread); :meth:`tensors` stacks the rows in
    (sim_id, step) order, so the validation set is the same whatever the arrival order.
    """

    def __init__(self, simulation: Simulation) -> None:
        self.simulation = simulation
        self._rows: dict[tuple[int, int], tuple[np.ndarray, float, np.ndarray]] = {}
        self._lock = threading.Lock()

    def add(self, sample: Sample) -> None:
        row = (np.asarray(sample.params, np.float32), float(sample.t), flatten_fields(sample, self.simulation))
        with self._lock:
            self._rows[(sample.sim_id, sample.step)] = row

    def __len__(self) -> int:
        return len(self._rows)

    def tensors(self) -> dict[str, torch.Tensor]:
        """``{"params": (N, P), "t": (N,), "fields": (N, D), "sim_id": (N,)}`` with N = sims x steps."""
        with self._lock:
            keys = sorted(self._rows)
            rows = [self._rows[k] for k in keys]
        if not rows:
            raise RuntimeError("no held-out data was received: every validation simulation failed; "
                               "read the worker logs in the run directory")
        return {
            "params": torch.from_numpy(np.stack([r[0] for r in rows])),
            "t": torch.tensor([r[1] for r in rows], dtype=torch.float32),
            "fields": torch.from_numpy(np.stack([r[2] for r in rows])),
            "sim_id": torch.tensor([k[0] for k in keys]),
        }


class StreamMean:
    """Exact running mean of every training field received (the trivial predictor), thread-safe."""

    def __init__(self, size: int) -> None:
        self.sum = np.zeros(size, np.float64)
        self.count = 0
        self._lock = threading.Lock()

    def add(self, flat: np.ndarray) -> None:
        with self._lock:
            self.sum += flat
            self.count += 1

    def mean(self) -> np.ndarray:
        """Mean field, shape (D,) float32."""
        if self.count == 0:
            raise RuntimeError("no training sample was received, so there is no mean field")
        return (self.sum / self.count).astype(np.float32)


class BufferStream(IterableDataset):
    """An endless source of batches drawn from a live replay buffer, in pseudo-epochs.

    Each ``iter()`` yields ``steps_per_epoch`` batches. The first one waits until the buffer holds
    ``watermark`` samples, so early batches are not drawn from a handful of time steps.

    Parameters
    ----------
    buffer : gensim.buffers.ReplayBuffer
    batch_size : int
    steps_per_epoch : int
    watermark : int
        Minimum fill before the first batch.
    stream_ended : callable
        True when no more data can come (budget spent, or the launcher failed).
    wait_log_s : float
        Seconds between progress messages while waiting.
    """

    def __init__(self, buffer, batch_size: int, steps_per_epoch: int, watermark: int,
                 stream_ended: Callable[[], bool], wait_log_s: float = 10.0) -> None:
        self.buffer, self.batch_size, self.steps_per_epoch = buffer, batch_size, steps_per_epoch
        self.watermark, self.stream_ended, self.wait_log_s = watermark, stream_ended, wait_log_s
        self._warm = False
        #: True once a consuming buffer (FIFO) is empty and no more data can come.
        self.exhausted = False

    def _wait_watermark(self) -> None:
        last = time.monotonic()
        while not self.buffer.wait_for(self.watermark, timeout=0.5):
            if self.stream_ended():
                if len(self.buffer) == 0:
                    raise RuntimeError(
                        "the simulations ended before sending any training sample; read the worker "
                        "logs in the run directory (launcher.log_dir) for the cause")
                log.warning("the stream ended with %d samples, below the watermark %d; training on them",
                            len(self.buffer), self.watermark)
                break
            if time.monotonic() - last > self.wait_log_s:
                log.info("waiting for the buffer watermark: %d / %d samples", len(self.buffer), self.watermark)
                last = time.monotonic()
        self._warm = True

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if not self._warm:
            self._wait_watermark()
        for _ in range(self.steps_per_epoch):
            batch = self._draw()
            if batch is None:  # a consuming buffer (FIFO) is empty and no more data will come
                self.exhausted = True
                return
            yield {k: torch.from_numpy(v) for k, v in batch.items()}

    def _draw(self) -> dict[str, np.ndarray] | None:
        while True:
            try:
                return self.buffer.draw(self.batch_size, timeout=1.0)
            except TimeoutError:
                if self.stream_ended():
                    self.buffer.close()  # wakes a consuming draw to return what is left


class StreamingDataModule(L.LightningDataModule):
    """Runs the ensemble for a study and serves its stream to Lightning.

    At ``setup`` it starts the receiver and the launcher, simulates the held-out design (a Sobol
    design with its own seed, all steps, kept in memory), and streams training simulations into
    the replay buffer. Stop everything with :meth:`shutdown` (also called by ``teardown``).

    Parameters
    ----------
    simulation : Simulation
        The solver (for its parameter space and fields).
    sampler : sampling.Sampler
        Chooses the training simulations' parameters.
    launcher : gensim.launch.LocalLauncher
    buffer : callable
        ``buffer(fields=..., n_params=...) -> ReplayBuffer`` (a Hydra partial).
    receiver : callable
        ``receiver(fields=..., token=...) -> Receiver`` (a Hydra partial).
    validation_sampler : callable
        ``validation_sampler(space=...) -> Sampler`` for the held-out design.
    batch_size, steps_per_epoch, watermark : int
        See :class:`BufferStream`.
    n_validation : int
        Held-out simulations.
    validation_timeout_s : float
        Longest wait for the held-out simulations.
    seed : int
        Study seed, passed to the launcher.
    """

    def __init__(self, simulation: Simulation, sampler, launcher, buffer: Callable, receiver: Callable,
                 validation_sampler: Callable, batch_size: int = 128, steps_per_epoch: int = 500,
                 watermark: int = 1000, n_validation: int = 16, validation_timeout_s: float = 600.0,
                 seed: int = 0) -> None:
        super().__init__()
        if watermark < batch_size:
            raise ValueError(f"data.watermark ({watermark}) must be >= data.batch_size ({batch_size})")
        self.simulation, self.sampler, self.launcher = simulation, sampler, launcher
        n_params = simulation.space.dim
        self.buffer = buffer(fields=simulation.fields, n_params=n_params)
        self.receiver = receiver(fields=simulation.fields, token=secrets.token_bytes(16))
        self.validation_sampler = validation_sampler(space=simulation.space)
        self.batch_size, self.steps_per_epoch, self.watermark = batch_size, steps_per_epoch, watermark
        self.n_validation, self.validation_timeout_s, self.seed = n_validation, validation_timeout_s, seed
        self.stream_mean = StreamMean(sum(f.size for f in simulation.fields))
        self.validation = ValidationStore(simulation)
        self._val: dict[str, torch.Tensor] | None = None
        self._stream: BufferStream | None = None

    # -- the stream -------------------------------------------------------------------------
    def _train_sink(self, sample: Sample) -> None:
        self.buffer.add(sample)
        self.stream_mean.add(flatten_fields(sample, self.simulation))

    def setup(self, stage: str) -> None:
        if self._val is not None:
            return
        self.receiver.start()
        # Training simulations start once the held-out set is in. One receiver thread feeds
        # both sinks, and a full buffer that waits for draws (FIFO, Melissa's reservoir) blocks
        # it: held-out samples queued behind would never arrive, and training, whose draws
        # would free space, only starts after them.
        budget, self.launcher.max_simulations = self.launcher.max_simulations, 0
        try:
            self.launcher.start(self.receiver, self.sampler, self._train_sink, seed=self.seed)
            val_ids = self.launcher.submit(self.validation_sampler.sample(self.n_validation),
                                           self.validation.add, purpose="validation")
            log.info("simulating %d held-out simulations", len(val_ids))
            deadline = time.monotonic() + self.validation_timeout_s
            while not self._settled(val_ids):
                if self.launcher.error is not None:
                    raise RuntimeError(f"the launcher stopped: {self.launcher.error}")
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"held-out simulations not finished after {self.validation_timeout_s} s "
                        f"({self.launcher.counts('validation')}); raise data.validation_timeout_s "
                        "or use a smaller problem")
                time.sleep(0.1)
        finally:
            self.launcher.max_simulations = budget
        failed = self.launcher.counts("validation")["failed"]
        if failed:
            log.warning("%d of %d held-out simulations failed; validating on the others", failed, len(val_ids))
        self._val = self.validation.tensors()

    def _settled(self, ids: list[int]) -> bool:
        """Every id either finished on the wire or failed in the launcher."""
        recs = self.launcher.ledger.records
        return all(self.receiver.is_finished(i) or recs[i].state == "failed" for i in ids)

    def stream_ended(self) -> bool:
        """True when no more training data can arrive."""
        return self.launcher.exhausted

    @property
    def exhausted(self) -> bool:
        """True when training cannot get another batch: the stream ended and the buffer is used up."""
        return self._stream is not None and self._stream.exhausted

    def train_dataloader(self) -> DataLoader:
        if self._stream is None:
            self._stream = BufferStream(self.buffer, self.batch_size, self.steps_per_epoch,
                                        self.watermark, self.stream_ended)
        # num_workers=0: a worker process would get a copy of the buffer, not the live one.
        return DataLoader(self._stream, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        data = self.validation_tensors()
        return DataLoader(StackDataset(**{k: data[k] for k in ("params", "t", "fields")}),
                          batch_size=512, shuffle=False)

    def validation_tensors(self) -> dict[str, torch.Tensor]:
        """The held-out set (see :meth:`ValidationStore.tensors`)."""
        if self._val is None:
            raise RuntimeError("call setup() first: the held-out simulations are run there")
        return self._val

    # -- status and shutdown ----------------------------------------------------------------
    def status(self) -> dict[str, int]:
        """Ensemble and stream counters for progress display and metrics."""
        train = self.launcher.counts("train")
        stats = self.receiver.stats()
        return {
            "running": train["running"], "done": train["done"], "failed": train["failed"],
            "started": sum(train[s] for s in ("running", "done", "failed", "cancelled")),
            "received": stats.accepted, "rejected": sum(stats.rejected.values()),
            "buffer": len(self.buffer),
        }

    def shutdown(self) -> None:
        """Stop the launcher (and every simulation process), the buffer and the receiver. Idempotent."""
        self.launcher.shutdown()
        self.buffer.close()
        self.receiver.stop()

    def teardown(self, stage: str) -> None:
        self.shutdown()

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "launcher": self.launcher.state_dict(),
                "stream_mean_sum": self.stream_mean.sum.copy(), "stream_mean_count": self.stream_mean.count}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.launcher.load_state_dict(state["launcher"])
        self.stream_mean.sum[:] = state["stream_mean_sum"]
        self.stream_mean.count = int(state["stream_mean_count"])
