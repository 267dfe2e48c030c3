"""Encoder: (fields, condition) -> a latent code, or a Gaussian over it."""

from __future__ import annotations

import torch
from torch import nn

from gensim.models.components.decoder import NetFactory, _concat


class Encoder(nn.Module):
    """Map flattened fields (and a condition) to a latent vector or to a diagonal Gaussian.

    Parameters
    ----------
    in_features : int
        Flattened field size D.
    cond_features : int
        Condition size; 0 for an unconditional encoder (the autoencoder).
    latent_features : int
        Latent size L.
    net : callable
        ``net(in_features, out_features) -> nn.Module``.
    variational : bool
        Return the mean and log-variance of ``q(z | x, c)`` (a conditional VAE) instead of a code.

    Shapes
    ------
    x (B, D), cond (B, cond_features) -> z (B, L), or (mean (B, L), log_var (B, L))
    """

    def __init__(
        self, in_features: int, cond_features: int, latent_features: int, net: NetFactory, variational: bool = False
    ) -> None:
        super().__init__()
        if latent_features < 1:
            raise ValueError(f"latent_features: expected >= 1, got {latent_features}")
        self.in_features, self.cond_features = int(in_features), int(cond_features)
        self.latent_features, self.variational = int(latent_features), bool(variational)
        self.net = net(self.in_features + self.cond_features, self.latent_features * (2 if variational else 1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        out = self.net(_concat(x, self.in_features, cond, self.cond_features))
        if not self.variational:
            return out
        mean, log_var = out.chunk(2, dim=-1)
        # Bounded log-variance: exp() of an early, wild output must not overflow the KL term.
        return mean, log_var.clamp(-20.0, 10.0)
