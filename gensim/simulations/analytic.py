"""A tiny analytic simulation, exact by construction, for end-to-end tests that run in seconds."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from gensim.simulations.base import FieldSpec, Simulation
from sampling import ParameterSpace

__all__ = ["DecayingWave"]


class DecayingWave(Simulation):
    """``u(x, t) = a exp(-k t) sin(pi x)`` on ``size`` points of (0, 1): the exact solution of
    ``du/dt = -k u``, sampled at ``t = (step + 1) * t_final / n_steps``.

    Parameters
    ----------
    size : int
        Points per field.
    n_steps : int
        Time steps per run.
    t_final : float
        Time of the last step.

    Attributes
    ----------
    space : ParameterSpace
        ``a`` (amplitude) in [1, 2], ``k`` (decay rate) in [0.1, 1].
    fields : tuple of FieldSpec
        One float32 field ``"u"`` of shape (size,).
    """

    def __init__(self, size: int = 16, n_steps: int = 10, t_final: float = 1.0) -> None:
        if size < 1 or n_steps < 1 or not t_final > 0:
            raise ValueError(f"expected size >= 1, n_steps >= 1 and t_final > 0, got {size}, {n_steps}, {t_final}")
        self.space = ParameterSpace(["a", "k"], [1.0, 0.1], [2.0, 1.0])
        self.fields = (FieldSpec("u", (size,), "float32"),)
        self.n_steps = int(n_steps)
        self.times = np.arange(1, n_steps + 1) * (t_final / n_steps)
        self._shape = np.sin(np.pi * (np.arange(size) + 0.5) / size)

    def exact(self, params: np.ndarray, t: float) -> np.ndarray:
        """The exact field at time ``t``. Returns shape (size,) float64."""
        a, k = np.asarray(params, float)
        return a * np.exp(-k * t) * self._shape

    def run(self, params: np.ndarray, seed: int | None = None) -> Iterator[tuple[int, float, Mapping[str, np.ndarray]]]:
        params = self.space.validate(params)[0]
        for step, t in enumerate(self.times):
            yield step, float(t), {"u": self.exact(params, t).astype(np.float32)}
