"""TrainUntilBudget (callbacks=until_budget): with trainer.max_steps=-1, training ends a set number
of pseudo-epochs after the whole budget has streamed, on a real (tiny) stream."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest

from gensim.buffers import ReplayBuffer
from gensim.callbacks import TrainUntilBudget
from gensim.data import StreamingDataModule
from gensim.launch import Launcher
from gensim.launch.executors import LocalExecutor
from gensim.models import DeterministicSurrogate
from gensim.models.components import MLP
from gensim.simulations import DecayingWave
from gensim.transport.receiver import Receiver
from sampling import Sobol


def test_training_runs_until_every_budgeted_simulation_has_streamed(tmp_path):
    sim = DecayingWave(size=8, n_steps=5)
    dm = StreamingDataModule(
        simulation=sim,
        sampler=Sobol(sim.space, seed=0),
        launcher=Launcher(
            {"_target_": "gensim.simulations.DecayingWave", "size": 8, "n_steps": 5},
            LocalExecutor(),
            n_parallel=2,
            max_simulations=10,
            log_dir=str(tmp_path / "w"),
        ),
        buffer=partial(ReplayBuffer, capacity=100),
        receiver=Receiver,
        validation_sampler=partial(Sobol, seed=99),
        steps_per_epoch=4,
        batch_size=10,
        watermark=10,
        n_validation=2,
    )
    model = DeterministicSurrogate(sim.fields, 2, net=partial(MLP, hidden=(8,)), normalizer_warmup_batches=2)
    until = TrainUntilBudget(epochs_after=2)
    trainer = L.Trainer(
        max_steps=-1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=[until],
    )
    try:
        trainer.fit(model, datamodule=dm)  # a non-FIFO buffer never runs dry: only the callback stops it
    finally:
        dm.shutdown()
    assert dm.launcher.counts("train")["done"] == 10 and dm.launcher.unstarted == 0
    # Stopped at the end of the pseudo-epoch two after the one where the stream was seen ended.
    assert until._epochs_since_end == 2 and trainer.global_step % 4 == 0 and trainer.current_epoch >= 2


def test_a_negative_count_is_refused():
    with pytest.raises(ValueError, match="epochs_after must be >= 0 pseudo-epochs, got -1"):
        TrainUntilBudget(epochs_after=-1)
