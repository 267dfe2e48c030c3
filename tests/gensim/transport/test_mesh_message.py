"""The MESH message: a field's geometry sent once, checked by the receiver, data messages unchanged."""

from __future__ import annotations

import re

import numpy as np
import pytest
from waiting import wait_until

from gensim.client import Client
from gensim.simulations.base import FieldMesh, FieldSpec
from gensim.transport import Receiver, geometry, wire

TOKEN = bytes(range(32))
NODES = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
CELLS = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
MESH = FieldMesh(NODES, CELLS)
SPEC = FieldSpec("u", (5,), "float32", MESH)


@pytest.fixture
def stream():
    """A started receiver of SPEC with simulation 0 registered, a client of it, and the samples taken."""
    samples = []
    rx = Receiver([SPEC], TOKEN, n_steps=4).start()
    rx.register(0, np.zeros(1), samples.append)
    client = Client(rx.address, TOKEN, 0, fields=[SPEC])
    try:
        yield rx, client, samples
    finally:
        client.close(linger_s=0)
        rx.stop()


def test_mesh_sent_once_and_data_carry_node_values_only(stream):
    rx, client, samples = stream
    client.send_mesh("u", MESH)
    for step in range(3):
        client.send(step, 0.1 * step, {"u": np.full(5, step, np.float32)})
    client.end()
    assert rx.wait_finished([0], timeout=5)
    assert rx.meshes_verified == {"u": 1}
    assert [s.fields["u"].tolist() for s in samples] == [[float(k)] * 5 for k in range(3)]
    assert rx.stats().rejected == {}
    # A data message is the header, the node values and the tag: no coordinates ride along.
    assert rx.expected_message_bytes == wire.header_size(1) + wire.TAG_BYTES + 5 * 4


@pytest.mark.parametrize(
    ("mesh", "expected"),
    [
        (FieldMesh(NODES[[1, 0, 2, 3, 4]], CELLS), "2 of 5 node coordinates differ"),
        (FieldMesh(NODES + 1e-3, CELLS), "node coordinates differ"),
        (FieldMesh(NODES, CELLS[:2]), "other cells"),
        (FieldMesh(NODES[:, :1]), "1-D"),
    ],
)
def test_another_mesh_is_rejected_with_the_difference(stream, mesh, expected):
    rx, client, samples = stream
    # Sent raw: the client's own check would refuse a mesh of another size first.
    client._send_frames(geometry.mesh_message(client._mac, client.study, 0, "u", mesh), "mesh")
    assert wait_until(lambda: rx.stats().n_rejected == 1)
    assert rx.stats().rejected == {"mesh": 1} and rx.meshes_verified == {"u": 0}
    assert re.search(expected, rx.stats().rejection_details[0])


def test_bad_geometry_and_unmeshed_field_are_rejected(stream):
    rx, client, _ = stream
    bad = np.array(NODES)
    bad[2, 0] = np.nan
    header = wire.encode_preamble(client.study, 0, 0, 0.0, 1, wire.KIND_MESH)
    header += wire.encode_descriptors([wire.FieldDescriptor("u", "float64", bad.shape)])
    client._send_frames(wire.sign(client._mac, [header, bad]), "mesh")
    assert wait_until(lambda: rx.stats().n_rejected == 1)
    assert "bad geometry" in rx.stats().rejection_details[0] and "NaN" in rx.stats().rejection_details[0]


def test_mesh_of_a_grid_field_is_rejected():
    grid = FieldSpec("u", (5,), "float32")
    # A grid receiver's limits refuse a mesh with cells as too large: room, and nodes only, to get to the check.
    with Receiver([grid], TOKEN, max_message_bytes=10_000).start() as rx:
        rx.register(3, np.zeros(1), lambda s: None)
        with Client(rx.address, TOKEN, 3) as client:
            client.send_mesh("u", FieldMesh(NODES))
            assert wait_until(lambda: rx.stats().n_rejected == 1)
        assert rx.stats().rejected == {"mesh": 1}
        assert "declares no mesh" in rx.stats().rejection_details[3]


def test_field_mesh_validation_names_the_fix():
    with pytest.raises(ValueError, match=r"expected an \(N, d\) array"):
        FieldMesh(np.zeros(4))
    with pytest.raises(ValueError, match="NaN/Inf"):
        FieldMesh(np.array([[0.0, np.inf]]))
    with pytest.raises(ValueError, match=r"node indices must be in \[0, 5\)"):
        FieldMesh(NODES, [[0, 1, 5]])
    with pytest.raises(ValueError, match="repeats a node"):
        FieldMesh(NODES, [[0, 1, 1]])
    with pytest.raises(ValueError, match=r"has shape \(5,\), got \(6,\)"):
        FieldSpec("u", (6,), "float32", MESH)
    assert FieldSpec("u", (5,), "float32", FieldMesh(NODES.copy(), CELLS.copy())) == SPEC
    assert hash(FieldMesh(NODES, CELLS)) == hash(MESH) and FieldMesh(NODES) != MESH
