"""Parsimonious sampling benchmark (issue 5): held-out error against the simulation budget.

Samplers: uniform, Latin hypercube (one design of the whole budget), Sobol', and the active
sampler with its two acquisition rules (training loss, snapshot uncertainty). Problems: plume2d
(difficulty localized at high Péclet number) and heat2d. Budgets 64, 128, 256 training
simulations; 3 seeds. Every study is a ``gensim-train`` run through :mod:`gensim.compare`, so each
table row names the ``metrics.json`` files it was computed from.

Sizes are cut to what two shared CPU cores can run (see README.md in this folder): 32 x 32
grids, 10 emitted steps per simulation, a 3 x 128 MLP, ``trainer.max_steps = 8 x budget``, and
every sampler gets the same pacing (16 simulations at once, then the rest of the budget released
linearly until 75% of the training steps), so that the samplers differ in where they simulate,
not when.

Run from the repository root (a finished study is not run again, so an interrupted run resumes)::

    python reports/sampling/benchmark.py                  # run what is missing, then table + plots
    python reports/sampling/benchmark.py --report-only    # table + plots from finished studies
    python reports/sampling/benchmark.py --problems plume2d --budgets 64 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"

PROBLEMS = {
    "plume2d": ["simulation=plume2d", "simulation.grid=32", "simulation.n_steps=10"],
    "heat2d": ["simulation=heat2d", "simulation.grid=32", "simulation.n_steps=10"],
}
BUDGETS = (64, 128, 256)
SEEDS = (0, 1, 2)
STEPS_PER_SIMULATION = 8
N_INITIAL, RELEASE_UNTIL = 16, 0.75

COMMON = [
    "data.n_validation=16",
    "data.watermark=128",
    "data.batch_size=64",
    "data.steps_per_epoch=1000000",  # one pseudo-epoch: no validation pass during the study
    "buffer=reservoir",  # the policy these studies ran with (the default then)
    "buffer.capacity=4000",  # holds all 256 x 10 samples: no eviction at any budget
    "model.net.hidden=[128,128,128]",
    "model.warmup_steps=50",
    "model.normalizer_warmup_batches=20",
]
PACING = [
    "+callbacks.pacing._target_=gensim.callbacks.SimulationPacing",
    f"+callbacks.pacing.n_initial={N_INITIAL}",
    f"+callbacks.pacing.release_until={RELEASE_UNTIL}",
]
ACTIVE = [
    "callbacks=active_learning",
    f"callbacks.pacing.n_initial={N_INITIAL}",
    f"callbacks.pacing.release_until={RELEASE_UNTIL}",
]

VARIANTS = ("uniform", "lhs", "sobol", "active_loss", "active_uncertainty")
COLUMNS = {
    "simulations_finished": "sims",
    "val_rel_l2_mean": "rel L2 mean",
    "val_rel_l2_p99": "rel L2 p99",
    "trivial_rel_l2_mean": "trivial mean",
    "wall_s": "wall s",
}


def variant_overrides(variant: str, budget: int) -> list[str]:
    """Hydra overrides of one sampler variant at one budget."""
    steps = STEPS_PER_SIMULATION * budget
    if variant.startswith("active_"):
        # About 32 committee snapshots over the study, whatever its length.
        snapshot_every = max(10, steps // 32)
        return [f"sampler={variant}", *ACTIVE, f"callbacks.active_learning.uncertainty.every_n_steps={snapshot_every}"]
    return [f"sampler={variant}", *PACING]


def run_all(problems, budgets, seeds, variants) -> None:
    from gensim.compare import run_comparison

    # Two shared cores: one thread per study avoids oversubscription (measured: 2x faster).
    os.environ["OMP_NUM_THREADS"] = "1"
    for budget in budgets:
        for problem in problems:
            common = [
                *PROBLEMS[problem],
                *COMMON,
                f"launcher.max_simulations={budget}",
                f"trainer.max_steps={STEPS_PER_SIMULATION * budget}",
            ]
            run_comparison(
                RUNS / problem / f"n{budget}",
                {v: variant_overrides(v, budget) for v in variants},
                seeds=seeds,
                common=common,
                timeout_s=3600,
            )


def load_results(problem: str):
    """Every finished study of a problem: StudyResults named ``<variant> n=<budget>``, with budget."""
    from gensim.compare import StudyResult

    out = []
    for budget in BUDGETS:
        for variant in VARIANTS:
            for seed in SEEDS:
                run_dir = RUNS / problem / f"n{budget}" / variant / f"seed{seed}"
                path = run_dir / "metrics.json"
                if path.exists():
                    out.append(
                        (
                            variant,
                            budget,
                            StudyResult(f"{variant} n={budget}", seed, run_dir, json.loads(path.read_text())),
                        )
                    )
    return out


def curve(results, variant: str, key: str) -> tuple[list[int], list[float], list[float]]:
    """Budgets, mean and std over seeds of a metric, for one variant."""
    ns, means, stds = [], [], []
    for budget in BUDGETS:
        vals = [r.metrics[key] for v, b, r in results if v == variant and b == budget]
        if vals:
            mean = sum(vals) / len(vals)
            ns.append(budget)
            means.append(mean)
            stds.append(math.sqrt(sum((x - mean) ** 2 for x in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0)
    return ns, means, stds


def budget_to_reach(ns: list[int], errors: list[float], target: float) -> float | None:
    """Smallest budget at which the (log-log interpolated) error curve reaches ``target``.

    Returns the first budget already at or below the target, a log-log interpolation between the
    last budget above and the first at or below it, or None when no budget reaches it.
    """
    for i, (n, e) in enumerate(zip(ns, errors)):
        if e <= target:
            if i == 0:
                return float(n)
            n0, e0 = ns[i - 1], errors[i - 1]
            return n0 * (n / n0) ** (math.log(e0 / target) / math.log(e0 / e))
    return None


def interpolate(ns: list[int], values: list[float], n: float) -> float:
    """Log-log interpolation of a curve at budget ``n`` (inside the measured range)."""
    for (n0, v0), (n1, v1) in zip(zip(ns, values), zip(ns[1:], values[1:])):
        if n0 <= n <= n1:
            return v0 * (v1 / v0) ** (math.log(n / n0) / math.log(n1 / n0))
    return values[ns.index(int(n))]


def acceptance(results) -> list[str]:
    """Lines on the aim: active reaches Sobol's p99 at 256 simulations with <= 180, mean not worse."""
    ns_s, p99_s, _ = curve(results, "sobol", "val_rel_l2_p99")
    _, mean_s, _ = curve(results, "sobol", "val_rel_l2_mean")
    if 256 not in ns_s:
        return ["Sobol' at 256 simulations is not finished: no verdict."]
    target, target_mean = p99_s[ns_s.index(256)], mean_s[ns_s.index(256)]
    lines = [
        f"Sobol' at 256 simulations: p99 {target:.4g}, mean {target_mean:.4g}.",
        "",
        "At equal budget, 256 simulations, ratio to Sobol' (< 1: better than Sobol'):",
        "",
    ]
    for variant in VARIANTS:
        ns, p99, _ = curve(results, variant, "val_rel_l2_p99")
        _, mean, _ = curve(results, variant, "val_rel_l2_mean")
        if variant != "sobol" and 256 in ns:
            i = ns.index(256)
            lines.append(f"- {variant}: p99 {p99[i] / target:.3f}, mean {mean[i] / target_mean:.3f}")
    lines += ["", "Budget at which each reaches Sobol's p99 at 256:", ""]
    for variant in VARIANTS:
        if variant == "sobol":
            continue
        ns, p99, _ = curve(results, variant, "val_rel_l2_p99")
        _, mean, _ = curve(results, variant, "val_rel_l2_mean")
        if not ns:
            continue
        n_star = budget_to_reach(ns, p99, target)
        if n_star is None:
            lines.append(
                f"- {variant}: does not reach it within {ns[-1]} simulations (p99 at {ns[-1]}: {p99[-1]:.4g})."
            )
            continue
        mean_there = interpolate(ns, mean, n_star)
        verdict = "meets" if n_star <= 180 and mean_there <= target_mean else "misses"
        lines.append(
            f"- {variant}: reaches it at ~{n_star:.0f} simulations (log-log interpolation), mean there "
            f"~{mean_there:.4g} vs {target_mean:.4g}: {verdict} the aim."
        )
    return lines


