"""Kriging (conf/baselines/default.yaml, as gensim-report fits it) on the training simulations of a
study of this folder, scored on the same held-out simulations as the study's surrogate.

    OMP_NUM_THREADS=1 python reports/models/kriging.py <study run dir> <name>

re-simulates the study's simulations (its simulations.json), fits, and writes runs/<name>/metrics.json
with the study's overrides (the simulations are those of any study with the same overrides up to
the model's)."""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gensim.report.scoring import fit_baseline
from gensim.report.studies import load_study

CONF = Path(__file__).resolve().parents[2] / "conf" / "baselines" / "default.yaml"
run_dir, name = Path(sys.argv[1]), sys.argv[2]
spec = OmegaConf.load(CONF).kriging
data = load_study(run_dir)
with tempfile.TemporaryDirectory() as tmp:  # fit_baseline writes the figure cases, not kept here
    metrics = fit_baseline(instantiate(spec.estimator), instantiate(spec.layout), data, Path(tmp), np.arange(1), 0)
metrics["study_overrides"] = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
out = Path(__file__).parent / "runs" / name
out.mkdir(parents=True, exist_ok=True)
(out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
print(
    f"{name}: held-out mean {metrics['val_rel_l2_mean']:.6f}, p99 {metrics['val_rel_l2_p99']:.6f}, "
    f"fit {metrics['fit_s']:.1f} s, {metrics['n_components_']} modes"
)
