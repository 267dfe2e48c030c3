"""Every option of every config group composes and instantiates; bad overrides fail clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gensim.simulations import Simulation

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_train(*overrides: str):
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


#: Mandatory keys of some simulation configs (external: the user's command line).
REQUIRED = {
    "external": [
        "simulation.command=my_solver",
        "simulation.parameters={a: [1.0, 2.0], k: [0.1, 1.0]}",
        "simulation.fields=[{name: u, shape: [16], dtype: float32}]",
        "simulation.n_steps=10",
    ]
}


@pytest.mark.parametrize("name", options("simulation"))
def test_simulation_configs(name):
    sim = instantiate(compose_train(f"simulation={name}", *REQUIRED.get(name, [])).simulation)
    assert isinstance(sim, Simulation)


@pytest.mark.parametrize("name", options("sampler"))
def test_sampler_configs(name):
    cfg = compose_train(f"sampler={name}")
    sim = instantiate(cfg.simulation)
    points = instantiate(cfg.sampler)(space=sim.space).sample(4)
    assert points.shape == (4, sim.space.dim) and sim.space.contains(points).all()


@pytest.mark.parametrize("name", options("buffer"))
def test_buffer_configs(name):
    cfg = compose_train(f"buffer={name}", "buffer.capacity=16")
    sim = instantiate(cfg.simulation)
    buffer = instantiate(cfg.buffer)(fields=sim.fields, n_params=sim.space.dim)
    assert buffer.capacity == 16


@pytest.mark.parametrize("name", options("model"))
def test_model_configs(name):
    cfg = compose_train(f"model={name}", "simulation.grid=8")
    sim = instantiate(cfg.simulation)
    model = instantiate(cfg.model)(fields=sim.fields, n_params=sim.space.dim)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_launcher_transport_data_trainer_configs_instantiate():
    cfg = compose_train("simulation.grid=8", "simulation.n_steps=2")
    sim = instantiate(cfg.simulation)
    launcher = instantiate(cfg.launcher)(simulation=OmegaConf.to_container(cfg.simulation))
    dm = instantiate(cfg.data)(
        simulation=sim,
        sampler=instantiate(cfg.sampler)(space=sim.space),
        launcher=launcher,
        buffer=instantiate(cfg.buffer),
        receiver=instantiate(cfg.transport),
    )
    assert dm.n_validation == 16 and dm.buffer.capacity == cfg.buffer.capacity
    trainer = instantiate(cfg.trainer)(logger=False, enable_checkpointing=False)
    assert trainer.max_steps == cfg.trainer.max_steps
    for group in ("callbacks",):
        assert all(instantiate(c) is not None for c in (cfg.get(group) or {}).values())


@pytest.mark.slow
def test_a_wrong_override_gets_hydras_error_not_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gensim.train", "simulation.gird=32", f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Could not override 'simulation.gird'" in result.stderr
    assert "Traceback" not in result.stderr