def hard_share(problem: str = "plume2d") -> list[str]:
    """Where the plume simulations went: share in log10_Pe >= 2 and width <= 0.125, per variant and budget.

    That box is 1/8 of the parameter space and holds the narrow, fast-moving puffs.
    """
    if problem != "plume2d":
        return []
    lines = [
        "Share of the training simulations in the hard box log10_Pe >= 2, width <= 0.125 (1/8 of the "
        "space; mean over seeds, from each study's simulations.json):",
        "",
        "| variant | " + " | ".join(f"n={b}" for b in BUDGETS) + " |",
        "|---|" + "---|" * len(BUDGETS),
    ]
    for variant in VARIANTS:
        cells = []
        for budget in BUDGETS:
            shares = []
            for seed in SEEDS:
                path = RUNS / problem / f"n{budget}" / variant / f"seed{seed}" / "simulations.json"
                if path.exists():
                    train = [r["params"] for r in json.loads(path.read_text()) if r["purpose"] == "train"]
                    shares.append(sum(p[0] >= 2.0 and p[2] <= 0.125 for p in train) / len(train))
            cells.append(f"{sum(shares) / len(shares):.3f}" if shares else "n/a")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines


def write_report(problems) -> None:
    from gensim.compare import markdown_table

    parts = [
        "# Sampling benchmark: held-out error against the simulation budget",
        "",
        "Generated by `python reports/sampling/benchmark.py`; read README.md in this folder for the set-up "
        "and the discussion. Mean ± std over seeds; every row lists the run directories whose "
        "`metrics.json` it was computed from.",
        "",
    ]
    for problem in problems:
        results = load_results(problem)
        if not results:
            continue
        parts += [
            f"## {problem}",
            "",
            markdown_table([r for _, _, r in results], COLUMNS, relative_to=HERE),
            "",
            "Aim (active reaches Sobol's p99 at 256 simulations with <= 180, without a worse mean):",
            "",
            *acceptance(results),
            "",
            *hard_share(problem),
            "",
        ]
    (HERE / "results.md").write_text("\n".join(parts))
    plot_errors(problems)
    plot_designs()


