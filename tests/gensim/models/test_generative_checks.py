"""Held-out checks of the generative surrogates: validation logs and metrics.json entries."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, StackDataset

from gensim.models import ConditionalGAN, ConditionalVAE, DistributionCheck
from gensim.models.components import MLP
from gensim.simulations import DecayingWave, StochasticHeat

CHECK = DistributionCheck(n_samples=16, step_fractions=(1.0,), n_components=4, diversity_samples=4)


def held_out(sim, n_sims: int = 3) -> dict[str, torch.Tensor]:
    """Validation tensors as StreamingDataModule builds them: every step of a few simulations."""
    rows = []
    for sim_id, p in enumerate(sim.space.from_unit(np.random.default_rng(0).random((n_sims, sim.space.dim)))):
        for _, t, f in sim.run(p, seed=100 + sim_id):
            rows.append((p, t, f[sim.fields[0].name].reshape(-1), sim_id))
    return {
        "params": torch.tensor(np.stack([r[0] for r in rows]), dtype=torch.float32),
        "t": torch.tensor([r[1] for r in rows], dtype=torch.float32),
        "fields": torch.tensor(np.stack([r[2] for r in rows]), dtype=torch.float32),
        "sim_id": torch.tensor([r[3] for r in rows]),
    }


class Stream(IterableDataset):
    """Batches drawn from a fixed set of rows (enough for a few steps)."""

    def __init__(self, rows: dict[str, torch.Tensor]) -> None:
        self.rows = rows

    def __iter__(self):
        gen = torch.Generator().manual_seed(0)
        while True:
            idx = torch.randint(0, self.rows["fields"].shape[0], (32,), generator=gen)
            yield {k: self.rows[k][idx] for k in ("params", "t", "fields")}


class HeldOutData(L.LightningDataModule):
    """The two things a generative model asks of gensim's data module: the simulation and the
    held-out tensors."""

    def __init__(self, simulation) -> None:
        super().__init__()
        self.simulation = simulation
        self.train_rows, self.val = held_out(simulation, 8), held_out(simulation)

    def validation_tensors(self) -> dict[str, torch.Tensor]:
        return self.val

    def train_dataloader(self):
        return DataLoader(Stream(self.train_rows), batch_size=None)

    def val_dataloader(self):
        return DataLoader(StackDataset(**{k: self.val[k] for k in ("params", "t", "fields")}), batch_size=64)


def small(model_cls, sim):
    nets = {"net": partial(MLP, hidden=(32,))}
    nets |= (
        {"encoder_net": partial(MLP, hidden=(32,))}
        if model_cls is ConditionalVAE
        else {"critic_net": partial(MLP, hidden=(32,))}
    )
    return model_cls(
        sim.fields, sim.space.dim, latent_dim=4, normalizer_warmup_batches=2, warmup_steps=2, check=CHECK, **nets
    )


@pytest.mark.parametrize("model_cls", [ConditionalVAE, ConditionalGAN])
def test_validation_logs_and_heldout_metrics_on_a_stochastic_simulation(model_cls, tmp_path):
    torch.manual_seed(0)
    sim = StochasticHeat(grid=8, n_steps=2)
    data = HeldOutData(sim)
    model = small(model_cls, sim)
    trainer = L.Trainer(
        max_steps=12,
        val_check_interval=12,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=data)
    logged = trainer.callback_metrics
    for key in (
        "val_rel_l2_mean",
        "val_diversity_ratio",
        "val_mode_collapse",
        "val_energy_distance_ratio",
        "val_std_rel_error",
        "val_spectrum_error",
    ):
        assert key in logged and torch.isfinite(logged[key]), key
    model.eval()
    metrics = model.heldout_metrics(data.val, data)
    # 3 held-out vectors x 1 checked step; each metric beside its floor, distances as ratios.
    assert metrics["distribution_conditions"] == 3 and metrics["distribution_samples"] == 16
    for name in ("energy_distance", "sliced_wasserstein", "energy_score", "std_rel_error", "spectrum_error"):
        assert np.isfinite(metrics[name]) and np.isfinite(metrics[f"{name}_floor"])
    ratio = metrics["energy_distance"] / metrics["energy_distance_floor"]
    assert metrics["energy_distance_ratio"] == pytest.approx(ratio)
    assert metrics["mode_collapse"] in (0.0, 1.0)
    # The reference was simulated once, at the first validation, and reused.
    assert model.reference(sim, data.val) is model._reference


def test_a_deterministic_simulation_gets_no_distribution_metrics():
    sim = DecayingWave(size=8, n_steps=3)
    val = held_out(sim)
    model = small(ConditionalVAE, sim)
    model.normalized_batch(val)
    model.normalized_batch(val)
    model.eval()
    metrics = model.heldout_metrics(val, type("DataModule", (), {"simulation": sim})())
    assert set(metrics) == {"diversity_ratio", "mode_collapse"}
