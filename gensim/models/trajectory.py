"""Trajectory surrogate: the parameters alone give a code of the whole trajectory, read at any time."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gensim.models.components.decoder import NetFactory
from gensim.models.reduced_basis import StreamBasisSurrogate
from gensim.simulations.base import FieldSpec


class TrajectorySurrogate(StreamBasisSurrogate):
    """Map the parameters to a code of their whole trajectory in a POD basis fitted to the stream.

    The POD coefficients at time t are

        c(p, t) = W (h(p) * g(t)) + b,

    with ``h = net(normalized parameters)`` (``rank`` values, computed once per trajectory),
    ``g = time_net(normalized time features)`` (``rank`` smooth functions of t shared by every
    trajectory), ``*`` the elementwise product and ``W``, ``b`` the output layer (``n_modes``
    outputs, ``n_modes x (n_params + 1)`` with ``param_linear``). ``h(p)`` is a low-rank space-time code of the trajectory: ``trajectory(p, times)``
    decodes it at every time at once, ``forward(p, t)`` at one time. A training row (p, t, field)
    supervises the code at its time; the basis, its refits and the loss are those of
    :class:`~gensim.models.reduced_basis.StreamBasisSurrogate`.

    Parameters
    ----------
    fields : sequence of FieldSpec (or dicts of its arguments)
        Output fields, in buffer order.
    n_params : int
        Length of the parameter vector.
    net : callable
        ``net(n_params, rank) -> nn.Module``: the parameters' code (a Hydra partial such as
        :class:`gensim.models.components.MLP`).
    time_net : callable
        ``net(len(time_features), rank) -> nn.Module``: the time functions.
    time_features : sequence of str
        Features of t that ``time_net`` reads (:data:`gensim.models.base.TIME_FEATURES`).
    rank : int
        Width of the code and of the time functions.
    param_linear : bool
        Coefficients affine in the normalized parameters
        (:class:`~gensim.models.reduced_basis.StreamBasisSurrogate`).
    n_modes, basis_rows, refresh_every, whiten
        As :class:`~gensim.models.ReducedBasisSurrogate`.
    lr, weight_decay, warmup_steps, final_lr_ratio, normalizer_warmup_batches
        As :class:`~gensim.models.DeterministicSurrogate`.

    Batches
    -------
    ``{"params": (B, n_params), "t": (B,), "fields": (B, D)}`` float32 tensors, and ``sim_id``,
    ``step`` (B,) when streamed.
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec | dict],
        n_params: int,
        net: NetFactory,
        time_net: NetFactory,
        time_features: Sequence[str],
        rank: int,
        param_linear: bool,
        n_modes: int = 64,
        basis_rows: int = 2048,
        refresh_every: int = 500,
        whiten: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
        final_lr_ratio: float = 0.01,
        normalizer_warmup_batches: int = 100,
    ) -> None:
        basis = (n_modes, basis_rows, refresh_every, param_linear, whiten)
        super().__init__(fields, n_params, normalizer_warmup_batches, time_features, *basis)
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.save_hyperparameters(ignore=["net", "time_net", "fields"])
        self.record_fields()
        self.code = net(self.n_params, int(rank))
        self.time_functions = time_net(len(self.time_features), int(rank))
        self.head = nn.Linear(int(rank), int(n_modes) * self.coefficient_groups)
        self.check_output_layer()

    def output_layer(self) -> nn.Linear:
        """The output layer ``W, b``."""
        return self.head

    def coefficients_of(self, cond: torch.Tensor) -> torch.Tensor:
        """Coefficients (B, k) of a normalized condition (B, n_cond): parameters, then time features."""
        x, tau = cond[:, : self.n_params], cond[:, self.n_params :]
        return self.combine(self.head(self.code(x) * self.time_functions(tau)), x)

    def trajectory(self, params: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Fields in physical units at every time of ``times``, for each parameter vector.

        The code of each parameter vector is computed once, the time functions once per time.

        Parameters
        ----------
        params : Tensor, shape (B, n_params)
        times : Tensor, shape (S,)

        Returns
        -------
        Tensor, shape (B, S, D)
        """
        b, s = params.shape[0], times.shape[0]
        # The condition is normalized feature by feature: its parameter part does not depend on t,
        # its time part not on the parameters.
        x = self.condition(params, times[:1].expand(b))[:, : self.n_params]
        tau = self.condition(params[:1].expand(s, -1), times)[:, self.n_params :]
        out = self.head(self.code(x)[:, None, :] * self.time_functions(tau)[None, :, :])  # (B, S, k * groups)
        return self.out_norm.denormalize(self.basis.decode(self.combine(out, x[:, None, :])))
