"""End to end on a mesh: ``gensim-train simulation=plate_heat model=neural_field``, tiny."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from processes import run_study

#: 4 training and 1 held-out simulations of 5 steps on the plate meshed at h = 0.1, 20 steps.
TINY_MESH = [
    "simulation=plate_heat",
    "model=neural_field",
    "simulation.h=0.1",
    "simulation.n_steps=5",
    "launcher.max_simulations=4",
    "data.n_validation=1",
    "data.watermark=16",
    "data.batch_size=8",
    "data.steps_per_epoch=20",
    "buffer.capacity=64",
    "model.net.hidden=[32]",
    "model.branch.hidden=[32]",
    "model.nodes_per_sample=32",
    "model.warmup_steps=5",
    "model.normalizer_warmup_batches=2",
    "trainer.max_steps=20",
]


def test_plate_heat_neural_field_study(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _, metrics = run_study([sys.executable, "-m", "gensim.train", *TINY_MESH, f"hydra.run.dir={run_dir}"], run_dir)
    assert metrics["samples_rejected"] == 0 and metrics["simulations_failed"] == 0
    assert metrics["samples_received"] == 4 * 5  # training samples; the held-out ones apart
    assert metrics["heldout_samples_received"] == 1 * 5
    # The geometry went once per worker process (2 by default), not with each of the 25 steps.
    assert 1 <= metrics["meshes_verified"]["temperature"] <= 2
    assert all(math.isfinite(metrics[k]) for k in ("val_rel_l2_mean", "train_rel_l2_mean", "trivial_rel_l2_mean"))
