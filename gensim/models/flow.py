"""Conditional flow matching: p(fields | parameters, t) as the end point of an ODE from a Gaussian.

A velocity field ``v(x, s | c)`` is trained so that integrating ``dx/ds = v`` from ``s = 0``
(``x ~ N(0, I)`` in normalized field units) to ``s = 1`` carries the Gaussian onto the
conditional law of the normalized fields at the condition ``c`` = (parameters, t). Training
regresses the velocity of the straight path between a Gaussian draw ``x0`` and a field ``x1``
(conditional optimal transport, Lipman et al. 2023): ``x_s = (1 - s) x0 + s x1`` has velocity
``x1 - x0``, and the least-squares fit of that target over random ``s``, ``x0`` and ``x1`` is
the marginal velocity that transports the two laws. Unlike a GAN there is no adversarial game,
and unlike the VAE no Gaussian decoder likelihood that blurs the samples.

The flow-matching parts come from Meta's ``flow_matching`` library: the probability path
(``AffineProbPath`` with the ``CondOTScheduler``) and the ODE solver (``ODESolver``, a fixed-step
``torchdiffeq`` method). The velocity network is the surrogates' :class:`Decoder`, fed the
condition and an embedding of ``s`` as its condition and ``x_s`` as its latent.

The flow runs in one of two spaces (``space``). In ``"field"`` space ``x`` is the whole
normalized field (D values): the velocity network maps D to D values at every solver step, so
a sample costs about as much as simulating heat2d. In ``"reduced"`` space (the default) ``x``
holds the ``n_modes`` coefficients of a POD basis of the normalized fields
(:class:`~gensim.models.components.ReducedBasis`, scaled so that every coefficient has unit
variance, the scale of the Gaussian start), fitted to a uniform sample of the streamed training
rows: the network maps k to k values and the basis decodes the end point once. The basis is
refitted at the steps ``basis_refits`` (early in training, while the sample grows) and frozen
after the last one: a refit changes the space the velocity lives in, which the network then has
to relearn. The field's law off the basis is not modelled, so the basis must hold the fields'
fluctuations: on the stochastic heat field (smoothed noise) 32 modes carry 99.9% of the exact
pointwise variance at 32 x 32 and 64 x 64, 64 modes all but 1e-4 of it.

What limits the flow there (2 000 simulations, 32 x 32, 12 000 steps: 1.25 and 1.31 x the energy
distance's floor on two seeds) is its conditional mean, learnt from one realization per vector:
with the samples shifted to the exact mean it is 0.88 and 0.91. Neither the sampler nor the basis
adds to it, and none of these moved it: a weight average, a separate mean network, other
widths, 18 000 steps, a jitter of the parameters in training; off-line, nor did a flow time
weighted towards s = 0, a larger batch or a closed-form (ridge) mean
(``reports/generative/README.md``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from flow_matching.path import AffineProbPath
from flow_matching.path.scheduler import CondOTScheduler
from flow_matching.solver import ODESolver
from flow_matching.utils import ModelWrapper
from torch import nn

from gensim.data.ranks import gather_rows
from gensim.models.base import as_field_specs, fused_adam
from gensim.models.components import Decoder, ReducedBasis
from gensim.models.components.decoder import NetFactory
from gensim.models.generative import DistributionCheck, GenerativeSurrogate
from gensim.models.training_probe import TrainingProbe
from gensim.simulations.base import FieldSpec

#: Fixed-step torchdiffeq methods the sampler accepts (adaptive ones would make the cost of a
#: sample depend on the condition).
SOLVERS = {"euler": 1, "midpoint": 2, "rk4": 4}  # method -> velocity evaluations per step
#: Spaces the flow runs in: the whole normalized field, or the coefficients of a POD basis.
SPACES = ("field", "reduced")


class FlowTimeEmbedding(nn.Module):
    """Sinusoidal features of the flow time ``s`` in [0, 1]: ``sin, cos(pi 2^k s)``, k < n.

    Shapes
    ------
    s (B,) -> (B, 2 n)
    """

    def __init__(self, n_frequencies: int) -> None:
        super().__init__()
        self.register_buffer("frequencies", math.pi * 2.0 ** torch.arange(int(n_frequencies)), persistent=False)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        angle = s.reshape(-1, 1) * self.frequencies.to(s.dtype)
        return torch.cat([angle.sin(), angle.cos()], dim=1)


class _Velocity(ModelWrapper):
    """The velocity field as ``flow_matching``'s solver calls it: ``(x (B, L), s () or (B,), cond=(B, C))``."""

    def __init__(self, surrogate: FlowMatchingSurrogate) -> None:
        super().__init__(None)
        self.surrogate = [surrogate]  # a list: not registered as a submodule (no cycle)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras) -> torch.Tensor:
        return self.surrogate[0].velocity(x, t.expand(x.shape[0]), extras["cond"])


