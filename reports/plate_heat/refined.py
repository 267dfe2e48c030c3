"""The trained neural field on a mesh it never saw: the plate meshed at half the spacing.

A finished ``gensim-train simulation=plate_heat model=neural_field`` study is reloaded (its
config and last checkpoint); its held-out simulations are run again on the plate meshed with
``h / refine`` (the same domain, about ``refine^2`` times the nodes), and the surrogate,
trained on the coarse mesh's node values only, is evaluated at the refined nodes
(``predict_at``). Reported, per held-out (simulation, step), the relative L2 over the nodes:

- ``neural_field_refined``: the surrogate at the refined nodes against the refined simulation;
- ``neural_field_coarse``: the surrogate at its training nodes against the coarse simulation
  (the study's own held-out error, for comparison);
- ``coarse_interpolated``: the coarse simulation itself, interpolated linearly (P1) to the
  refined nodes (the nearest coarse node's value at the few refined nodes outside the coarse
  triangles, on the boundary), against the refined simulation: the discretization gap
  between the two meshes, what the coarse data themselves miss of the refined solution.

Usage: ``OMP_NUM_THREADS=1 python reports/plate_heat/refined.py <run dir> [--refine 2]`` writes
``refined.json``, ``refined.md`` and ``refined_fields.png`` next to this file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from matplotlib.tri import LinearTriInterpolator, Triangulation
from scipy.spatial import cKDTree

from gensim.metrics import summarize_errors
from gensim.report.figures import plot_heldout_cases
from gensim.report.scoring import load_surrogate
from gensim.report.studies import load_study

HERE = Path(__file__).resolve().parent


def rel_l2(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Relative L2 over the last axis, shape (...)."""
    return np.linalg.norm(pred - truth, axis=-1) / np.linalg.norm(truth, axis=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--refine", type=float, default=2.0, help="coarse spacing over refined spacing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_study(args.run_dir)
    coarse = data.simulation
    fine = instantiate(data.config.simulation, h=coarse.h / args.refine)
    model = load_surrogate(data)
    heldout = data.heldout  # the study's held-out simulations, re-run on the coarse mesh
    mesh = coarse.fields[0].mesh
    tri = Triangulation(mesh.nodes[:, 0], mesh.nodes[:, 1], mesh.cells)
    fine_nodes = torch.tensor(fine.fields[0].mesh.nodes, dtype=torch.float32)
    t = torch.tensor(heldout.times, dtype=torch.float32)
    # Refined boundary nodes that no coarse triangle contains (round-off on the edges, the
    # chords of the holes) take the value of their nearest coarse node.
    outside = LinearTriInterpolator(tri, np.zeros(len(mesh.nodes)))(*fine_nodes.numpy().T).mask
    nearest = cKDTree(mesh.nodes).query(fine_nodes.numpy()[outside])[1]
    errors = {"neural_field_refined": [], "neural_field_coarse": [], "coarse_interpolated": []}
    fine_truth, fine_pred = [], []
    for params, coarse_fields in zip(heldout.params, heldout.fields):
        truth = np.stack([f["temperature"] for _, _, f in fine.run(params)]).astype(np.float64)  # (T, N_fine)
        p = torch.tensor(params, dtype=torch.float32).expand(len(t), -1)
        with torch.no_grad():
            pred = model.predict_at(p, t, fine_nodes)[..., 0].double().numpy()
            pred_coarse = model(p, t).double().numpy()
        interpolated = np.stack(
            [
                LinearTriInterpolator(tri, u)(*fine_nodes.numpy().T).filled(np.nan)
                for u in coarse_fields.astype(np.float64)
            ]
        )
        interpolated[:, outside] = coarse_fields[:, nearest]
        errors["neural_field_refined"].append(rel_l2(pred, truth))
        errors["neural_field_coarse"].append(rel_l2(pred_coarse, coarse_fields))
        errors["coarse_interpolated"].append(rel_l2(interpolated, truth))
        fine_truth.append(truth)
        fine_pred.append(pred)
    summary = {name: summarize_errors(torch.from_numpy(np.concatenate(e)[:, None])) for name, e in errors.items()}
    result = {
        "run_dir": str(args.run_dir),
        "coarse_h": coarse.h,
        "refined_h": fine.h,
        "coarse_nodes": coarse.fields[0].size,
        "refined_nodes": fine.fields[0].size,
        "heldout_simulations": len(heldout),
        "steps": len(t),
        "refined_nodes_outside_coarse": int(outside.sum()),
        **summary,
    }
    (HERE / "refined.json").write_text(json.dumps(result, indent=2) + "\n")
    step = len(t) // 10
    plot_heldout_cases(
        np.stack(fine_truth)[:3, step],
        {"neural_field": np.stack(fine_pred)[:3, step]},
        fine.fields[0],
        float(t[step]),
        HERE / "refined_fields.png",
        HERE / "refined_errors.png",
        f"plate_heat on the refined mesh ({fine.fields[0].size} nodes, never seen)",
    )
    lines = [
        "# The neural field on a refined mesh it never saw (plate_heat)",
        "",
        f"Command: `OMP_NUM_THREADS=1 python reports/plate_heat/refined.py {args.run_dir} --refine {args.refine:g}`",
        "",
        f"Trained on the mesh h = {coarse.h:g} ({coarse.fields[0].size} nodes); evaluated at the "
        f"{fine.fields[0].size} nodes of the mesh h = {fine.h:g} against the simulation run on that mesh, "
        f"on the study's {len(heldout)} held-out parameter vectors x {len(t)} steps.",
        "",
        "| relative L2 over the nodes | mean | p99 |",
        "|---|---:|---:|",
    ]
    labels = {
        "neural_field_refined": "neural field at the refined nodes vs refined simulation",
        "neural_field_coarse": "neural field at its training nodes vs coarse simulation",
        "coarse_interpolated": "coarse simulation, P1-interpolated to the refined nodes, vs refined simulation",
    }
    lines += [f"| {labels[k]} | {summary[k]['mean']:.4f} | {summary[k]['p99']:.4f} |" for k in labels]
    lines += [
        "",
        "The last row is the discretization gap between the two meshes: what the coarse data "
        f"themselves miss of the refined solution ({int(outside.sum())} refined boundary nodes outside the "
        "coarse triangles take their nearest coarse node's value).",
        "",
        "![refined fields](refined_fields.png)",
        "",
        "![refined errors](refined_errors.png)",
    ]
    (HERE / "refined.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
