"""Active sampling: an ask/tell sampler that mixes a Sobol' sequence with an acquisition rule.

:class:`ActiveSampler` is a :class:`~sampling.Sampler`, so anything that draws points with
``sample(n)`` (the launcher, a design script) uses it unchanged. Whoever learns something about
the points already simulated reports it with :meth:`ActiveSampler.tell` (a training loss per
simulation, say); as these results come in, a growing share of the next points comes from the
acquisition rule instead of the Sobol' sequence.

Acquisition rules follow the :class:`Acquisition` protocol. They are stateless: everything they
use comes from the :class:`History` and the random generator handed to each call, both owned by
the sampler, so saving the sampler saves everything. Two rules are built in:

- :class:`LossAcquisition` (Melissa's *Breed*): parents drawn with probability proportional to
  their score, children drawn from a Gaussian around them, truncated to the bounds;
- :class:`UncertaintyAcquisition`: a Sobol' candidate pool scored by a callable supplied by the
  caller (ensemble or generative-model variance, say), then a diverse top set by greedy
  max-min distance.

All the geometry happens in the unit hypercube of :meth:`ParameterSpace.to_unit`, so widths and
distances are relative to the parameter ranges, and log-scale parameters are handled alike.

This module imports numpy and scipy only.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy.stats import qmc, truncnorm

from sampling.designs import Sampler, skip_drawn
from sampling.space import ParameterSpace

__all__ = ["Acquisition", "ActiveSampler", "History", "LossAcquisition", "UncertaintyAcquisition"]

#: Callable scoring candidate points: physical units (m, dim) -> scores (m,), larger = more wanted.
ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class History:
    """What an acquisition rule may use: the points issued so far and the scores told.

    Attributes
    ----------
    space : ParameterSpace
        The sampler's space (to call a score function in physical units).
    issued : ndarray, shape (k, dim)
        Every point the sampler has issued, unit coordinates, in order.
    observed : ndarray, shape (m, dim)
        The told points within the sampler's window, unit coordinates, least recently told first.
    scores : ndarray, shape (m,)
        Their latest scores, >= 0.
    """

    space: ParameterSpace
    issued: np.ndarray
    observed: np.ndarray
    scores: np.ndarray


@runtime_checkable
class Acquisition(Protocol):
    """A rule proposing the next points from the history.

    Implementations keep no state of their own: whatever they learn is recomputed from the
    :class:`History`, and their randomness comes from the ``rng`` argument. The sampler can then
    save and restore them exactly through its own state. A rule that needs a scoring function
    supplied at run time exposes it as a ``score_fn`` attribute (see
    :class:`UncertaintyAcquisition`); ``gensim.callbacks.ActiveLearning`` fills it.
    """

    def ready(self, history: History) -> bool:
        """Whether :meth:`propose` can run on this history; if not, the sampler uses Sobol'."""
        ...

    def propose(self, n: int, history: History, rng: np.random.Generator) -> np.ndarray:
        """``n`` new points, unit coordinates in ``[0, 1]``: ndarray, shape (n, dim)."""
        ...


class LossAcquisition:
    """Melissa's *Breed*: children of high-score parents.

    Parents are drawn among the observed points with probability proportional to
    ``score ** power``; each child is drawn, coordinate by coordinate, from a Gaussian of
    standard deviation ``width`` around its parent, truncated to ``[0, 1]`` (unit coordinates, so
    ``width`` is relative to each parameter's range and children stay within bounds).

    Parameters
    ----------
    width : float
        Standard deviation of the children around their parent, relative to the parameter
        ranges, in (0, 1].
    power : float
        Sharpens (> 1) or flattens (< 1) the preference for high scores; > 0.

    Examples
    --------
    >>> space = ParameterSpace(["a", "b"], [0.0, 0.0], [1.0, 1.0])
    >>> history = History(space, np.empty((0, 2)), np.array([[0.1, 0.1], [0.9, 0.9]]), np.array([0.0, 1.0]))
    >>> children = LossAcquisition(width=0.01).propose(3, history, np.random.default_rng(0))
    >>> bool(np.all(np.abs(children - 0.9) < 0.1))
    True
    """

    def __init__(self, width: float = 0.1, power: float = 1.0) -> None:
        if not 0.0 < width <= 1.0:
            raise ValueError(f"width is relative to the parameter ranges: expected 0 < width <= 1, got {width}")
        if not (math.isfinite(power) and power > 0):
            raise ValueError(f"expected a finite power > 0, got {power}")
        self.width = float(width)
        self.power = float(power)

    def ready(self, history: History) -> bool:
        return bool(history.scores.size and np.any(history.scores > 0))

    def propose(self, n: int, history: History, rng: np.random.Generator) -> np.ndarray:
        weights = history.scores**self.power
        parents = history.observed[rng.choice(len(weights), size=n, p=weights / weights.sum())]
        # Bounds of the standard truncated normal around each parent: the child stays in [0, 1].
        lo, hi = (0.0 - parents) / self.width, (1.0 - parents) / self.width
        children = parents + self.width * truncnorm.rvs(lo, hi, size=parents.shape, random_state=rng)
        return np.clip(children, 0.0, 1.0)  # round-off only: truncnorm already stays inside

    def __repr__(self) -> str:
        return f"LossAcquisition(width={self.width:g}, power={self.power:g})"


