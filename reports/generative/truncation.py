"""What the flow's POD truncation alone costs in energy distance (stochastic heat field, 32 x 32).

The flow (``model=flow``, ``space: reduced``) models only the coefficients of ``n_modes`` POD
modes of the normalized field; the field's law off the basis is dropped. Here the basis is fitted
as the flow fits it (the POD of 4 096 normalized training rows: 410 simulations x 10 steps at
uniform random parameters, per-pixel normalization from the same rows) and the simulator's own
second realization set of a distribution check (16 random held-out vectors x t = 0.5 and 1, 2 x
256 realizations, the seeds of ``DistributionCheck``) is projected onto it and decoded. The energy
distance on 16 PCA coefficients of the first set (as ``distribution_metrics``) between the
projected second set and the first, averaged over conditions, over the same without projection
(the floor), is what a model with a perfect law on the basis would score. Written to
``truncation.json``::

    python reports/generative/truncation.py            # 16 32 64 128 modes
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from gensim.metrics import energy_distance, pca_basis, simulator_samples
from gensim.models.components import ReducedBasis
from gensim.models.generative import DistributionCheck
from gensim.simulations import StochasticHeat

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modes", nargs="*", type=int, default=[16, 32, 64, 128])
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    sim = StochasticHeat(grid=32)
    rng = np.random.default_rng(0)
    lo, hi = np.array(sim.space.lower), np.array(sim.space.upper)
    rows = []
    for i in range(410):  # the flow's 4 096 basis rows
        p = lo + (hi - lo) * rng.random(4)
        rows += [f["u"].reshape(-1) for _, _, f in sim.run(p, seed=10_000 + i)]
    rows = torch.tensor(np.array(rows))
    mu, sd = rows.mean(0), rows.std(0)
    check = DistributionCheck()
    n, steps = check.n_samples, [sim.n_steps // 2 - 1, sim.n_steps - 1]  # t = 0.5 and 1
    refs = []
    for j, p in enumerate(lo + (hi - lo) * rng.random((16, 4))):
        a, _ = simulator_samples(sim, p, steps, n, check.seed + 2 * j * n)
        b, _ = simulator_samples(sim, p, steps, n, check.seed + (2 * j + 1) * n)
        refs += [(a[s], b[s]) for s in range(len(steps))]
    out = {}
    for k in args.modes:
        basis = ReducedBasis(rows.shape[1], k)
        basis.fit((rows - mu) / sd)
        ed = floor = 0.0
        for a, b in refs:
            projected = basis.decode(basis.project((b - mu) / sd)) * sd + mu
            mean, comps = pca_basis(a, check.n_components)
            a_pc = (a.double() - mean) @ comps.T
            ed += energy_distance((projected.double() - mean) @ comps.T, a_pc)
            floor += energy_distance((b.double() - mean) @ comps.T, a_pc)
        out[str(k)] = ed / floor
        print(f"{k} modes: energy distance of the projected realizations / floor = {ed / floor:.4f}")
    (HERE / "truncation.json").write_text(json.dumps({"energy_distance_ratio_by_modes": out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
