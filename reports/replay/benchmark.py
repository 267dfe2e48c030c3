"""Replay policies on a non-i.i.d. stream (issue 4): equal memory, equal training steps.

heat2d, 8 simulations at a time (``launcher.n_parallel=8``), each streaming its 100 steps in
order: 480 training simulations (48 000 samples, 24x the buffer) into a buffer of 2 000 samples
(the same ``buffer.capacity``, hence the same bytes, for every policy), then 1 500 training
steps of batch 128. Policies: FIFO, FIRO, reservoir, Melissa's reservoir, distribution-aware (the
``buffer=distribution`` file: importance weights on, ``follow=target``) and the same without
importance weights. With a Sobol design the arrivals follow the target, so ``follow=arrivals``
would give the same weights and is not a separate variant.

heat2d at 32 x 32 is so cheap next to the training on these cores that the whole stream arrives
before the first ~250 steps (measured: even 2 400 simulations did). The comparison is therefore
between the buffers a non-i.i.d. stream leaves behind, which training then draws from; only the
policies whose arrivals wait for draws (FIFO, Melissa) spread the stream over the training. See
README.md in this folder for what that means for the conclusions.

Every study is a ``gensim-train`` run through :mod:`gensim.compare`, with the
:class:`gensim.callbacks.BufferStats` callback, so each table row names the run directories
(``metrics.json`` + ``buffer_stats.json``) it was computed from. Sizes are cut to what two shared
CPU cores can run: 32 x 32 grid, a 3 x 128 MLP, 1 500 steps, seeds 0 and 1 (0 to 3 for the
reservoir and the distribution-aware variants: ``--variants reservoir distribution
distribution_unweighted --seeds 0 1 2 3``).

Run from the repository root (a finished study is not run again, so an interrupted run resumes)::

    python reports/replay/benchmark.py                 # run what is missing, then the table
    python reports/replay/benchmark.py --report-only   # the table from finished studies
    python reports/replay/benchmark.py --seeds 0 --variants reservoir distribution
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gensim.buffers import buffer_divergence
from gensim.callbacks import BufferStats
from gensim.compare import StudyResult, finished_studies, markdown_table, run_comparison
from gensim.simulations import Heat2D

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"

CAPACITY = 2000
COMMON = [
    "simulation=heat2d", "simulation.grid=32", "simulation.n_steps=100",
    "launcher.n_parallel=8", "launcher.max_simulations=480",
    f"buffer.capacity={CAPACITY}", "model.net.hidden=[128,128,128]",
    "trainer.max_steps=1500", "data.steps_per_epoch=500", "data.batch_size=128", "data.watermark=1000",
    "callbacks=buffer_stats", "callbacks.buffer_stats.every_n_steps=250",
]
VARIANTS = {
    "reservoir": ["buffer=reservoir"],
    "distribution": ["buffer=distribution"],
    "distribution_unweighted": ["buffer=distribution", "buffer.policy.importance_weights=false"],
    "firo": ["buffer=firo"],
    "melissa": ["buffer=melissa"],
    "fifo": ["buffer=fifo"],
}
SEEDS = (0, 1)
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
        values.append(buffer_divergence(params, steps, stats.strata, stats.reference,
                                        max_points=stats.max_points, rng=rng))
    ed = np.array([v["energy_distance"] for v in values])
    chi = np.array([v["chi_square"] for v in values])
    return (f"Floor: an i.i.d. sample of {n_samples} points of the target ({repeats} repeats) has energy "
            f"distance {ed.mean():.2e} ± {ed.std(ddof=1):.1e} and chi2 over the strata {chi.mean():.3f} ± "
            f"{chi.std(ddof=1):.3f}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--report-only", action="store_true", help="only tabulate finished studies")
    args = parser.parse_args()

    if args.report_only:
        results = finished_studies(RUNS, args.variants, args.seeds)
    else:
        # Seed-major, so that a partial run already compares every policy.
        results = [r for seed in args.seeds
                   for r in run_comparison(RUNS, {v: VARIANTS[v] for v in args.variants}, seeds=[seed],
                                           common=COMMON, timeout_s=3600)]
        order = {v: i for i, v in enumerate(VARIANTS)}
        results.sort(key=lambda r: (order[r.variant], r.seed))
    results = [with_buffer_stats(r) for r in results]
    table = markdown_table(results, COLUMNS, relative_to=HERE) + "\n\n" + divergence_floor()
    (HERE / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