class UncertaintyAcquisition:
    """Score a Sobol' candidate pool with a callable and take a diverse top set.

    Each call draws ``n_candidates`` fresh scrambled Sobol' points, scores them with
    :attr:`score_fn`, keeps the top ``top_fraction`` of them, and picks points one at a time by
    greedy max-min distance: each pick is the kept candidate farthest from every point issued so
    far and every point already picked (unit coordinates, Euclidean). Pure top-``n`` would stack
    points where the score peaks.

    Parameters
    ----------
    score_fn : callable, optional
        ``score_fn(points) -> scores``: points in physical units, shape (m, dim); scores, shape
        (m,), finite, larger = more wanted (an ensemble's predictive variance, say). Without it
        the rule is not ready and the sampler draws Sobol' points; set it later through the
        attribute (``gensim.callbacks.ActiveLearning`` does). It may be called from another
        thread than the one that set it: it must not touch a model being trained.
    n_candidates : int
        Candidate pool size per call; a power of 2 keeps Sobol' balance.
    top_fraction : float
        Share of the pool, by score, among which the diverse picks are made, in (0, 1].

    Examples
    --------
    >>> space = ParameterSpace(["a", "b"], [0.0, 0.0], [1.0, 1.0])
    >>> acq = UncertaintyAcquisition(score_fn=lambda x: x[:, 0], n_candidates=64, top_fraction=0.25)
    >>> history = History(space, np.empty((0, 2)), np.empty((0, 2)), np.empty(0))
    >>> bool(np.all(acq.propose(4, history, np.random.default_rng(0))[:, 0] > 0.7))
    True
    """

    def __init__(self, score_fn: ScoreFn | None = None, n_candidates: int = 256, top_fraction: float = 0.1) -> None:
        if isinstance(n_candidates, bool) or not isinstance(n_candidates, (int, np.integer)) or n_candidates < 1:
            raise ValueError(f"expected an int n_candidates >= 1, got {n_candidates!r}")
        if not 0.0 < top_fraction <= 1.0:
            raise ValueError(f"expected 0 < top_fraction <= 1, got {top_fraction}")
        self.score_fn = score_fn
        self.n_candidates = int(n_candidates)
        self.top_fraction = float(top_fraction)

    def ready(self, history: History) -> bool:
        return self.score_fn is not None

    def propose(self, n: int, history: History, rng: np.random.Generator) -> np.ndarray:
        # An int seed drawn from rng: scipy may also use a Generator's seed sequence, which a
        # restored generator state does not carry, so restored samplers would draw other pools.
        pool = qmc.Sobol(history.space.dim, scramble=True, rng=int(rng.integers(2**63))).random(self.n_candidates)
        scores = np.asarray(self.score_fn(history.space.from_unit(pool)), dtype=float)
        if scores.shape != (self.n_candidates,) or not np.all(np.isfinite(scores)):
            raise ValueError(
                f"score_fn must return {self.n_candidates} finite scores (one per candidate, shape "
                f"({self.n_candidates},)), got shape {scores.shape} with "
                f"{int(np.sum(~np.isfinite(scores)))} non-finite; check the scoring callable"
            )
        n_top = min(self.n_candidates, max(n, math.ceil(self.top_fraction * self.n_candidates)))
        top = pool[np.argsort(-scores, kind="stable")[:n_top]]
        return _greedy_max_min(top, history.issued, n)

    def __repr__(self) -> str:
        fn = "None" if self.score_fn is None else getattr(self.score_fn, "__qualname__", type(self.score_fn).__name__)
        return (
            f"UncertaintyAcquisition(score_fn={fn}, n_candidates={self.n_candidates}, "
            f"top_fraction={self.top_fraction:g})"
        )


