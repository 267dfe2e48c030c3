"""Conditional Gaussian prior p(z | condition), with a full or diagonal covariance."""

from __future__ import annotations

import torch
from torch import nn

from gensim.models.components.decoder import NetFactory


class GaussianPrior(nn.Module):
    """A Gaussian over the latent whose mean and covariance depend on the condition.

    The network outputs the mean and a Cholesky factor of the covariance: a positive diagonal
    (``exp`` of bounded outputs) and, with ``full_covariance``, the strictly lower triangle. A
    full factor lets the prior follow latent codes whose spread is correlated across dimensions,
    which a diagonal prior samples with the wrong covariance. At initialization (outputs near
    0) it is close to N(0, I).

    Parameters
    ----------
    cond_features : int
        Condition size.
    latent_features : int
        Latent size L.
    net : callable
        ``net(in_features, out_features) -> nn.Module``.
    full_covariance : bool
        Learn the whole lower-triangular factor (``L (L + 3) / 2`` outputs) or only its
        diagonal (``2 L`` outputs).

    Shapes
    ------
    cond (B, cond_features) -> mean (B, L), scale_tril (B, L, L)
    """

    def __init__(self, cond_features: int, latent_features: int, net: NetFactory, full_covariance: bool = True) -> None:
        super().__init__()
        self.latent_features, self.full_covariance = int(latent_features), bool(full_covariance)
        n = self.latent_features
        self.register_buffer("_rows", torch.tril_indices(n, n, offset=-1)[0], persistent=False)
        self.register_buffer("_cols", torch.tril_indices(n, n, offset=-1)[1], persistent=False)
        n_off = self._rows.numel() if full_covariance else 0
        self.net = net(int(cond_features), 2 * n + n_off)

    def forward(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(cond)
        n = self.latent_features
        mean, log_diag = out[:, :n], out[:, n : 2 * n].clamp(-10.0, 5.0)  # bounded: exp() stays finite
        scale_tril = torch.diag_embed(log_diag.exp())
        if self.full_covariance:
            scale_tril = scale_tril.index_put(
                (torch.arange(cond.shape[0], device=cond.device)[:, None], self._rows, self._cols), out[:, 2 * n :]
            )
        return mean, scale_tril