def plot_errors(problems) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(problems), 2, figsize=(11, 4.2 * len(problems)), squeeze=False)
    # Colour, marker, and a small horizontal shift so that error bars at one budget do not overlap.
    styles = {
        "uniform": ("tab:gray", "o", 0.93),
        "lhs": ("tab:olive", "v", 0.965),
        "sobol": ("tab:blue", "s", 1.0),
        "active_loss": ("tab:red", "^", 1.035),
        "active_uncertainty": ("tab:purple", "D", 1.07),
    }
    for row, problem in enumerate(problems):
        results = load_results(problem)
        for col, (key, label) in enumerate([("val_rel_l2_mean", "mean"), ("val_rel_l2_p99", "99th percentile")]):
            ax = axes[row, col]
            for variant in VARIANTS:
                ns, means, stds = curve(results, variant, key)
                if ns:
                    color, marker, shift = styles[variant]
                    ax.errorbar(
                        [n * shift for n in ns], means, yerr=stds, color=color, marker=marker, capsize=3, label=variant
                    )
            ns_s, p99_s, _ = curve(results, "sobol", key)
            if 256 in ns_s:
                ax.axhline(p99_s[ns_s.index(256)], color="tab:blue", ls=":", lw=1, label="Sobol' at 256")
            if col == 1:
                ax.axvline(180, color="k", ls="--", lw=0.8, label="180 simulations")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(BUDGETS, [str(b) for b in BUDGETS])
            ax.set_xlim(BUDGETS[0] / 1.2, BUDGETS[-1] * 1.2)
            ax.set_xlabel("training simulations (budget)")
            ax.set_ylabel(f"held-out relative L2, {label}")
            ax.set_title(f"{problem}: {label} (mean ± std over seeds)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "error_vs_budget.png", dpi=110)
    plt.close(fig)


def plot_designs(budget: int = 256, seed: int = 0) -> None:
    """Where each sampler simulated the plume (log10_Pe against width), one study each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("sobol", "active_loss", "active_uncertainty")
    runs = {v: RUNS / "plume2d" / f"n{budget}" / v / f"seed{seed}" / "simulations.json" for v in names}
    if not all(p.exists() for p in runs.values()):
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), sharey=True)
    for ax, (variant, path) in zip(axes, runs.items()):
        records = [r for r in json.loads(path.read_text()) if r["purpose"] == "train"]
        ids = [r["sim_id"] for r in records]
        pe = [r["params"][0] for r in records]
        width = [r["params"][2] for r in records]
        sc = ax.scatter(pe, width, c=ids, cmap="viridis", s=14)
        hard = sum(p >= 2.0 and w <= 0.125 for p, w in zip(pe, width))
        ax.set_title(f"{variant}\n{hard} of {len(records)} in the hard box (dotted)", fontsize=10)
        ax.set_xlabel("log10 Péclet number")
        ax.axvline(2.0, color="k", ls=":", lw=0.8)
        ax.axhline(0.125, color="k", ls=":", lw=0.8)
    axes[0].set_ylabel("release width")
    fig.colorbar(sc, ax=axes, label="simulation id (launch order)")
    fig.suptitle(
        f"plume2d, {budget} training simulations, seed {seed}: where each sampler simulated "
        "(hard box: log10 Pe >= 2, width <= 0.125)",
        y=1.02,
    )
    fig.savefig(HERE / "where_simulated.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--report-only", action="store_true", help="only rebuild the table and plots")
    args = parser.parse_args(argv)
    if not args.report_only:
        run_all(args.problems, args.budgets, args.seeds, args.variants)
    write_report(list(PROBLEMS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
