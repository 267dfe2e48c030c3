"""Where the held-out p99 of the replay benchmark comes from: which time steps hold the worst 1%.

For every finished study of ``benchmark.py`` that still has its checkpoint (checkpoints are not
committed: rerun the benchmark first), reload the final surrogate, re-simulate the study's
held-out set (:func:`gensim.baselines.offline.study_simulations`), and split the worst 1% of the
held-out samples by time step. Writes ``p99_steps.md``.

Run from the repository root::

    python reports/replay/p99_steps.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from benchmark import HERE, RUNS, SCENARIOS

from gensim.metrics import relative_l2
from gensim.report import load_study
from gensim.report.scoring import load_surrogate

STEP_GROUPS = {"step 0": (0, 1), "steps 1-4": (1, 5), "steps 5-99": (5, None)}


def heldout_errors(run_dir: Path) -> np.ndarray:
    """Relative L2 error of every held-out (simulation, step, field) of a finished study, shape (S, T, F)."""
    study = load_study(run_dir)
    sims, simulation, model = study.heldout, study.simulation, load_surrogate(study)
    params, t, fields = sims.snapshots()
    with torch.no_grad():
        pred = model(torch.from_numpy(params.astype(np.float32)), torch.from_numpy(t.astype(np.float32)))
    errors = relative_l2(pred, torch.from_numpy(fields), simulation.fields).numpy()
    return errors.reshape(*sims.fields.shape[:2], -1)


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for scenario, (_, plan) in SCENARIOS.items():
        for variant, seeds in plan.items():
            shares, p99s, p99_late = [], [], []
            for seed in seeds:
                run_dir = RUNS / scenario / variant / f"seed{seed}"
                if not (run_dir / "checkpoints" / "last.ckpt").exists():
                    continue
                errors = heldout_errors(run_dir)
                p99 = np.quantile(errors, 0.99)
                worst = errors >= p99
                shares.append([worst[:, a:b].sum() / worst.sum() for a, b in STEP_GROUPS.values()])
                p99s.append(p99)
                p99_late.append(np.quantile(errors[:, 5:], 0.99))
            if p99s:
                share = np.mean(shares, axis=0)
                rows.append(
                    f"| {scenario} | {variant} | {len(p99s)} | "
                    + " | ".join(f"{s:.0%}" for s in share)
                    + f" | {np.mean(p99s):.4f} | {np.mean(p99_late):.4f} |"
                )
    head = (
        "| scenario | variant | seeds | "
        + " | ".join(f"worst 1% at {g}" for g in STEP_GROUPS)
        + " | p99 | p99 of steps 5-99 |"
    )
    table = "\n".join([head, "|" + "---|" * (head.count("|") - 1), *rows])
    (HERE / "p99_steps.md").write_text(
        "Share of the worst 1% of held-out samples (16 simulations x 100 steps) by time step, mean over "
        "seeds, and the p99 with and without the first five steps (recomputed from the checkpoints: "
        "`python reports/replay/p99_steps.py`).\n\n" + table + "\n"
    )
    print(table)


if __name__ == "__main__":
    main()
