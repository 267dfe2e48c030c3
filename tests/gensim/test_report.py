"""``gensim-report`` end to end on a tiny analytic problem: studies, baselines, report, figures, resume."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from gensim.report import flatten_overrides, load_study, make_report

TINY = [
    "problem=decaying_wave",
    "budgets=[8]",
    "figure_cases=2",
    "train.trainer.max_steps=40",
    "+train.trainer.log_every_n_steps=10",
    "+train.data.watermark=16",
    "+train.data.batch_size=8",
    "+train.data.steps_per_epoch=20",
    "+train.data.n_validation=4",
    "+train.buffer.capacity=100",
    "+train.model.net.hidden=[16]",
    "+train.model.warmup_steps=5",
    "+train.model.normalizer_warmup_batches=3",
    # A Kriging that must subsample (8 training rows > 5), so the report has to say so.
    "baselines.kriging.estimator.max_samples=5",
]


def test_load_study_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not the run directory of a finished gensim-train study"):
        load_study(tmp_path)


def test_flatten_overrides():
    assert flatten_overrides({"trainer": {"max_steps": 3}, "model": {"net": {"hidden": [8, 8]}}, "seed": 1}) == [
        "trainer.max_steps=3",
        "model.net.hidden=[8, 8]",
        "seed=1",
    ]


@pytest.mark.slow
def test_report_smoke(tmp_path: Path, single_threaded) -> None:
    with initialize_config_module(version_base="1.3", config_module="gensim.conf"):
        cfg = compose("report", overrides=[*TINY, f"out_dir={tmp_path / 'report'}"])
    path = make_report(cfg, command="gensim-report <overrides>")
    out = path.parent
    text = path.read_text()
    assert text.splitlines()[0].startswith("# decaying_wave")
    assert "gensim-report <overrides>" in text.split("## Setup")[0]  # the command comes first
    assert "**subsampled**: 5 of 8 rows" in text
    metrics = json.loads((out / "metrics.json").read_text())
    methods = {r["method"] for r in metrics["rows"]}
    assert methods == {"on-line", "kriging", "polynomial_chaos", "off-line neural"}
    for row in metrics["rows"]:
        # Each row's numbers are those of the run directory it names, and appear in the table.
        assert json.loads((Path(row["run_dir"]) / "metrics.json").read_text()).items() <= row["metrics"].items()
        assert f"{row['metrics']['val_rel_l2_mean']:.3g}" in text
        assert 0 < row["metrics"]["val_rel_l2_mean"] < float("inf")
        if row["method"] in ("kriging", "polynomial_chaos"):  # 40 steps do not train the neural ones
            # From 8 simulations (Kriging: 5 of them) of a smooth 2-parameter problem; measured
            # ratios 0.11 and below.
            assert row["metrics"]["val_rel_l2_mean"] < 0.25 * row["metrics"]["trivial_rel_l2_mean"]
    online = next(r for r in metrics["rows"] if r["method"] == "on-line")
    study = load_study(online["run_dir"])  # what the benchmark scripts read a study with
    assert study.metrics["val_rel_l2_mean"] == online["metrics"]["val_rel_l2_mean"]
    assert sum(r["purpose"] == "train" and r["state"] == "done" for r in study.records) == 8
    # Re-simulating the held-out set reproduces the on-line study's own held-out error.
    assert metrics["heldout_recomputation_max_abs_diff"] < 1e-6
    for name in ("error_vs_simulations", "heldout_fields", "heldout_errors", "training_curves"):
        image = matplotlib.image.imread(out / f"{name}.png")
        assert image.shape[0] > 200 and image.shape[1] > 300
    assert (out / "config.yaml").is_file()

    # A second run reads every study back and only rewrites the report.
    again = make_report(cfg, command="gensim-report <overrides>")
    assert "(0 studies computed" in again.read_text()


BASELINE_OPTIONS = sorted(p.stem for p in (Path(__file__).parents[2] / "conf" / "baselines").glob("*.yaml"))


@pytest.mark.parametrize("option", BASELINE_OPTIONS)
def test_every_baseline_config_instantiates(option):
    with initialize_config_module(version_base="1.3", config_module="gensim.conf"):
        cfg = compose("report", overrides=[f"baselines={option}"])
    assert cfg.out_dir == "reports/heat2d" and list(cfg.budgets) == [32, 64, 128]
    assert {"kriging", "polynomial_chaos"} <= cfg.baselines.keys()
    for name, spec in cfg.baselines.items():
        estimator, layout = instantiate(spec.estimator), instantiate(spec.layout)
        assert hasattr(estimator, "fit") and hasattr(layout, "xy"), name


GENERATIVE_TINY = [
    "problem=stochastic_heat",
    "budgets=[8]",
    "figure_cases=1",
    "offline_neural=false",
    "generative_samples=16",
    "+train.simulation.grid=8",
    "+train.simulation.n_steps=4",
    "train.trainer.max_steps=40",
    "+train.trainer.log_every_n_steps=10",
    "+train.data.watermark=16",
    "+train.data.batch_size=8",
    "+train.data.steps_per_epoch=20",
    "+train.data.n_validation=4",
    "+train.buffer.capacity=100",
    "+train.model.net.hidden=[16]",
    "+train.model.warmup_steps=5",
    "+train.model.normalizer_warmup_batches=3",
    "generative=[cvae]",
    "+generative_overrides.cvae=['model.check.n_samples=8','model.latent_dim=2','model.encoder_net.hidden=[16]',"
    "'model.prior_net=null','model.n_mean_samples=4']",
]


@pytest.mark.slow
def test_report_with_a_generative_surrogate(tmp_path: Path, single_threaded) -> None:
    """A generative variant is trained on-line beside the deterministic one; its law gets its own
    table (distribution metrics beside their floors) and figures (mean/std maps, spectra)."""
    with initialize_config_module(version_base="1.3", config_module="gensim.conf"):
        cfg = compose("report", overrides=[*GENERATIVE_TINY, f"out_dir={tmp_path / 'report'}"])
    path = make_report(cfg, command="gensim-report <overrides>")
    out, text = path.parent, path.read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {r["method"]: r for r in metrics["rows"]}
    assert set(rows) == {"on-line", "on-line cvae", "kriging", "polynomial_chaos"}
    cvae = rows["on-line cvae"]
    assert "model=cvae" in (Path(cvae["run_dir"]) / ".hydra" / "overrides.yaml").read_text()
    assert 0 < cvae["metrics"]["energy_distance_ratio"] < float("inf")
    assert "## Generative surrogates" in text
    assert f"{cvae['metrics']['energy_distance_ratio']:.3g}" in text.split("## Generative surrogates")[1]
    # Proper score and calibration beside the distances (the 8 reference samples of the tiny
    # check resolve the 90% interval with k = 1: nominal 7/9).
    assert 0 < cvae["metrics"]["crps_ratio"] < float("inf") and 0 <= cvae["metrics"]["coverage_90"] <= 1
    assert cvae["metrics"]["coverage_90_nominal"] == pytest.approx(7 / 9)
    assert f"{cvae['metrics']['crps_ratio']:.3g}" in text.split("## Generative surrogates")[1]
    # The mean prediction of the generative study is re-scored like the deterministic one.
    assert metrics["heldout_recomputation_max_abs_diff"] < 1e-5
    for name in ("generative_moments", "generative_spectra", "generative_ranks"):
        image = matplotlib.image.imread(out / f"{name}.png")
        assert image.shape[0] > 200 and image.shape[1] > 300
