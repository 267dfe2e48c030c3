"""Critic: (fields, condition) -> a real score, for adversarial training."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from gensim.models.components.decoder import NetFactory, _concat


class Critic(nn.Module):
    """Score how real flattened fields look given their condition (a WGAN critic).

    The network reads the fields and the condition side by side. With ``projection_features``
    it returns that many features ``phi`` instead of a score, and the score is
    ``w . silu(phi) + e(c) . silu(phi)`` with ``e`` a linear embedding of the condition (the
    projection discriminator of Miyato & Koyama, 2018): the condition then scales the features
    multiplicatively, which suits laws whose spread, not only mean, depends on the condition.

    Parameters
    ----------
    in_features : int
        Flattened field size D.
    cond_features : int
        Condition size (the critic judges a field *for* its parameters and time).
    net : callable
        ``net(in_features, out_features) -> nn.Module``. No batch normalization: a gradient
        penalty assumes every score depends on its own sample only.
    spectral_norm : bool
        Spectrally normalize every linear layer (a Lipschitz bound by construction, for hinge
        losses; WGAN-GP does not need it).
    projection_features : int
        Width of the projection features; 0 for a plain score network.

    Shapes
    ------
    x (B, D), cond (B, cond_features) -> (B,)
    """

    def __init__(
        self,
        in_features: int,
        cond_features: int,
        net: NetFactory,
        spectral_norm: bool = False,
        projection_features: int = 0,
    ) -> None:
        super().__init__()
        self.in_features, self.cond_features = int(in_features), int(cond_features)
        width = int(projection_features)
        self.net = net(self.in_features + self.cond_features, width if width > 0 else 1)
        self.head = nn.Linear(width, 1) if width > 0 else None
        self.embed = nn.Linear(self.cond_features, width, bias=False) if width > 0 and self.cond_features else None
        if spectral_norm:
            for module in list(self.modules()):
                if isinstance(module, nn.Linear):
                    _spectral_norm(module)  # registers the parametrization in place

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        out = self.net(_concat(x, self.in_features, cond, self.cond_features))
        if self.head is None:
            return out.squeeze(-1)
        phi = nn.functional.silu(out)
        score = self.head(phi).squeeze(-1)
        return score if self.embed is None else score + (self.embed(cond) * phi).sum(-1)
