"""Reduced-basis surrogates: networks predict the POD coefficients of the fields, the basis comes from the stream."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gensim.data.ranks import gather_rows
from gensim.models.base import FieldSurrogate
from gensim.models.components import ReducedBasis
from gensim.models.components.decoder import NetFactory
from gensim.models.training_probe import TrainingProbe
from gensim.simulations.base import FieldSpec


def last_linear(net: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of ``net`` (its output layer when it ends with one)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"the net {type(net).__name__} has no nn.Linear; the reduced-basis surrogates need one as output layer "
            "(its weights are mapped onto each new basis); use gensim.models.components.MLP"
        )
    return linears[-1]


class StreamBasisSurrogate(FieldSurrogate):
    """Base of the surrogates that predict the coefficients of a POD basis fitted to the stream.

    The prediction is ``mean + (c * unit) @ modes`` in normalized field units, with ``c`` (B, k)
    the output of :meth:`coefficients_of`, ``unit`` each mode's standard deviation (``whiten``)
    or 1, and the basis (:class:`~gensim.models.components.ReducedBasis`)
    the ``n_modes`` leading POD modes of a uniform sample of the distinct training rows streamed so
    far (:class:`~gensim.models.training_probe.TrainingProbe`, ``basis_rows`` rows). The basis is
    fitted at the first step and refitted as data arrive: at steps 10, 20, 40, ... (the sample
    grows fast early) and then every ``refresh_every`` steps. At a refit the network's output
    layer (:meth:`output_layer`, an ``nn.Linear``) is mapped onto the new basis, so that the
    prediction does not jump: the old prediction is projected on the new modes.

    The loss is the mean squared error of the fields in normalized units, computed on the
    coefficients (``sum_i unit_i^2 (c_i - a_i)^2 / D`` with ``a`` the target's coefficients),
    which differs from the field error by the target's residual off the basis, a constant for the
    network.

    Under data-parallel training the snapshot samples of every rank are gathered at each refit,
    and every rank fits the same basis (a seeded randomized SVD).

    With ``param_linear`` the output layer gives ``n_modes x (n_params + 1)`` values ``a_0, a_i``
    per row and the coefficients are ``a_0 + sum_i a_i x_i`` (:meth:`combine`), ``x`` the
    normalized parameters: affine in the parameters, with slopes that the network makes depend on
    them. A solution linear in some parameters (a linear PDE's boundary or initial values, as
    heat2d's temperatures) then needs slopes that depend on the other parameters only, where a
    plain network must learn the products.

    Subclasses build their network, call :meth:`check_output_layer`, and implement
    :meth:`coefficients_of` and :meth:`output_layer`; they call ``save_hyperparameters`` (which
    must hold ``refresh_every``) and :meth:`record_fields`.

    Parameters
    ----------
    fields, n_params, normalizer_warmup_batches, time_features
        As :class:`~gensim.models.base.FieldSurrogate`.
    n_modes : int
        POD modes, k (at most D).
    basis_rows : int
        Training rows sampled per rank for the basis (memory ``basis_rows * D * 4`` bytes).
    refresh_every : int
        Optimizer steps between refits once the early ones are done.
    param_linear : bool
        Coefficients affine in the normalized parameters (see above).
    whiten : bool
        Coefficients in units of each mode's standard deviation, or plain projections
        (:class:`~gensim.models.components.ReducedBasis`).
    """

    #: The first refits: the sample grows by a batch per step at first, so the basis is refitted
    #: at these steps (below ``refresh_every``) before the regular refits.
    early_refits = (10, 20, 40, 80, 160, 320)

    def __init__(
        self,
        fields: Sequence[FieldSpec | dict],
        n_params: int,
        normalizer_warmup_batches: int,
        time_features: Sequence[str],
        n_modes: int,
        basis_rows: int,
        refresh_every: int,
        param_linear: bool,
        whiten: bool,
    ) -> None:
        super().__init__(fields, n_params, normalizer_warmup_batches, time_features)
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1 optimizer step, got {refresh_every}")
        self.basis = ReducedBasis(self.n_out, n_modes, whiten=whiten)
        self.snapshots = TrainingProbe(basis_rows)
        # Outputs of the output layer per mode, mode-major: the coefficients are a fixed linear
        # combination of each mode's values (1: the output itself).
        self.coefficient_groups = self.n_params + 1 if param_linear else 1

    def combine(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Coefficients (..., k) of the output layer's values (..., k * coefficient_groups) and of
        the normalized parameters x (..., n_params): ``out`` itself, or ``a_0 + sum_i a_i x_i``."""
        if self.coefficient_groups == 1:
            return out
        out = out.unflatten(-1, (self.basis.n_modes, self.coefficient_groups))
        return out[..., 0] + (out[..., 1:] * x.unsqueeze(-2)).sum(-1)

    def coefficients_of(self, cond: torch.Tensor) -> torch.Tensor:
        """Coefficients (B, k) of a normalized condition (B, n_cond)."""
        raise NotImplementedError

    def output_layer(self) -> nn.Linear:
        """The ``nn.Linear`` whose outputs the coefficients are linear in (mapped at each refit)."""
        raise NotImplementedError

    def check_output_layer(self) -> None:
        """Check, at construction rather than at the first refit, the output layer's width."""
        width = self.basis.n_modes * self.coefficient_groups
        if self.output_layer().out_features != width:
            raise ValueError(
                f"{type(self).__name__}: the output layer must be an nn.Linear of {width} outputs "
                "(its weights are mapped onto each new basis); use gensim.models.components.MLP"
            )

    def forward(self, params: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predict fields in physical units.

        Parameters
        ----------
        params : Tensor, shape (B, n_params)
        t : Tensor, shape (B,)

        Returns
        -------
        Tensor, shape (B, D)
        """
        return self.out_norm.denormalize(self.basis.decode(self.coefficients_of(self.condition(params, t))))

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        self.snapshots.offer(batch)

    def refits_now(self, step: int) -> bool:
        """True at the steps where the basis is refitted (every rank agrees: the global step)."""
        return (
            step == 0
            or step % self.hparams.refresh_every == 0
            or (step < self.hparams.refresh_every and step in self.early_refits)
        )

    @torch.no_grad()
    def refit_basis(self) -> None:
        """Fit the basis to every rank's snapshot sample (normalized) and map the output layer onto it.

        A collective under DDP. With ``P`` the old prediction ``mean + (c * unit) @ modes``, the
        new coefficients are ``c' = (P - mean') @ modes'.T / unit' = c @ R + s``, linear in ``c``,
        so the output layer's weight and bias absorb the map: each group of outputs is rotated by
        ``R``, and the shift ``s`` goes to the bias of group 0 (the coefficients' constant part).
        """
        fields = gather_rows(self.snapshots.rows["fields"].to(self.device))
        old = (self.basis.mean.clone(), self.basis.unit[:, None] * self.basis.modes) if self.basis.fitted else None
        self.basis.fit(self.out_norm.normalize(fields))
        if old is None:
            return
        old_mean, old_unit_modes = old
        new_modes_t = self.basis.modes.T / self.basis.unit  # (D, k): projection onto new coefficients
        rotation = old_unit_modes @ new_modes_t  # (k, k)
        shift = (old_mean - self.basis.mean) @ new_modes_t  # (k,)
        head, k, groups = self.output_layer(), self.basis.n_modes, self.coefficient_groups
        weight = head.weight.view(k, groups, -1)
        weight.copy_(torch.einsum("ij,igh->jgh", rotation, weight))
        if head.bias is not None:
            bias = head.bias.view(k, groups)
            bias.copy_(rotation.T @ bias)
            bias[:, 0] += shift

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        cond, y = self.normalized_batch(batch)
        if self.refits_now(self.global_step):
            self.refit_basis()
        target = self.basis.project(y)
        per_sample = ((self.coefficients_of(cond) - target) * self.basis.unit).pow(2).sum(dim=1) / self.n_out
        loss = self.batch_mean(per_sample, batch)
        self.log_step({"train_loss": loss}, prog_bar=True)
        return loss


class ReducedBasisSurrogate(StreamBasisSurrogate):
    """Regress the POD coefficients of the fields on (parameters, features of t).

    ``c = net(condition)``; the basis, its refits and the loss are those of
    :class:`StreamBasisSurrogate`. A network of k outputs, not D, trains faster and spends
    nothing on the noise of the trailing modes.

    Parameters
    ----------
    fields : sequence of FieldSpec (or dicts of its arguments)
        Output fields, in buffer order.
    n_params : int
        Length of the parameter vector.
    net : callable
        ``net(in_features, out_features) -> nn.Module`` whose last module is an ``nn.Linear`` of
        ``n_modes`` outputs (``n_modes x (n_params + 1)`` with ``param_linear``), a Hydra partial
        such as :class:`gensim.models.components.MLP`.
    time_features : sequence of str
        Features of t in the condition, as :class:`~gensim.models.DeterministicSurrogate`'s
        (no default: ``conf/model/pod.yaml``'s ``[t, log_t]`` differs from the other models').
    n_modes : int
        POD modes, k (at most D).
    basis_rows : int
        Training rows sampled per rank for the basis (memory ``basis_rows * D * 4`` bytes).
    refresh_every : int
        Optimizer steps between refits once the early ones are done.
    param_linear : bool
        Coefficients affine in the normalized parameters (:class:`StreamBasisSurrogate`).
    whiten : bool
        Coefficients in units of each mode's standard deviation (:class:`StreamBasisSurrogate`).
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
        time_features: Sequence[str],
        n_modes: int = 64,
        basis_rows: int = 2048,
        refresh_every: int = 500,
        param_linear: bool = False,
        whiten: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
        final_lr_ratio: float = 0.01,
        normalizer_warmup_batches: int = 100,
    ) -> None:
        basis = (n_modes, basis_rows, refresh_every, param_linear, whiten)
        super().__init__(fields, n_params, normalizer_warmup_batches, time_features, *basis)
        self.save_hyperparameters(ignore=["net", "fields"])
        self.record_fields()
        self.coefficients = net(self.n_cond, int(n_modes) * self.coefficient_groups)
        self.check_output_layer()

    def coefficients_of(self, cond: torch.Tensor) -> torch.Tensor:
        """Coefficients (B, k) of a normalized condition (B, n_cond): the network's output, combined."""
        return self.combine(self.coefficients(cond), cond[:, : self.n_params])

    def output_layer(self) -> nn.Linear:
        """The network's last ``nn.Linear``, which gives the n_modes coefficients."""
        return last_linear(self.coefficients)
