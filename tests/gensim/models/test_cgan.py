"""ConditionalGAN: finite training on the default config, alternating updates, collapse detection."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from generative_toy import FIELDS, N_PARAMS, ToyBatches, toy_batch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from gensim.models import ConditionalGAN
from gensim.models.components import MLP


class RecordLosses(Callback):
    """Every logged loss value of every step."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values += [
            float(v)
            for k, v in trainer.callback_metrics.items()
            if k in ("critic_loss", "generator_loss", "wasserstein", "gradient_penalty")
        ]


def default_gan() -> ConditionalGAN:
    """The model of conf/model/cgan.yaml (default networks and optimizer settings) on the toy."""
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["model=cgan", "model.normalizer_warmup_batches=5"])
    return instantiate(cfg.model)(fields=FIELDS, n_params=N_PARAMS)


def test_default_config_trains_finitely_and_alternates_updates(tmp_path, single_threaded):
    # 120 optimizer steps = 100 critic + 20 generator steps of the default WGAN-GP; the learning
    # rate is still warming up, so this checks numerics and bookkeeping, not convergence.
    torch.manual_seed(0)
    model = default_gan()
    before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    assert all(torch.equal(v, model.generator_ema.state_dict()[k]) for k, v in before.items())
    losses = RecordLosses()
    trainer = L.Trainer(
        max_steps=120,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        callbacks=[losses],
    )
    trainer.fit(model, DataLoader(ToyBatches(seed=0), batch_size=None))
    assert trainer.global_step == 120  # one optimizer step per batch, critic and generator alike
    assert losses.values and all(math.isfinite(v) for v in losses.values)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    after, averaged = model.generator.state_dict(), model.generator_ema.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the generator did step
    # The sampling average moved from the initial weights towards the trained ones, not onto them.
    moved = [k for k in before if not torch.equal(before[k], averaged[k])]
    assert moved and all(not torch.equal(averaged[k], after[k]) for k in moved)
    model.eval()
    test = toy_batch(4, np.random.default_rng(1))
    with torch.no_grad():
        samples = model.sample(test["params"], test["t"], 8)
        mean = model(test["params"], test["t"])
    assert samples.shape == (4, 8, 8) and torch.isfinite(samples).all() and torch.isfinite(mean).all()


def test_diversity_report_flags_a_generator_that_ignores_its_latent():
    torch.manual_seed(0)
    model = ConditionalGAN(
        FIELDS,
        N_PARAMS,
        net=partial(MLP, hidden=(16,)),
        critic_net=partial(MLP, hidden=(16,)),
        latent_dim=4,
        normalizer_warmup_batches=1,
    )
    batch = toy_batch(256, np.random.default_rng(2))
    model.normalized_batch(batch)  # fit the normalizers on one batch
    model.eval()
    with torch.no_grad():
        for generator in (model.generator, model.generator_ema):  # eval mode samples the average
            generator.net.layers[0].weight[:, model.n_cond :] = 0.0  # latent columns: full collapse
    report = model.diversity_report(batch)
    assert report["diversity_ratio"] == 0.0 and report["mode_collapse"] == 1.0


def test_spectral_norm_option_bounds_the_critic_layers():
    model = ConditionalGAN(
        FIELDS, N_PARAMS, net=partial(MLP, hidden=(16,)), critic_net=partial(MLP, hidden=(32, 32)), spectral_norm=True
    )
    model.critic.train()
    x, c = torch.randn(64, 8), torch.randn(64, N_PARAMS + 1)
    for _ in range(30):  # power iterations converge while training runs
        model.critic(x, c)
    for layer in model.critic.net.layers:
        if isinstance(layer, torch.nn.Linear):
            assert float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2)) == pytest.approx(1.0, abs=0.05)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="ema_decay"):
        ConditionalGAN(
            FIELDS, N_PARAMS, net=partial(MLP, hidden=(8,)), critic_net=partial(MLP, hidden=(8,)), ema_decay=1.0
        )
    with pytest.raises(ValueError, match="n_critic"):
        ConditionalGAN(
            FIELDS, N_PARAMS, net=partial(MLP, hidden=(8,)), critic_net=partial(MLP, hidden=(8,)), n_critic=0
        )
