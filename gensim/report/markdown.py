"""``report.md``, ``metrics.json`` and ``config.yaml`` of a report, from its rows."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gensim.compare import StudyResult, markdown_table
from gensim.report.figures import (
    plot_error_vs_simulations,
    plot_heldout_cases,
    plot_moments,
    plot_rank_histograms,
    plot_spectra,
    plot_training_curves,
)
from gensim.report.scoring import law_samples, load_surrogate
from gensim.report.studies import OFFLINE_NEURAL, ONLINE, Row, StudyData, flatten_overrides, online_variants
from gensim.simulations.base import FieldSpec


def _md_config(node) -> str:
    return ", ".join(f"{k}={v}" for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "_target_")


def write_report(
    cfg: DictConfig,
    rows: list[Row],
    studies: dict[int, StudyData],
    figure: dict,
    command: str,
    wall_s: float,
    computed: int,
) -> Path:
    """Write report.md, the figures, metrics.json and config.yaml into ``cfg.out_dir``."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = str(cfg.study)
    largest = max(studies)
    data = studies[largest]
    study_cfg = data.config
    spec = data.simulation.fields[0]

    plot_error_vs_simulations(rows, out / "error_vs_simulations.png", title)
    cases, step = figure["cases"], figure["step"]
    heldout = data.heldout
    preds = {}
    for r in rows:
        if r.budget == largest and r.seed == rows[0].seed:
            preds[r.method] = np.load(r.cases)["pred"]
    plot_heldout_cases(
        heldout.fields[cases, step],
        preds,
        spec,
        float(heldout.times[step]),
        out / "heldout_fields.png",
        out / "heldout_errors.png",
        f"{title}, {largest} simulations",
    )
    logs = {
        (r.method, r.budget): r.run_dir / "logs" / "metrics.csv"
        for r in rows
        if r.method in (ONLINE, OFFLINE_NEURAL) and r.seed == rows[0].seed
    }
    plot_training_curves(logs, out / "training_curves.png", title)

    results = [
        StudyResult(
            f"{r.method}, {r.budget} sims",
            r.seed,
            r.run_dir,
            r.metrics | {"predict_ms_per_field": 1e3 * r.metrics["predict_s_per_field"]},
        )
        for r in rows
    ]
    table = markdown_table(
        results,
        {
            "val_rel_l2_mean": "held-out rel. L2 mean",
            "val_rel_l2_p99": "p99",
            "trivial_rel_l2_mean": "trivial mean",
            "fit_s": "fit / train time (s)",
            "predict_ms_per_field": "inference (ms / field, best of 3)",
        },
        fmt=".3g",
        relative_to=out if Path(cfg.runs_dir).is_relative_to(out) else None,
    )
    done = [r for r in data.records if r["purpose"] == "train" and r["state"] == "done"]
    sim_ms = 1e3 * sum(r["seconds"] for r in done) / max(sum(r["steps"] for r in done), 1)
    drift = max(
        abs(r.metrics["val_rel_l2_mean_recomputed"] - r.metrics["val_rel_l2_mean"])
        for r in rows
        if "val_rel_l2_mean_recomputed" in r.metrics
    )
    kriging_notes = []
    for r in rows:
        if "n_samples_fit_" in r.metrics:
            seen, fit = r.metrics["n_samples_seen_"], r.metrics["n_samples_fit_"]
            sub = f"**subsampled**: {fit} of {seen} rows" if r.metrics.get("subsampled_") else f"all {seen} rows"
            if r.metrics.get("n_samples_hyper_", fit) < fit:
                sub += f" (hyperparameters on a random {r.metrics['n_samples_hyper_']})"
            kriging_notes.append(
                f"{r.method} at {r.budget} simulations: Gaussian processes fitted on {sub}, "
                f"{r.metrics['n_components_']} POD modes ({r.metrics['layout']})"
            )
        if "degrees_" in r.metrics:
            kriging_notes.append(
                f"{r.method} at {r.budget} simulations: {r.metrics['n_components_']} POD modes, "
                f"degrees chosen by cross-validation {sorted(set(r.metrics['degrees_']))} "
                f"({r.metrics['layout']})"
            )
    best = []
    for budget in sorted(studies):
        at = [r for r in rows if r.budget == budget]
        winner = min(at, key=lambda r: r.metrics["val_rel_l2_mean"])
        best.append(f"{budget} simulations: **{winner.method}** ({winner.metrics['val_rel_l2_mean']:.3g})")
    n_heldout, n_steps = heldout.fields.shape[:2]
    load = os.getloadavg()[2]
    train_overrides = flatten_overrides(OmegaConf.to_container(cfg.train, resolve=True))
    batch = int(study_cfg.data.batch_size)
    # schedule.steps_per_simulation, when set, replaces trainer.max_steps (gensim.train.scheduled_max_steps).
    per_simulation = OmegaConf.select(study_cfg, "schedule.steps_per_simulation")
    steps = (
        f"{int(study_cfg.trainer.max_steps)} optimizer steps"
        if per_simulation is None
        else f"{int(per_simulation)} optimizer steps per training simulation"
    )
    buffer = study_cfg.buffer.get("policy", study_cfg.buffer).get("_target_")
    total_s = sum(r.metrics.get("compute_s", 0.0) for r in rows)
    lines = [
        f"# {title}: on-line neural surrogate vs Kriging, polynomial chaos and off-line training",
        "",
        "Regenerate from scratch (from the repository root):",
        "",
        "```bash",
        f"rm -rf {cfg.runs_dir} && {command}",
        "```",
        "",
        f"Regenerating it from scratch takes **{total_s / 60:.0f} min** on this machine ({os.cpu_count()} CPU "
        f"cores): the sum of the recorded times of its studies (re-simulations included). The last "
        f"invocation took {wall_s / 60:.1f} min ({computed} studies computed, the others read back); the 15-minute "
        f"load average at its end was {load:.1f} (above {os.cpu_count()}, other jobs shared the CPUs and every "
        "time below is inflated). Without the `rm`, finished studies are read back and only the report is "
        "rewritten.",
        "",
        "## Setup",
        "",
        f"- Problem `{cfg.problem}`: {_md_config(study_cfg.simulation)}; field `{spec.name}` of shape "
        f"{list(spec.shape)}, {n_steps} time steps per simulation.",
        f"- Budgets (training simulations per study): {', '.join(str(b) for b in sorted(studies))}; seeds: "
        f"{', '.join(str(s) for s in cfg.seeds)}. Training designs: `{study_cfg.sampler._target_}` with the "
        "study seed.",
        f"- Held-out set: the {n_heldout} validation simulations of each study "
        f"({study_cfg.data.validation_sampler._target_}, seed {study_cfg.data.validation_sampler.seed}), all "
        f"{n_steps} steps: the same set for every method. Re-simulating it reproduces the on-line studies' "
        f"held-out error to {drift:.1e}.",
        "- Metric: relative L2 error per field, per held-out (simulation, time step); mean and 99th percentile "
        "(`gensim.metrics.relative_l2`). *Trivial*: the training mean field.",
        f"- **{ONLINE}**: `gensim-train` with `{' '.join(train_overrides)}` ({steps}, batch "
        f"{batch}, buffer of {int(study_cfg.buffer.capacity)} samples, `{buffer}`); its time is the whole "
        "study: simulations stream while it trains.",
    ]
    for dirname, (method, extra) in online_variants(cfg).items():
        if dirname != "online":
            lines.append(
                f"- **{method}**: the same on-line study with `{' '.join(extra)}`, a generative surrogate; "
                "its row scores its mean prediction, and the section *Generative surrogates* its law."
            )
    if cfg.offline_neural:
        lines.append(
            f"- **{OFFLINE_NEURAL}**: the same model and trainer, the same steps ({steps}) and batch size, "
            "on shuffled passes over the stored simulations (re-simulated from the study's "
            "`simulations.json`); its time is the training only."
        )
    for name, spec_b in cfg.baselines.items():
        lines.append(
            f"- **{name}**: `{spec_b.estimator._target_}` ({_md_config(spec_b.estimator)}), "
            f"layout `{spec_b.layout._target_.rsplit('.', 1)[-1]}`; its time is the fit only."
        )
    lines += [f"- {n}" for n in kriging_notes]
    lines += [
        f"- One simulation step costs {sim_ms:.3g} ms (mean over the {largest}-simulation study's workers), to "
        "compare with the inference times below.",
        "",
        "## Held-out error and cost",
        "",
        table,
        "",
        "Lowest held-out mean error per budget: " + "; ".join(best) + ".",
        "",
        "## Figures",
        "",
        "Held-out error vs number of training simulations (log-log; solid: mean, dotted: p99):",
        "",
        "![error vs simulations](error_vs_simulations.png)",
        "",
        f"Held-out cases at t = {float(heldout.times[step]):.3g} (step {step}), {largest} training simulations: "
        "fields, then errors (prediction - truth) on their own color scales:",
        "",
        "![held-out fields](heldout_fields.png)",
        "",
        "![held-out errors](heldout_errors.png)",
        "",
        "Training curves of the neural surrogates:",
        "",
        "![training curves](training_curves.png)",
        "",
        *generative_section(cfg, rows, figure, spec, out, title),
        "Every number above comes from the `metrics.json` of the run directory named in its row "
        "(all of them are collected in this folder's `metrics.json`); `config.yaml` is the resolved report config.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "command": command,
                "wall_s": wall_s,
                "studies_computed": computed,
                "load_average_15min": load,
                "regenerate_s": total_s,
                "simulation_s_per_field": sim_ms / 1e3,
                "heldout_recomputation_max_abs_diff": drift,
                "rows": [
                    {
                        "method": r.method,
                        "budget": r.budget,
                        "seed": r.seed,
                        "run_dir": str(r.run_dir),
                        "metrics": r.metrics,
                    }
                    for r in rows
                ],
            },
            indent=1,
        )
    )
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return out / "report.md"


