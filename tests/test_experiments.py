"""Named reports (conf/experiment): each reproduces the settings of its committed report.

``gensim-report experiment=<name>`` must set what ``reports/<name>/config.yaml`` (the resolved
config the committed report was made with) records for every key a report's result depends on,
and its studies' gensim-train overrides must compose and instantiate.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gensim.report.studies import flatten_overrides

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))

#: The report settings that decide its studies and baselines (the rest are paths, figure choices and
#: baseline defaults that later work may tune).
KEYS = ["problem", "budgets", "seeds", "buffer", "train", "offline_neural", "generative", "generative_overrides"]


def compose_report(*overrides: str):
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        return compose(config_name="report", overrides=list(overrides))


def test_every_committed_report_has_an_experiment():
    reports = {p.parent.name for p in (ROOT / "reports").glob("*/config.yaml")}
    assert reports and reports <= set(EXPERIMENTS), f"reports without conf/experiment/: {reports - set(EXPERIMENTS)}"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_reproduces_its_committed_report(name):
    cfg = OmegaConf.to_container(compose_report(f"experiment={name}"), resolve=True)
    committed = OmegaConf.to_container(OmegaConf.load(ROOT / "reports" / name / "config.yaml"))
    assert cfg["out_dir"] == f"reports/{name}"
    for key in KEYS:
        # A key the committed config lacks did not exist yet when that report was made.
        if key in committed:
            assert cfg[key] == committed[key], key
    for baseline in cfg["baselines"]:
        ours, theirs = cfg["baselines"][baseline]["estimator"], committed["baselines"][baseline]["estimator"]
        assert ours["n_components"] == theirs["n_components"], baseline


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_studies_compose(name):
    cfg = compose_report(f"experiment={name}")
    overrides = [f"simulation={cfg.problem}", *flatten_overrides(OmegaConf.to_container(cfg.train, resolve=True))]
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        study = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    assert study.hydra.runtime.choices.simulation == cfg.problem
    sim = instantiate(study.simulation)
    assert sim.n_steps > 0


def test_overrides_go_on_top_of_an_experiment():
    cfg = compose_report("experiment=plate_heat", "budgets=[8]")
    assert list(cfg.budgets) == [8] and cfg.problem == "plate_heat"
