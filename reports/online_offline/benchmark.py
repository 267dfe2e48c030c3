"""On-line training against the off-line pipeline, in wall time to the same held-out error (issue 13).

Two ways to get a surrogate from a budget of simulations, on the same machine and resources:

- **on-line**: ``gensim-train``; the simulations stream into the replay buffer while the model
  trains (``launcher.n_parallel`` simulations at a time, the trainer on its own thread);
- **off-line**: simulate every simulation first, ``n_parallel`` = 1 at a time in this process
  (the same parameter vectors and seeds as the on-line study, re-simulated from its
  ``simulations.json``), then train the same model with the same trainer, steps and batch
  size on shuffled passes over the stored data (:class:`gensim.baselines.OfflineSurrogate`), and
  the same weight average when the study has one (``callbacks=weight_average`` in ``--extra``).

Both pipelines get the same resources: one simulation at a time and one training process
(``OMP_NUM_THREADS=1``); the off-line pipeline cannot train while it simulates, the on-line one
does both at once. Both clocks start before the first simulation (after the interpreter's
imports) and include the held-out set, which both simulate. Both logs carry ``elapsed_s``
beside every held-out error (:class:`gensim.callbacks.WallClock`). The off-line pipeline's
final held-out error is the target; the on-line time to accuracy is the first validation at
which the on-line study is at or below it. The on-line study may take more optimizer steps
(``--online-steps``): the measure is wall time, not steps. The setting should make simulating
the budget take about as long as training (printed: ``simulate_s`` and ``train_s`` of the
off-line pipeline); simulation knobs that change the cost but not the emitted fields (e.g.
``simulation.substeps``) set it. CPU seconds and load averages of each pipeline are recorded,
since the machine may be shared.

    OMP_NUM_THREADS=1 python reports/online_offline/benchmark.py            # writes results.md/.json
    OMP_NUM_THREADS=1 python reports/online_offline/benchmark.py --budget 16 --steps 200 --out /tmp/oo
    # the setting of README.md (about 7 min on 2 shared cores):
    OMP_NUM_THREADS=1 python reports/online_offline/benchmark.py --problem plate_heat --model pod \
        --budget 768 --steps 3500 --online-steps 6000 --extra model.param_linear=true \
        simulation.substeps=12 buffer.capacity=38400 --out reports/online_offline/plate_heat_n768
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import WeightAveraging

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


def cpu_seconds(usage: resource.struct_rusage) -> float:
    """User + system CPU seconds of a ``getrusage`` reading."""
    return usage.ru_utime + usage.ru_stime


def error_at_step(metrics_csv: Path, step: int) -> float | None:
    """Held-out error of the last validation at or before optimizer step ``step`` (None: none yet)."""
    with open(metrics_csv) as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_rel_l2_mean") and int(r["step"]) + 1 <= step]
    return float(rows[-1]["val_rel_l2_mean"]) if rows else None


def step_curve(metrics_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """(optimizer steps, val_rel_l2_mean) at every validation of a Lightning CSV log."""
    with open(metrics_csv) as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_rel_l2_mean")]
    return np.array([int(r["step"]) + 1 for r in rows]), np.array([float(r["val_rel_l2_mean"]) for r in rows])


def offline_pipeline(online_dir: Path, out: Path, seed: int, steps: int) -> dict:
    """Simulate the on-line study's simulations in this process, then train ``steps`` steps off-line.

    Timed from the start of the simulations; the model, trainer, batch size and validation
    interval are the on-line study's (its ``.hydra/config.yaml``).
    """
    metrics_path = out / "metrics.json"
    if metrics_path.exists():
        return json.loads(metrics_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    cpu_start = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    train, _ = study_simulations(online_dir, "train")
    heldout, _ = study_simulations(online_dir, "validation")
    simulate_s = time.perf_counter() - start
    cpu_simulated = resource.getrusage(resource.RUSAGE_SELF)
    cfg = load_study(online_dir).config
    layout = SnapshotLayout(log_time=False)
    estimator = OfflineSurrogate(
        model=instantiate(cfg.model),
        trainer=instantiate(cfg.trainer),
        fields=instantiate(cfg.simulation).fields,
        max_steps=steps,
        batch_size=int(cfg.data.batch_size),
        val_every_n_steps=int(cfg.data.steps_per_epoch),
        seed=seed,
        log_dir=str(out),
        clock_start=start,
        # The study's weight average, if any (its other callbacks act on the stream).
        callbacks=[
            c for c in map(instantiate, (cfg.get("callbacks") or {}).values()) if isinstance(c, WeightAveraging)
        ],
    )
    estimator.fit(*layout.xy(train), eval_set=layout.xy(heldout))
    wall_s = time.perf_counter() - start
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    _, errors = error_curve(out / "logs" / "metrics.csv")
    metrics = {
        "simulate_s": simulate_s,
        "train_s": wall_s - simulate_s,
        "wall_s": wall_s,
        "simulate_cpu_s": cpu_seconds(cpu_simulated) - cpu_seconds(cpu_start),
        "train_cpu_s": cpu_seconds(cpu_end) - cpu_seconds(cpu_simulated),
        "loadavg_1min_before": load_before[0],
        "loadavg_1min_after": os.getloadavg()[0],
        "steps": steps,
        "val_rel_l2_mean": float(errors[-1]),
        "n_train_simulations": len(train),
    }
    metrics_path.write_text(json.dumps(metrics, indent=2))
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problem", default="burgers2d", help="conf/simulation choice")
    parser.add_argument("--model", default="deterministic", help="conf/model choice")
    parser.add_argument("--budget", type=int, default=256, help="training simulations")
    parser.add_argument("--steps", type=int, default=4000, help="optimizer steps of the off-line pipeline")
    parser.add_argument("--online-steps", type=int, default=None, help="optimizer steps of on-line (default: --steps)")
    parser.add_argument("--every", type=int, default=250, help="steps between validations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", nargs="*", default=[], help="more gensim-train overrides")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    online_steps = args.online_steps or args.steps
    torch.set_num_threads(1)
    name = f"{args.problem}_{args.model}_n{args.budget}_s{args.steps}"
    name += f"_on{online_steps}" if online_steps != args.steps else ""
    runs = args.out / "runs" / f"{name}_seed{args.seed}"
    overrides = [
        f"simulation={args.problem}",
        f"model={args.model}",
        f"launcher.max_simulations={args.budget}",
        "launcher.n_parallel=1",
        f"trainer.max_steps={online_steps}",
        f"data.steps_per_epoch={args.every}",
        f"seed={args.seed}",
        *args.extra,
    ]
    online_side = runs / "online" / "benchmark.json"  # the on-line pipeline's CPU time and load
    if not online_side.exists():
        load_before = os.getloadavg()[0]
        cpu_before = cpu_seconds(resource.getrusage(resource.RUSAGE_CHILDREN))
        run_study(overrides, runs / "online", timeout_s=7200)
        side = {
            # The study and its simulation workers (the children it waited for).
            "cpu_s": cpu_seconds(resource.getrusage(resource.RUSAGE_CHILDREN)) - cpu_before,
            "loadavg_1min_before": load_before,
            "loadavg_1min_after": os.getloadavg()[0],
        }
        online_side.write_text(json.dumps(side, indent=2))
    online = json.loads((runs / "online" / "metrics.json").read_text())
    online_side = json.loads(online_side.read_text())
    offline = offline_pipeline(runs / "online", runs / "offline", args.seed, args.steps)

    online_csv, offline_csv = runs / "online" / "logs" / "metrics.csv", runs / "offline" / "logs" / "metrics.csv"
    on_t, on_err = error_curve(online_csv)
    off_t, off_err = error_curve(offline_csv)
    target = offline["val_rel_l2_mean"]
    reached = np.flatnonzero(on_err <= target)
    on_time = float(on_t[reached[0]]) if len(reached) else None
    on_steps, _ = step_curve(online_csv)
    result = {
        "setting": {
            "problem": args.problem,
            "model": args.model,
            "budget": args.budget,
            "steps": args.steps,
            "online_steps": online_steps,
            "every": args.every,
            "seed": args.seed,
            "overrides": overrides,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "cpus": os.cpu_count(),
            "machine": platform.node(),
        },
        "online": {
            "wall_s": online["wall_s"],
            "last_validation_s": float(on_t[-1]),
            "val_rel_l2_mean": online["val_rel_l2_mean"],
            "train_rel_l2_mean": online.get("train_rel_l2_mean"),
            "val_rel_l2_mean_at_offline_steps": error_at_step(online_csv, args.steps),
            **online_side,
            "run_dir": str(runs.relative_to(args.out) / "online"),
        },
        "offline": offline | {"run_dir": str(runs.relative_to(args.out) / "offline")},
        "simulate_over_train": offline["simulate_s"] / offline["train_s"],
        "target_val_rel_l2_mean": target,
        "online_time_to_target_s": on_time,
        "online_steps_to_target": int(on_steps[reached[0]]) if len(reached) else None,
        "ratio_to_offline_wall": None if on_time is None else on_time / offline["wall_s"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))

    fig, (ax, ax_steps) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained", sharey=True)
    ax.plot(on_t, on_err, "-o", ms=3, label=f"on-line ({args.budget} simulations streaming while it trains)")
    ax.plot(off_t, off_err, "--s", ms=3, label="off-line (simulate all, then train)")
    ax.axvline(offline["simulate_s"], color="0.6", lw=0.8, ls=":", label="off-line: end of the simulations")
    ax.axvline(offline["wall_s"], color="0.3", lw=0.8, ls="-.", label="off-line: end (its wall time)")
    if on_time is not None:
        ax.axvline(on_time, color="C0", lw=0.8, ls="-.", label=f"on-line reaches the target ({on_time:.0f} s)")
    ax.set_xlabel("wall time since the first simulation (s)")
    ax.set_ylabel("held-out relative L2 (mean)")
    ax_steps.plot(*step_curve(online_csv), "-o", ms=3, label="on-line")
    ax_steps.plot(*step_curve(offline_csv), "--s", ms=3, label="off-line")
    ax_steps.set_xlabel("optimizer steps")
    for a in (ax, ax_steps):
        a.axhline(target, color="k", lw=0.8, ls=":", label="off-line final error (the target)")
        a.set_yscale("log")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(f"{args.problem}, model={args.model}: {args.budget} simulations", fontsize=9)
    fig.savefig(args.out / "error_vs_wall_time.png", dpi=110)
    plt.close(fig)

    ratio = result["ratio_to_offline_wall"]
    at_steps = result["online"]["val_rel_l2_mean_at_offline_steps"]
    command = (
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} python reports/online_offline/benchmark.py "
        f"--problem {args.problem} --model {args.model} --budget {args.budget} --steps {args.steps}"
        + (f" --online-steps {online_steps}" if online_steps != args.steps else "")
        + (f" --extra {' '.join(args.extra)}" if args.extra else "")
        + (f" --out {args.out}" if args.out.resolve() != HERE else "")
    )
    lines = [
        "# On-line training against the off-line pipeline: wall time to the same held-out error",
        "",
        f"`{command}` on {os.cpu_count()} CPU cores; raw numbers in `results.json`, logs under "
        f"`{runs.relative_to(args.out)}`.",
        "",
        f"Setting: `gensim-train {' '.join(overrides)}`; the off-line pipeline re-simulates the same "
        f"{offline['n_train_simulations']} training simulations and the held-out set in this process (one at a "
        f"time), then trains the same model, trainer and batch size for {args.steps} steps.",
        "",
        f"Simulating the budget took {offline['simulate_s']:.0f} s, training the off-line model "
        f"{offline['train_s']:.0f} s (ratio {result['simulate_over_train']:.2f}).",
        "",
        "| | steps | simulate (s) | train (s) | wall (s) | CPU (s) | load (1 min, before/after) "
        "| final held-out rel. L2 | at the off-line's steps |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| off-line | {args.steps} | {offline['simulate_s']:.0f} | {offline['train_s']:.0f} | "
        f"{offline['wall_s']:.0f} | {offline['simulate_cpu_s'] + offline['train_cpu_s']:.0f} | "
        f"{offline['loadavg_1min_before']:.1f} / {offline['loadavg_1min_after']:.1f} | "
        f"{offline['val_rel_l2_mean']:.4g} | |",
        f"| on-line | {online_steps} | (overlapped) | (overlapped) | {on_t[-1]:.0f} | {online_side['cpu_s']:.0f} | "
        f"{online_side['loadavg_1min_before']:.1f} / {online_side['loadavg_1min_after']:.1f} | "
        f"{online['val_rel_l2_mean']:.4g} | {'n/a' if at_steps is None else f'{at_steps:.4g}'} |",
        "",
        *(
            [
                f"**The on-line study ended before its budget was simulated**: {online['simulations_finished']} of "
                f"{args.budget} training simulations finished ({online['simulations_not_run']} never ran, "
                f"{online['simulations_cancelled']} cancelled); the off-line pipeline used the same "
                f"{offline['n_train_simulations']}.",
                "",
            ]
            if online["simulations_finished"] < args.budget
            else []
        ),
        "On-line wall: its last validation; its final evaluation and shutdown came after "
        f"(the study's own wall_s: {online['wall_s']:.0f} s).",
        "",
        (
            f"The on-line study reached the off-line final error after {result['online_steps_to_target']} steps, "
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
