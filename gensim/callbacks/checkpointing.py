"""Periodic study checkpoints: what Lightning saves, plus the stream state of every rank.

Lightning's :class:`~lightning.pytorch.callbacks.ModelCheckpoint` writes ``last.ckpt`` with the
model (normalizers included: they are module buffers), optimizer, scheduler, loop progress,
callbacks' state and the data module's :meth:`~gensim.data.StreamingDataModule.state_dict`
(sampler, launcher ledger, routing). :class:`StudyCheckpoint` adds, at each of those saves:

- into ``last.ckpt`` (rank 0): the held-out set, when ``heldout`` is on;
- beside it, one file per rank, ``stream/rank<r>-step<N>.ckpt``: the replay buffer's content
  (when ``buffer`` is on) and ``rank<r>-step<N>.delivered.ckpt``: the stream mean and the
  (simulation, step) pairs taken. Every rank owns a buffer, so every rank writes its own files.

A resumed study reads them back with :func:`gensim.resume.restore`.

By default (``asynchronous``) the files are written by a background thread while training goes
on: a save costs the training thread a copy of the state, not its serialization and writing
(``reports/online_offline/README.md``). The order that makes a checkpoint whole is kept: on
rank 0, ``last.ckpt`` is written after its own stream files and once every other rank's
``delivered`` file of the same step exists (:class:`StreamFilesFirst`), so a study killed at any
moment leaves a ``last.ckpt`` whose stream files are all there. At most one save is in flight
per rank: the next one waits for it, and so do the end of ``fit`` and a failure.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

log = logging.getLogger("gensim.callbacks")

#: Key of the held-out set and of the stream files' step inside ``last.ckpt``.
CHECKPOINT_KEY = "gensim_study"


def stream_files(directory: Path, rank: int, step: int) -> tuple[Path, Path]:
    """The (buffer, delivered) files of ``rank`` at global step ``step`` in ``directory``."""
    stem = f"rank{rank}-step{step:09d}"
    return directory / f"{stem}.buffer.ckpt", directory / f"{stem}.delivered.ckpt"


def saved_steps(directory: Path, rank: int) -> list[int]:
    """The steps of ``rank``'s stream files in ``directory``, ascending."""
    return sorted({int(p.name.split("-step")[1].split(".")[0]) for p in directory.glob(f"rank{rank}-step*.ckpt")})


