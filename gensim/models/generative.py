"""Shared by the conditional generative surrogates: sampling, mean prediction, distribution checks."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gensim.data.ranks import computed_on_rank_zero
from gensim.metrics import distribution_metrics, diversity_ratio, simulator_samples, summarize_distribution
from gensim.models.base import FieldSurrogate

log = logging.getLogger("gensim.models")


def standard_normal(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, 1) draws of ``shape`` on ``like``'s device and in its dtype.

    A seeded generator draws on its own device (the host for ``torch.Generator()``) and the draws
    are copied to ``like``'s: a seeded check gives the same samples whether the model is on the
    host or on a GPU (a host generator cannot draw on a GPU).
    """
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype).to(like.device)


@dataclass
class DistributionCheck:
    """How a generative surrogate is compared with its simulation on the held-out design.

    Parameters
    ----------
    n_samples : int
        Model samples and simulator realizations per condition (each held-out parameter vector at
        each checked step); 0 turns the distribution metrics off. The simulator runs
        ``2 * n_samples`` realizations per held-out vector (two sets: one to compare with, one for
        the floor), once per study.
    step_fractions : sequence of float
        Checked steps, as fractions of the run: step ``round(f * n_steps) - 1``.
    n_components : int
        PCA components for the energy and sliced Wasserstein distances.
    seed : int
        Seed of the first reference realization; realizations use consecutive seeds from it, so
        keep it away from the training seeds (``study seed * 1_000_003 + k``).
    diversity_samples : int
        Samples per held-out row for the diversity ratio.
    diversity_rows : int
        Held-out rows (evenly spaced) used for the diversity ratio.
    collapse_threshold : float
        ``mode_collapse`` is flagged when the diversity ratio is below it.
    every_validation : bool
        Also log the distribution metrics at every validation (the reference is simulated once).
    """

    n_samples: int = 256
    step_fractions: Sequence[float] = (0.5, 1.0)
    n_components: int = 16
    seed: int = 1_999_000_000
    diversity_samples: int = 16
    diversity_rows: int = 256
    collapse_threshold: float = 0.5
    every_validation: bool = True


@dataclass
class Reference:
    """Simulator realizations at the checked conditions (held-out parameters x checked steps).

    Attributes
    ----------
    params : Tensor, shape (C, n_params)
    t : Tensor, shape (C,)
    samples, floor_samples : Tensor, shape (C, n, D)
        Two independent realization sets.
    exact_mean, exact_std : Tensor, shape (C, D), or None
        From the simulation's ``exact_moments(params, t)`` when it has one.
    """

    params: torch.Tensor
    t: torch.Tensor
    samples: torch.Tensor
    floor_samples: torch.Tensor
    exact_mean: torch.Tensor | None
    exact_std: torch.Tensor | None


def simulate_reference(simulation, params: torch.Tensor, check: DistributionCheck) -> Reference | None:
    """Simulate the reference realizations of a distribution check.

    Parameters
    ----------
    simulation : gensim.simulations.Simulation
    params : Tensor, shape (n_vectors, n_params)
        Held-out parameter vectors.
    check : DistributionCheck

    Returns
    -------
    Reference, or None
        None when the simulation is deterministic (two seeds give the same field): distribution
        metrics are then meaningless.
    """
    n_steps = simulation.n_steps
    steps = sorted({min(max(round(f * n_steps) - 1, 0), n_steps - 1) for f in check.step_fractions})
    n = int(check.n_samples)
    probe, _ = simulator_samples(simulation, params[0].double().numpy(), steps[-1:], 2, check.seed)
    if torch.equal(probe[0, 0], probe[0, 1]):
        return None
    rows: dict[str, list] = {k: [] for k in ("params", "t", "samples", "floor", "mean", "std")}
    exact = getattr(simulation, "exact_moments", None)
    for j, p in enumerate(params.double().numpy()):
        a, times = simulator_samples(simulation, p, steps, n, check.seed + 2 * j * n)
        b, _ = simulator_samples(simulation, p, steps, n, check.seed + (2 * j + 1) * n)
        for s in range(len(steps)):
            rows["params"].append(torch.from_numpy(p).float())
            rows["t"].append(times[s])
            rows["samples"].append(a[s])
            rows["floor"].append(b[s])
            if exact is not None:
                mean, std = exact(p, float(times[s]))
                rows["mean"].append(torch.from_numpy(np.asarray(mean, np.float64).reshape(-1)))
                rows["std"].append(torch.from_numpy(np.asarray(std, np.float64).reshape(-1)))
    return Reference(
        torch.stack(rows["params"]),
        torch.stack(rows["t"]),
        torch.stack(rows["samples"]),
        torch.stack(rows["floor"]),
        torch.stack(rows["mean"]) if rows["mean"] else None,
        torch.stack(rows["std"]) if rows["std"] else None,
    )