def _greedy_max_min(candidates: np.ndarray, fixed: np.ndarray, n: int) -> np.ndarray:
    """Pick ``n`` rows of ``candidates`` (c, d), each farthest from ``fixed`` (k, d) and the earlier picks.

    With nothing fixed yet, the first pick is the first candidate (the best scored). Returns (n, d).
    """
    if fixed.shape[0]:
        nearest = np.min(np.linalg.norm(candidates[:, None] - fixed[None], axis=-1), axis=1)
    else:
        nearest = np.full(candidates.shape[0], np.inf)
    picks = []
    for _ in range(n):
        i = int(np.argmax(nearest))  # the first of ties: inf everywhere picks the best scored
        picks.append(i)
        nearest = np.minimum(nearest, np.linalg.norm(candidates - candidates[i], axis=1))
        nearest[i] = -1.0  # never pick a candidate twice
    return candidates[picks]


class ActiveSampler(Sampler):
    """Ask/tell sampler: Sobol' points first, then a growing share chosen by an acquisition rule.

    Ask with :meth:`sample`; report what was learned about simulated points with :meth:`tell`.
    The share of acquired points among those issued next is ``max_fraction`` times a linear
    ramp: 0 until ``n_initial`` distinct points have been told, ``max_fraction`` once
    ``n_initial + ramp`` have. A credit accumulates that share point after point, so the mix
    follows the ramp without randomness; while the acquisition is not ready (no scores yet, no
    score function) the sampler keeps drawing Sobol' points. Until the first acquired point the
    stream is exactly that of :class:`~sampling.Sobol` with the same seed, so a comparison
    against Sobol' is paired.

    Thread-safe: the launcher may ask from its thread while the trainer tells from another.

    Parameters
    ----------
    space : ParameterSpace
    seed : int or None
        See :class:`~sampling.Sampler`; seeds the Sobol' scrambling and the acquisition's
        generator (independent streams).
    acquisition : Acquisition
        The rule choosing acquired points, e.g. :class:`LossAcquisition`.
    n_initial : int
        Distinct points told before the first acquired point, >= 0.
    ramp : int
        Further distinct points told over which the share grows to ``max_fraction``, >= 0
        (0: a step).
    max_fraction : float
        Final share of acquired points, in [0, 1]; the rest stays space-filling, which keeps
        exploring regions the scores know nothing about.
    window : int, optional
        The acquisition sees only the ``window`` points told most recently (a point told again
        moves to the end); None: all of them.

    Examples
    --------
    >>> space = ParameterSpace(["a", "b"], [0.0, 0.0], [1.0, 1.0])
    >>> sampler = ActiveSampler(space, seed=0, acquisition=LossAcquisition(width=0.05),
    ...                         n_initial=4, ramp=0, max_fraction=1.0)
    >>> x = sampler.sample(4)
    >>> sampler.tell(x, [0.0, 0.0, 0.0, 1.0])  # only the fourth point is interesting
    >>> bool(np.linalg.norm(sampler.sample(1) - x[3]) < 0.3)
    True
    """

    def __init__(
        self,
        space: ParameterSpace,
        seed: int | None,
        *,
        acquisition: Acquisition,
        n_initial: int = 16,
        ramp: int = 32,
        max_fraction: float = 0.75,
        window: int | None = None,
    ) -> None:
        if not isinstance(acquisition, Acquisition):
            raise TypeError(
                f"expected an acquisition rule with ready() and propose() (sampling.Acquisition), got "
                f"{type(acquisition).__name__}; pass e.g. sampling.LossAcquisition()"
            )
        for name, value in (("n_initial", n_initial), ("ramp", ramp)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"expected an int {name} >= 0, got {value!r}")
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"expected 0 <= max_fraction <= 1, got {max_fraction}")
        if window is not None and (isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1):
            raise ValueError(f"expected window None or an int >= 1, got {window!r}")
        self.acquisition = acquisition
        self.n_initial, self.ramp, self.max_fraction = int(n_initial), int(ramp), float(max_fraction)
        self.window = None if window is None else int(window)
        self._lock = threading.RLock()
        super().__init__(space, seed)

    # -- ask / tell -------------------------------------------------------------------------
    def tell(self, points: np.ndarray, scores: np.ndarray) -> None:
        """Report scores of points (usually simulated ones); a point told again gets its new score.

        Parameters
        ----------
        points : array_like, shape (m, dim)
            Physical units, inside the space.
        scores : array_like, shape (m,)
            Finite, >= 0, larger = more interesting (a training loss, an error, a variance).

        Raises
        ------
        ValueError
            When a point is outside the space, or the scores are not m finite values >= 0.
        """
        x = self.space.validate(points)
        s = np.asarray(scores, dtype=float).reshape(-1)
        if s.shape != (x.shape[0],):
            raise ValueError(f"expected one score per point, {x.shape[0]}, got {s.shape[0]} scores")
        bad = np.flatnonzero(~np.isfinite(s) | (s < 0))
        if bad.size:
            raise ValueError(
                f"scores must be finite and >= 0 (larger = more interesting), got {s[bad[0]]} for point "
                f"{bad[0]}; pass e.g. a loss or an error norm"
            )
        u = np.clip(self.space.to_unit(x), 0.0, 1.0)
        with self._lock:
            for point, unit, score in zip(x, u, s):
                key = tuple(float(v) for v in point)
                self._observed.pop(key, None)
                self._observed[key] = (unit.tolist(), float(score))

    @property
    def n_observed(self) -> int:
        """Number of distinct points told so far."""
        return len(self._observed)

    @property
    def n_acquired(self) -> int:
        """Number of points issued by the acquisition rule (the others are Sobol')."""
        return int(sum(self._acquired))

    @property
    def fraction(self) -> float:
        """Current target share of acquired points, from the ramp."""
        if self.max_fraction == 0.0 or self.n_observed < self.n_initial:
            return 0.0
        progress = 1.0 if self.ramp == 0 else min((self.n_observed - self.n_initial) / self.ramp, 1.0)
        return self.max_fraction * progress

    def history(self) -> History:
        """The :class:`History` the acquisition sees now (copies)."""
        with self._lock:
            told = list(self._observed.values())
            if self.window is not None:
                told = told[-self.window :]
            d = self.space.dim
            return History(
                space=self.space,
                issued=np.array(self._issued, dtype=float).reshape(-1, d),
                observed=np.array([u for u, _ in told], dtype=float).reshape(-1, d),
                scores=np.array([s for _, s in told], dtype=float),
            )

    # -- Sampler ----------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            # The same scrambled sequence as sampling.Sobol(space, seed): paired comparisons.
            self._sobol = qmc.Sobol(self.space.dim, scramble=True, rng=self.seed)
            self._rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1,)))
            self._issued: list[list[float]] = []
            self._acquired: list[bool] = []
            self._observed: OrderedDict[tuple[float, ...], tuple[list[float], float]] = OrderedDict()
            self._credit = 0.0

    def _random(self, n: int) -> np.ndarray:
        out = np.empty((n, self.space.dim))
        with self._lock:
            for i in range(n):
                # Capped at 1: time spent not ready does not turn into a burst of acquired points.
                self._credit = min(self._credit + self.fraction, 1.0)
                history = self.history() if self._credit >= 1.0 - 1e-12 else None
                acquire = history is not None and self.acquisition.ready(history)
                if acquire:
                    self._credit -= 1.0
                    point = np.asarray(self.acquisition.propose(1, history, self._rng), dtype=float)
                    if point.shape != (1, self.space.dim):
                        raise ValueError(
                            f"{type(self.acquisition).__name__}.propose(1, ...) must return shape "
                            f"(1, {self.space.dim}), got {point.shape}"
                        )
                    point = np.clip(point[0], 0.0, 1.0)
                else:
                    point = self._sobol.random(1)[0]
                out[i] = point
                self._issued.append(point.tolist())
                self._acquired.append(bool(acquire))
        return out

    def _state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "acquisition": type(self.acquisition).__name__,
                "sobol_generated": int(self._sobol.num_generated),
                "rng": self._rng.bit_generator.state,
                "issued": [list(p) for p in self._issued],
                "acquired": list(self._acquired),
                "observed": [[list(k), u, s] for k, (u, s) in self._observed.items()],
                "credit": self._credit,
            }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        name = type(self.acquisition).__name__
        if state["acquisition"] != name:
            raise ValueError(
                f"the state dict was saved with a {state['acquisition']} acquisition, this sampler has a "
                f"{name}; build the sampler with the same acquisition rule"
            )
        with self._lock:
            self.reset()
            skip_drawn(self._sobol, int(state["sobol_generated"]))
            self._rng.bit_generator.state = state["rng"]
            self._issued = [list(map(float, p)) for p in state["issued"]]
            self._acquired = [bool(a) for a in state["acquired"]]
            self._observed = OrderedDict(
                (tuple(map(float, k)), (list(map(float, u)), float(s))) for k, u, s in state["observed"]
            )
            self._credit = float(state["credit"])

    def __repr__(self) -> str:
        return (
            f"ActiveSampler({self.space!r}, seed={self.seed}, acquisition={self.acquisition!r}, "
            f"n_initial={self.n_initial}, ramp={self.ramp}, max_fraction={self.max_fraction:g}, "
            f"window={self.window})"
        )
