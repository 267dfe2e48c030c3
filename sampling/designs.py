"""Designs of experiments: space-filling and random samplers over a :class:`ParameterSpace`.

Every sampler draws points in the unit hypercube and maps them to physical units with
:meth:`ParameterSpace.from_unit`. Its whole state is plain JSON data, so a study that stops can
go on drawing exactly the points it would have drawn.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.stats import qmc

from sampling.space import ParameterSpace

__all__ = ["Sampler", "Sobol", "Halton", "LatinHypercube", "Uniform"]


def skip_drawn(engine: qmc.QMCEngine, n: int) -> None:
    """Move a fresh scipy QMC engine past its first ``n`` points (restoring a design's position).

    scipy's ``fast_forward(0)`` raises an ``OverflowError`` (a design checkpointed before its
    first point), so zero is a no-op here.
    """
    if n:
        engine.fast_forward(n)


class Sampler(ABC):
    """A reproducible, restorable stream of points of a parameter space.

    Parameters
    ----------
    space : ParameterSpace
        Where the points lie.
    seed : int or None
        Non-negative seed, always given (the study's, from the config; no default). When None, a
        seed is drawn from fresh entropy and stored in :attr:`seed`, so the sampler can still be
        checkpointed and restored.

    Attributes
    ----------
    space : ParameterSpace
    seed : int
    """

    def __init__(self, space: ParameterSpace, seed: int | None) -> None:
        if not isinstance(space, ParameterSpace):
            raise TypeError(
                f"expected a sampling.ParameterSpace, got {type(space).__name__}; "
                "build one with ParameterSpace(names, lower, upper)"
            )
        self.space = space
        self.seed = int(np.random.default_rng().integers(2**63)) if seed is None else _check_seed(seed)
        self.reset()

    def sample(self, n: int) -> np.ndarray:
        """Draw the next ``n`` points; successive calls continue one sequence.

        Parameters
        ----------
        n : int
            Number of points, >= 0.

        Returns
        -------
        ndarray, shape (n, space.dim)
            Points in physical units, inside the bounds of :attr:`space`.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"expected an int number of points n, got {n!r}; pass e.g. n=16")
        if n < 0:
            raise ValueError(f"expected a number of points n >= 0, got n={n}")
        return self.space.from_unit(self._random(int(n)))

    @abstractmethod
    def reset(self) -> None:
        """Go back to the start: the next :meth:`sample` repeats the first points drawn."""

    @abstractmethod
    def _random(self, n: int) -> np.ndarray:
        """The next ``n`` points of the unit hypercube, shape (n, space.dim)."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """Plain-data state beyond class, space and seed."""

    @abstractmethod
    def _load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`_state` (``self.seed`` is already restored)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the sequence, as JSON-serializable data.

        Returns
        -------
        dict
            ``class``, ``space`` (:meth:`ParameterSpace.state_dict`), ``seed`` and the position
            in the sequence.
        """
        return {
            "class": type(self).__name__,
            "space": self.space.state_dict(),
            "seed": self.seed,
            **self._state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`: the next :meth:`sample` continues the saved sequence.

        Parameters
        ----------
        state : dict
            From :meth:`state_dict` of a sampler of the same class on an equal space.

        Raises
        ------
        ValueError
            When ``state`` comes from another sampler class or another parameter space.
        """
        name = type(self).__name__
        got = state.get("class") if isinstance(state, Mapping) else None
        if got != name:
            hint = f"load it into a {got} sampler instead" if got else f"pass {name}.state_dict()"
            raise ValueError(f"expected the state dict of a {name} sampler, got one of {got!r}; {hint}")
        if state.get("space") != self.space.state_dict():
            raise ValueError(
                f"the state dict was saved for another parameter space: expected "
                f"{self.space.state_dict()}, got {state.get('space')}; build the sampler on the "
                "saved space, ParameterSpace(**state['space'])"
            )
        self.seed = _check_seed(state["seed"])
        self._load_state(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.space!r}, seed={self.seed})"


class _ScrambledSequence(Sampler):
    """A low-discrepancy sequence of ``scipy.stats.qmc``; state: seed + points generated."""

    _engine_class: type[qmc.QMCEngine]

    def __init__(self, space: ParameterSpace, seed: int | None, scramble: bool = True) -> None:
        self.scramble = bool(scramble)
        super().__init__(space, seed)

    def reset(self) -> None:
        self._engine = self._engine_class(self.space.dim, scramble=self.scramble, rng=self.seed)

    def _random(self, n: int) -> np.ndarray:
        return self._engine.random(n)

    def _state(self) -> dict[str, Any]:
        return {"scramble": self.scramble, "num_generated": int(self._engine.num_generated)}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.scramble = bool(state["scramble"])
        self.reset()
        skip_drawn(self._engine, int(state["num_generated"]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.space!r}, seed={self.seed}, scramble={self.scramble})"


class Sobol(_ScrambledSequence):
    """Sobol' sequence (``scipy.stats.qmc.Sobol``).

    Parameters
    ----------
    space : ParameterSpace
    seed : int or None
        Seeds the scrambling; see :class:`Sampler`.
    scramble : bool, default True
        Owen-type scrambling (randomized QMC). Without it the sequence does not depend on
        the seed and starts at the lower corner of the space.

    Notes
    -----
    The balance properties hold for the first ``2**m`` points: draw powers of two. scipy
    warns when the first call asks for another number. At most ``2**30`` points.

    Examples
    --------
    >>> space = ParameterSpace(["a", "b"], [0.0, 0.0], [1.0, 2.0])
    >>> Sobol(space, seed=0).sample(8).shape
    (8, 2)
    """

    _engine_class = qmc.Sobol


class Halton(_ScrambledSequence):
    """Halton sequence (``scipy.stats.qmc.Halton``).

    Parameters
    ----------
    space : ParameterSpace
    seed : int or None
        Seeds the scrambling; see :class:`Sampler`.
    scramble : bool, default True
        Randomly permute the digits of each van der Corput sequence. Without it the sequence
        does not depend on the seed.

    Examples
    --------
    >>> space = ParameterSpace(["a", "b"], [0.0, 0.0], [1.0, 2.0])
    >>> Halton(space, seed=0).sample(5).shape
    (5, 2)
    """

    _engine_class = qmc.Halton


class LatinHypercube(Sampler):
    """Latin hypercube designs (``scipy.stats.qmc.LatinHypercube``).

    In a Latin hypercube of ``m`` points, in every dimension each of ``m`` equal strata of the
    unit interval (before the mapping to physical units) holds one point.

    Parameters
    ----------
    space : ParameterSpace
    seed : int or None
        See :class:`Sampler`.
    design_size : int, optional
        None (default): each :meth:`sample` call of ``n`` points is one Latin hypercube of ``n``
        points, and successive calls draw new, independent designs. An int ``m >= 1``: designs of
        ``m`` points are drawn whole and their points handed out in order across calls, the next
        design when one is spent. Set it to the simulation budget when points are asked one at a
        time (the launcher calls ``sample(1)``, and a one-point Latin hypercube is a uniform
        point).

    Examples
    --------
    >>> space = ParameterSpace(["a", "b"], [0.0, 0.0], [1.0, 2.0])
    >>> LatinHypercube(space, seed=0).sample(10).shape
    (10, 2)
    >>> one_at_a_time = LatinHypercube(space, seed=0, design_size=4)
    >>> bool(np.allclose(np.vstack([one_at_a_time.sample(1) for _ in range(4)]),
    ...                  LatinHypercube(space, seed=0).sample(4)))
    True
    """

    def __init__(self, space: ParameterSpace, seed: int | None, design_size: int | None = None) -> None:
        if design_size is not None and (
            isinstance(design_size, bool) or not isinstance(design_size, (int, np.integer)) or design_size < 1
        ):
            raise ValueError(f"design_size: expected None or an int >= 1 (the simulation budget), got {design_size!r}")
        self.design_size = None if design_size is None else int(design_size)
        super().__init__(space, seed)

    def reset(self) -> None:
        self._engine = qmc.LatinHypercube(self.space.dim, rng=self.seed)
        self._design = np.empty((0, self.space.dim))  # the current design when design_size is set
        self._next = 0

    def _random(self, n: int) -> np.ndarray:
        if self.design_size is None:
            return self._engine.random(n)
        out = np.empty((n, self.space.dim))
        for i in range(n):
            if self._next == len(self._design):
                self._design, self._next = self._engine.random(self.design_size), 0
            out[i] = self._design[self._next]
            self._next += 1
        return out

    def _state(self) -> dict[str, Any]:
        return {
            "bit_generator": self._engine.rng.bit_generator.state,
            "design_size": self.design_size,
            "design": self._design.tolist(),
            "next": self._next,
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.design_size = state.get("design_size")
        self.reset()
        self._engine.rng.bit_generator.state = state["bit_generator"]
        self._design = np.array(state.get("design", []), dtype=float).reshape(-1, self.space.dim)
        self._next = int(state.get("next", 0))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.space!r}, seed={self.seed}, design_size={self.design_size})"


class Uniform(Sampler):
    """Independent points, uniform in the unit hypercube (before the mapping to physical units).

    Parameters
    ----------
    space : ParameterSpace
    seed : int or None
        See :class:`Sampler`.

    Examples
    --------
    >>> space = ParameterSpace(["a", "b"], [0.0, 0.0], [1.0, 2.0])
    >>> Uniform(space, seed=0).sample(3).shape
    (3, 2)
    """

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def _random(self, n: int) -> np.ndarray:
        return self._rng.random((n, self.space.dim))

    def _state(self) -> dict[str, Any]:
        return {"bit_generator": self._rng.bit_generator.state}

    def _load_state(self, state: Mapping[str, Any]) -> None:
        self.reset()
        self._rng.bit_generator.state = state["bit_generator"]


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"expected an int seed >= 0 (or None for a fresh one), got {seed!r}")
    if seed < 0:
        raise ValueError(f"expected a seed >= 0, got {seed}; pass a non-negative int")
    return int(seed)
