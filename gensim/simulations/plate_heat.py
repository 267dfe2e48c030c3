"""Transient heat conduction in a plate with two holes, by P1 finite elements on an unstructured mesh.

The problem, on the plate ``[0, 2] x [0, 1]`` less two discs (:func:`plate_with_holes`):

    du/dt = div(kappa(x) grad u) + q            in the plate,
    u = T_left on x = 0,  u = T_right on x = 2,  u = T_holes on the hole boundaries,
    kappa du/dn = 0 on y = 0 and y = 1 (insulated),
    u(t = 0) = (T_left + T_right + T_holes) / 3,

with a conductivity that passes smoothly from 1 on the left half to ``10^log10_kappa_ratio``
on the right one, ``kappa(x) = 1 + (ratio - 1) / (1 + exp(-(x - 1) / 0.05))``, and a uniform
heat source ``q``. Every field is the temperature at the mesh nodes, shape ``(n_nodes,)``.

Discretization: continuous P1 (linear) elements assembled by scikit-fem, the theta scheme in
time (``theta = 1``: implicit Euler, L-stable, so the jump between the initial and the boundary
temperatures does not ring; ``theta = 1/2``: Crank-Nicolson, second order), Dirichlet values
imposed by condensation. The system matrix is factorized once (``scipy.sparse.linalg.splu``).
:func:`theta_scheme_heat` is the solver for any mesh, conductivity, source and boundary values;
the tests verify it against a manufactured solution (second order in ``h`` in the L2 norm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
from scipy.sparse.linalg import splu

from gensim.simulations.base import FieldMesh, FieldSpec, Simulation
from gensim.simulations.heat2d import _bounds, _positive_finite, _positive_int
from gensim.simulations.meshes import PlateMesh, plate_with_holes
from sampling import ParameterSpace

__all__ = ["PlateHeat", "p1_matrices", "theta_scheme_heat", "conductivity"]

#: Width of the smooth step of the conductivity between the two halves of the plate.
KAPPA_TRANSITION = 0.05


def conductivity(x: np.ndarray, ratio: float) -> np.ndarray:
    """``kappa(x)``: 1 on the left half, ``ratio`` on the right one, a smooth step at x = 1."""
    return 1.0 + (ratio - 1.0) / (1.0 + np.exp(-(np.asarray(x) - 1.0) / KAPPA_TRANSITION))


def p1_matrices(mesh: PlateMesh, kappa: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    """P1 mass and stiffness matrices and the load vector of a unit source on ``mesh``.

    Parameters
    ----------
    mesh : PlateMesh
    kappa : callable
        ``kappa(x, y)`` on arrays of quadrature-point coordinates.

    Returns
    -------
    mass, stiffness : scipy.sparse.csr_matrix, shape (N, N)
    basis : skfem.Basis
        The P1 basis (to assemble other loads, e.g. a manufactured source).
    """
    # scikit-fem is needed to assemble, not to import the simulation module (workers start fast).
    from skfem import Basis, BilinearForm, ElementTriP1, MeshTri, asm  # noqa: PLC0415
    from skfem.helpers import dot, grad  # noqa: PLC0415

    basis = Basis(MeshTri(np.ascontiguousarray(mesh.nodes.T), np.ascontiguousarray(mesh.cells.T)), ElementTriP1())

    @BilinearForm
    def stiffness(u, v, w):
        return kappa(w.x[0], w.x[1]) * dot(grad(u), grad(v))

    @BilinearForm
    def mass(u, v, w):
        return u * v

    return asm(mass, basis).tocsr(), asm(stiffness, basis).tocsr(), basis


def theta_scheme_heat(
    mass,
    stiffness,
    u0: np.ndarray,
    fixed: np.ndarray,
    fixed_values: Callable[[float], np.ndarray],
    load: Callable[[float], np.ndarray],
    dt: float,
    n_steps: int,
    theta: float = 1.0,
) -> Iterator[np.ndarray]:
    """Advance ``M du/dt + K u = F(t)`` by the theta scheme, with Dirichlet values on ``fixed`` nodes.

    Parameters
    ----------
    mass, stiffness : sparse matrix, shape (N, N)
        ``M`` and ``K``.
    u0 : ndarray, shape (N,)
        Initial nodal values (the fixed ones are replaced by ``fixed_values(0)``).
    fixed : ndarray of int, shape (F,)
        Dirichlet nodes.
    fixed_values : callable
        ``fixed_values(t) -> (F,)`` values at the Dirichlet nodes.
    load : callable
        ``load(t) -> (N,)`` load vector ``F(t)``.
    dt : float
        Time step, ``> 0``.
    n_steps : int
        Steps, ``>= 1``.
    theta : float
        In ``[1/2, 1]``: 1 implicit Euler, 1/2 Crank-Nicolson.

    Yields
    ------
    ndarray of float64, shape (N,)
        The nodal values after 1, 2, ..., ``n_steps`` steps (a new array each time).
    """
    if not 0.5 <= theta <= 1.0:
        raise ValueError(f"theta: expected a value in [0.5, 1] (unconditionally stable), got {theta}")
    n = mass.shape[0]
    free = np.setdiff1d(np.arange(n), fixed)
    lhs = (mass + theta * dt * stiffness).tocsr()
    rhs = (mass - (1 - theta) * dt * stiffness).tocsr()
    solve = splu(lhs[free][:, free].tocsc()).solve
    coupling = lhs[free][:, fixed]
    u = np.array(u0, dtype=np.float64)
    u[fixed] = fixed_values(0.0)
    f_old = load(0.0)
    for k in range(1, n_steps + 1):
        t = k * dt
        f_new = load(t)
        b = rhs @ u + dt * (theta * f_new + (1 - theta) * f_old)
        g = fixed_values(t)
        u = u.copy()
        u[fixed] = g
        u[free] = solve(b[free] - coupling @ g)
        f_old = f_new
        yield u


class PlateHeat(Simulation):
    """Heat conduction in a plate with two holes, on an unstructured triangular mesh (P1 elements).

    See the module docstring for the equations. Parameters: ``T_left``, ``T_right``,
    ``T_holes`` (boundary temperatures), ``log10_kappa_ratio`` (right over left conductivity)
    and ``source`` (uniform heating).

    Parameters
    ----------
    h : float
        Mesh spacing; the mesh has about ``2.3 / h^2`` nodes (882 at 0.05).
    n_steps : int
        Emitted steps.
    t_final : float
        Final time.
    substeps : int
        Time steps per emitted step.
    theta : float
        Time scheme (1: implicit Euler; 1/2: Crank-Nicolson).
    temperature_bounds : (float, float)
        Bounds of the three boundary temperatures.
    log10_kappa_ratio_bounds : (float, float)
    source_bounds : (float, float)

    Attributes
    ----------
    mesh : PlateMesh
        The mesh (node coordinates and triangles): the geometry of the field.
    fields : tuple of FieldSpec
        ``"temperature"``, float32, shape ``(n_nodes,)``, with the mesh as its
        :class:`~gensim.simulations.base.FieldMesh`.
    """

    def __init__(
        self,
        h: float = 0.05,
        n_steps: int = 50,
        t_final: float = 0.5,
        substeps: int = 2,
        theta: float = 1.0,
        temperature_bounds: Sequence[float] = (0.0, 100.0),
        log10_kappa_ratio_bounds: Sequence[float] = (-1.0, 1.0),
        source_bounds: Sequence[float] = (0.0, 200.0),
    ) -> None:
        self.h = _positive_finite("h", h)
        self.n_steps = _positive_int("n_steps", n_steps)
        self.t_final = _positive_finite("t_final", t_final)
        self.substeps = _positive_int("substeps", substeps)
        self.theta = float(theta)
        if not 0.5 <= self.theta <= 1.0:
            raise ValueError(f"theta: expected a value in [0.5, 1], got {theta}")
        bounds = [_bounds("temperature_bounds", temperature_bounds)] * 3 + [
            _bounds("log10_kappa_ratio_bounds", log10_kappa_ratio_bounds),
            _bounds("source_bounds", source_bounds),
        ]
        self.space = ParameterSpace(
            ("T_left", "T_right", "T_holes", "log10_kappa_ratio", "source"),
            [lo for lo, _ in bounds],
            [hi for _, hi in bounds],
        )
        self.mesh = plate_with_holes(self.h)
        # The field carries its geometry: models get the node coordinates at construction.
        self.fields = (
            FieldSpec("temperature", (len(self.mesh.nodes),), "float32", FieldMesh(self.mesh.nodes, self.mesh.cells)),
        )
        self.dt = self.t_final / (self.n_steps * self.substeps)
        self.times = self.dt * self.substeps * np.arange(1, self.n_steps + 1)
        b = self.mesh.boundary
        self._sides = (b["left"], np.setdiff1d(b["right"], b["left"]), np.setdiff1d(b["holes"], b["left"]))
        self._fixed = np.concatenate(self._sides)

    def run(self, params: np.ndarray, seed: int | None = None) -> Iterator[tuple[int, float, Mapping[str, np.ndarray]]]:
        t_left, t_right, t_holes, log_ratio, source = (float(v) for v in self.point(params))
        ratio = 10.0**log_ratio
        mass, stiffness, _ = p1_matrices(self.mesh, lambda x, y: conductivity(x, ratio))
        unit_load = mass @ np.ones(mass.shape[0])  # P1 load of a uniform unit source: M 1
        values = np.concatenate([np.full(len(side), v) for side, v in zip(self._sides, (t_left, t_right, t_holes))])
        u0 = np.full(mass.shape[0], (t_left + t_right + t_holes) / 3)
        steps = theta_scheme_heat(
            mass,
            stiffness,
            u0,
            self._fixed,
            lambda t: values,
            lambda t: source * unit_load,
            self.dt,
            self.n_steps * self.substeps,
            self.theta,
        )
        for k, u in enumerate(steps, start=1):
            if k % self.substeps == 0:
                step = k // self.substeps - 1
                yield step, float(self.times[step]), {"temperature": u.astype(np.float32)}
