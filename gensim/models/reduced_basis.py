"""Reduced-basis surrogate: a network predicts the POD coefficients of the fields, the basis comes from the stream."""

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


class ReducedBasisSurrogate(FieldSurrogate):
    """Regress the POD coefficients of the fields on (parameters, features of t).

    The prediction is ``mean + (c * scale) @ modes`` in normalized field units, with ``c`` the
    network's output and the basis (:class:`~gensim.models.components.ReducedBasis`) the
    ``n_modes`` leading POD modes of a uniform sample of the distinct training rows streamed so
    far (:class:`~gensim.models.training_probe.TrainingProbe`, ``basis_rows`` rows). The basis
    is fitted at the first step and refitted as data arrive: at steps 10, 20, 40, ... (the sample
    grows fast early) and then every ``refresh_every`` steps. At a refit the network's output
    layer (a ``Linear``) is mapped onto the new basis, so that the prediction does not jump:
    the old prediction is projected on the new modes.

    The loss is the mean squared error of the fields in normalized units, computed on the
    coefficients (``sum_i scale_i^2 (c_i - a_i)^2 / D`` with ``a`` the target's coefficients),
    which differs from the field error by the target's residual off the basis, a constant for the
    network. A network of k outputs, not D, trains faster and spends nothing on the noise of the
    trailing modes.

    Under data-parallel training the snapshot samples of every rank are gathered at each refit,
    and every rank fits the same basis (a seeded randomized SVD).

    Parameters
    ----------
    fields : sequence of FieldSpec (or dicts of its arguments)
        Output fields, in buffer order.
    n_params : int
        Length of the parameter vector.
    net : callable
        ``net(in_features, n_modes) -> nn.Module`` whose last module is an ``nn.Linear`` (a Hydra
        partial such as :class:`gensim.models.components.MLP`).
    time_features : sequence of str
        Features of t in the condition, as :class:`~gensim.models.DeterministicSurrogate`'s
        (no default: ``conf/model/pod.yaml``'s ``[t, log_t]`` differs from the other models').
    n_modes : int
        POD modes, k (at most D).
    basis_rows : int
        Training rows sampled per rank for the basis (memory ``basis_rows * D * 4`` bytes).
    refresh_every : int
        Optimizer steps between refits once the early ones are done.
    lr, weight_decay, warmup_steps, final_lr_ratio, normalizer_warmup_batches
        As :class:`~gensim.models.DeterministicSurrogate`.

    Batches
    -------
    ``{"params": (B, n_params), "t": (B,), "fields": (B, D)}`` float32 tensors, and ``sim_id``,
    ``step`` (B,) when streamed.
    """

    #: The first refits: the sample grows by a batch per step at first, so the basis is refitted
    #: at these steps (below ``refresh_every``) before the regular refits.
    early_refits = (10, 20, 40, 80, 160, 320)

    def __init__(
        self,
        fields: Sequence[FieldSpec | dict],
        n_params: int,
        net: NetFactory,
        time_features: Sequence[str],
        n_modes: int = 64,
        basis_rows: int = 2048,
        refresh_every: int = 500,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
        final_lr_ratio: float = 0.01,
        normalizer_warmup_batches: int = 100,
    ) -> None:
        super().__init__(fields, n_params, normalizer_warmup_batches, time_features)
        if refresh_every < 1:
            raise ValueError(f"refresh_every must be >= 1 optimizer step, got {refresh_every}")
        self.save_hyperparameters(ignore=["net", "fields"])
        self.record_fields()
        self.basis = ReducedBasis(self.n_out, n_modes)
        self.coefficients = net(self.n_cond, int(n_modes))
        self.output_layer()  # checked now rather than at the first refit
        self.snapshots = TrainingProbe(basis_rows)

    def output_layer(self) -> nn.Linear:
        """The network's last ``nn.Linear``, which must give the n_modes coefficients."""
        linears = [m for m in self.coefficients.modules() if isinstance(m, nn.Linear)]
        if not linears or linears[-1].out_features != self.basis.n_modes:
            raise ValueError(
                "the reduced-basis surrogate's net must end with an nn.Linear of n_modes outputs "
                "(its weights are mapped onto each new basis); use gensim.models.components.MLP"
            )
        return linears[-1]

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
        return self.out_norm.denormalize(self.basis.decode(self.coefficients(self.condition(params, t))))

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

        A collective under DDP. With ``P`` the old prediction ``mean + (c * scale) @ modes``, the
        new coefficients are ``c' = (P - mean') @ modes'.T / scale'``, linear in ``c``, so the
        output layer's weight and bias absorb the map.
        """
        fields = gather_rows(self.snapshots.rows["fields"].to(self.device))
        old = (self.basis.mean.clone(), self.basis.scale[:, None] * self.basis.modes) if self.basis.fitted else None
        self.basis.fit(self.out_norm.normalize(fields))
        if old is None:
            return
        old_mean, old_scaled_modes = old
        new_modes_t = self.basis.modes.T / self.basis.scale  # (D, k): projection onto new coefficients
        rotation = old_scaled_modes @ new_modes_t  # (k, k)
        shift = (old_mean - self.basis.mean) @ new_modes_t  # (k,)
        head = self.output_layer()
        head.weight.copy_(rotation.T @ head.weight)
        if head.bias is not None:
            head.bias.copy_(head.bias @ rotation + shift)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        cond, y = self.normalized_batch(batch)
        if self.refits_now(self.global_step):
            self.refit_basis()
        target = self.basis.project(y)
        per_sample = ((self.coefficients(cond) - target) * self.basis.scale).pow(2).sum(dim=1) / self.n_out
        loss = self.batch_mean(per_sample, batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss
