"""The flow's sampler against its held-out distribution check: steps, solver and step shape.

For a finished flow study (``checkpoints/last.ckpt``), the distribution check of the study
(the same held-out vectors, times, seeds and simulator realizations as ``DistributionCheck``)
is recomputed with each sampler setting: ``solver`` x ``sampling_steps`` x ``time_grid_power``
(see :class:`gensim.models.FlowMatchingSurrogate`). The cost of a sample is its count of
velocity evaluations, steps times 1 (euler), 2 (midpoint) or 4 (rk4). Written to
``sampler.json`` beside the study's ``metrics.json`` and printed as a table::

    python reports/generative/flow_sampler.py runs/stochastic_2k/flow_ema/seed0
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from gensim.models.flow import SOLVERS
from gensim.models.generative import simulate_reference
from gensim.report import load_study
from gensim.report.scoring import load_surrogate

HERE = Path(__file__).resolve().parent
#: (solver, steps, time_grid_power): the default's 8 evaluations first, then finer references.
SETTINGS = (
    ("midpoint", 4, 1.0),
    ("midpoint", 4, 1.5),
    ("midpoint", 4, 2.0),
    ("euler", 8, 1.0),
    ("euler", 8, 2.0),
    ("midpoint", 8, 1.0),
    ("midpoint", 8, 2.0),
    ("rk4", 16, 1.0),
)
KEYS = ("energy_distance_ratio", "std_rel_error", "std_ratio", "mean_error", "crps_ratio", "coverage_50", "coverage_90")


def sweep(run_dir: Path) -> list[dict]:
    study = load_study(run_dir)
    model = load_surrogate(study)
    records = [r for r in study.records if r["purpose"] == "validation"]
    params = torch.tensor([r["params"] for r in records], dtype=torch.float64)
    ref = simulate_reference(study.simulation, params, model.check)
    rows = []
    for solver, steps, power in SETTINGS:
        model.hparams.solver, model.hparams.sampling_steps, model.hparams.time_grid_power = solver, steps, power
        report = model.distribution_report(ref)
        rows.append(
            {"solver": solver, "steps": steps, "time_grid_power": power, "evaluations": steps * SOLVERS[solver]}
            | {k: report[k] for k in KEYS}
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="flow study run directories, relative to this folder")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    for name in args.run_dirs:
        run_dir = HERE / name
        rows = sweep(run_dir)
        (run_dir / "sampler.json").write_text(json.dumps(rows, indent=2) + "\n")
        print(f"\n{name}\n| solver | steps | power | evaluations | " + " | ".join(KEYS) + " |")
        for r in rows:
            print(
                f"| {r['solver']} | {r['steps']} | {r['time_grid_power']} | {r['evaluations']} | "
                + " | ".join(f"{r[k]:.4g}" for k in KEYS)
                + " |"
            )


if __name__ == "__main__":
    main()
