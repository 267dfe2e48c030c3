"""Parameter spaces: names, bounds, optional log scale, and validation of points."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ParameterSpace:
    """A box of named parameters, each on a linear or a log10 scale.

    Parameters
    ----------
    names : sequence of str
        Parameter names, unique.
    lower, upper : sequence of float
        Bounds in physical units, ``lower < upper``; both > 0 where ``log`` is set.
    log : sequence of bool, optional
        Per parameter: map the unit interval to the bounds on a log10 scale. Default: all linear.

    Examples
    --------
    >>> space = ParameterSpace(["a", "D"], [0.0, 1e-3], [1.0, 1e-1], log=[False, True])
    >>> space.from_unit([[0.5, 0.5]])
    array([[0.5 , 0.01]])
    """

    def __init__(
        self,
        names: Sequence[str],
        lower: Sequence[float],
        upper: Sequence[float],
        log: Sequence[bool] | None = None,
    ) -> None:
        if isinstance(names, str):
            raise TypeError(
                f"expected a sequence of parameter names, got the string {names!r}; "
                f"write [{names!r}] for a single parameter"
            )
        self.names = tuple(str(n) for n in names)
        self.lower = np.asarray(lower, dtype=float).reshape(-1)
        self.upper = np.asarray(upper, dtype=float).reshape(-1)
        self.log = np.zeros(len(self.names), bool) if log is None else np.asarray(log, bool).reshape(-1)
        d = len(self.names)
        if d == 0:
            raise ValueError("a parameter space needs at least one parameter, got none")
        if len(set(self.names)) != d:
            raise ValueError(f"parameter names must be unique, got {self.names}")
        for what, arr in (("lower", self.lower), ("upper", self.upper), ("log", self.log)):
            if arr.shape != (d,):
                raise ValueError(f"expected {d} {what} values (one per name), got {arr.shape[0]}")
        if not (np.all(np.isfinite(self.lower)) and np.all(np.isfinite(self.upper))):
            raise ValueError("parameter bounds must be finite numbers")
        bad = np.flatnonzero(self.lower >= self.upper)
        if bad.size:
            i = bad[0]
            raise ValueError(
                f"parameter {self.names[i]!r}: expected lower < upper, got [{self.lower[i]}, {self.upper[i]}]"
            )
        bad = np.flatnonzero(self.log & (self.lower <= 0))
        if bad.size:
            i = bad[0]
            raise ValueError(
                f"parameter {self.names[i]!r} is on a log scale, so its bounds must be > 0, "
                f"got lower={self.lower[i]}; use a linear scale or positive bounds"
            )

    @property
    def dim(self) -> int:
        """Number of parameters."""
        return len(self.names)

    def _scaled_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.lower.copy(), self.upper.copy()
        lo[self.log] = np.log10(lo[self.log])
        hi[self.log] = np.log10(hi[self.log])
        return lo, hi

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Map points of the unit hypercube to physical units.

        Parameters
        ----------
        u : array_like, shape (n, dim)
            Points in ``[0, 1]^dim``.

        Returns
        -------
        ndarray, shape (n, dim)
        """
        u = np.atleast_2d(np.asarray(u, dtype=float))
        self._check_shape(u)
        lo, hi = self._scaled_bounds()
        x = lo + u * (hi - lo)
        x[:, self.log] = 10.0 ** x[:, self.log]  # log columns only: 10**x overflows for x > 308
        # Round-off in 10**x may step just outside the bounds: clip back in.
        return np.clip(x, self.lower, self.upper)

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """Map points in physical units to the unit hypercube (inverse of :meth:`from_unit`).

        Parameters
        ----------
        x : array_like, shape (n, dim)

        Returns
        -------
        ndarray, shape (n, dim)
        """
        x = np.atleast_2d(np.asarray(x, dtype=float))
        self._check_shape(x)
        lo, hi = self._scaled_bounds()
        xs = x.copy()
        with np.errstate(divide="ignore", invalid="ignore"):  # non-positive log values -> nan
            xs[:, self.log] = np.log10(xs[:, self.log])
        return (xs - lo) / (hi - lo)

    def contains(self, x: np.ndarray) -> np.ndarray:
        """Whether each point lies inside the bounds (inclusive).

        Parameters
        ----------
        x : array_like, shape (n, dim)

        Returns
        -------
        ndarray of bool, shape (n,)
        """
        x = np.atleast_2d(np.asarray(x, dtype=float))
        self._check_shape(x)
        return np.all(np.isfinite(x) & (x >= self.lower) & (x <= self.upper), axis=1)

    def validate(self, x: np.ndarray) -> np.ndarray:
        """Return ``x`` as a float array of shape (n, dim), or raise a clear error.

        Raises
        ------
        ValueError
            When the shape is wrong, or a value is not finite or out of bounds; the message names
            the first bad parameter, its value and its bounds.
        """
        x = np.atleast_2d(np.asarray(x, dtype=float))
        self._check_shape(x)
        for j, name in enumerate(self.names):
            col = x[:, j]
            bad = np.flatnonzero(~np.isfinite(col) | (col < self.lower[j]) | (col > self.upper[j]))
            if bad.size:
                i = bad[0]
                raise ValueError(
                    f"parameter {name!r} of point {i} is {col[i]}, expected a finite value in "
                    f"[{self.lower[j]}, {self.upper[j]}]; choose a value inside the bounds"
                )
        return x

    def _check_shape(self, x: np.ndarray) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (n, {self.dim}) for parameters {self.names}, got {x.shape}")

    def __repr__(self) -> str:
        parts = [
            f"{n}=[{lo:g}, {hi:g}]{' log' if lg else ''}"
            for n, lo, hi, lg in zip(self.names, self.lower, self.upper, self.log)
        ]
        return f"ParameterSpace({', '.join(parts)})"

    def state_dict(self) -> dict:
        """Plain-data description of the space (for checkpoints and run records)."""
        return {
            "names": list(self.names),
            "lower": self.lower.tolist(),
            "upper": self.upper.tolist(),
            "log": self.log.tolist(),
        }
