"""The MESH message: a field's geometry on the wire, sent once per simulation process, never per step.

A field of values at mesh nodes (:class:`~gensim.simulations.base.FieldMesh`) has a geometry
that data messages do not carry: they hold node values only, in node order. A MESH message
(``kind = 2``, docs/wire-format.md) carries the node coordinates, and the triangles where the
mesh has them, of one field; the receiver checks them against the mesh the trainer declared
for that field, so that a solver run on another mesh, or with its nodes in another order,
is told at once (reason ``mesh``) instead of training a model on shuffled values.

Frames: the header (preamble with ``kind = 2``, ``step = 0``, ``time = 0``, then one or two
descriptors), the node coordinates, the cells if any, the tag. Descriptor 0 is named after
the field and is float64 of shape ``(N, d)``; descriptor 1, if present, is named ``cells``,
float64 of shape ``(M, 3)``, node indices (integers, exact in float64 below 2**53).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gensim.transport import wire

if TYPE_CHECKING:  # importing gensim.simulations would pull scipy into every simulation process (the client)
    from gensim.simulations.base import FieldMesh, FieldSpec

__all__ = ["CELLS_NAME", "mesh_message", "mesh_message_bytes", "check_mesh_message"]

#: Name of the descriptor of a MESH message's triangles.
CELLS_NAME = "cells"


def _parts(name: str, mesh: FieldMesh) -> list[tuple[wire.FieldDescriptor, np.ndarray]]:
    """The (descriptor, array) pairs of a MESH message: coordinates, then cells if any."""
    parts = [(wire.FieldDescriptor(name, "float64", mesh.nodes.shape), mesh.nodes)]
    if mesh.cells is not None:
        parts.append((wire.FieldDescriptor(CELLS_NAME, "float64", mesh.cells.shape), mesh.cells.astype(np.float64)))
    return parts


def mesh_message(mac: wire.MessageMac, study: bytes, sim_id: int, name: str, mesh: FieldMesh) -> list:
    """The signed frames of the MESH message of field ``name``.

    Parameters
    ----------
    mac : MessageMac
        The study's keyed GMAC (:func:`gensim.transport.wire.new_mac`).
    study : bytes
        The study id.
    sim_id : int
        The sending simulation (registered with the receiver).
    name : str
        The field's name.
    mesh : FieldMesh
        Its geometry.

    Returns
    -------
    list
        Header, coordinates (N, d) float64, cells (M, 3) float64 if any, tag.
    """
    parts = _parts(name, mesh)
    header = wire.encode_preamble(study, sim_id, 0, 0.0, len(parts), wire.KIND_MESH)
    header += wire.encode_descriptors([d for d, _ in parts])
    return wire.sign(mac, [header, *(np.ascontiguousarray(a) for _, a in parts)])


def mesh_message_bytes(spec: FieldSpec) -> int:
    """Size in bytes of the MESH message of ``spec`` (0 when it has no mesh)."""
    if spec.mesh is None:
        return 0
    parts = _parts(spec.name, spec.mesh)
    return wire.header_size(len(parts)) + wire.TAG_BYTES + sum(a.size * 8 for _, a in parts)


def check_mesh_message(descriptors: tuple[wire.FieldDescriptor, ...], frames: list, specs: dict[str, FieldSpec]) -> str:
    """Check an authentic MESH message against the declared meshes; return the field's name.

    Parameters
    ----------
    descriptors : tuple of FieldDescriptor
        The decoded header's descriptors.
    frames : list
        Every frame of the message (header, data, tag), objects with the buffer protocol.
    specs : dict of str to FieldSpec
        The receiver's declared fields by name.

    Raises
    ------
    WireError
        Reason ``mesh``: no such field, a field without a declared mesh, descriptors other
        than (coordinates, optional cells), frames of the wrong size, or a geometry that is
        not the declared one (node count, dimension, coordinates, node order, cells).
    """
    from gensim.simulations.base import FieldMesh  # noqa: PLC0415 (see the TYPE_CHECKING import)

    def fail(message: str) -> wire.WireError:
        return wire.WireError("mesh", message)

    if not 1 <= len(descriptors) <= 2:
        raise fail(f"a MESH message has 1 or 2 descriptors (coordinates, then cells), got {len(descriptors)}")
    coords = descriptors[0]
    spec = specs.get(coords.name)
    if spec is None:
        raise fail(f"MESH message for field {coords.name!r}; the declared fields are {sorted(specs)}")
    if spec.mesh is None:
        raise fail(f"field {coords.name!r} declares no mesh (a grid field): its geometry is its shape {spec.shape}")
    declared = spec.mesh
    if len(descriptors) == 2 and descriptors[1].name != CELLS_NAME:
        raise fail(f"descriptor 1 of a MESH message must be named {CELLS_NAME!r}, got {descriptors[1].name!r}")
    arrays = []
    for desc, frame in zip(descriptors, frames[1:-1]):
        if desc.dtype != "float64" or len(desc.shape) != 2:
            raise fail(f"MESH descriptor {desc.name!r}: expected a 2-D float64 array, got {desc.dtype} {desc.shape}")
        if len(frame) != int(np.prod(desc.shape)) * 8:
            raise fail(
                f"MESH descriptor {desc.name!r}: expected {int(np.prod(desc.shape)) * 8} bytes for shape "
                f"{desc.shape}, got a frame of {len(frame)} bytes"
            )
        arrays.append(np.frombuffer(frame, dtype="<f8").reshape(desc.shape))
    try:
        received = FieldMesh(*arrays)
    except ValueError as err:
        raise fail(f"field {coords.name!r}: bad geometry: {err}") from None
    if received == declared:
        return coords.name
    what = f"{received.n_nodes} nodes in {received.dim}-D"
    if (received.n_nodes, received.dim) != (declared.n_nodes, declared.dim):
        raise fail(
            f"field {coords.name!r}: the simulation's mesh has {what}, the declared one "
            f"{declared.n_nodes} nodes in {declared.dim}-D (another mesh resolution?)"
        )
    if not np.array_equal(received.nodes, declared.nodes):
        moved = int((np.abs(received.nodes - declared.nodes).max(axis=1) > 0).sum())
        raise fail(
            f"field {coords.name!r}: {moved} of {received.n_nodes} node coordinates differ from the declared "
            "mesh's (another mesh, or the nodes in another order: values would be matched to the wrong nodes)"
        )
    raise fail(
        f"field {coords.name!r}: same nodes as the declared mesh but other cells "
        f"({'none' if received.cells is None else len(received.cells)} against "
        f"{'none' if declared.cells is None else len(declared.cells)})"
    )
