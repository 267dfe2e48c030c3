"""Checkpoints written on a background thread (``checkpoint.asynchronous``): off the training
thread, point-in-time, ``last.ckpt`` only after every rank's stream files of its step, errors
not lost."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from torch.utils.data import DataLoader, TensorDataset

import gensim.callbacks.checkpointing as checkpointing
from gensim.callbacks.checkpointing import (
    CHECKPOINT_KEY,
    StreamFilesFirst,
    StudyCheckpoint,
    checkpoint_callbacks,
    stream_files,
)

MAX_STEPS, EVERY = 12, 3


class TinyStream(L.LightningDataModule):
    """The data module's checkpoint interface (``stream_state_dict``, ``heldout_state_dict``)
    over a fixed data set."""

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(256, 3, generator=torch.Generator().manual_seed(0))), batch_size=8)

    def stream_state_dict(self, with_buffer: bool = True) -> dict:
        return {"buffer": {"x": np.arange(1000.0)} if with_buffer else None, "delivered": {"masks": {}}}

    def heldout_state_dict(self) -> dict:
        return {"fields": np.zeros((2, 3), np.float32)}


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 1)
        self.weights: dict[int, torch.Tensor] = {}  # global step -> weights after that many steps

    def training_step(self, batch, batch_idx):
        return (self.lin(batch[0]) - 1).pow(2).mean()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.weights[self.trainer.global_step] = self.lin.weight.detach().clone()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class RecordingIO(TorchCheckpointIO):
    """Lightning's writer, recording what each ``last.ckpt`` write held and saw."""

    def __init__(self, stream_dir) -> None:
        self.stream_dir, self.writes = stream_dir, []

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        step = checkpoint[CHECKPOINT_KEY]["stream_step"]
        self.writes.append(
            {
                "step": step,
                "thread": threading.current_thread().name,
                "stream_files_there": all(p.is_file() for p in stream_files(self.stream_dir, 0, step)),
                "weight": checkpoint["state_dict"]["lin.weight"].clone(),
            }
        )
        super().save_checkpoint(checkpoint, path, storage_options)


def slow_writes(monkeypatch, fail: bool = False) -> list[tuple[str, str]]:
    """Make every stream-file write take 50 ms (or fail); returns the (file, thread) log."""
    log: list[tuple[str, str]] = []
    original = checkpointing.save_state

    def save_state(state, path) -> None:
        log.append((path.name, threading.current_thread().name))
        time.sleep(0.05)
        if fail:
            raise OSError("No space left on device")
        original(state, path)

    monkeypatch.setattr(checkpointing, "save_state", save_state)
    return log


def fit(
    tmp_path, asynchronous: bool = True, max_steps: int = MAX_STEPS, trainer=None, every_minutes: float | None = None
) -> tuple[Tiny, RecordingIO]:
    """Fit a Tiny model with the study's checkpoints; ``trainer``: (trainer, io, model) of an
    earlier fit to continue with ``max_steps``."""
    if trainer is None:
        callbacks = checkpoint_callbacks(
            tmp_path,
            every_n_steps=EVERY,
            every_minutes=every_minutes,
            buffer=True,
            heldout=True,
            asynchronous=asynchronous,
        )
        io, model = RecordingIO(tmp_path / "checkpoints" / "stream"), Tiny()
        trainer = L.Trainer(
            callbacks=callbacks,
            plugins=[io],
            max_steps=max_steps,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=str(tmp_path),
        )
    else:
        trainer, io, model = trainer
        trainer.fit_loop.epoch_loop.max_steps = max_steps
    trainer.fit(model, datamodule=TinyStream())
    return model, io, trainer


def test_saves_are_written_off_the_training_thread_point_in_time_and_last_ckpt_after_its_stream_files(
    tmp_path, monkeypatch
):
    log = slow_writes(monkeypatch)
    model, io, _ = fit(tmp_path)
    steps = list(range(EVERY, MAX_STEPS + 1, EVERY))
    assert [w["step"] for w in io.writes] == steps  # every save reached last.ckpt, in order
    assert {thread for _, thread in log} | {w["thread"] for w in io.writes} == {"gensim-checkpoint_0"}
    assert [name for name, _ in log] == [
        path.name for step in steps for path in stream_files(tmp_path / "checkpoints" / "stream", 0, step)
    ]
    for write in io.writes:
        assert write["stream_files_there"], write["step"]
        # The weights of that step, though training went on while its files were written.
        assert torch.equal(write["weight"], model.weights[write["step"]]), write["step"]
    assert not torch.equal(model.weights[EVERY], model.weights[MAX_STEPS])  # the check above can fail
    # The end of fit waited for the last save: its files are there, the two newest steps kept.
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == MAX_STEPS and last[CHECKPOINT_KEY]["stream_step"] == MAX_STEPS
    kept = sorted(p.name for p in (tmp_path / "checkpoints" / "stream").iterdir())
    assert kept == sorted(p.name for s in steps[-2:] for p in stream_files(tmp_path / "checkpoints" / "stream", 0, s))


