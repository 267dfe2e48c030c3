"""Convolutional decoder: a vector to fields on a regular grid, by upsampling a small latent grid."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from gensim.models.components.decoder import NetFactory
from gensim.models.components.mlp import _ACTIVATIONS

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def upsampling_plan(shape: Sequence[int], latent_size: int) -> tuple[int, tuple[int, ...]]:
    """Stages and latent grid that reach at least ``shape`` by doublings.

    ``k = ceil(log2(max(shape) / latent_size))`` doublings (0 when the grid is no larger than
    ``latent_size``) from a latent grid of ``ceil(n / 2**k)`` cells per axis, so the last stage's
    grid, ``ceil(n / 2**k) * 2**k`` per axis, is the field's grid or less than ``2**k`` cells larger;
    the surplus is cropped. E.g. (32, 32) and 4: 3 stages from (4, 4); (48, 20) and 4: 4 stages
    from (3, 2) to (48, 32), cropped to (48, 20).

    Parameters
    ----------
    shape : sequence of int
        The field's grid, 1 to 3 axes.
    latent_size : int
        Cells of the latent grid along the longest axis, at most (>= 1).

    Returns
    -------
    (int, tuple of int)
        The number of doublings and the latent grid.
    """
    if latent_size < 1:
        raise ValueError(f"latent_size must be a positive integer, got {latent_size}; e.g. model.latent_size=4")
    stages = max(0, math.ceil(math.log2(max(shape) / latent_size)))
    return stages, tuple(math.ceil(n / 2**stages) for n in shape)


class GridDecoder(nn.Module):
    """``x -> MLP -> latent grid -> (transposed conv x2, activation) x k -> conv -> crop``.

    An MLP maps the input to ``channels`` maps on a small latent grid (:func:`upsampling_plan`);
    each stage doubles the grid by a transposed convolution of size and stride 2 that halves the
    channels, down to ``min_channels``; a last ``kernel`` convolution (which also smooths the
    2 x 2 blocks of the last doubling) gives ``out_channels`` maps, cropped to ``shape``. Its
    weights do not grow with the grid but its activations do (about ``min_channels`` values per
    grid cell and sample). Transposed convolutions rather than interpolation then a 3 x 3
    convolution: on one CPU thread, a 32 x 32 grid and 128 samples, the step cost about half
    (one measurement on a loaded machine, 204 against 382 ms with 64 -> 16 maps).

    Parameters
    ----------
    in_features : int
        Inputs per sample.
    out_channels : int
        Output maps (one per field).
    shape : sequence of int
        The output grid, 1 to 3 axes (any sizes, not only powers of two).
    net : callable
        ``net(in_features, out_features) -> nn.Module`` mapping the input to the latent grid's
        ``channels * prod(latent grid)`` values, e.g. a partial of
        :class:`~gensim.models.components.MLP`.
    latent_size : int
        Cells of the latent grid along the grid's longest axis, at most.
    channels : int
        Maps of the latent grid.
    min_channels : int
        Fewest maps of a stage.
    kernel : int
        Odd size of the last convolution (same-size padding).
    activation : str
        As in :class:`~gensim.models.components.MLP`.

    Shapes
    ------
    input (B, in_features) -> output (B, out_channels, *shape)
    """

    def __init__(
        self,
        in_features: int,
        out_channels: int,
        shape: Sequence[int],
        net: NetFactory,
        latent_size: int,
        channels: int,
        min_channels: int,
        kernel: int,
        activation: str,
    ) -> None:
        super().__init__()
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) not in _CONV:
            raise ValueError(f"a grid decoder handles grids of 1 to 3 axes, got shape {self.shape}")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd integer, got {kernel}; e.g. model.kernel=3")
        if channels < 1 or min_channels < 1:
            raise ValueError(f"channels and min_channels must be positive, got {channels} and {min_channels}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        stages, self.latent_shape = upsampling_plan(self.shape, int(latent_size))
        dim, self.channels = len(self.shape), int(channels)
        self.head = net(int(in_features), self.channels * math.prod(self.latent_shape))
        layers: list[nn.Module] = []
        width = self.channels
        for _ in range(stages):
            out = max(width // 2, int(min_channels))
            layers += [_CONV_TRANSPOSE[dim](width, out, 2, stride=2), _ACTIVATIONS[activation]()]
            width = out
        # Linear last layer, as the MLP's: the maps of the last stage combine into the fields.
        layers.append(_CONV[dim](width, int(out_channels), kernel, padding=kernel // 2))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.body(self.head(x).unflatten(1, (self.channels, *self.latent_shape)))
        # Keep the first n cells of each axis (the grid overshoots by less than 2**stages).
        return grid[(..., *(slice(0, n) for n in self.shape))]