def arrays_to_tensors(obj: Any) -> Any:
    """``obj`` with every numpy array (in nested dicts, lists and tuples) replaced by a tensor
    sharing its memory.

    Why: ``torch.save`` writes a tensor's storage as raw bytes but pickles a numpy array. For the
    default study's replay buffer (8000 fields of 64x64 float32, 131 MB) that took 3.9 s against
    0.45 s, and loading 2.4 s against 0.17 s (this 2-core machine), paid at every checkpoint.
    The buffer, delivered-step and held-out states hold numpy arrays only, so
    :func:`tensors_to_arrays` restores them exactly.
    """
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return torch.from_numpy(obj if all(s >= 0 for s in obj.strides) else np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {key: arrays_to_tensors(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(arrays_to_tensors(value) for value in obj)
    return obj


def tensors_to_arrays(obj: Any) -> Any:
    """The inverse of :func:`arrays_to_tensors`: every tensor back to a numpy array."""
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {key: tensors_to_arrays(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(tensors_to_arrays(value) for value in obj)
    return obj


def save_state(state: Any, path: Path) -> None:
    """Save a stream state (numpy arrays and plain objects) into ``path`` atomically.

    ``torch.save`` goes into a temporary file renamed over ``path``, so a kill mid-write leaves
    the previous file whole; arrays are written as tensors (:func:`arrays_to_tensors`).
    """
    tmp = path.with_name(path.name + ".tmp")
    torch.save(arrays_to_tensors(state), tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> Any:
    """A state written by :func:`save_state`, with its numpy arrays."""
    # Our own file, with plain objects beside the arrays: not a weights-only checkpoint.
    return tensors_to_arrays(torch.load(path, map_location="cpu", weights_only=False))


class StudyCheckpoint(Callback):
    """Adds the held-out set and each rank's stream to every checkpoint Lightning saves.

    Parameters
    ----------
    directory : str or Path
        Folder of the per-rank stream files (``<run dir>/checkpoints/stream``).
    buffer : bool or "auto"
        Save each rank's replay buffer content: always (True), never (False), or when the
        buffer's storage takes at most ``buffer_max_bytes`` ("auto"), decided at the first save.
    heldout : bool
        Save the held-out set in ``last.ckpt``.
    buffer_max_bytes : float
        The "auto" limit, per rank.
    keep : int
        Stream files kept per rank (the newest steps): 2, so the files of the previous
        checkpoint remain while the new ``last.ckpt`` is being written.
    asynchronous : bool
        During ``fit``, write the files (and, on rank 0, ``last.ckpt``) on a background thread;
        see the module docstring. Outside ``fit`` (the final save of ``gensim-train``) and
        without it, each save is written before it returns.
    peer_timeout_s : float
        How long rank 0's writer waits for the other ranks' stream files of a step before it
        gives up that ``last.ckpt`` (the previous one stays, whole) and logs an error.
    """

    def __init__(
        self,
        directory: str | Path,
        buffer: bool | str = "auto",
        heldout: bool = True,
        buffer_max_bytes: float = 1e9,
        keep: int = 2,
        asynchronous: bool = True,
        peer_timeout_s: float = 600.0,
    ) -> None:
        if buffer not in (True, False, "auto"):
            raise ValueError(f"checkpoint.buffer must be true, false or auto, got {buffer!r}")
        self.directory = Path(directory)
        self._buffer_choice, self.buffer_max_bytes = buffer, float(buffer_max_bytes)
        self.buffer: bool | None = None if buffer == "auto" else bool(buffer)
        self.heldout, self.keep = bool(heldout), int(keep)
        self.asynchronous, self.peer_timeout_s = bool(asynchronous), float(peer_timeout_s)
        self._writer: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    # -- the background writer ---------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.asynchronous and stage == "fit" and self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gensim-checkpoint")
            # Rank 0's last.ckpt goes through the same writer, after the stream files (wrapped
            # once: a second fit of the same trainer finds the wrapper in place).
            if not isinstance(trainer.strategy.checkpoint_io, StreamFilesFirst):
                trainer.strategy.checkpoint_io = StreamFilesFirst(trainer.strategy.checkpoint_io, self)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._writer is not None:
            try:
                self.flush()
            finally:
                self._writer.shutdown(wait=True)
                self._writer = None

    def flush(self) -> None:
        """Wait until the files of every save so far are written; re-raise a failed write's error."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def write(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the background writer after the writes submitted before it, or now
        when there is no writer (outside ``fit``, or ``asynchronous`` off)."""
        if self._writer is None:
            job()
        else:
            self._pending.append(self._writer.submit(job))

    # -- the save ------------------------------------------------------------------------------
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Called on every rank by Trainer.save_checkpoint (rank 0 alone writes last.ckpt).
        # One save in flight at most: its copy of the buffer is the memory it holds.
        self.flush()
        dm = trainer.datamodule
        step, rank = int(trainer.global_step), int(trainer.global_rank)
        if self.buffer is None:  # "auto": every rank's buffer has the same capacity, so the same answer
            nbytes = int(dm.buffer.stats()["bytes"])
            self.buffer = nbytes <= self.buffer_max_bytes
            if not self.buffer:
                log.warning(
                    "checkpoints leave out the replay buffer (%.2g bytes per rank > checkpoint."
                    "buffer_max_bytes=%.2g): a resumed study refills it from the simulations still "
                    "to run; set checkpoint.buffer=true to save it anyway",
                    nbytes,
                    self.buffer_max_bytes,
                )
        # A snapshot: copies of the arrays, taken under the buffer's and the stream's locks.
        state = dm.stream_state_dict(with_buffer=self.buffer)
        with_buffer = self.buffer
        self.write(lambda: self._write_stream(state, rank, step, with_buffer))
        checkpoint[CHECKPOINT_KEY] = {
            "stream_step": step,
            "world_size": int(trainer.world_size),
            "buffer": self.buffer,
            # Arrays as tensors, for the speed of torch.save (see arrays_to_tensors).
            "heldout": arrays_to_tensors(dm.heldout_state_dict()) if self.heldout and rank == 0 else None,
        }

    def _write_stream(self, state: dict, rank: int, step: int, with_buffer: bool) -> None:
        """Write one rank's stream files of ``step`` (the buffer first: the delivered file is the
        mark that both are whole), then prune the older ones."""
        self.directory.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        buffer_file, delivered_file = stream_files(self.directory, rank, step)
        if with_buffer:
            save_state(state["buffer"], buffer_file)
        save_state({k: v for k, v in state.items() if k != "buffer"}, delivered_file)
        self._prune(rank)
        log.debug("rank %d: stream files of step %d written in %.2f s", rank, step, time.perf_counter() - start)

    def wait_for_peers(self, step: int, world_size: int) -> bool:
        """Whether every rank wrote its stream files of ``step``: rank 0's own (written before,
        unless that write failed), the others' within ``peer_timeout_s``."""
        if not stream_files(self.directory, 0, step)[1].is_file():  # its write failed: flush raises it
            log.error("last.ckpt of step %d not written: rank 0's stream files of that step are missing", step)
            return False
        deadline = time.monotonic() + self.peer_timeout_s
        missing = [r for r in range(1, world_size) if not stream_files(self.directory, r, step)[1].is_file()]
        while missing:
            if time.monotonic() > deadline:
                log.error(
                    "last.ckpt of step %d not written: ranks %s wrote no stream files of that step within "
                    "%.0f s; the previous last.ckpt stays (a resume starts from it)",
                    step,
                    missing,
                    self.peer_timeout_s,
                )
                return False
            time.sleep(0.05)
            missing = [r for r in missing if not stream_files(self.directory, r, step)[1].is_file()]
        return True

    def _prune(self, rank: int) -> None:
        """Delete this rank's stream files but for the ``keep`` newest steps."""
        for old in saved_steps(self.directory, rank)[: -self.keep]:
            for path in stream_files(self.directory, rank, old):
                path.unlink(missing_ok=True)


class StreamFilesFirst(CheckpointIO):
    """Rank 0's checkpoint writer during ``fit`` with :class:`StudyCheckpoint` ``asynchronous``:
    ``last.ckpt`` goes to the study's background writer after the stream files of its step, and
    only once the other ranks' stream files of that step exist.

    Parameters
    ----------
    base : CheckpointIO
        The strategy's writer (Lightning's ``TorchCheckpointIO`` by default), which writes the file.
    study : StudyCheckpoint
    """

    def __init__(self, base: CheckpointIO, study: StudyCheckpoint) -> None:
        self.base, self.study = base, study

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        # A point-in-time copy: training goes on changing the weights and optimizer moments in
        # place (tensors are cloned by deepcopy). The study entry is built afresh at each save.
        study_state = checkpoint.get(CHECKPOINT_KEY)
        snapshot = copy.deepcopy({k: v for k, v in checkpoint.items() if k != CHECKPOINT_KEY})
        if study_state is not None:
            snapshot[CHECKPOINT_KEY] = study_state

        def job() -> None:
            if study_state is not None and not self.study.wait_for_peers(
                int(study_state["stream_step"]), int(study_state["world_size"])
            ):
                return
            self.base.save_checkpoint(snapshot, path, storage_options=storage_options)

        self.study.write(job)

    def load_checkpoint(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.study.flush()
        return self.base.load_checkpoint(*args, **kwargs)

    def remove_checkpoint(self, path) -> None:
        self.study.write(lambda: self.base.remove_checkpoint(path))

    def teardown(self) -> None:
        try:
            self.study.flush()
        finally:
            self.base.teardown()


class PeriodicCheckpoint(ModelCheckpoint):
    """Lightning's :class:`ModelCheckpoint` without its save at the end of training.

    ``gensim-train`` writes the final ``last.ckpt`` itself after ``fit`` (with every rank's
    stream), so the end-of-training save that ``save_last`` adds to each trigger was a second
    and third save of the same step (seen: saves at steps 3, 6, 9, 12, 12 with both triggers on).
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass


def checkpoint_callbacks(
    run_dir: Path,
    every_n_steps: int | None,
    every_minutes: float | None,
    buffer: bool | str,
    heldout: bool,
    buffer_max_bytes: float = 1e9,
    asynchronous: bool = True,
) -> list[Callback]:
    """The checkpoint callbacks of a study (the ``checkpoint`` config group, ``conf/checkpoint/default.yaml``).

    Parameters
    ----------
    run_dir : Path
        Checkpoints go to ``run_dir/checkpoints/last.ckpt``.
    every_n_steps : int or None
        Save every that many optimizer steps.
    every_minutes : float or None
        Save every that many minutes of training (checked after each step).
    buffer, heldout, buffer_max_bytes, asynchronous
        See :class:`StudyCheckpoint`.

    Returns
    -------
    list of Callback
        One :class:`PeriodicCheckpoint` per trigger (Lightning takes one trigger per callback),
        each keeping only ``last.ckpt``, or, with neither trigger, one that never saves (so that
        Lightning adds no default one); then the :class:`StudyCheckpoint`.
    """
    if every_n_steps is not None and (isinstance(every_n_steps, bool) or int(every_n_steps) < 1):
        raise ValueError(f"checkpoint.every_n_steps must be an int >= 1 or null (off), got {every_n_steps!r}")
    if every_minutes is not None and not float(every_minutes) > 0:
        raise ValueError(f"checkpoint.every_minutes must be > 0 or null (off), got {every_minutes!r}")
    dirpath = str(run_dir / "checkpoints")
    # Both triggers write the same last.ckpt, so that it is always the newest: with Lightning's
    # version counter the second one wrote last-v1.ckpt, which resume never read.
    common = {"dirpath": dirpath, "save_last": True, "save_top_k": 0, "enable_version_counter": False}
    callbacks: list[Callback] = []
    if every_n_steps is not None:
        callbacks.append(PeriodicCheckpoint(every_n_train_steps=int(every_n_steps), **common))
    if every_minutes is not None:
        from datetime import timedelta

        callbacks.append(PeriodicCheckpoint(train_time_interval=timedelta(minutes=float(every_minutes)), **common))
    if not callbacks:
        # Both triggers off: a ModelCheckpoint that never saves, because without any Lightning
        # adds its default one, which saved at every pseudo-epoch end (data.steps_per_epoch),
        # each save with the whole replay buffer (StudyCheckpoint): more often than the default
        # every_n_steps=500, not never. The final last.ckpt of gensim-train is written anyway.
        callbacks.append(ModelCheckpoint(dirpath=dirpath, save_top_k=0, every_n_epochs=0, save_last=False))
    callbacks.append(
        StudyCheckpoint(
            run_dir / "checkpoints" / "stream",
            buffer=buffer,
            heldout=heldout,
            buffer_max_bytes=buffer_max_bytes,
            asynchronous=asynchronous,
        )
    )
    return callbacks
