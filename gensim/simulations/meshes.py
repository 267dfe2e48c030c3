"""Unstructured triangular meshes of a rectangular plate with circular holes, without a mesher binary.

Nodes: a hexagonal lattice of spacing ``h`` inside the plate, kept away from its boundaries,
plus nodes spaced about ``h`` along the four edges and around every hole; triangles: the
Delaunay triangulation of those nodes (``scipy.spatial.Delaunay``), less the triangles whose
centroid lies in a hole. Where the lattice meets the edges and the holes the triangles are
irregular, as in any unstructured mesh; the hole boundaries are polygons whose edges are
chords of the circles (a geometric error of order ``h^2 / r``, the order of a P1 solution's
error).

This module imports numpy and scipy only: simulation workers must start fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import Delaunay

__all__ = ["PlateMesh", "plate_with_holes", "signed_areas"]


@dataclass(frozen=True)
class PlateMesh:
    """A triangular mesh of a plate with holes.

    Attributes
    ----------
    nodes : ndarray of float64, shape (N, 2)
        Node coordinates (x, y).
    cells : ndarray of int64, shape (M, 3)
        Node indices of each triangle, counter-clockwise.
    boundary : dict of str to ndarray of int64
        Node indices on ``"left"`` (x = 0), ``"right"`` (x = width), ``"bottom"`` (y = 0),
        ``"top"`` (y = height) and ``"holes"`` (every hole); the corners belong to both of
        their edges.
    h : float
        The requested node spacing.
    """

    nodes: np.ndarray
    cells: np.ndarray
    boundary: dict[str, np.ndarray]
    h: float

    @property
    def area(self) -> float:
        """Total area of the triangles."""
        return float(np.abs(signed_areas(self.nodes, self.cells)).sum())


def signed_areas(nodes: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Signed area of each triangle, shape (M,): positive when its nodes run counter-clockwise."""
    a, b, c = (nodes[cells[:, k]] for k in range(3))
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def _edge_points(start: np.ndarray, stop: np.ndarray, h: float) -> np.ndarray:
    """Points from ``start`` to ``stop`` (both included) at a spacing of at most ``h``."""
    n = max(1, math.ceil(np.linalg.norm(stop - start) / h))
    return start + np.linspace(0.0, 1.0, n + 1)[:, None] * (stop - start)


def plate_with_holes(
    h: float,
    width: float = 2.0,
    height: float = 1.0,
    holes: Sequence[Sequence[float]] = ((0.5, 0.5, 0.2), (1.5, 0.5, 0.2)),
) -> PlateMesh:
    """Mesh the plate ``[0, width] x [0, height]`` less the discs ``holes`` with node spacing ``h``.

    Parameters
    ----------
    h : float
        Node spacing, ``> 0`` and small enough to put at least 8 nodes around each hole.
    width, height : float
        Plate size, ``> 0``.
    holes : sequence of (x, y, r)
        Centres and radii of circular holes, each inside the plate and apart from the others
        and the edges by at least ``h``.

    Returns
    -------
    PlateMesh

    Raises
    ------
    ValueError
        When ``h`` or the plate is not positive, a hole is too small for ``h``, or a hole is
        closer than ``h`` to an edge or another hole.
    """
    if not (h > 0 and width > 0 and height > 0) or not all(map(math.isfinite, (h, width, height))):
        raise ValueError(
            f"expected a positive finite spacing and plate size, got h={h}, width={width}, height={height}"
        )
    holes = [tuple(float(v) for v in hole) for hole in holes]
    for i, (x, y, r) in enumerate(holes):
        if 2 * math.pi * r < 8 * h:
            raise ValueError(f"hole {i} (radius {r}) gets fewer than 8 nodes at spacing h={h}; lower h")
        if min(x - r, width - x - r, y - r, height - y - r) < h:
            raise ValueError(
                f"hole {i} at ({x}, {y}) with radius {r} is closer than h={h} to an edge of the "
                f"{width} x {height} plate"
            )
        for j, (x2, y2, r2) in enumerate(holes[:i]):
            if math.hypot(x - x2, y - y2) - r - r2 < h:
                raise ValueError(f"holes {j} and {i} are closer than h={h} to each other")

    corners = np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])
    edges = {
        "bottom": (corners[0], corners[1]),
        "right": (corners[1], corners[2]),
        "top": (corners[3], corners[2]),
        "left": (corners[0], corners[3]),
    }
    edge_points = {name: _edge_points(a, b, h) for name, (a, b) in edges.items()}
    hole_points = []
    for x, y, r in holes:
        n = math.ceil(2 * math.pi * r / h)
        angle = 2 * math.pi * np.arange(n) / n
        hole_points.append(np.c_[x + r * np.cos(angle), y + r * np.sin(angle)])

    # Interior lattice: rows h * sqrt(3) / 2 apart, every other row shifted by h / 2; points
    # closer than h / 2 to an edge or a hole boundary would make slivers with the boundary nodes.
    dy = h * math.sqrt(3) / 2
    rows = []
    for k, y in enumerate(np.arange(dy / 2, height, dy)):
        xs = np.arange((k % 2) * h / 2 + h / 4, width, h)
        rows.append(np.c_[xs, np.full(len(xs), y)])
    lattice = np.concatenate(rows)
    keep = (
        (lattice[:, 0] > h / 2)
        & (lattice[:, 0] < width - h / 2)
        & (lattice[:, 1] > h / 2)
        & (lattice[:, 1] < height - h / 2)
    )
    for x, y, r in holes:
        keep &= np.hypot(lattice[:, 0] - x, lattice[:, 1] - y) > r + h / 2
    points = np.concatenate([*edge_points.values(), *hole_points, lattice[keep]])
    # Edge point lists share their corners: one node per position.
    nodes = np.unique(np.round(points, 12), axis=0)

    triangles = Delaunay(nodes).simplices.astype(np.int64)
    centroid = nodes[triangles].mean(axis=1)
    inside = np.ones(len(triangles), dtype=bool)
    for x, y, r in holes:
        inside &= np.hypot(centroid[:, 0] - x, centroid[:, 1] - y) > r
    cells = triangles[inside]
    # Counter-clockwise orientation (positive signed area).
    clockwise = signed_areas(nodes, cells) < 0
    cells[clockwise] = cells[clockwise][:, [0, 2, 1]]

    boundary: dict[str, np.ndarray] = {}
    tol = 1e-9 * max(width, height)
    boundary["left"] = np.flatnonzero(nodes[:, 0] < tol)
    boundary["right"] = np.flatnonzero(nodes[:, 0] > width - tol)
    boundary["bottom"] = np.flatnonzero(nodes[:, 1] < tol)
    boundary["top"] = np.flatnonzero(nodes[:, 1] > height - tol)
    on_hole = np.zeros(len(nodes), dtype=bool)
    for x, y, r in holes:
        on_hole |= np.abs(np.hypot(nodes[:, 0] - x, nodes[:, 1] - y) - r) < 1e-9 * r
    boundary["holes"] = np.flatnonzero(on_hole)
    return PlateMesh(nodes=nodes, cells=cells, boundary=boundary, h=float(h))
