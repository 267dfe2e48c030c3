"""Convolutional surrogate for grid fields: (parameters, t) -> a small latent grid -> upsampling convolutions."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gensim.models.components.decoder import NetFactory
from gensim.models.components.grid_decoder import GridDecoder
from gensim.models.deterministic import RegressionSurrogate
from gensim.simulations.base import FieldSpec

__all__ = ["ConvDecoderSurrogate"]


class ConvDecoderSurrogate(RegressionSurrogate):
    """Regress grid fields on (parameters, t) with a convolutional decoder, MSE in normalized units.

    The fields share one grid (1 to 3 axes, any sizes) and are the decoder's output maps
    (:class:`~gensim.models.components.grid_decoder.GridDecoder`): an MLP of the normalized
    condition gives a latent grid of ``latent_size`` cells along the longest axis, which
    transposed convolutions bring to the field's grid (cropped when the grid is not the latent
    grid times a power of two). The output is in the per-value normalized units of ``out_norm``,
    as the deterministic surrogate's; the loss and schedule are that model's too
    (:class:`~gensim.models.deterministic.RegressionSurrogate`), only the network differs: its
    weights do not grow with the grid, where the MLP's last layer holds ``hidden[-1] x D`` of
    them.

    Parameters
    ----------
    fields : sequence of FieldSpec (or dicts of its arguments)
        Output fields, in buffer order, all grid fields (no mesh) of one shape.
    n_params : int
        Length of the parameter vector.
    net : callable
        ``net(n_cond, channels * prod(latent grid)) -> nn.Module``, the MLP to the latent grid.
    latent_size : int
        Cells of the latent grid along the longest axis, at most.
    channels : int
        Maps of the latent grid, halved by each upsampling stage down to ``min_channels``.
    min_channels : int
        Fewest maps of a stage.
    kernel : int
        Odd size of the last convolution.
    activation : str
        Activation of the upsampling stages (``relu``, ``gelu``, ``silu``, ``tanh``).
    lr, weight_decay, warmup_steps, final_lr_ratio, normalizer_warmup_batches, time_features
        As in :class:`~gensim.models.DeterministicSurrogate`.

    Batches
    -------
    ``{"params": (B, n_params), "t": (B,), "fields": (B, D)}`` float32 tensors,
    ``D = n_fields * prod(shape)``, each field's values in C order.
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec | dict],
        n_params: int,
        net: NetFactory,
        latent_size: int,
        channels: int,
        min_channels: int,
        kernel: int,
        activation: str,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        final_lr_ratio: float,
        normalizer_warmup_batches: int,
        time_features: Sequence[str],
    ) -> None:
        super().__init__(fields, n_params, normalizer_warmup_batches, time_features)
        self.save_hyperparameters(ignore=["net", "fields"])
        self.record_fields()
        first = self.fields[0]
        for f in self.fields:
            if f.mesh is not None or f.shape != first.shape:
                raise ValueError(
                    f"a convolutional decoder needs grid fields of one shape; {f.name!r} has shape {f.shape}"
                    f"{' on a mesh' if f.mesh is not None else ''}, {first.name!r} {first.shape}: "
                    "use model=deterministic or model=neural_field"
                )
        self.decoder = GridDecoder(
            self.n_cond, len(self.fields), first.shape, net, latent_size, channels, min_channels, kernel, activation
        )

    def normalized_prediction(self, cond: torch.Tensor) -> torch.Tensor:
        """Fields in normalized units (B, D) from the normalized condition (B, n_cond)."""
        return self.decoder(cond).flatten(1)
