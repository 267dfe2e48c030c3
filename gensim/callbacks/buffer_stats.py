"""A callback that watches the replay buffer: its distance from the target law and how often samples are drawn."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback

from gensim.buffers import Strata, buffer_divergence


class BufferStats(Callback):
    """Logs the buffer's divergence from the target over (params, t) and the draws per sample.

    Every ``every_n_steps`` training steps and at the end of training it logs, under
    ``buffer/``:

    - ``energy_distance``: between the stored samples and a fixed quasi-random sample of the
      target (design distribution x uniform time steps), in the unit cube of (params, time);
      see :func:`gensim.buffers.buffer_divergence`;
    - ``chi_square``: of the stored samples' shares of the strata of :attr:`strata` against
      their target mass;
    - ``seen``: samples offered to the buffer so far (how far the stream has come);
    - draws per stored sample: ``draws_mean``, ``draws_p50``, ``draws_p90``, ``draws_max``,
      ``never_drawn`` (fraction); and of the samples that already left the buffer (evicted,
      consumed or discarded): ``retired_draws_mean``, ``retired_never_drawn``.

    At the end of training it measures once more and writes the final values, the means of
    both divergences over all measurements of the run (``mean_energy_distance``,
    ``mean_chi_square``: how well the buffer tracked the target *while* the stream arrived,
    not only at the end) and both draw histograms to ``<run dir>/<filename>`` (JSON), and keeps
    the numbers for :meth:`study_metrics`.

    Under DDP every rank measures its own buffer and nothing is reduced (no collective): the
    logger records rank 0's numbers (Lightning's loggers write on rank 0 only),
    :meth:`study_metrics` returns this rank's, and rank ``r > 0`` writes its JSON beside rank
    0's as ``<stem>.rank<r><suffix>`` (``buffer_stats.rank1.json``) instead of overwriting it.

    Parameters
    ----------
    every_n_steps : int, default 500
        Logging period in training steps (the energy distance costs tens of milliseconds).
    n_cells, n_time_bins : int
        Strata of the chi-square (see :class:`gensim.buffers.Strata`).
    strata_seed : int, default 1
        Scrambling of the cell centers. The default differs from the distribution-aware
        policy's default (0), so that the statistic does not measure exactly the strata that
        policy balances.
    n_reference : int, default 2048
        Size of the target sample of the energy distance.
    max_points : int, default 2048
        Stored samples used by the energy distance (a seeded random subset beyond that).
    filename : str, default "buffer_stats.json"
        Written in the trainer's ``default_root_dir`` (the run directory of ``gensim-train``).

    Attributes
    ----------
    strata : Strata or None
        The strata of the chi-square, set by :meth:`setup` (or :meth:`bind`).
    reference : ndarray, shape (n_reference, dim + 1), or None
        The target sample of the energy distance, set with :attr:`strata`.
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        n_cells: int = 32,
        n_time_bins: int = 10,
        strata_seed: int = 1,
        n_reference: int = 2048,
        max_points: int = 2048,
        filename: str = "buffer_stats.json",
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = int(every_n_steps)
        self.n_cells, self.n_time_bins, self.strata_seed = n_cells, n_time_bins, strata_seed
        self.n_reference, self.max_points, self.filename = n_reference, max_points, filename
        self.strata: Strata | None = None
        self.reference: np.ndarray | None = None
        self._final: dict[str, float] = {}
        # Divergences measured during the run, for their means (one entry per period: small).
        self._history: list[tuple[int, dict[str, float]]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Build the strata and the target sample from the data module's simulation."""
        if self.strata is None:
            self.bind(trainer.datamodule.simulation)

    def bind(self, simulation) -> None:
        """Set :attr:`strata` and :attr:`reference` (the target sample) for ``simulation``.

        Parameters
        ----------
        simulation : gensim.simulations.Simulation
            Only its ``space`` and ``n_steps`` are read.
        """
        self.strata = Strata.from_simulation(
            simulation,
            n_cells=self.n_cells,
            n_time_bins=min(self.n_time_bins, simulation.n_steps),
            seed=self.strata_seed,
        )
        self.reference = self.strata.reference(self.n_reference, seed=self.strata_seed + 1)

    def measure(self, buffer) -> dict[str, float]:
        """The statistics of ``buffer`` now (a :class:`gensim.buffers.ReplayBuffer`).

        Returns
        -------
        dict
            Keys as listed in the class docstring, without the ``buffer/`` prefix; the
            divergences are missing while fewer than 2 samples are stored.
        """
        if self.strata is None:
            raise RuntimeError("BufferStats.measure needs setup() first: it reads the simulation there")
        contents = buffer.contents()
        draws = contents["draws"]
        retired = buffer.retired_draws()
        stats: dict[str, float] = {"seen": float(buffer.stats()["n_seen"])}
        if len(draws) >= 2:
            stats |= buffer_divergence(
                contents["params"], contents["step"], self.strata, self.reference, max_points=self.max_points
            )
        if len(draws):
            stats |= {
                "draws_mean": float(draws.mean()),
                "draws_p50": float(np.quantile(draws, 0.5, method="lower")),
                "draws_p90": float(np.quantile(draws, 0.9, method="lower")),
                "draws_max": float(draws.max()),
                "never_drawn": float((draws == 0).mean()),
            }
        if retired.sum():
            stats |= {
                "retired_draws_mean": float((np.arange(len(retired)) * retired).sum() / retired.sum()),
                "retired_never_drawn": float(retired[0] / retired.sum()),
            }
        return stats

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._log(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Final statistics: logged, written to JSON, kept for :meth:`study_metrics`."""
        buffer = trainer.datamodule.buffer
        # The last period may have ended on this very step: do not count it twice in the means.
        if self._history and self._history[-1][0] == trainer.global_step:
            self._final = dict(self._history[-1][1])
        else:
            self._final = dict(self._log(trainer, pl_module))
        for key in ("energy_distance", "chi_square"):
            values = [stats[key] for _, stats in self._history if key in stats]
            if values:
                self._final[f"mean_{key}"] = float(np.mean(values))
        report = {
            **self._final,
            "stored_draws_histogram": np.bincount(buffer.contents()["draws"]).tolist(),
            "retired_draws_histogram": buffer.retired_draws().tolist(),
            "strata": repr(self.strata),
        }
        path = Path(trainer.default_root_dir) / self.filename
        if trainer.global_rank > 0:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.write_text(json.dumps(report, indent=2))

    def study_metrics(self) -> dict[str, float]:
        """Final statistics for a study's ``metrics.json``, keys prefixed ``buffer_``; empty before training ended."""
        return {f"buffer_{k}": v for k, v in self._final.items()}

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        stats = self.measure(trainer.datamodule.buffer)
        self._history.append((trainer.global_step, stats))
        if stats and trainer.logger is not None:
            trainer.logger.log_metrics({f"buffer/{k}": v for k, v in stats.items()}, step=trainer.global_step)
        return stats