class GenerativeSurrogate(FieldSurrogate):
    """Base of the conditional generative surrogates (cVAE, cGAN).

    A subclass sets ``latent_dim`` and implements :meth:`generate`, the map from a normalized
    condition and a standard-normal latent to normalized fields. This base provides
    :meth:`sample`, the mean prediction (``forward``), the diversity check that flags mode
    collapse and the distribution metrics against simulator realizations, logged at validation
    and returned by :meth:`heldout_metrics` (into ``metrics.json``).

    Parameters
    ----------
    fields, n_params, normalizer_warmup_batches, time_features
        See :class:`~gensim.models.base.FieldSurrogate`.
    latent_dim : int
    n_mean_samples : int
        Latent draws averaged by the mean prediction.
    check : DistributionCheck, optional
        Held-out distribution check settings (defaults when None).
    """

    def __init__(
        self,
        fields,
        n_params: int,
        normalizer_warmup_batches: int,
        latent_dim: int,
        n_mean_samples: int,
        check: DistributionCheck | None,
        time_features: Sequence[str] = ("t",),
    ) -> None:
        super().__init__(fields, n_params, normalizer_warmup_batches, time_features)
        if latent_dim < 1 or n_mean_samples < 1:
            raise ValueError(f"expected latent_dim >= 1 and n_mean_samples >= 1, got {latent_dim} and {n_mean_samples}")
        self.latent_dim, self.n_mean_samples = int(latent_dim), int(n_mean_samples)
        self.check = check if check is not None else DistributionCheck()
        self._reference: Reference | None = None
        self._reference_done = False

    # -- generation -------------------------------------------------------------------------------
    def generate(self, cond: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Normalized fields (B, D) from a normalized condition (B, n_cond) and a latent (B, L)."""
        raise NotImplementedError

    def add_noise(self, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Observation noise added to generated (normalized) fields; none by default."""
        return y

    def sample(
        self, params: torch.Tensor, t: torch.Tensor, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw fields from the model's conditional law p(fields | params, t).

        Parameters
        ----------
        params : Tensor, shape (B, n_params)
        t : Tensor, shape (B,)
        n : int
            Samples per condition.
        generator : torch.Generator, optional
            Source of the latents (the global one when None).

        Returns
        -------
        Tensor, shape (B, n, D)
            Physical units, flattened in field order.
        """
        cond = self.condition(params, t).repeat_interleave(int(n), dim=0)
        z = standard_normal((cond.shape[0], self.latent_dim), cond, generator)
        y = self.add_noise(self.generate(cond, z), generator)
        return self.out_norm.denormalize(y).reshape(params.shape[0], int(n), self.n_out)

    def forward(self, params: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean prediction: the average of ``n_mean_samples`` generated fields, in physical units.

        The latents come from a generator seeded identically at every call (common random
        numbers), so the prediction is a deterministic function of (params, t).

        Parameters
        ----------
        params : Tensor, shape (B, n_params)
        t : Tensor, shape (B,)

        Returns
        -------
        Tensor, shape (B, D)
        """
        cond = self.condition(params, t)
        gen = torch.Generator(device=cond.device).manual_seed(0)
        total = torch.zeros(cond.shape[0], self.n_out, dtype=cond.dtype, device=cond.device)
        for _ in range(self.n_mean_samples):  # a loop, not one big batch: memory stays (B, D)
            total += self.generate(
                cond, torch.randn(cond.shape[0], self.latent_dim, generator=gen, device=cond.device, dtype=cond.dtype)
            )
        return self.out_norm.denormalize(total / self.n_mean_samples)

    # -- checks ---------------------------------------------------------------------------------
    @torch.no_grad()
    def diversity_report(self, validation: dict[str, torch.Tensor]) -> dict[str, float]:
        """Diversity ratio on held-out rows and the mode-collapse flag.

        Parameters
        ----------
        validation : dict
            ``{"params": (N, P), "t": (N,), "fields": (N, D)}``, one realization per row, on any
            device (the sampled rows go to the model's).

        Returns
        -------
        dict
            ``diversity_ratio`` (see :func:`gensim.metrics.diversity_ratio`; near 1 when the
            spread is right, near 0 under mode collapse) and ``mode_collapse`` (1.0 when the ratio
            is below ``check.collapse_threshold``, else 0.0).
        """
        n_rows = validation["fields"].shape[0]
        idx = torch.linspace(0, n_rows - 1, min(self.check.diversity_rows, n_rows)).round().long().unique()
        gen = torch.Generator().manual_seed(1)
        params, t = (validation[k][idx.to(validation[k].device)].to(self.device) for k in ("params", "t"))
        samples = self.sample(params, t, self.check.diversity_samples, gen).cpu()
        ratio = diversity_ratio(samples, validation["fields"][idx.to(validation["fields"].device)].cpu())
        return {"diversity_ratio": ratio, "mode_collapse": float(ratio < self.check.collapse_threshold)}

    def reference(self, simulation, validation: dict[str, torch.Tensor]) -> Reference | None:
        """The simulator realizations of the distribution check, simulated once and cached.

        None when the check is off (``n_samples = 0``) or the simulation is deterministic.
        """
        if not self._reference_done:
            self._reference_done = True
            if self.check.n_samples > 0:
                ids = validation["sim_id"]
                # In the held-out design's order (rows are stored in it), not the ids' order:
                # ids are random, and each vector's reference seeds follow its position.
                first = torch.stack([torch.nonzero(ids == i)[0, 0] for i in torch.unique(ids)]).sort().values
                log.info(
                    "simulating %d x %d reference realizations for the distribution check",
                    len(first),
                    2 * self.check.n_samples,
                )
                self._reference = simulate_reference(simulation, validation["params"][first], self.check)
                if self._reference is None:
                    log.info("the simulation is deterministic: no distribution metrics")
        return self._reference

    @torch.no_grad()
    def distribution_report(self, ref: Reference) -> dict[str, float]:
        """Distribution metrics (each with its floor and, for distances, their ratio) averaged
        over the reference conditions; see :func:`gensim.metrics.distribution_metrics`."""
        gen = torch.Generator().manual_seed(2)
        rows = []
        for c in range(ref.params.shape[0]):
            samples = self.sample(
                ref.params[c : c + 1].to(self.device), ref.t[c : c + 1].to(self.device), ref.samples.shape[1], gen
            )[0].cpu()
            rows.append(
                distribution_metrics(
                    samples,
                    ref.samples[c],
                    ref.floor_samples[c],
                    self.fields,
                    exact_mean=None if ref.exact_mean is None else ref.exact_mean[c],
                    exact_std=None if ref.exact_std is None else ref.exact_std[c],
                    n_components=self.check.n_components,
                    seed=c,
                )
            )
        return summarize_distribution(rows) | {
            "distribution_conditions": float(ref.params.shape[0]),
            "distribution_samples": float(ref.samples.shape[1]),
        }

    def heldout_metrics(self, validation: dict[str, torch.Tensor], datamodule) -> dict[str, float]:
        """Diversity and (on a stochastic simulation) distribution metrics for ``metrics.json``.

        Parameters
        ----------
        validation : dict
            The held-out tensors (``params``, ``t``, ``fields``, ``sim_id``).
        datamodule : StreamingDataModule
            For its ``simulation``, which simulates the reference realizations.
        """
        out = self.diversity_report(validation)
        ref = self.reference(datamodule.simulation, validation)
        return out | (self.distribution_report(ref) if ref is not None else {})

    def on_validation_epoch_end(self) -> None:
        """Log the point-prediction errors (see the base class), then the diversity and
        distribution checks on the held-out design.

        The checks are seeded and read the data module's whole held-out set, so under DDP rank
        0 alone computes them and sends the numbers to the other ranks: every rank logs the
        same values, and ranks that share cores do not repeat the simulator's reference runs.
        """
        super().on_validation_epoch_end()
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None or not hasattr(dm, "validation_tensors"):
            return  # plain dataloaders (unit tests): no held-out design to check against
        report = computed_on_rank_zero(lambda: self._validation_report(dm))
        for key, value in report.items():
            self.log(f"val_{key}", value, prog_bar=key in ("diversity_ratio", "energy_distance_ratio"))

    def _validation_report(self, dm) -> dict[str, float]:
        """Diversity and (every validation, when configured) the cheap distribution metrics."""
        validation = dm.validation_tensors()
        report = self.diversity_report(validation)
        if self.check.every_validation:
            ref = self.reference(dm.simulation, validation)
            if ref is not None:
                full = self.distribution_report(ref)
                report |= {
                    k: full[k] for k in ("energy_distance_ratio", "std_rel_error", "spectrum_error") if k in full
                }
        return report
