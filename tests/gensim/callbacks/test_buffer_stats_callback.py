"""BufferStats: logs the buffer's divergence from the target and the draws per sample."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from gensim.buffers import FIFO, ReplayBuffer, Reservoir
from gensim.callbacks import BufferStats
from gensim.simulations import DecayingWave
from gensim.simulations.base import Sample
from sampling import Sobol


class RecordingLogger:
    def __init__(self) -> None:
        self.records: list[tuple[int, dict]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.records.append((step, dict(metrics)))


def fake_trainer(buffer: ReplayBuffer, simulation, root) -> SimpleNamespace:
    """The parts of a Lightning trainer the callback reads."""
    return SimpleNamespace(
        datamodule=SimpleNamespace(simulation=simulation, buffer=buffer),
        logger=RecordingLogger(),
        default_root_dir=str(root),
        global_step=0,
        global_rank=0,
    )


def fill(buffer: ReplayBuffer, simulation, n_sims: int, last_step: int) -> None:
    """Every step up to ``last_step`` of ``n_sims`` Sobol simulations, in on-line order."""
    params = Sobol(simulation.space, seed=0).sample(n_sims)
    for step in range(last_step + 1):
        for sim, p in enumerate(params):
            buffer.add(Sample(sim, step, float(step), p, {"u": np.zeros(16, np.float32)}), timeout=0)


@pytest.fixture
def simulation():
    return DecayingWave(size=16, n_steps=10)


def test_divergence_sees_a_buffer_of_early_steps(simulation, tmp_path):
    callback = BufferStats(n_cells=4, n_time_bins=5, n_reference=512)
    stats = {}
    for name, last_step in (("early", 2), ("all", 9)):
        buffer = ReplayBuffer(1000, simulation.fields, simulation.space.dim, policy=Reservoir())
        fill(buffer, simulation, 32, last_step)
        trainer = fake_trainer(buffer, simulation, tmp_path)
        callback.setup(trainer, None, "fit")
        stats[name] = callback.measure(buffer)
    assert stats["all"]["energy_distance"] < stats["early"]["energy_distance"]
    assert stats["all"]["chi_square"] < stats["early"]["chi_square"]


def test_draws_per_sample_and_final_report(simulation, tmp_path):
    buffer = ReplayBuffer(64, simulation.fields, simulation.space.dim, policy=FIFO())
    fill(buffer, simulation, 4, 9)  # 40 samples
    trainer = fake_trainer(buffer, simulation, tmp_path)
    callback = BufferStats(every_n_steps=2, n_cells=4, n_time_bins=5, n_reference=256)
    callback.setup(trainer, None, "fit")
    for step in (1, 2):
        buffer.draw(10)
        trainer.global_step = step
        callback.on_train_batch_end(trainer, None, None, None, step - 1)
    # Logged at step 2 only (every_n_steps=2): 20 of 40 samples consumed, each drawn once.
    assert [step for step, _ in trainer.logger.records] == [2]
    logged = trainer.logger.records[0][1]
    assert logged["buffer/retired_draws_mean"] == 1.0 and logged["buffer/retired_never_drawn"] == 0.0
    assert logged["buffer/never_drawn"] == 1.0 and logged["buffer/draws_max"] == 0.0

    buffer.draw(10)
    trainer.global_step = 3
    callback.on_train_end(trainer, None)  # measures once more, at step 3
    report = json.loads((tmp_path / "buffer_stats.json").read_text())
    assert report["retired_draws_histogram"][:2] == [0, 30] and report["stored_draws_histogram"] == [10]
    logged = [metrics["buffer/energy_distance"] for _, metrics in trainer.logger.records]
    assert len(logged) == 2 and report["mean_energy_distance"] == pytest.approx(np.mean(logged))
    assert report["energy_distance"] == pytest.approx(callback.study_metrics()["buffer_energy_distance"])
    assert set(callback.study_metrics()) >= {"buffer_energy_distance", "buffer_chi_square", "buffer_draws_mean"}


def test_measure_needs_setup():
    with pytest.raises(RuntimeError, match="needs setup"):
        BufferStats().measure(None)


def test_other_ranks_write_their_own_file(simulation, tmp_path):
    """Under DDP each rank measures its own buffer (no collective) and does not overwrite rank 0's file."""
    buffer = ReplayBuffer(64, simulation.fields, simulation.space.dim, policy=FIFO())
    fill(buffer, simulation, 2, 9)
    trainer = fake_trainer(buffer, simulation, tmp_path)
    trainer.global_rank = 1
    callback = BufferStats(every_n_steps=2, n_cells=4, n_time_bins=5, n_reference=256)
    callback.setup(trainer, None, "fit")
    callback.on_train_end(trainer, None)
    assert [p.name for p in tmp_path.iterdir()] == ["buffer_stats.rank1.json"]
    assert json.loads((tmp_path / "buffer_stats.rank1.json").read_text())["seen"] == 20.0