#: Distribution metrics of the generative surrogates' metrics.json (gensim.models.generative), by column.
GENERATIVE_COLUMNS = {
    "energy_distance_ratio": "energy distance / floor",
    "crps_ratio": "CRPS / floor",
    "coverage_90": "90% interval coverage",
    "coverage_90_nominal": "(calibrated)",
    "sliced_wasserstein_ratio": "sliced Wasserstein / floor",
    "std_rel_error": "std rel. error",
    "std_rel_error_floor": "(floor)",
    "mean_error": "mean error",
    "mean_error_floor": "(floor)",
    "spectrum_error": "spectrum error",
    "spectrum_error_floor": "(floor)",
    "diversity_ratio": "diversity ratio",
    "mode_collapse": "mode collapse",
}


def generative_section(
    cfg: DictConfig, rows: Sequence[Row], figure: dict, spec: FieldSpec, out: Path, title: str
) -> list[str]:
    """The report's lines on the generative surrogates (their law), and its figures; none without them.

    Parameters
    ----------
    figure : dict
        From :func:`build_rows`: ``cases``, ``step`` and ``generative`` (method -> study data).
    spec : FieldSpec
        The field shown.
    """
    if not figure["generative"]:
        return [
            "Generative surrogates (mean and std maps, spectra) are not part of this report: none is "
            "configured (`generative` in `conf/report.yaml`).",
            "",
        ]
    generative = [r for r in rows if r.method in figure["generative"]]
    table = markdown_table(
        [StudyResult(f"{r.method}, {r.budget} sims", r.seed, r.run_dir, r.metrics) for r in generative],
        GENERATIVE_COLUMNS,
        fmt=".3g",
        relative_to=out if Path(cfg.runs_dir).is_relative_to(out) else None,
    )
    data = next(iter(figure["generative"].values()))
    heldout = data.heldout
    case, step = int(figure["cases"][0]), int(figure["step"])
    models = {method: load_surrogate(d) for method, d in figure["generative"].items()}
    samples, t = law_samples(
        data.simulation, models, heldout.params[case], step, int(cfg.generative_samples), seed=int(cfg.generative_seed)
    )
    budget = max(cfg.budgets)
    plot_moments(samples, spec, t, out / "generative_moments.png", f"{title}, {budget} simulations, held-out case 1")
    plot_rank_histograms(samples, spec, t, out / "generative_ranks.png", f"{title}, held-out case 1")
    lines = [
        "## Generative surrogates",
        "",
        "Their law against the simulator's, on the held-out design (computed by each study, "
        "`gensim.models.generative`): each metric beside its *floor*, the same metric between two independent "
        "sets of simulator realizations of the same size; energy distance and sliced Wasserstein on PCA "
        "coefficients, as ratios to their floors (1 is as good as the simulator's own sampling noise). "
        "*Diversity ratio*: the spread of a model's samples over the simulator's; *mode collapse* is flagged (1) "
        "below the configured threshold. On a stochastic problem the held-out relative L2 of the table above "
        "compares one prediction with one realization: even the exact conditional mean scores the size of the "
        "fluctuations there, and a model that follows the noise of its training samples scores worse than the "
        "trivial predictor. These law metrics are the comparison that counts.",
        "",
        table,
        "",
        f"Pointwise mean and standard deviation at held-out case 1, t = {t:.3g} (step {step}), from "
        f"{int(cfg.generative_samples)} simulator realizations and as many samples of each model trained on "
        f"{budget} simulations:",
        "",
        "![generative moments](generative_moments.png)",
        "",
        "Calibration, pixel by pixel, same samples: the rank of each of the simulator's second "
        f"{int(cfg.generative_samples) // 2} realizations among the first {int(cfg.generative_samples) // 2} "
        "samples of each source (the simulator's own histogram shows the sampling noise of a perfect "
        "ensemble; U-shaped: under-dispersed, dome: over-dispersed, sloped: biased mean):",
        "",
        "![rank histograms](generative_ranks.png)",
        "",
    ]
    if len(spec.shape) == 2:
        plot_spectra(samples, spec, t, out / "generative_spectra.png", f"{title}, held-out case 1")
        lines += [
            "Radially averaged power spectrum of the fluctuations (samples minus their mean), same samples:",
            "",
            "![generative spectra](generative_spectra.png)",
            "",
        ]
    return lines
