"""ConditionalVAE learns a conditional law, samples it, predicts its mean and round-trips a checkpoint."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from generative_toy import FIELDS, N_PARAMS, ToyBatches, toy_batch, toy_moments
from torch.utils.data import DataLoader

from gensim.models import ConditionalVAE
from gensim.models.components import MLP


def make_vae(**kwargs) -> ConditionalVAE:
    args = dict(
        net=partial(MLP, hidden=(64, 64)),
        encoder_net=partial(MLP, hidden=(64,)),
        prior_net=partial(MLP, hidden=(32,)),
        latent_dim=4,
        lr=3e-3,
        warmup_steps=20,
        kl_warmup_steps=100,
        normalizer_warmup_batches=5,
        energy_score_weight=0.0,
    )  # the plain ELBO on the toy law
    return ConditionalVAE(FIELDS, N_PARAMS, **(args | kwargs))


def test_learns_the_toy_law_and_restores_from_checkpoint(tmp_path, single_threaded):
    torch.manual_seed(0)
    model = make_vae()
    trainer = L.Trainer(
        max_steps=500,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DataLoader(ToyBatches(seed=0), batch_size=None))
    model.eval()
    test = toy_batch(6, np.random.default_rng(1))
    mean, std = toy_moments(test["params"].double().numpy(), test["t"].double().numpy())
    with torch.no_grad():
        samples = model.sample(test["params"], test["t"], 2000, torch.Generator().manual_seed(0)).double().numpy()
        pred = model(test["params"], test["t"])
    assert samples.shape == (6, 2000, 8)
    # Mean and std errors in units of the true std (pooled over conditions and points). The
    # Monte Carlo part is ~2% (2000 samples); 500 steps of a small network leave ~5-10%.
    scale = np.sqrt((std**2).mean())
    assert np.sqrt(((samples.mean(1) - mean) ** 2).mean()) / scale < 0.25
    assert np.abs(samples.std(1) - std).mean() / std.mean() < 0.25
    # The mean prediction averages n_mean_samples draws: close to the sample mean.
    assert np.sqrt(((pred.double().numpy() - mean) ** 2).mean()) / scale < 0.35

    path = tmp_path / "vae.ckpt"
    trainer.save_checkpoint(path)
    restored = ConditionalVAE.load_from_checkpoint(
        path,
        net=partial(MLP, hidden=(64, 64)),
        encoder_net=partial(MLP, hidden=(64,)),
        prior_net=partial(MLP, hidden=(32,)),
    )
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored(test["params"], test["t"]), pred)  # common random numbers


def test_kl_weight_warms_up_linearly():
    model = make_vae(kl_weight=0.5, kl_warmup_steps=10)
    assert [model.kl_beta(s) for s in (0, 4, 9, 50)] == pytest.approx([0.05, 0.25, 0.5, 0.5])
    assert make_vae(kl_warmup_steps=0).kl_beta(0) == 1.0


def test_noise_scale_is_floored_and_optional_in_samples():
    model = make_vae(noise_std=1e-6, min_noise_std=1e-2, sample_noise=True)
    assert float(model.noise_std()) == pytest.approx(1e-2)
    fixed = make_vae(learn_noise=False)
    assert not fixed.log_noise_std.requires_grad
    with pytest.raises(ValueError, match="noise_std > 0"):
        make_vae(noise_std=0.0)


def test_without_a_prior_network_the_prior_is_standard_normal():
    model = make_vae(prior_net=None)
    mean, tril = model.prior_params(torch.zeros(3, N_PARAMS + 1))
    assert torch.equal(mean, torch.zeros(3, 4)) and torch.equal(tril, torch.eye(4).expand(3, 4, 4))


def test_energy_score_term_trains_finite_and_is_logged(tmp_path, single_threaded):
    """With ``energy_score_weight`` > 0 the loss gains the energy score of prior samples: training
    stays finite and the term is logged."""
    torch.manual_seed(0)
    model = make_vae(energy_score_weight=1.0)
    logged = {}

    class Keep(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    trainer = L.Trainer(
        max_steps=100,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        callbacks=[Keep()],
    )
    trainer.fit(model, DataLoader(ToyBatches(seed=0), batch_size=None))
    assert "train_prior_energy_score" in logged and np.isfinite(logged["train_prior_energy_score"])
    assert np.isfinite(logged["train_loss"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_negative_energy_score_weight_is_rejected():
    with pytest.raises(ValueError, match="energy_score_weight >= 0"):
        make_vae(energy_score_weight=-1.0)
