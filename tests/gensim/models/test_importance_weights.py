"""Every surrogate's training loss follows the replay buffer's importance weights (``batch["weight"]``).

A distribution-aware buffer adds the weights so that the loss is unbiased for its target law;
a model that ignored them would silently train on the buffer's arrival-biased content. The
contract, per model and per loss: weights of one give the unweighted loss, and a sample of
weight zero has no influence (replacing its data leaves the loss unchanged, with the same
random draws), while the same replacement does change the unweighted loss.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import pytest
import torch
from generative_toy import FIELDS, N_PARAMS, toy_batch

from gensim.models import Autoencoder, ConditionalGAN, ConditionalVAE, DeterministicSurrogate
from gensim.models.components import MLP

Loss = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def _losses() -> dict[str, tuple[object, Loss]]:
    """Model name -> (model, loss of a batch); normalizers frozen after one batch."""
    net = partial(MLP, hidden=(16,))
    models = {
        "deterministic": DeterministicSurrogate(FIELDS, N_PARAMS, net, normalizer_warmup_batches=1),
        "cvae": ConditionalVAE(
            FIELDS,
            N_PARAMS,
            net=net,
            encoder_net=net,
            prior_net=net,
            latent_dim=3,
            energy_score_weight=0.5,
            normalizer_warmup_batches=1,
        ),
        "autoencoder": Autoencoder(
            FIELDS, N_PARAMS, net=net, encoder_net=net, latent_dim=3, normalizer_warmup_batches=1
        ),
    }
    losses: dict[str, tuple[object, Loss]] = {
        name: (m, partial(m.training_step, batch_idx=0)) for name, m in models.items()
    }
    gan = ConditionalGAN(
        FIELDS, N_PARAMS, net=net, critic_net=net, latent_dim=3, projection_features=8, normalizer_warmup_batches=1
    )

    def gan_loss(which: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        cond, y = gan.normalized_batch(batch)
        z = torch.randn(y.shape[0], gan.latent_dim)
        return getattr(gan, f"{which}_loss")(cond, y, z, batch)[0]

    losses["cgan_critic"] = (gan, partial(gan_loss, "critic"))
    losses["cgan_generator"] = (gan, partial(gan_loss, "generator"))
    return losses


def _seeded(loss: Loss, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    torch.manual_seed(1)  # the same latent and interpolation draws for every call
    return loss(batch)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # training_step outside a Trainer
@pytest.mark.parametrize("name", ["deterministic", "cvae", "autoencoder", "cgan_critic", "cgan_generator"])
def test_loss_follows_importance_weights(name):
    model, loss = _losses()[name]
    rng = np.random.default_rng(0)
    batch = toy_batch(8, rng)
    _seeded(loss, batch)  # freezes the normalizers on this batch
    other = toy_batch(8, rng)
    # The last two samples replaced by others: an unweighted loss sees it.
    changed = {k: torch.cat([batch[k][:6], other[k][6:]]) for k in batch}
    assert not torch.allclose(_seeded(loss, batch), _seeded(loss, changed))

    torch.testing.assert_close(_seeded(loss, dict(batch, weight=torch.ones(8))), _seeded(loss, batch))
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0, 1.5, 2.0, 0.0, 0.0])
    weighted = _seeded(loss, dict(batch, weight=weight))
    torch.testing.assert_close(_seeded(loss, dict(changed, weight=weight)), weighted)
    assert not torch.allclose(weighted, _seeded(loss, batch))
