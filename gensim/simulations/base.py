"""The simulation interface: what a solver declares and what it yields per time step."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from sampling import ParameterSpace

#: Data types allowed on the wire and in buffers, by numpy name.
SUPPORTED_DTYPES = ("float32", "float64")


#: Space dimensions a mesh's node coordinates may have.
MESH_DIMS = (1, 2, 3)


class FieldMesh:
    """The geometry of a field given at mesh nodes: node coordinates and, where they exist, triangles.

    Compared and hashed by content (:attr:`digest`), so that a :class:`FieldSpec` holding one
    stays a comparable, hashable value.

    Parameters
    ----------
    nodes : array_like, shape (N, d)
        Node coordinates, ``d`` in 1..3, finite; stored as float64.
    cells : array_like of int, shape (M, 3), optional
        Node indices of each triangle (2-D meshes), each in ``[0, N)``; stored as int64.

    Raises
    ------
    ValueError
        On coordinates that are not (N, d) finite numbers, or cells that are not (M, 3) node
        indices of distinct nodes in range.
    """

    def __init__(self, nodes: np.ndarray, cells: np.ndarray | None = None) -> None:
        nodes = np.asarray(nodes, dtype=np.float64)
        if nodes.ndim != 2 or nodes.shape[0] < 1 or nodes.shape[1] not in MESH_DIMS:
            raise ValueError(
                f"mesh nodes: expected an (N, d) array of coordinates with d in {MESH_DIMS}, got shape {nodes.shape}"
            )
        if not np.isfinite(nodes).all():
            raise ValueError(
                f"mesh nodes: {int((~np.isfinite(nodes)).sum())} NaN/Inf coordinate(s); expected finite coordinates"
            )
        if cells is not None:
            raw = np.asarray(cells)
            if raw.ndim != 2 or raw.shape[1] != 3 or raw.shape[0] < 1:
                raise ValueError(f"mesh cells: expected an (M, 3) array of triangles, got shape {raw.shape}")
            if not np.issubdtype(raw.dtype, np.integer) and not np.array_equal(raw, np.round(raw)):
                raise ValueError("mesh cells: expected integer node indices, got non-integer values")
            cells = raw.astype(np.int64)
            if cells.min() < 0 or cells.max() >= len(nodes):
                raise ValueError(
                    f"mesh cells: node indices must be in [0, {len(nodes)}), got [{cells.min()}, {cells.max()}]"
                )
            if ((cells[:, 0] == cells[:, 1]) | (cells[:, 1] == cells[:, 2]) | (cells[:, 0] == cells[:, 2])).any():
                raise ValueError("mesh cells: a triangle repeats a node; expected three distinct nodes per cell")
            cells.setflags(write=False)
        nodes.setflags(write=False)
        self.nodes = nodes
        self.cells = cells
        digest = hashlib.sha256(np.ascontiguousarray(nodes).tobytes() + bytes(str(nodes.shape), "ascii"))
        if cells is not None:
            digest.update(np.ascontiguousarray(cells).tobytes())
        #: SHA-256 of the coordinates and cells (hex): equal meshes, equal digests.
        self.digest = digest.hexdigest()

    @property
    def n_nodes(self) -> int:
        """Number of nodes, N."""
        return int(self.nodes.shape[0])

    @property
    def dim(self) -> int:
        """Space dimension of the coordinates, d."""
        return int(self.nodes.shape[1])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldMesh) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def __repr__(self) -> str:
        cells = "no cells" if self.cells is None else f"{len(self.cells)} cells"
        return f"FieldMesh({self.n_nodes} nodes in {self.dim}-D, {cells}, digest {self.digest[:8]})"


@dataclass(frozen=True)
class FieldSpec:
    """Name, shape and dtype of one output field of a simulation, and its mesh where it has one.

    Parameters
    ----------
    name : str
        Field name, at most 31 UTF-8 bytes (it travels in a fixed-size header slot).
    shape : tuple of int
        Shape of the field at one time step, e.g. ``(64, 64)``; 1 to 4 dimensions.
    dtype : str
        ``"float32"`` or ``"float64"``: the dtype the simulation sends.
    mesh : FieldMesh, optional
        For a field of values at mesh nodes: the nodes (and cells); the shape is then ``(N,)``.
        None (a grid field): models that need coordinates use the grid's.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    mesh: FieldMesh | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if not self.name or len(self.name.encode()) > 31:
            raise ValueError(f"field name must be 1 to 31 UTF-8 bytes, got {self.name!r}; use a shorter name")
        if not 1 <= len(self.shape) <= 4 or any(s <= 0 for s in self.shape):
            raise ValueError(f"field {self.name!r}: expected 1 to 4 positive dimensions, got shape {self.shape}")
        if self.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"field {self.name!r}: dtype must be one of {SUPPORTED_DTYPES}, got {self.dtype!r}")
        if self.mesh is not None:
            if not isinstance(self.mesh, FieldMesh):
                raise ValueError(f"field {self.name!r}: mesh must be a FieldMesh, got {type(self.mesh).__name__}")
            if self.shape != (self.mesh.n_nodes,):
                raise ValueError(
                    f"field {self.name!r}: a field on a mesh of {self.mesh.n_nodes} nodes has shape "
                    f"({self.mesh.n_nodes},), got {self.shape}"
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
