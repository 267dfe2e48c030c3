"""Autoencoder: reconstructs fields through a few latent numbers, reports held-out reconstruction."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import torch
from generative_toy import FIELDS, N_PARAMS, ToyBatches, toy_batch
from torch.utils.data import DataLoader

from gensim.models import Autoencoder
from gensim.models.components import MLP


def make_ae(latent_dim: int) -> Autoencoder:
    return Autoencoder(
        FIELDS,
        N_PARAMS,
        net=partial(MLP, hidden=(64,)),
        encoder_net=partial(MLP, hidden=(64,)),
        latent_dim=latent_dim,
        lr=3e-3,
        warmup_steps=20,
        normalizer_warmup_batches=5,
    )


def test_reconstructs_the_toy_through_three_numbers(tmp_path, single_threaded):
    # The toy's fields span 3 directions (the mean's sin(pi x), cos(pi x), sin(2 pi x)): a latent
    # of 3 can reconstruct them, a latent of 1 cannot.
    torch.manual_seed(0)
    errors = {}
    for latent in (1, 3):
        model = make_ae(latent)
        trainer = L.Trainer(
            max_steps=300,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            default_root_dir=tmp_path,
        )
        trainer.fit(model, DataLoader(ToyBatches(seed=0), batch_size=None))
        model.eval()
        held_out = toy_batch(512, np.random.default_rng(1))
        metrics = model.heldout_metrics(held_out, datamodule=None)
        assert metrics["latent_dim"] == latent and metrics["recon_rel_l2_p99"] >= metrics["recon_rel_l2_mean"]
        errors[latent] = metrics["recon_rel_l2_mean"]
        with torch.no_grad():
            z = model.encode(held_out["fields"])
            assert z.shape == (512, latent)
            torch.testing.assert_close(model.decode(z), model.reconstruct(held_out["fields"]))
            trivial = model(held_out["params"], held_out["t"])
        assert trivial.shape == (512, 8) and torch.equal(trivial[0], trivial[-1])  # the mean field
    # Fields are ~1 in norm with O(1) fluctuations: 3 numbers leave a few percent, 1 leaves ~50%.
    assert errors[3] < 0.08, errors
    assert errors[1] > 3 * errors[3], errors
