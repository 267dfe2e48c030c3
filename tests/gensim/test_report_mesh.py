"""The report's held-out maps of a field on a mesh: triangulated colour plots of truth, predictions, errors."""

from __future__ import annotations

from pathlib import Path

import matplotlib.axes
import numpy as np

from gensim.report.figures import plot_heldout_cases
from gensim.simulations import FieldMesh, FieldSpec
from gensim.simulations.meshes import plate_with_holes


def test_mesh_fields_are_drawn_as_triangulated_maps(tmp_path: Path, monkeypatch) -> None:
    mesh = plate_with_holes(0.1)
    spec = FieldSpec("temperature", (len(mesh.nodes),), "float32", FieldMesh(mesh.nodes, mesh.cells))
    truth = (np.sin(mesh.nodes[:, 0]) * mesh.nodes[:, 1])[None]  # one held-out case
    preds = {"neural_field": truth + 0.01, "kriging": 1.1 * truth}
    calls = []
    tripcolor = matplotlib.axes.Axes.tripcolor

    def spy(ax, *args, **kwargs):
        calls.append(args[3].shape)  # the values drawn at the nodes
        return tripcolor(ax, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "tripcolor", spy)
    plot_heldout_cases(truth, preds, spec, 0.1, tmp_path / "fields.png", tmp_path / "errors.png", "plate")
    # The truth and each prediction, then each prediction's error, all on the mesh.
    assert calls == [(spec.size,)] * ((1 + 2) + 2)
    assert (tmp_path / "fields.png").stat().st_size > 10_000 and (tmp_path / "errors.png").stat().st_size > 10_000