def test_without_asynchronous_the_training_thread_writes(tmp_path, monkeypatch):
    log = slow_writes(monkeypatch)
    _, io, _ = fit(tmp_path, asynchronous=False)
    main = threading.current_thread().name
    assert log and {thread for _, thread in log} == {main}
    assert io.writes and {w["thread"] for w in io.writes} == {main}


def test_the_end_of_training_adds_no_second_save_of_the_last_step(tmp_path, monkeypatch):
    # With both triggers on (the default), Lightning's save_last also saved at the end of
    # training: steps 3, 6, 9, 12, 12; gensim-train writes the final checkpoint itself.
    slow_writes(monkeypatch)
    _, io, _ = fit(tmp_path, every_minutes=10.0)
    assert [w["step"] for w in io.writes] == list(range(EVERY, MAX_STEPS + 1, EVERY))


def test_a_second_fit_of_the_same_trainer_writes_each_checkpoint_once_in_order(tmp_path, monkeypatch):
    log = slow_writes(monkeypatch)
    model, io, trainer = fit(tmp_path, max_steps=2 * EVERY)
    fit(tmp_path, max_steps=MAX_STEPS, trainer=(trainer, io, model))
    assert [w["step"] for w in io.writes] == list(range(EVERY, MAX_STEPS + 1, EVERY))
    assert all(w["stream_files_there"] and w["thread"] == "gensim-checkpoint_0" for w in io.writes)
    assert len(log) == 2 * len(io.writes)
    # One wrapper around Lightning's writer, not one more per fit.
    assert isinstance(trainer.strategy.checkpoint_io, StreamFilesFirst) and trainer.strategy.checkpoint_io.base is io


def test_a_failed_background_write_stops_the_study_with_its_error_and_keeps_no_last_ckpt(tmp_path, monkeypatch):
    slow_writes(monkeypatch, fail=True)
    with pytest.raises(OSError, match="No space left"):
        fit(tmp_path)
    # No last.ckpt that would point at the missing stream files.
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_rank_0_waits_for_the_other_ranks_stream_files_before_last_ckpt(tmp_path):
    directory = tmp_path / "stream"
    directory.mkdir()
    study = StudyCheckpoint(directory, peer_timeout_s=0.3)
    stream_files(directory, 0, 40)[1].write_bytes(b"")
    start = time.monotonic()
    assert not study.wait_for_peers(40, world_size=2)  # rank 1 never wrote: given up
    assert time.monotonic() - start >= 0.3
    study.peer_timeout_s = 30.0
    later = threading.Timer(0.2, lambda: stream_files(directory, 1, 40)[1].write_bytes(b""))
    later.start()
    try:
        assert study.wait_for_peers(40, world_size=2)
    finally:
        later.cancel()
    assert not study.wait_for_peers(50, world_size=1)  # rank 0's own files missing: no waiting


def test_on_save_waits_for_the_save_in_flight(tmp_path, monkeypatch):
    # At most one save in flight: its copy of the buffer is all the memory a save holds.
    slow_writes(monkeypatch)
    study = StudyCheckpoint(tmp_path / "stream", buffer=True, heldout=False)
    study._writer = checkpointing.ThreadPoolExecutor(max_workers=1)
    try:
        for step in (1, 2):
            trainer = SimpleNamespace(datamodule=TinyStream(), global_step=step, global_rank=0, world_size=1)
            study.on_save_checkpoint(trainer, None, {})
            assert len(study._pending) == 1 and not study._pending[0].done()
        study.flush()
        assert all(p.is_file() for s in (1, 2) for p in stream_files(tmp_path / "stream", 0, s))
    finally:
        study._writer.shutdown(wait=True)
