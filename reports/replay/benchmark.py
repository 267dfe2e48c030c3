"""Replay policies on non-i.i.d. streams (issue 4): equal memory, equal training steps.

heat2d, 8 simulations at a time (``launcher.n_parallel=8``), each streaming its 100 steps in
order: 480 training simulations (48 000 samples, 24x the buffer) into a buffer of 2 000 samples
(the same ``buffer.capacity``, hence the same bytes, for every policy), 1 500 training steps of
batch 128. Three scenarios, i.e. three ways the stream meets the training:

``burst``
    The simulations run as fast as they can. heat2d at 32 x 32 is so cheap next to the training
    on these cores that the whole stream arrives before step ~250: training then draws from the
    buffer the stream left behind. Every policy runs here (FIFO and Melissa's reservoir, whose
    arrivals wait for draws, spread the stream over the training by themselves).
``paced``
    :class:`gensim.callbacks.SimulationPacing` releases the simulations along the first 75% of
    the training (16 at first, then about one every 2.3 steps), the on-line regime where the
    simulations, not the training, set the pace: what the buffer holds at each step is what
    the model learns from. Policies whose draws do not consume samples (pacing needs that).
``active``
    The same pacing with an active sampler that over-samples hard regions on purpose
    (``sampler=active_loss``, ``callbacks=active_learning``): the arrivals no longer follow the
    target. The distribution-aware policy runs with both ``follow=target`` and ``follow=arrivals``.

Variants: FIFO, FIRO, reservoir, Melissa's reservoir, distribution-aware (the
``buffer=distribution`` file: importance weights on, ``follow=target``), the same without
importance weights, and with ``follow=arrivals``. The held-out set is the harness's fixed Sobol
design of 16 simulations (all 100 steps) in every scenario.

Every study is a ``gensim-train`` run through :mod:`gensim.compare`, with the
:class:`gensim.callbacks.BufferStats` callback, so each table row names the run directories
(``metrics.json`` + ``buffer_stats.json``) it was computed from. Studies of the same seed share
their design, held-out set and initial network, so the distribution-aware policy is compared
with the reservoir seed by seed (:func:`gensim.compare.paired_ratio`).

Run from the repository root (a finished study is not run again, so an interrupted run resumes)::

    python reports/replay/benchmark.py                 # run what is missing, then table.md
    python reports/replay/benchmark.py --report-only   # table.md from finished studies
    python reports/replay/benchmark.py --scenarios paced --variants reservoir distribution --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gensim.buffers import buffer_divergence
from gensim.callbacks import BufferStats
from gensim.compare import StudyResult, finished_studies, markdown_table, paired_ratio, run_comparison
from gensim.simulations import Heat2D

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"

CAPACITY = 2000
COMMON = [
    "simulation=heat2d",
    "simulation.grid=32",
    "simulation.n_steps=100",
    "launcher.n_parallel=8",
    "launcher.max_simulations=480",
    f"buffer.capacity={CAPACITY}",
    "model.net.hidden=[128,128,128]",
    "trainer.max_steps=1500",
    "data.steps_per_epoch=500",
    "data.batch_size=128",
    "data.watermark=1000",
]
BUFFER_STATS = ["callbacks=buffer_stats", "callbacks.buffer_stats.every_n_steps=250"]
# 16 simulations (1 600 samples, above the watermark) before training, the rest by 75% of it.
PACING = [
    *BUFFER_STATS,
    "+callbacks.pacing._target_=gensim.callbacks.SimulationPacing",
    "+callbacks.pacing.n_initial=16",
    "+callbacks.pacing.release_until=0.75",
]
# conf/callbacks/active_learning.yaml paces the same way; BufferStats is added to it.
ACTIVE = [
    "sampler=active_loss",
    "callbacks=active_learning",
    "+callbacks.buffer_stats._target_=gensim.callbacks.BufferStats",
    "+callbacks.buffer_stats.every_n_steps=250",
]
VARIANTS = {
    "reservoir": ["buffer=reservoir"],
    "distribution": ["buffer=distribution", "buffer.policy.importance_weights=true"],
    "distribution_unweighted": ["buffer=distribution", "buffer.policy.importance_weights=false"],
    "distribution_arrivals": [
        "buffer=distribution",
        "buffer.policy.follow=arrivals",
        "buffer.policy.importance_weights=true",
    ],
    "firo": ["buffer=firo"],
    "melissa": ["buffer=melissa"],
    "fifo": ["buffer=fifo"],
}
# Scenario -> (extra overrides, {variant: seeds}).
MAIN_SEEDS = tuple(range(8))
SCENARIOS = {
    "burst": (
        BUFFER_STATS,
        {
            "reservoir": MAIN_SEEDS,
            "distribution": MAIN_SEEDS,
            "distribution_unweighted": MAIN_SEEDS,
            "firo": (0, 1),
            "melissa": (0, 1),
            "fifo": (0, 1),
        },
    ),
    "paced": (
        PACING,
        {"reservoir": MAIN_SEEDS, "distribution": MAIN_SEEDS, "distribution_unweighted": MAIN_SEEDS, "firo": (0, 1)},
    ),
    "active": (
        ACTIVE,
        {
            "reservoir": MAIN_SEEDS,
            "distribution": MAIN_SEEDS,
            "distribution_unweighted": MAIN_SEEDS,
            "distribution_arrivals": MAIN_SEEDS,
        },
    ),
}
COLUMNS = {
    "val_rel_l2_mean": "rel L2 mean",
    "val_rel_l2_p99": "rel L2 p99",
    "buffer_energy_distance": "energy dist. (end)",
    "buffer_mean_energy_distance": "energy dist. (mean over run)",
    "buffer_chi_square": "chi2 strata (end)",
    "buffer_mean_chi_square": "chi2 strata (mean over run)",
    "buffer_draws_mean": "draws/stored sample",
    "buffer_retired_draws_mean": "draws/retired sample",
    "train_samples_per_s": "train samples/s",
    "train_samples": "train samples",
}


def with_buffer_stats(result: StudyResult) -> StudyResult:
    """Add the study's ``buffer_stats.json`` (written by BufferStats) as ``buffer_*`` metrics.

    Keys already in ``metrics.json`` win: once ``gensim.train`` merges the callback's
    ``study_metrics()`` into ``metrics.json``, this reads nothing more.
    """
    path = Path(result.run_dir) / "buffer_stats.json"
    stats = json.loads(path.read_text()) if path.exists() else {}
    extra = {f"buffer_{k}": v for k, v in stats.items() if isinstance(v, (int, float))}
    return StudyResult(result.variant, result.seed, result.run_dir, {**extra, **result.metrics})


def divergence_floor(n_samples: int = CAPACITY, repeats: int = 20) -> str:
    """The divergences of an i.i.d. sample of the target of ``n_samples`` (mean ± std).

    No policy beats this on average without stratifying: it is the sampling noise of the
    statistics themselves (the energy distance is slightly negative because its reference
    sample is quasi-random, so more spread out than an i.i.d. one). Same settings as the
    studies' BufferStats callback.
    """
    stats = BufferStats()
    stats.bind(Heat2D(grid=4, n_steps=100))  # only the parameter space and n_steps matter
    rng = np.random.default_rng(0)
    values = []
    for _ in range(repeats):
        params = stats.strata.space.from_unit(rng.random((n_samples, stats.strata.space.dim)))
        steps = rng.integers(stats.strata.n_steps, size=n_samples)
        values.append(
            buffer_divergence(params, steps, stats.strata, stats.reference, max_points=stats.max_points, rng=rng)
        )
    ed = np.array([v["energy_distance"] for v in values])
    chi = np.array([v["chi_square"] for v in values])
    return (
        f"Floor: an i.i.d. sample of {n_samples} points of the target ({repeats} repeats) has energy "
        f"distance {ed.mean():.2e} ± {ed.std(ddof=1):.1e} and chi2 over the strata {chi.mean():.3f} ± "
        f"{chi.std(ddof=1):.3f}."
    )


def paired_lines(results: list[StudyResult]) -> list[str]:
    """Each distribution-aware variant against the reservoir, seed by seed (p99 and mean)."""
    lines = []
    variants = [v for v in dict.fromkeys(r.variant for r in results) if v.startswith("distribution")]
    for variant in variants:
        for metric, name in (("val_rel_l2_p99", "p99"), ("val_rel_l2_mean", "mean")):
            try:
                c = paired_ratio(results, metric, variant, "reservoir")
            except ValueError:
                continue
            lines.append(
                f"- {variant} / reservoir, held-out rel. L2 {name}: {c['mean']:.3f} ± {c['se']:.3f} "
                f"(mean ± standard error of the per-seed ratios, {c['n']} seeds; lower in "
                f"{c['lower']} of {c['n']})"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default: each variant's own")
    parser.add_argument("--report-only", action="store_true", help="only tabulate finished studies")
    args = parser.parse_args()

    if not args.report_only:
        for scenario in args.scenarios:
            extra, plan = SCENARIOS[scenario]
            seeds = sorted({s for v in args.variants if v in plan for s in plan[v]})
            # Seed-major, so that a partial run already compares every policy.
            for seed in seeds if args.seeds is None else args.seeds:
                todo = {v: VARIANTS[v] + extra for v in args.variants if v in plan and seed in plan[v]}
                run_comparison(RUNS / scenario, todo, seeds=[seed], common=COMMON, timeout_s=3600)

    # The table always covers every finished study, whatever this run was asked to do.
    sections = []
    for scenario, (_, plan) in SCENARIOS.items():
        results = [
            with_buffer_stats(r) for v, seeds in plan.items() for r in finished_studies(RUNS / scenario, [v], seeds)
        ]
        if results:
            sections.append(
                "\n".join(
                    [
                        f"## {scenario}",
                        "",
                        markdown_table(results, COLUMNS, relative_to=HERE),
                        "",
                        *paired_lines(results),
                    ]
                )
            )
    table = "\n\n".join([*sections, divergence_floor()])
    (HERE / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
