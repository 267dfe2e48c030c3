"""The simulation interface: what a solver declares and what it yields per time step."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from sampling import ParameterSpace

#: Data types allowed on the wire and in buffers, by numpy name.
SUPPORTED_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class FieldSpec:
    """Name, shape and dtype of one output field of a simulation.

    Parameters
    ----------
    name : str
        Field name, at most 31 UTF-8 bytes (it travels in a fixed-size header slot).
    shape : tuple of int
        Shape of the field at one time step, e.g. ``(64, 64)``; 1 to 4 dimensions.
    dtype : str
        ``"float32"`` or ``"float64"``: the dtype the simulation sends.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if not self.name or len(self.name.encode()) > 31:
            raise ValueError(
                f"field name must be 1 to 31 UTF-8 bytes, got {self.name!r}; use a shorter name"
            )
        if not 1 <= len(self.shape) <= 4 or any(s <= 0 for s in self.shape):
            raise ValueError(
                f"field {self.name!r}: expected 1 to 4 positive dimensions, got shape {self.shape}"
            )
        if self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(
                f"field {self.name!r}: dtype must be one of {SUPPORTED_DTYPES}, got {self.dtype!r}"
            )

    @property
    def size(self) -> int:
        """Number of values in the field at one time step."""
        return int(np.prod(self.shape))


@dataclass
class Sample:
    """One validated time step of one simulation, as it enters a buffer or a validation store.

    Attributes
    ----------
    sim_id : int
        Simulation id given by the launcher.
    step : int
        Time-step index, 0-based.
    t : float
        Physical time of the step.
    params : ndarray, shape (n_params,)
        The simulation's parameter vector (physical units).
    fields : dict of str to ndarray
        Field name to array of the shape declared by its :class:`FieldSpec`.
    """

    sim_id: int
    step: int
    t: float
    params: np.ndarray
    fields: dict[str, np.ndarray] = field(default_factory=dict)


class Simulation(ABC):
    """A parameterized time-dependent solver that yields its fields step by step.

    Subclasses set :attr:`space`, :attr:`fields` and :attr:`n_steps` and implement :meth:`run`.
    They must not import torch: simulation workers stay light so they start fast.

    Attributes
    ----------
    space : sampling.ParameterSpace
        Names and bounds of the parameters.
    fields : tuple of FieldSpec
        Output fields, in the order they are sent.
    n_steps : int
        Number of time steps yielded by one run.
    """

    space: ParameterSpace
    fields: tuple[FieldSpec, ...]
    n_steps: int

    def point(self, params: np.ndarray) -> np.ndarray:
        """One parameter vector, checked against :attr:`space`.

        Parameters
        ----------
        params : array_like, shape (n_params,) or (1, n_params)

        Returns
        -------
        ndarray, shape (n_params,)

        Raises
        ------
        ValueError
            When ``params`` is outside the space or holds several points.
        """
        x = self.space.validate(params)
        if x.shape[0] != 1:
            raise ValueError(
                f"expected one parameter vector of shape ({self.space.dim},), got {x.shape[0]} "
                "points; call run once per point"
            )
        return x[0]

    @abstractmethod
    def run(self, params: np.ndarray, seed: int | None = None) -> Iterator[tuple[int, float, Mapping[str, np.ndarray]]]:
        """Run one simulation and yield every time step.

        Parameters
        ----------
        params : ndarray, shape (n_params,)
            Parameter vector in physical units, inside :attr:`space`.
        seed : int, optional
            Seed for stochastic simulations; deterministic ones ignore it.

        Yields
        ------
        step : int
            Time-step index, ``0 <= step < n_steps``.
        t : float
            Physical time.
        fields : mapping of str to ndarray
            One array per :class:`FieldSpec`, of its shape and dtype.
        """
