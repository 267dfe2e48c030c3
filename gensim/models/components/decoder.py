"""Decoder: (condition, latent) -> flattened fields, the generating network of every surrogate."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NetFactory = Callable[[int, int], nn.Module]


class Decoder(nn.Module):
    """Map a condition and a latent vector to the flattened fields.

    The deterministic surrogate uses it with no latent (``latent_features=0``), the conditional
    VAE and GAN with a latent drawn from a standard normal, the autoencoder with no condition
    (``cond_features=0``): the surrogates differ in their objective, not in this network.

    Parameters
    ----------
    cond_features : int
        Condition size (``n_cond``: the parameters and features of t; 0 for none).
    latent_features : int
        Latent size (0 for none).
    out_features : int
        Flattened field size D.
    net : callable
        ``net(in_features, out_features) -> nn.Module``, e.g. a partial of
        :class:`gensim.models.components.MLP`.

    Shapes
    ------
    cond (B, cond_features) and z (B, latent_features) -> (B, out_features)
    """

    def __init__(self, cond_features: int, latent_features: int, out_features: int, net: NetFactory) -> None:
        super().__init__()
        if cond_features + latent_features < 1:
            raise ValueError(
                "a decoder needs a condition or a latent (or both), got neither; "
                f"cond_features={cond_features}, latent_features={latent_features}"
            )
        self.cond_features, self.latent_features = int(cond_features), int(latent_features)
        self.net = net(self.cond_features + self.latent_features, int(out_features))

    def forward(self, cond: torch.Tensor | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(_concat(cond, self.cond_features, z, self.latent_features))


def _concat(a: torch.Tensor | None, a_features: int, b: torch.Tensor | None, b_features: int) -> torch.Tensor:
    """Concatenate the inputs a network was built for, checking their widths."""
    parts = []
    for name, x, width in (("first input", a, a_features), ("second input", b, b_features)):
        if width == 0:
            continue
        if x is None or x.shape[-1] != width:
            got = "nothing" if x is None else f"shape {tuple(x.shape)}"
            raise ValueError(f"{name}: expected (B, {width}), got {got}")
        parts.append(x)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
