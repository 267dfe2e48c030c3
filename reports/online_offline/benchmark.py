"""On-line training against the off-line pipeline, in wall time to the same held-out error (issue 13).

Two ways to get a surrogate from a budget of simulations, on the same machine and resources:

- **on-line**: ``gensim-train``; the simulations stream into the replay buffer while the model
  trains (``launcher.n_parallel`` simulations at a time, the trainer on its own thread);
- **off-line**: simulate every simulation first, ``n_parallel`` = 1 at a time in this process
  (the same parameter vectors and seeds as the on-line study, re-simulated from its
  ``simulations.json``), then train the same model with the same trainer, steps and batch
  size on shuffled passes over the stored data (:class:`gensim.baselines.OfflineSurrogate`).

Both clocks start before the first simulation and include the held-out set, which both
simulate. Both logs carry ``elapsed_s`` beside every held-out error
(:class:`gensim.callbacks.WallClock`). The off-line pipeline's final held-out error is the
target; the on-line time to accuracy is the first validation at which the on-line study is at
or below it. The setting is chosen so that simulating the budget takes about as long as
training (printed: ``simulate_s`` and ``train_s`` of the off-line pipeline).

    OMP_NUM_THREADS=1 python reports/online_offline/benchmark.py            # writes results.md/.json
    OMP_NUM_THREADS=1 python reports/online_offline/benchmark.py --budget 16 --steps 200 --out /tmp/oo
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
from hydra.utils import instantiate

from gensim.baselines import OfflineSurrogate, SnapshotLayout, study_simulations
from gensim.compare import run_study
from gensim.report import load_study

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent


def error_curve(metrics_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """(elapsed_s, val_rel_l2_mean) at every validation of a Lightning CSV log, in time order."""
    with open(metrics_csv) as f:
        rows = [r for r in csv.DictReader(f) if r.get("elapsed_s") and r.get("val_rel_l2_mean")]
    return np.array([float(r["elapsed_s"]) for r in rows]), np.array([float(r["val_rel_l2_mean"]) for r in rows])


def offline_pipeline(online_dir: Path, out: Path, seed: int) -> dict:
    """Simulate the on-line study's simulations in this process, then train off-line; timed from the start."""
    metrics_path = out / "metrics.json"
    if metrics_path.exists():
        return json.loads(metrics_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    train, _ = study_simulations(online_dir, "train")
    heldout, _ = study_simulations(online_dir, "validation")
    simulate_s = time.perf_counter() - start
    cfg = load_study(online_dir).config
    layout = SnapshotLayout(log_time=False)
    estimator = OfflineSurrogate(
        model=instantiate(cfg.model),
        trainer=instantiate(cfg.trainer),
        fields=instantiate(cfg.simulation).fields,
        max_steps=int(cfg.trainer.max_steps),
        batch_size=int(cfg.data.batch_size),
        val_every_n_steps=int(cfg.data.steps_per_epoch),
        seed=seed,
        log_dir=str(out),
        clock_start=start,
    )
    estimator.fit(*layout.xy(train), eval_set=layout.xy(heldout))
    wall_s = time.perf_counter() - start
    elapsed, errors = error_curve(out / "logs" / "metrics.csv")
    metrics = {
        "simulate_s": simulate_s,
        "train_s": wall_s - simulate_s,
        "wall_s": wall_s,
        "val_rel_l2_mean": float(errors[-1]),
        "n_train_simulations": len(train),
    }
    metrics_path.write_text(json.dumps(metrics, indent=2))
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problem", default="burgers2d", help="conf/simulation choice")
    parser.add_argument("--budget", type=int, default=256, help="training simulations")
    parser.add_argument("--steps", type=int, default=4000, help="optimizer steps of both")
    parser.add_argument("--every", type=int, default=250, help="steps between validations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", nargs="*", default=[], help="more gensim-train overrides")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = args.out / "runs" / f"{args.problem}_n{args.budget}_s{args.steps}_seed{args.seed}"
    overrides = [
        f"simulation={args.problem}",
        f"launcher.max_simulations={args.budget}",
        "launcher.n_parallel=1",
        f"trainer.max_steps={args.steps}",
        f"data.steps_per_epoch={args.every}",
        f"seed={args.seed}",
        *args.extra,
    ]
    online = run_study(overrides, runs / "online", timeout_s=7200)
    offline = offline_pipeline(runs / "online", runs / "offline", args.seed)

    on_t, on_err = error_curve(runs / "online" / "logs" / "metrics.csv")
    off_t, off_err = error_curve(runs / "offline" / "logs" / "metrics.csv")
    target = offline["val_rel_l2_mean"]
    reached = np.flatnonzero(on_err <= target)
    on_time = float(on_t[reached[0]]) if len(reached) else None
    result = {
        "setting": {
            "problem": args.problem,
            "budget": args.budget,
            "steps": args.steps,
            "every": args.every,
            "seed": args.seed,
            "overrides": overrides,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "cpus": os.cpu_count(),
            "machine": platform.node(),
        },
        "online": {
            "wall_s": online["wall_s"],
            "val_rel_l2_mean": online["val_rel_l2_mean"],
            "train_rel_l2_mean": online.get("train_rel_l2_mean"),
            "run_dir": str(runs / "online"),
        },
        "offline": offline | {"run_dir": str(runs / "offline")},
        "target_val_rel_l2_mean": target,
        "online_time_to_target_s": on_time,
        "ratio_to_offline_wall": None if on_time is None else on_time / offline["wall_s"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))

    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    ax.plot(on_t, on_err, "-o", ms=3, label=f"on-line ({args.budget} simulations streaming while it trains)")
    ax.plot(off_t, off_err, "--s", ms=3, label="off-line (simulate all, then train)")
    ax.axvline(offline["simulate_s"], color="0.6", lw=0.8, ls=":", label="off-line: end of the simulations")
    ax.axhline(target, color="k", lw=0.8, ls=":", label="off-line final error (the target)")
    ax.set_yscale("log")
    ax.set_xlabel("wall time since the first simulation (s)")
    ax.set_ylabel("held-out relative L2 (mean)")
    ax.set_title(f"{args.problem}: {args.budget} simulations, {args.steps} steps", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(args.out / "error_vs_wall_time.png", dpi=110)
    plt.close(fig)

    ratio = result["ratio_to_offline_wall"]
    lines = [
        "# On-line training against the off-line pipeline: wall time to the same held-out error",
        "",
        f"`OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} python reports/online_offline/benchmark.py "
        f"--problem {args.problem} --budget {args.budget} --steps {args.steps}` on {os.cpu_count()} CPU cores; "
        f"raw numbers in `results.json`, logs under `{runs.relative_to(args.out)}`.",
        "",
        f"Setting: `gensim-train {' '.join(overrides)}`; the off-line pipeline re-simulates the same "
        f"{offline['n_train_simulations']} training simulations and the held-out set in this process (one at a "
        "time), then trains the same model, trainer, steps and batch size.",
        "",
        "| | simulate (s) | train (s) | wall (s) | final held-out rel. L2 |",
        "|---|---|---|---|---|",
        f"| off-line | {offline['simulate_s']:.0f} | {offline['train_s']:.0f} | {offline['wall_s']:.0f} | "
        f"{offline['val_rel_l2_mean']:.4g} |",
        f"| on-line | (overlapped) | (overlapped) | {online['wall_s']:.0f} | {online['val_rel_l2_mean']:.4g} |",
        "",
        (
            "The on-line study reached the off-line final error after "
            f"**{on_time:.0f} s, {ratio:.2f} of the off-line pipeline's wall time** (aim: <= 0.6)."
            if on_time is not None
            else "The on-line study **never reached** the off-line final error within its steps."
        ),
        "",
        "![error vs wall time](error_vs_wall_time.png)",
        "",
    ]
    (args.out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
