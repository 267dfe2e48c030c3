"""Every generative surrogate side by side on the stochastic heat field at 2 000 simulations (issue 16).

Reads the finished studies of ``distribution.py`` (``runs/stochastic_2k`` at 32 x 32 and
``runs/stochastic_2k_64`` at 64 x 64: the cVAE ``cvae_es02``, the cGAN ``cgan_es4`` and the
flow ``flow``, each the default config of its model then (the flow's velocity net 256 x 3), the
flow over 12 000 steps ``flow_12k``, and at 12 000 steps the 128 x 3 net, the default since,
``flow_h128``, and 64 x 3 ``flow_h64``)
and writes, for each grid:

- a table of each study's held-out distribution check (its ``metrics.json``: 16 held-out
  parameter vectors x 2 times, 256 model samples against 2 x 256 simulator realizations): energy
  distance / floor, pixel std error, CRPS, coverage of the central 50% and 90% intervals and
  spectrum error, each beside its floor (the simulator against itself);
- the CPU time to generate one field (batches of 1 024, one thread, ``time.process_time``, median
  of interleaved repeats beside a whole simulator run, as ``speed.py``), from each study's final
  checkpoint;
- from the same checkpoints, at every condition of the check (the same seeds and realizations):
  rank histograms of the simulator's realizations among each model's samples at t = 1, pooled over
  the pixels of all held-out vectors (``rank_histograms_<grid>.png``), and at the first held-out
  vector at t = 1 the pointwise moments and the power spectrum of the fluctuations
  (``moments_<grid>.png``, ``spectra_<grid>.png``).

A study that has not finished is left out; one whose checkpoint is gone (checkpoints are not
committed) keeps its row, and its timing (with the simulator run timed in the same session, so
its speed-up stays a same-session ratio) and rank histogram are carried over from the previous
``side_by_side.json``, marked *earlier* in the table. The figures of a grid are redrawn only when
every study of it has its checkpoint; otherwise the previous ones are kept, and the text says
which studies they show::

    python reports/generative/side_by_side.py   # writes side_by_side.md, side_by_side.json, *.png
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import torch
from speed import BATCH, time_against_simulation

from gensim.metrics import rank_histogram
from gensim.models.generative import simulate_reference
from gensim.report import load_study
from gensim.report.figures import plot_moments, plot_rank_histograms, plot_spectra
from gensim.report.scoring import SIMULATOR, load_surrogate
from gensim.simulations.base import FieldSpec

HERE = Path(__file__).resolve().parent
GRIDS = {"32x32": HERE / "runs" / "stochastic_2k", "64x64": HERE / "runs" / "stochastic_2k_64"}
MODELS = {
    "cVAE": "cvae_es02",
    "cGAN": "cgan_es4",
    "flow": "flow",
    "flow, 12k steps": "flow_12k",
    "flow 128x3 (default), 12k steps": "flow_h128",
    "flow 64x3, 12k steps": "flow_h64",
}
REPEATS = 7
#: (metrics.json key, header); a key with a floor is followed by it.
COLUMNS = [
    ("energy_distance_ratio", "energy dist. / floor"),
    ("std_rel_error", "pixel std rel. error"),
    ("std_rel_error_floor", "(floor)"),
    ("crps", "CRPS"),
    ("crps_floor", "(floor)"),
    ("crps_ratio", "CRPS / floor"),
    ("coverage_50", "coverage 50%"),
    ("coverage_50_floor", "(floor)"),
    ("coverage_90", "coverage 90%"),
    ("coverage_90_floor", "(floor)"),
    ("spectrum_error", "spectrum error"),
    ("spectrum_error_floor", "(floor)"),
]


def held_out_samples(study, models: dict) -> tuple[dict, dict, float]:
    """Samples of every model at every condition of the studies' distribution check.

    Returns
    -------
    pooled : dict of str to ndarray, shape (n, V * D)
        The simulator's realizations first, then each model's samples, at every held-out vector
        (V) at the last checked time side by side (for rank histograms pooled over vectors and
        pixels).
    first : dict of str to ndarray, shape (n, D)
        The same at the first held-out vector.
    t : float
        That time.
    """
    records = [r for r in study.records if r["purpose"] == "validation"]
    params = torch.tensor([r["params"] for r in records], dtype=torch.float64)
    check = next(iter(models.values())).check
    ref = simulate_reference(study.simulation, params, check)
    pooled = {SIMULATOR: [ref.samples[c].numpy() for c in range(ref.params.shape[0])]}
    gen = torch.Generator().manual_seed(2)  # as GenerativeSurrogate.distribution_report
    for name, model in models.items():
        with torch.no_grad():
            pooled[name] = [
                model.sample(ref.params[c : c + 1].float(), ref.t[c : c + 1].float(), ref.samples.shape[1], gen)[
                    0
                ].numpy()
                for c in range(ref.params.shape[0])
            ]
    at_last = torch.nonzero(ref.t == ref.t.max())[:, 0].tolist()  # the conditions at the last checked time
    first = {name: s[at_last[0]] for name, s in pooled.items()}
    return (
        {name: np.concatenate([s[c] for c in at_last], axis=1) for name, s in pooled.items()},
        first,
        float(ref.t.max()),
    )


def carried_over(previous: dict, name: str) -> tuple[dict | None, list | None]:
    """A model's timing ``{"generate_s", "run_s"}`` and rank histogram from a previous ``side_by_side.json``
    grid section (measured then, or carried over then too), each None when it has none."""
    timing = previous.get("timing_cpu_s", {})
    carried = previous.get("timing_cpu_s_carried", {}).get(name)
    if carried is None and name in timing:
        carried = {"generate_s": timing[name], "run_s": timing["run_s"]}
    return carried, previous.get("rank_histograms", {}).get(name)


def grid_section(grid: str, runs: Path, previous: dict) -> tuple[str, dict]:
    metrics = {
        name: json.loads((runs / v / "seed0" / "metrics.json").read_text())
        for name, v in MODELS.items()
        if (runs / v / "seed0" / "metrics.json").exists()
    }
    trained = [name for name in metrics if (runs / MODELS[name] / "seed0" / "checkpoints" / "last.ckpt").exists()]
    out: dict = {
        "metrics": {
            name: {k: m.get(k) for k, _ in COLUMNS} | {"run": f"runs/{runs.name}/{MODELS[name]}"}
            for name, m in metrics.items()
        }
    }
    lines = [
        "| model | " + " | ".join(h for _, h in COLUMNS) + " | generate one field (CPU µs) | speed-up "
        "vs a run | run (metrics.json) |",
        "|---" * (len(COLUMNS) + 4) + "|",
    ]
    timing = {}
    redraw = bool(trained) and len(trained) == len(metrics)
    if trained:
        study = load_study(runs / MODELS[trained[0]] / "seed0")
        models = {name: load_surrogate(load_study(runs / MODELS[name] / "seed0")) for name in trained}
        pooled, first, t = held_out_samples(study, models)
        spec = study.simulation.fields[0]
    if redraw:
        plot_moments(first, spec, t, HERE / f"moments_{grid}.png", f"stochastic heat {grid}, first held-out vector")
        plot_spectra(first, spec, t, HERE / f"spectra_{grid}.png", f"stochastic heat {grid}, first held-out vector")
        pooled_spec = FieldSpec(spec.name, (pooled[SIMULATOR].shape[1],))
        plot_rank_histograms(
            pooled,
            pooled_spec,
            t,
            HERE / f"rank_histograms_{grid}.png",
            f"stochastic heat {grid}, all held-out vectors pooled",
        )
    if trained:
        half = pooled[SIMULATOR].shape[0] // 2
        out["rank_histograms"] = {
            name: rank_histogram(s[:half], pooled[SIMULATOR][half:], 16).round(4).tolist() for name, s in pooled.items()
        }
        timing = time_against_simulation(study.simulation, models, 4, REPEATS)
        out["timing_cpu_s"] = timing
    carried = {}
    for name in metrics.keys() - set(trained):
        carried[name], histogram = carried_over(previous, name)
        if histogram is not None:
            out.setdefault("rank_histograms", {})[name] = histogram
    carried = {name: c for name, c in carried.items() if c is not None}
    if carried:
        out["timing_cpu_s_carried"] = carried
    for name, m in metrics.items():
        cells = [f"{m[k]:.4g}" if m.get(k) is not None else "n/a" for k, _ in COLUMNS]
        if name in timing:
            gen = f"{timing[name] * 1e6:.1f} | {timing['run_s'] / timing[name]:.0f}x"
        elif name in carried:
            c = carried[name]
            gen = f"{c['generate_s'] * 1e6:.1f} (earlier) | {c['run_s'] / c['generate_s']:.0f}x (earlier)"
        else:
            gen = "n/a | n/a"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {gen} | runs/{runs.name}/{MODELS[name]}/seed0 |")
    # Before the figures were listed in the json, they showed the models timed then.
    earlier = previous.get("figures") or [k for k in previous.get("timing_cpu_s", {}) if k != "run_s"]
    shown = list(metrics) if redraw else earlier
    out["figures"] = shown
    figures = "".join(f"\n![{kind}]({kind}_{grid}.png)\n" for kind in ("rank_histograms", "moments", "spectra"))
    if not redraw:
        figures = f"\nFigures of an earlier run of this script, of: {', '.join(shown) or 'none listed'}.\n" + figures
    run = f"simulator run {timing['run_s'] * 1e3:.2f} CPU ms (this session); " if timing else ""
    notes = "*earlier*: timed in an earlier session (no checkpoint now), against that session's simulator run; "
    return f"## {grid}\n\n{run}{notes}n/a: a metric the study did not log, or no checkpoint.\n\n" + "\n".join(
        lines
    ) + "\n" + figures, out


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    sections, data = (
        [],
        {
            "meta": {
                "cpu": platform.processor() or platform.machine(),
                "batch": BATCH,
                "repeats": REPEATS,
                "clock": "time.process_time (CPU seconds)",
            }
        },
    )
    out_json = HERE / "side_by_side.json"
    previous = json.loads(out_json.read_text()) if out_json.exists() else {}
    for grid, runs in GRIDS.items():
        text, data[grid] = grid_section(grid, runs, previous.get(grid, {}))
        sections.append(text)
    out_json.write_text(json.dumps(data, indent=2) + "\n")
    text = (
        "# Generative surrogates side by side: stochastic heat field, 2 000 simulations\n\n"
        "Produced by `python reports/generative/side_by_side.py` from the studies of `distribution.py` "
        "(see its docstring for their overrides). Each number of the table is the study's own "
        "held-out distribution check (16 vectors x 2 times, 256 samples against 2 x 256 simulator "
        "realizations); *(floor)*: the same metric between the two simulator sets. Coverage is the "
        "fraction of realizations' pixels inside the samples' central interval (nominal 0.502 and 0.899 "
        "with 256 samples). Rank histograms pool every pixel of every held-out vector at t = 1.\n\n"
        + "\n".join(sections)
    )
    (HERE / "side_by_side.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
