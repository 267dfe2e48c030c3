"""The shared networks: Decoder, Encoder, Critic, GaussianPrior; inputs checked, outputs shaped."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from gensim.models.components import MLP, Critic, Decoder, Encoder, GaussianPrior

NET = partial(MLP, hidden=(16,))


def test_decoder_with_condition_latent_or_both():
    c, z = torch.randn(5, 3), torch.randn(5, 2)
    assert Decoder(3, 0, 7, NET)(c).shape == (5, 7)  # the deterministic surrogate
    assert Decoder(3, 2, 7, NET)(c, z).shape == (5, 7)  # cVAE / cGAN
    assert Decoder(0, 2, 7, NET)(z=z).shape == (5, 7)  # the autoencoder
    with pytest.raises(ValueError, match=r"second input: expected \(B, 2\), got nothing"):
        Decoder(3, 2, 7, NET)(c)
    with pytest.raises(ValueError, match=r"first input: expected \(B, 3\), got shape \(5, 2\)"):
        Decoder(3, 2, 7, NET)(z, z)
    with pytest.raises(ValueError, match="neither"):
        Decoder(0, 0, 7, NET)


def test_encoder_code_or_gaussian():
    x, c = torch.randn(5, 7), torch.randn(5, 3)
    assert Encoder(7, 0, 2, NET)(x).shape == (5, 2)
    mean, log_var = Encoder(7, 3, 2, NET, variational=True)(x, c)
    assert mean.shape == log_var.shape == (5, 2)
    wild = Encoder(7, 3, 2, NET, variational=True)
    with torch.no_grad():
        wild.net.layers[-1].bias.fill_(1e4)
    assert float(wild(x, c)[1].max()) <= 10.0  # clamped: exp() cannot overflow the KL term
    with pytest.raises(ValueError, match="latent_features"):
        Encoder(7, 3, 0, NET)


def test_critic_scores_each_sample_independently():
    critic = Critic(7, 3, NET)
    x, c = torch.randn(5, 7), torch.randn(5, 3)
    scores = critic(x, c)
    assert scores.shape == (5,)
    torch.testing.assert_close(critic(x[:2], c[:2]), scores[:2])  # no batch statistics


def test_projection_critic_mixes_the_condition_into_the_features():
    critic = Critic(7, 3, NET, projection_features=8)
    x, c = torch.randn(5, 7), torch.randn(5, 3)
    assert critic(x, c).shape == (5,)
    with torch.no_grad():
        critic.embed.weight.zero_()
        phi = torch.nn.functional.silu(critic.net(torch.cat([x, c], 1)))
        torch.testing.assert_close(critic(x, c), critic.head(phi).squeeze(-1))  # no projection term left


def test_gaussian_prior_starts_near_standard_normal_and_is_lower_triangular():
    prior = GaussianPrior(3, 4, NET)
    with torch.no_grad():
        for p in prior.net.layers[-1].parameters():
            p.zero_()  # outputs 0: mean 0, log-diagonal 0, no off-diagonal terms
    mean, tril = prior(torch.randn(2, 3))
    assert torch.equal(mean, torch.zeros(2, 4)) and torch.equal(tril, torch.eye(4).expand(2, 4, 4))
    _, tril = GaussianPrior(3, 4, NET)(torch.randn(2, 3))
    assert torch.equal(tril, torch.tril(tril)) and bool((torch.diagonal(tril, dim1=1, dim2=2) > 0).all())
    _, diag = GaussianPrior(3, 4, NET, full_covariance=False)(torch.randn(2, 3))
    assert torch.equal(diag, torch.diag_embed(torch.diagonal(diag, dim1=1, dim2=2)))
