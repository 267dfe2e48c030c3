"""Multi-layer perceptron decoder: (parameters, t) -> flattened fields."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """A fully connected network ``in_features -> hidden... -> out_features``.

    The last layer is linear: with D outputs it learns a basis of ``hidden[-1]`` fields that the
    hidden layers combine, which suits smooth fields on a fixed grid.

    Parameters
    ----------
    in_features : int
        Inputs per sample, e.g. n_params + 1 (the time).
    out_features : int
        Outputs per sample, e.g. the number of grid values D.
    hidden : sequence of int
        Widths of the hidden layers.
    activation : str
        One of ``relu``, ``gelu``, ``silu``, ``tanh``.

    Shapes
    ------
    input (B, in_features) -> output (B, out_features)
    """

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int], activation: str = "silu") -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), _ACTIVATIONS[activation]()]
            width = int(h)
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)