class FlowMatchingSurrogate(GenerativeSurrogate):
    """Conditional flow-matching surrogate of p(fields | parameters, t).

    Parameters
    ----------
    fields : sequence of FieldSpec
    n_params : int
    net : callable
        ``net(in_features, out_features) -> nn.Module`` of the velocity field; its input is the
        normalized condition, the flow-time features and ``x_s`` (D values, or k in reduced space).
    space : {"field", "reduced"}
        Where the flow runs: the normalized field, or the coefficients of a POD basis of it.
    n_modes : int
        POD modes k of the reduced space (at most D); unused in field space.
    basis_rows : int
        Training rows sampled for the basis (memory ``basis_rows * D * 4`` bytes); reduced space only.
    basis_refits : sequence of int
        Optimizer steps at which the basis is fitted to the rows sampled so far, starting with 0;
        frozen after the last. Reduced space only.
    time_frequencies : int
        Sinusoidal frequencies of the flow-time embedding (2 features each).
    sampling_steps : int
        Fixed steps of the ODE solver from ``s = 0`` to 1.
    time_grid_power : float
        Shape of the steps (:meth:`time_grid`): 1 for equal steps, above 1 for steps that
        shorten towards ``s = 1``. On the stochastic heat field the default sampler is already
        converged: 4 midpoint steps and rk4 x 16 gave the same energy distance / floor (1.400),
        powers 1.5 and 2 1.411 and 1.385 (``reports/generative/flow_sampler.py``).
    solver : {"euler", "midpoint", "rk4"}
        torchdiffeq fixed-step method; a sample costs ``sampling_steps`` times 1, 2 or 4
        velocity evaluations.
    lr, weight_decay, warmup_steps, final_lr_ratio
        AdamW and its warm-up / cosine schedule (:meth:`FieldSurrogate.scheduled`).
    normalizer_warmup_batches : int
    n_mean_samples : int
        Samples averaged by the mean prediction (``forward``).
    mean_weight_decay : float or None
        None: the flow carries the whole law. Otherwise a second network of the same ``net``
        factory regresses the conditional mean of the flow's coordinates (least squares on the
        field, AdamW with this weight decay) and the flow learns the law of the residual about
        it; a sample is the mean network's output plus the flow's end point (one more network
        evaluation per sample). On the stochastic heat field (2 000 simulations, 32 x 32, 12 000
        steps) weight decay 1 gave 1.57 x the floor, the plain flow 1.31 and 1.40: the mean
        network's error (0.0049 of the exact variance) was three times that of the same regression
        off-line, and the flow on the residual added its own.
    ema_decay : float
        Decay per optimizer step of an exponential moving average of the velocity network's
        weights, in [0, 1); outside training (samples, the mean prediction, the checks) the
        averaged network gives the velocity. 0: the trained network itself. 0.999 gave 1.40 x
        the floor on the stochastic heat field (2 000 simulations, 32 x 32, 12 000 steps), the
        plain flow 1.31 (one seed each).
    check : DistributionCheck, optional
        Held-out distribution check settings.
    time_features : sequence of {"t", "log_t"}
        Features of the physical time in the condition (see :class:`FieldSurrogate`).

    Batches
    -------
    ``{"params": (B, n_params), "t": (B,), "fields": (B, D)}`` float32 tensors, optionally
    ``"weight"`` (B,).
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec | dict],
        n_params: int,
        net: NetFactory,
        space: str = "reduced",
        n_modes: int = 64,
        basis_rows: int = 4096,
        basis_refits: Sequence[int] = (0, 10, 20, 40, 80, 160, 320, 640),
        time_frequencies: int = 8,
        sampling_steps: int = 4,
        time_grid_power: float = 1.0,
        solver: str = "midpoint",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
        final_lr_ratio: float = 0.01,
        normalizer_warmup_batches: int = 100,
        n_mean_samples: int = 8,
        mean_weight_decay: float | None = None,
        ema_decay: float = 0.0,
        check: DistributionCheck | None = None,
        time_features: Sequence[str] = ("t",),
    ) -> None:
        if solver not in SOLVERS:
            raise ValueError(
                f"solver: expected one of {sorted(SOLVERS)} (fixed-step torchdiffeq methods), got {solver!r}"
            )
        if sampling_steps < 1 or time_frequencies < 1:
            raise ValueError(
                f"expected sampling_steps >= 1 and time_frequencies >= 1, got {sampling_steps} and {time_frequencies}"
            )
        if not time_grid_power > 0:
            raise ValueError(f"time_grid_power: expected a positive power, got {time_grid_power}")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay: expected a value in [0, 1), got {ema_decay}")
        if space not in SPACES:
            raise ValueError(f"space: expected one of {list(SPACES)}, got {space!r}")
        refits = sorted({int(s) for s in basis_refits})
        if space == "reduced" and (not refits or refits[0] != 0):
            raise ValueError(
                f"basis_refits must include step 0 (the basis is needed from the first step), got {list(basis_refits)}"
            )
        # The latent of a flow is its starting point: one value per field value or per mode.
        n_out = sum(f.size for f in as_field_specs(fields))
        latent = n_out if space == "field" else int(n_modes)
        super().__init__(fields, n_params, normalizer_warmup_batches, latent, n_mean_samples, check, time_features)
        self.save_hyperparameters(ignore=["net", "fields", "check"])
        self.record_fields()
        self.time_embedding = FlowTimeEmbedding(time_frequencies)
        # Two outputs per coordinate: the velocity's gain and offset (see velocity).
        self.decoder = Decoder(self.n_cond + 2 * int(time_frequencies), latent, 2 * latent, net)
        self.mean_net = net(self.n_cond, latent) if mean_weight_decay is not None else None
        self.decoder_ema = copy.deepcopy(self.decoder).requires_grad_(False) if ema_decay > 0 else None
        self.basis = ReducedBasis(self.n_out, latent) if space == "reduced" else None
        self.basis_refits = refits
        self.snapshots = TrainingProbe(basis_rows) if space == "reduced" else None
        self.path = AffineProbPath(scheduler=CondOTScheduler())
        self._solver = ODESolver(velocity_model=_Velocity(self))

    def velocity(self, x: torch.Tensor, s: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Velocity (B, L) at points ``x`` (B, L) of the flow's space (L = ``latent_dim``: D, or k
        modes), flow times ``s`` (B,) and conditions (B, C).

        The network gives a gain ``g`` and an offset ``h`` per coordinate, ``v = g * x + h``: the
        spread of the samples is set by how the flow contracts or expands ``x``, a product of
        ``x`` and a function of the condition, which an MLP of the concatenated inputs learns
        poorly (on the stochastic heat field at 32 x 32, 1 000 simulations and 2 000 steps, the
        samples' std over the exact one, averaged over 16 conditions, was off by 0.215 with a
        plain velocity and by 0.129 with the gain; in a study at 2 000 simulations and 6 000 steps
        the energy distance over its floor fell from 6.28 to 1.76, reports/generative/README.md).
        For a Gaussian law with independent
        coordinates the exact velocity has this form with ``g`` a function of (condition, s)
        alone.
        """
        decoder = self.decoder if self.decoder_ema is None or self.training else self.decoder_ema
        gain, offset = decoder(torch.cat([cond, self.time_embedding(s)], dim=1), x).chunk(2, dim=1)
        return gain * x + offset

    def time_grid(self) -> torch.Tensor:
        """The solver's flow times (sampling_steps + 1,): ``s_i = 1 - (1 - i / n)^p`` with
        ``p = time_grid_power``, from 0 to 1."""
        u = torch.linspace(0.0, 1.0, int(self.hparams.sampling_steps) + 1, dtype=torch.float64)
        return (1.0 - (1.0 - u) ** float(self.hparams.time_grid_power)).float()

    def generate(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Normalized fields (B, D): the ODE solution at ``s = 1`` from ``z`` (B, latent_dim) at
        ``s = 0``, decoded by the basis in reduced space."""
        x = self._solver.sample(
            x_init=z, step_size=None, method=self.hparams.solver, time_grid=self.time_grid().to(z.dtype), cond=cond
        )
        if self.mean_net is not None:
            x = x + self.mean_net(cond)
        return x if self.basis is None else self.basis.decode(x)

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Move the weight average towards the weights of the optimizer step just taken."""
        if self.decoder_ema is not None:
            for avg, new in zip(self.decoder_ema.parameters(), self.decoder.parameters()):
                avg.lerp_(new, 1.0 - self.hparams.ema_decay)

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        if self.snapshots is not None and self.global_step <= self.basis_refits[-1]:
            self.snapshots.offer(batch)

    @torch.no_grad()
    def refit_basis(self) -> None:
        """Fit the basis to every rank's sample of normalized training rows (a collective under DDP:
        every rank fits the same basis, a seeded randomized SVD)."""
        fields = gather_rows(self.snapshots.rows["fields"].to(self.device))
        self.basis.fit(self.out_norm.normalize(fields))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        cond, y = self.normalized_batch(batch)
        if self.basis is not None:
            if self.global_step in self.basis_refits:
                self.refit_basis()
            y = self.basis.project(y)
        mean_loss = None
        if self.mean_net is not None:
            mean = self.mean_net(cond)
            # Squared error of the field in normalized units (in reduced space the coefficients'
            # error weighted by their scales, as ReducedBasisSurrogate's loss).
            weight = 1.0 if self.basis is None else self.basis.scale**2 * (y.shape[1] / self.n_out)
            mean_loss = self.batch_mean(((mean - y) ** 2 * weight).mean(1), batch)
            y = y - mean.detach()  # the flow carries the residual's law
        s = torch.rand(y.shape[0], dtype=y.dtype, device=y.device)
        sample = self.path.sample(x_0=torch.randn_like(y), x_1=y, t=s)
        # Per-sample squared error of the velocity, averaged with the buffer's importance weights.
        loss = self.batch_mean(((self.velocity(sample.x_t, s, cond) - sample.dx_t) ** 2).mean(1), batch)
        self.log_step({"train_loss": loss}, prog_bar=True)
        if mean_loss is None:
            return loss
        self.log_step({"train_mean_loss": mean_loss})
        return loss + mean_loss

    def configure_optimizers(self):
        """AdamW with the warm-up + cosine schedule; the mean network (if any) with its own weight decay."""
        if self.mean_net is None:
            return super().configure_optimizers()
        mean_params = set(self.mean_net.parameters())
        groups = [
            {
                "params": [q for q in self.parameters() if q not in mean_params],
                "weight_decay": self.hparams.weight_decay,
            },
            {"params": list(self.mean_net.parameters()), "weight_decay": self.hparams.mean_weight_decay},
        ]
        return self.scheduled(torch.optim.AdamW(groups, lr=self.hparams.lr, **fused_adam(self)))
