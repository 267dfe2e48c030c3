"""On-line autoencoder vs PCA with as many modes: held-out reconstruction (issue 3, dimension reduction).

For each problem (heat2d and the stochastic heat field, 32 x 32) and latent size 4, 8 and 16, a
``gensim-train`` study with ``model=autoencoder`` trains the autoencoder on-line from the stream
(through :mod:`gensim.compare`); its ``metrics.json`` holds ``recon_rel_l2_mean`` on the held-out
simulations. The PCA baseline of each study re-simulates exactly the training simulations that
study ran (parameters and seeds from its ``simulations.json``: the design's off-line baseline
rule), fits PCA on all their time steps (centred, unscaled fields: the L2-optimal linear
reduction) and reconstructs the re-simulated held-out set with as many modes; it is written to
``pca.json`` beside the study's ``metrics.json``. PCA sees every training field at once, the
autoencoder a bounded replay buffer (8 000 samples) of the stream.

    python reports/generative/autoencoder.py                # run what is missing, then the table
    python reports/generative/autoencoder.py --report-only
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gensim.compare import StudyResult, run_comparison
from gensim.metrics import relative_l2, summarize_errors

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs" / "autoencoder"
LATENTS = (4, 8, 16)
PROBLEMS = {
    "heat2d": ["simulation=heat2d", "launcher.max_simulations=160"],
    "stochastic": ["simulation=stochastic_heat", "launcher.max_simulations=1000"],
}
COMMON = [
    "model=autoencoder",
    "simulation.grid=32",
    "trainer.max_steps=4000",
    "data.steps_per_epoch=1000",
    "data.batch_size=128",
    "data.n_validation=16",
]


def resimulate(simulation, records: list[dict]) -> np.ndarray:
    """Every step of the given simulations, flattened in field order: shape (n_sims * n_steps, D)."""
    rows = []
    for r in records:
        for _, _, fields in simulation.run(np.asarray(r["params"]), seed=r["seed"]):
            rows.append(np.concatenate([np.asarray(fields[f.name], np.float32).reshape(-1) for f in simulation.fields]))
    return np.stack(rows)


def pca_baseline(run_dir: Path, n_modes: int) -> dict:
    """PCA with ``n_modes`` fitted on the study's training simulations, scored on its held-out ones."""
    out_path = run_dir / "pca.json"
    if out_path.exists():
        return json.loads(out_path.read_text())
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    simulation = instantiate(cfg.simulation)
    records = json.loads((run_dir / "simulations.json").read_text())
    train = resimulate(simulation, [r for r in records if r["purpose"] == "train" and r["state"] == "done"])
    held_out = resimulate(simulation, [r for r in records if r["purpose"] == "validation"])
    x = torch.from_numpy(train).double()
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    basis = vh[:n_modes]
    y = torch.from_numpy(held_out).double()
    recon = (y - mean) @ basis.T @ basis + mean
    summary = summarize_errors(relative_l2(recon, y, simulation.fields))
    out = {
        "pca_rel_l2_mean": summary["mean"],
        "pca_rel_l2_p99": summary["p99"],
        "pca_modes": n_modes,
        "pca_train_fields": int(train.shape[0]),
        "pca_heldout_fields": int(held_out.shape[0]),
    }
    out_path.write_text(json.dumps(out, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--report-only", action="store_true", help="only tabulate finished studies")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per study on a shared 2-core machine

    lines = [
        "| problem | latent / modes | autoencoder rel L2 mean | PCA rel L2 mean | AE / PCA "
        "| autoencoder rel L2 p99 | PCA rel L2 p99 | run (metrics.json, pca.json) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for problem in args.problems:
        variants = {f"latent{k}": [f"model.latent_dim={k}"] for k in LATENTS}
        if args.report_only:
            results = [
                StudyResult(
                    v,
                    0,
                    RUNS / problem / v / "seed0",
                    json.loads((RUNS / problem / v / "seed0" / "metrics.json").read_text()),
                )
                for v in variants
                if (RUNS / problem / v / "seed0" / "metrics.json").exists()
            ]
        else:
            results = run_comparison(
                RUNS / problem, variants, seeds=(0,), common=[*COMMON, *PROBLEMS[problem]], timeout_s=7200
            )
        for r in results:
            k = int(r.variant.removeprefix("latent"))
            pca = pca_baseline(Path(r.run_dir), k)
            ae = r.metrics
            lines.append(
                f"| {problem} | {k} | {ae['recon_rel_l2_mean']:.4g} | {pca['pca_rel_l2_mean']:.4g} "
                f"| {ae['recon_rel_l2_mean'] / pca['pca_rel_l2_mean']:.2f} | {ae['recon_rel_l2_p99']:.4g} "
                f"| {pca['pca_rel_l2_p99']:.4g} | {Path(r.run_dir).relative_to(HERE)} |"
            )
    text = (
        "# Autoencoder (trained on-line) vs PCA: held-out reconstruction relative L2\n\n"
        f"Common overrides: `{' '.join(COMMON)}`; heat2d: `{' '.join(PROBLEMS['heat2d'])}`; "
        f"stochastic: `{' '.join(PROBLEMS['stochastic'])}`.\n\n" + "\n".join(lines) + "\n"
    )
    (HERE / "autoencoder.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
