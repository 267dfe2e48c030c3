"""The comparison harness: a comparison is a list of studies plus a table built from their metrics.

A *study* is one ``gensim-train`` run (problem, method, budget, seed) with its own run directory
holding ``metrics.json`` and the resolved config (``.hydra/config.yaml``). Every benchmark script in
``reports/`` builds on :func:`run_comparison` and :func:`markdown_table`, so every committed table
row can be traced back to the ``metrics.json`` it came from.

Studies run as separate processes (``python -m gensim.train``): nothing leaks between them, and a
finished study (its ``metrics.json`` exists) is not run again, so an interrupted comparison resumes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class StudyResult:
    """One finished study.

    Attributes
    ----------
    variant : str
        Name of the method/config variant within the comparison.
    seed : int
    run_dir : Path
        Where its ``metrics.json`` and resolved config live.
    metrics : dict
        The content of ``metrics.json``.
    """

    variant: str
    seed: int
    run_dir: Path
    metrics: dict


def run_study(
    overrides: Sequence[str],
    run_dir: str | Path,
    timeout_s: float = 3600.0,
    quiet: bool = True,
    script: str = "gensim.train",
) -> dict:
    """Run one study (unless ``run_dir/metrics.json`` already exists) and return its metrics.

    Parameters
    ----------
    overrides : sequence of str
        Hydra overrides, e.g. ``["simulation.grid=32", "buffer=fifo"]``.
    run_dir : path
        The study's run directory (``hydra.run.dir``).
    timeout_s : float
        Longest run time; the study is killed after it.
    quiet : bool
        Send the study's output to ``run_dir/train.log`` instead of the terminal.
    script : str
        Module of the Hydra app to run.

    Raises
    ------
    RuntimeError
        When the study fails; the message holds the tail of its log.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        return json.loads(metrics_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", script, *overrides, f"hydra.run.dir={run_dir}"]
    log_path = run_dir / "train.log"
    if quiet:
        with open(log_path, "w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
    else:
        proc = subprocess.run(cmd, timeout=timeout_s, check=False)
    if proc.returncode != 0 or not metrics_path.exists():
        tail = log_path.read_text()[-3000:] if quiet and log_path.exists() else ""
        raise RuntimeError(f"study failed (exit code {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return json.loads(metrics_path.read_text())


def run_comparison(
    out_dir: str | Path,
    variants: Mapping[str, Sequence[str]],
    seeds: Sequence[int] = (0,),
    common: Sequence[str] = (),
    timeout_s: float = 3600.0,
) -> list[StudyResult]:
    """Run every (variant, seed) study and return their results.

    Parameters
    ----------
    out_dir : path
        Studies go to ``out_dir/<variant>/seed<k>``.
    variants : mapping of str to sequence of str
        Variant name -> Hydra overrides specific to it.
    seeds : sequence of int
        Each variant runs once per seed (``seed=<k>`` override).
    common : sequence of str
        Overrides shared by every study (problem, budget, training steps...).
    timeout_s : float
        Per study.
    """
    out_dir = Path(out_dir)
    results = []
    total = len(variants) * len(seeds)
    for name, overrides in variants.items():
        for seed in seeds:
            run_dir = out_dir / name / f"seed{seed}"
            start = time.perf_counter()
            metrics = run_study([*common, *overrides, f"seed={seed}"], run_dir, timeout_s=timeout_s)
            results.append(StudyResult(name, seed, run_dir, metrics))
            print(
                f"[{len(results)}/{total}] {name} seed={seed}: "
                f"val_rel_l2_mean={metrics.get('val_rel_l2_mean', float('nan')):.4g} "
                f"({time.perf_counter() - start:.0f} s) -> {run_dir}",
                flush=True,
            )
    return results


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def markdown_table(
    results: Sequence[StudyResult], columns: Mapping[str, str], fmt: str = ".4g", relative_to: str | Path | None = None
) -> str:
    """A markdown table with one row per variant: mean (± std over seeds) of each metric.

    Parameters
    ----------
    results : sequence of StudyResult
    columns : mapping of str to str
        Metric key in ``metrics.json`` -> column title.
    fmt : str
        Number format.
    relative_to : path, optional
        Run directories in the last column are shown relative to it.

    Returns
    -------
    str
        The table; its last column lists the run directories it was computed from.
    """
    variants: dict[str, list[StudyResult]] = {}
    for r in results:
        variants.setdefault(r.variant, []).append(r)
    head = ["variant", "seeds", *columns.values(), "runs (metrics.json)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rs in variants.items():
        cells = [name, str(len(rs))]
        for key in columns:
            vals = [float(r.metrics[key]) for r in rs if key in r.metrics]
            if not vals:
                cells.append("n/a")
                continue
            mean, std = _mean_std(vals)
            cells.append(f"{mean:{fmt}}" + (f" ± {std:{fmt}}" if len(vals) > 1 else ""))
        dirs = [str(Path(r.run_dir).relative_to(relative_to)) if relative_to else str(r.run_dir) for r in rs]
        cells.append(", ".join(dirs))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_ratio(results: Sequence[StudyResult], metric: str, variant: str, baseline: str) -> dict:
    """Seed-paired comparison of two variants: the ratio ``variant / baseline`` of a metric, per seed.

    Studies of the same seed share their design, held-out set and initial network, so the
    ratio within a seed removes that common noise; the spread of the ratios across seeds is
    what remains.

    Parameters
    ----------
    results : sequence of StudyResult
    metric : str
        Key in ``metrics.json``, lower is better.
    variant, baseline : str
        Variant names; only the seeds that both finished count.

    Returns
    -------
    dict
        ``n`` (paired seeds), ``mean`` and ``se`` (mean of the per-seed ratios and its standard
        error; ``se`` is nan for one seed), ``lower`` (seeds where the variant is lower),
        ``ratios`` (per seed, in seed order).

    Raises
    ------
    ValueError
        When no seed has both variants.
    """

    def by_seed(name: str) -> dict[int, float]:
        return {r.seed: float(r.metrics[metric]) for r in results if r.variant == name and metric in r.metrics}

    ours, theirs = by_seed(variant), by_seed(baseline)
    seeds = sorted(ours.keys() & theirs.keys())
    if not seeds:
        raise ValueError(
            f"no seed has both {variant!r} (seeds {sorted(ours)}) and {baseline!r} "
            f"(seeds {sorted(theirs)}) with {metric!r}; run the missing studies"
        )
    ratios = [ours[s] / theirs[s] for s in seeds]
    mean, std = _mean_std(ratios)
    return {
        "n": len(seeds),
        "mean": mean,
        "se": std / math.sqrt(len(seeds)) if len(seeds) > 1 else math.nan,
        "lower": sum(r < 1 for r in ratios),
        "ratios": ratios,
    }


def finished_studies(out_dir: str | Path, variants: Sequence[str], seeds: Sequence[int]) -> list[StudyResult]:
    """The studies of a comparison that have finished (their ``metrics.json`` exists), in order.

    For rebuilding a table without running anything: the layout is :func:`run_comparison`'s,
    ``out_dir/<variant>/seed<k>/``.

    Parameters
    ----------
    out_dir : path
    variants : sequence of str
    seeds : sequence of int

    Returns
    -------
    list of StudyResult
        Variant-major; missing studies are skipped.
    """
    results = []
    for variant in variants:
        for seed in seeds:
            path = Path(out_dir) / variant / f"seed{seed}" / "metrics.json"
            if path.exists():
                results.append(StudyResult(variant, seed, path.parent, json.loads(path.read_text())))
    return results


def cached_study(run_dir: str | Path, compute: Callable[[Path], dict]) -> dict:
    """A study computed in this process, such as an off-line baseline fitted on another study's data.

    Runs ``compute(run_dir)`` unless ``run_dir/metrics.json`` exists, and writes what it returns
    there: the study is traced like a ``gensim-train`` run, and is not computed again when a
    comparison resumes.

    Parameters
    ----------
    run_dir : path
        The study's directory; ``compute`` may write its own files there.
    compute : callable
        ``compute(run_dir) -> metrics`` (a JSON-serializable dict).

    Returns
    -------
    dict
        The metrics.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        return json.loads(metrics_path.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = compute(run_dir)
    # Written last, through a temporary file: an interrupted computation leaves no metrics.json.
    tmp = metrics_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(metrics_path)
    return metrics
