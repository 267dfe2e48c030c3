"""conf/launcher/*.yaml build a Launcher with its executor, as gensim-train does, overrides included."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gensim.launch import Launcher, LocalExecutor, SlurmExecutor

CONF = Path(__file__).resolve().parents[3] / "conf"
EXECUTORS = {"local": LocalExecutor, "slurm": SlurmExecutor}


def test_every_launcher_config_is_tested():
    assert sorted(p.stem for p in (CONF / "launcher").glob("*.yaml")) == sorted(EXECUTORS)


@pytest.mark.parametrize("name", sorted(EXECUTORS))
def test_launcher_configs_build_a_launcher_with_their_executor(name, tmp_path):
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=[f"launcher={name}", "launcher.n_parallel=4", "launcher.max_simulations=24"]
        )
    # As gensim/train.py builds it.
    launcher = instantiate(cfg.launcher)(
        simulation=OmegaConf.to_container(cfg.simulation, resolve=True), log_dir=str(tmp_path / "workers")
    )
    assert isinstance(launcher, Launcher) and isinstance(launcher.executor, EXECUTORS[name])
    assert launcher.n_parallel == 4 and launcher.budget == 24
    assert launcher.simulation_config["_target_"] == cfg.simulation._target_
    launcher.shutdown()  # never started: nothing to stop, and no error


def test_slurm_config_options_reach_the_executor():
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "launcher=slurm",
                "launcher.executor.partition=gpu",
                "launcher.executor.time=30",
                "launcher.executor.sims_per_job=4",
                "+launcher.executor.additional_parameters.account=proj42",
            ],
        )
    ex = instantiate(cfg.launcher)(simulation={"_target_": "x"}).executor
    assert (ex.partition, ex.time, ex.sims_per_job) == ("gpu", 30, 4)
    assert ex.additional_parameters == {"account": "proj42"}
