"""One table of the plate_heat report: held-out and training relative L2 by method and budget.

Reads ``metrics.json`` written by ``gensim-report problem=plate_heat ...`` (see README.md here)
and writes ``summary.md`` next to this file: per budget, the neural field's held-out and training
errors (its study's ``metrics.json``), Kriging's and polynomial chaos's held-out errors, and the
trivial predictor's (the training mean field), all on the same 16 held-out simulations.

Usage: ``python reports/plate_heat/summary.py``
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ONLINE = "on-line"


def main() -> None:
    report = json.loads((HERE / "metrics.json").read_text())
    by_budget: dict[int, dict[str, dict]] = defaultdict(dict)
    for row in report["rows"]:
        by_budget[row["budget"]][row["method"]] = row["metrics"]
    baselines = sorted({m for rows in by_budget.values() for m in rows} - {ONLINE})
    lines = [
        "# plate_heat: held-out relative L2 against the number of simulations",
        "",
        "Mean over the 16 held-out simulations x 50 steps (p99 in brackets); the neural field's training error is "
        "the same score on up to 512 of its training rows. Written by `python reports/plate_heat/summary.py` "
        "from `metrics.json`.",
        "",
        "| simulations | neural field (held-out) | neural field (training) | "
        + " | ".join(baselines)
        + " | trivial (training mean) |",
        "|---:|---:|---:|" + "---:|" * len(baselines) + "---:|",
    ]
    for budget in sorted(by_budget):
        rows = by_budget[budget]
        nf = rows[ONLINE]
        cells = [
            f"{nf['val_rel_l2_mean']:.4f} ({nf['val_rel_l2_p99']:.3f})",
            f"{nf['train_rel_l2_mean']:.4f} ({nf['train_rel_l2_p99']:.3f})",
        ]
        cells += [
            f"{rows[m]['val_rel_l2_mean']:.4f} ({rows[m]['val_rel_l2_p99']:.3f})" if m in rows else "-"
            for m in baselines
        ]
        cells.append(f"{nf['trivial_rel_l2_mean']:.4f}")
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
