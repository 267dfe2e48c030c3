"""DeterministicSurrogate learns a smooth map and round-trips through a Lightning checkpoint."""

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from gensim.models import DeterministicSurrogate
from gensim.models.components import MLP
from gensim.simulations import DecayingWave


class WaveBatches(IterableDataset):
    """Endless random batches of the analytic decaying wave (seeded)."""

    def __init__(self, sim: DecayingWave, batch_size: int, seed: int) -> None:
        self.sim, self.batch_size, self.rng = sim, batch_size, np.random.default_rng(seed)

    def batch(self, n: int) -> dict[str, torch.Tensor]:
        p = self.sim.space.from_unit(self.rng.random((n, 2)))
        t = self.rng.choice(self.sim.times, n)
        y = np.stack([self.sim.exact(pi, ti) for pi, ti in zip(p, t)])
        return {
            "params": torch.tensor(p, dtype=torch.float32),
            "t": torch.tensor(t, dtype=torch.float32),
            "fields": torch.tensor(y, dtype=torch.float32),
        }

    def __iter__(self):
        while True:
            yield self.batch(self.batch_size)


def make_model(sim):
    return DeterministicSurrogate(
        sim.fields,
        sim.space.dim,
        net=partial(MLP, hidden=(64, 64)),
        lr=3e-3,
        warmup_steps=10,
        normalizer_warmup_batches=5,
    )


def test_learns_the_decaying_wave_and_restores_from_checkpoint(tmp_path):
    torch.manual_seed(0)
    sim = DecayingWave(size=16, n_steps=10)
    data = WaveBatches(sim, 64, seed=0)
    model = make_model(sim)
    trainer = L.Trainer(
        max_steps=600,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        enable_checkpointing=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=None))
    test = WaveBatches(sim, 512, seed=1).batch(512)
    model.eval()
    with torch.no_grad():
        pred = model(test["params"], test["t"])
    rel = (torch.linalg.norm(pred - test["fields"], dim=1) / torch.linalg.norm(test["fields"], dim=1)).mean()
    # Fields vary by 6x in norm over the space; the mean field is ~25% off. A few hundred steps
    # of a small MLP on this smooth 2-parameter map reach well under 2%.
    assert rel < 0.02, float(rel)

    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    restored = DeterministicSurrogate.load_from_checkpoint(path, net=partial(MLP, hidden=(64, 64)))
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored(test["params"], test["t"]), pred)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # training_step called outside a Trainer
def test_importance_weights_of_the_batch_weight_the_loss():
    """A batch with ``weight`` (from a distribution-aware buffer) gives the weighted mean of the
    per-sample squared errors; weights of one give the plain mean."""
    torch.manual_seed(0)
    sim = DecayingWave(size=8, n_steps=4)
    model = DeterministicSurrogate(
        sim.fields, len(sim.space.names), partial(MLP, hidden=(8,)), normalizer_warmup_batches=1
    )
    batch = {"params": torch.rand(6, len(sim.space.names)), "t": torch.rand(6), "fields": torch.randn(6, 8)}
    plain = model.training_step(dict(batch), 0)
    ones = model.training_step(dict(batch, weight=torch.ones(6)), 0)
    torch.testing.assert_close(ones, plain)

    cond, y = model.normalized_batch(batch)
    per_sample = (model.decoder(cond) - y).pow(2).mean(dim=1)
    weight = torch.tensor([0.0, 0.0, 0.0, 2.0, 2.0, 2.0])
    weighted = model.training_step(dict(batch, weight=weight), 0)
    torch.testing.assert_close(weighted, per_sample[3:].mean())
