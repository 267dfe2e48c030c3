"""Where a generative study's excess energy distance comes from: conditional mean, spread, or shape.

For each finished study on the stochastic heat field, the model (``checkpoints/last.ckpt``) draws
256 samples at every condition of its distribution check (the same held-out vectors, times, seeds
and simulator realizations as ``DistributionCheck``), and the energy distance on 16 PCA
coefficients is recomputed three ways, averaged over conditions and divided by the floor:

- ``ed_ratio``: the samples as drawn (equals ``energy_distance_ratio`` of ``metrics.json``);
- ``ed_ratio_mean_fixed``: the samples shifted so that their mean is the exact mean;
- ``ed_ratio_moments_fixed``: shifted and rescaled per pixel to the exact mean and std.

The gap between the first two is what a biased conditional mean costs; what is left after the
third is the shape (correlations) of the law. ``bias2`` is the squared error of the sample mean in
units of the exact variance, averaged over pixels and conditions (``bias2_floor``: the same for a
simulator set of 256, i.e. its Monte Carlo part); ``bias2_low_modes`` (and its floor) is the
part of it in the Fourier modes of wavenumber below 2.5 (the spatial mean, the initial pattern's
modes and their neighbours). Written to ``diagnosis.json`` beside each
study's ``metrics.json``, and tabulated in ``diagnosis.md``::

    python reports/generative/diagnose.py cvae cgan cgan_es4 cgan_es4_6k   # studies of runs/stochastic
    python reports/generative/diagnose.py stochastic_2k/flow_ema           # another comparison's study
    python reports/generative/diagnose.py stochastic_2k/flow_h128/seed1    # another seed than 0
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from gensim.metrics import energy_distance, pca_basis
from gensim.models.generative import simulate_reference
from gensim.report import load_study
from gensim.report.scoring import load_surrogate

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs" / "stochastic"


def diagnose(run_dir: Path) -> dict:
    out_path = run_dir / "diagnosis.json"
    if out_path.exists():
        return json.loads(out_path.read_text())
    study = load_study(run_dir)
    sim, model = study.simulation, load_surrogate(study)
    # The held-out vectors in the order the study saw them (first row of each held-out simulation).
    records = [r for r in study.records if r["purpose"] == "validation"]
    params = torch.tensor([r["params"] for r in records], dtype=torch.float64)
    ref = simulate_reference(sim, params, model.check)
    gen = torch.Generator().manual_seed(2)
    sums = dict.fromkeys(
        ("ed", "ed_mean_fixed", "ed_moments_fixed", "ed_floor", "bias2", "bias2_floor", "bias2_low", "bias2_low_floor"),
        0.0,
    )
    n = int(round(ref.samples.shape[-1] ** 0.5))
    k = torch.fft.fftfreq(n, 1 / n)
    low = (k[None, :] ** 2 + k[:, None] ** 2).sqrt() < 2.5

    def low_part(d):  # share of mean(d^2) carried by the low wavenumbers (Parseval)
        return float((torch.fft.fft2(d.reshape(n, n), norm="ortho").abs() ** 2)[low].sum() / d.numel())

    n_cond = ref.params.shape[0]
    with torch.no_grad():
        for c in range(n_cond):
            x = model.sample(ref.params[c : c + 1], ref.t[c : c + 1], ref.samples.shape[1], gen)[0].double()
            r, r2 = ref.samples[c].double(), ref.floor_samples[c].double()
            mu, sd = ref.exact_mean[c], ref.exact_std[c]
            mean, comps = pca_basis(r, model.check.n_components)
            r_pc = (r - mean) @ comps.T

            def ed(s):
                return energy_distance((s - mean) @ comps.T, r_pc)  # noqa: B023 (called in this iteration only)

            sums["ed"] += ed(x)
            sums["ed_mean_fixed"] += ed(x - x.mean(0) + mu)
            sums["ed_moments_fixed"] += ed((x - x.mean(0)) * (sd / x.std(0)) + mu)
            sums["ed_floor"] += ed(r2)
            d, d_floor = (x.mean(0) - mu) / sd, (r2.mean(0) - mu) / sd
            sums["bias2"] += float((d**2).mean())
            sums["bias2_floor"] += float((d_floor**2).mean())
            sums["bias2_low"] += low_part(d)
            sums["bias2_low_floor"] += low_part(d_floor)
    m = {k: v / n_cond for k, v in sums.items()}
    out = {
        "ed_ratio": m["ed"] / m["ed_floor"],
        "ed_ratio_mean_fixed": m["ed_mean_fixed"] / m["ed_floor"],
        "ed_ratio_moments_fixed": m["ed_moments_fixed"] / m["ed_floor"],
        "bias2": m["bias2"],
        "bias2_floor": m["bias2_floor"],
        "bias2_low_modes": m["bias2_low"],
        "bias2_low_modes_floor": m["bias2_low_floor"],
        "conditions": n_cond,
    }
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "variants",
        nargs="+",
        help="study names under runs/stochastic/, or <comparison>/<study>[/seed<k>] under runs/ (default seed 0)",
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    lines = [
        "| variant | energy dist. / floor | mean fixed | mean and std fixed | mean bias^2 / var "
        "| (floor) | of which wavenumber < 2.5 | (floor) | run (diagnosis.json) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in args.variants:
        path = (RUNS if "/" not in variant else RUNS.parent) / variant
        diagnose(path if path.name.startswith("seed") else path / "seed0")  # seed 0 unless one is named
    # The table holds every study diagnosed so far (its diagnosis.json), not only today's.
    for found in sorted(RUNS.parent.rglob("diagnosis.json")):
        run_dir = found.parent
        d = json.loads(found.read_text())
        name = str(run_dir.relative_to(RUNS if run_dir.is_relative_to(RUNS) else RUNS.parent))
        variant = name.removesuffix("/seed0")
        lines.append(
            f"| {variant} | {d['ed_ratio']:.3f} | {d['ed_ratio_mean_fixed']:.3f} "
            f"| {d['ed_ratio_moments_fixed']:.3f} | {d['bias2']:.4f} | {d['bias2_floor']:.4f} "
            f"| {d['bias2_low_modes']:.4f} | {d['bias2_low_modes_floor']:.4f} "
            f"| {run_dir.relative_to(HERE)} |"
        )
    text = (
        "# Where the excess energy distance comes from (stochastic heat field)\n\n"
        "Every study diagnosed so far, each by `python reports/generative/diagnose.py <variant>` from its "
        "final checkpoint and its distribution check (see the script's docstring).\n\n" + "\n".join(lines) + "\n"
    )
    (HERE / "diagnosis.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
