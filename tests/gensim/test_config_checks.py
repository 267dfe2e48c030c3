"""Study configs are checked before anything starts: every bad value named with its fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from gensim.config_checks import RULES, ConfigError, Rule, check_config

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_train(*overrides: str):
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


#: The config groups of gensim-train (conf/train.yaml's defaults list).
TRAIN_GROUPS = ("simulation", "sampler", "launcher", "transport", "buffer", "data", "model", "trainer", "callbacks")


@pytest.mark.parametrize("choice", [f"{g}={p.stem}" for g in TRAIN_GROUPS for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_shipped_config_option_passes(choice):
    # simulation=external has one mandatory key, the user's command line.
    required = (
        [
            "simulation.command=my_solver",
            "simulation.parameters={a: [1.0, 2.0], k: [0.1, 1.0]}",
            "simulation.fields=[{name: u, shape: [16], dtype: float32}]",
            "simulation.n_steps=10",
        ]
        if choice == "simulation=external"
        else []
    )
    check_config(compose_train(choice, *required))


def test_an_external_simulation_without_its_description_is_refused():
    with pytest.raises(
        ConfigError,
        match="simulation=external needs simulation.fields, simulation.n_steps: the "
        "command line run once per simulation and what it sends, e.g. ",
    ):
        check_config(compose_train("simulation=external", "simulation.command=x", "simulation.parameters={a: [0, 1]}"))


def test_a_simulation_module_off_the_python_path_names_the_folder_to_add(tmp_path, monkeypatch):
    (tmp_path / "my_solver.py").write_text("")
    monkeypatch.chdir(tmp_path)  # not on sys.path: the trainer runs from an installed script
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    with pytest.raises(ConfigError, match=f"my_solver is in {tmp_path}: run PYTHONPATH={tmp_path} gensim-train"):
        check_config(compose_train("simulation._target_=my_solver.Mine"))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # The four overrides of issue 12, then one per kind of rule.
        ("data.steps_per_epoch=0", "data.steps_per_epoch=0: expected an integer >= 1"),
        ("launcher.max_simulations=0", "launcher.max_simulations=0: expected an integer >= 1"),
        ("data.n_validation=0", "data.n_validation=0: expected an integer >= 1"),
        ("data.batch_size=-1", "data.batch_size=-1: expected an integer >= 1"),
        ("data.batch_size=12.5", "data.batch_size=12.5: expected an integer"),
        ("data.batch_size=true", "data.batch_size=True: expected an integer"),
        ("trainer.max_steps=0", "trainer.max_steps=0: expected an integer >= 1 or -1"),
        ("data.validation_timeout_s=0", "data.validation_timeout_s=0: expected a finite number > 0"),
        ("model.lr=nan", "model.lr=nan: expected a finite number > 0"),
        ("buffer.max_bytes=-5", "buffer.max_bytes=-5: expected a finite number > 0 or null"),
        ("data.watermark=16", "data.watermark=16 is below data.batch_size=128"),
        ("launcher.on_failure=retry", "launcher.on_failure='retry': expected one of redraw, drop"),
        ("launcher.max_retries=-1", "launcher.max_retries=-1: expected an integer >= 0"),
        ("launcher.simulation_timeout_s=0", "launcher.simulation_timeout_s=0: expected a finite number > 0 or null"),
        ("checkpoint.every_n_steps=0", "checkpoint.every_n_steps=0: expected an integer >= 1 or null"),
        ("checkpoint.buffer=sometimes", "checkpoint.buffer='sometimes': expected true, false or auto"),
        ("+trainer.strategy=ddp_spawn", "trainer.strategy=ddp_spawn: it starts ranks by copying the trainer"),
    ],
)
def test_a_bad_value_is_named_with_what_is_expected_and_an_example(override, expected):
    with pytest.raises(ConfigError) as info:
        check_config(compose_train(override))
    message = str(info.value)
    assert expected in message
    assert "nothing was started" in message
    # Every problem line ends with a valid override of the same key to copy.
    key = override.lstrip("+").split("=")[0]
    assert f"e.g. {key}=" in message


def test_a_slurm_job_heartbeat_must_not_go_stale_while_the_trainer_lives():
    with pytest.raises(ConfigError, match="heartbeat_stale_s=8 must be at least twice heartbeat_s=5"):
        check_config(compose_train("launcher=slurm", "launcher.executor.heartbeat_stale_s=8"))


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        check_config(compose_train("data.steps_per_epoch=0", "launcher.n_parallel=0", "buffer.capacity=-3"))
    lines = [line for line in str(info.value).splitlines() if line.startswith("  - ")]
    assert [line.split("=")[0] for line in lines] == [
        "  - data.steps_per_epoch",
        "  - launcher.n_parallel",
        "  - buffer.capacity",
    ]


def test_ddp_needs_a_batch_and_a_held_out_set_that_split_over_the_ranks():
    with pytest.raises(
        ConfigError,
        match=r"data.batch_size=33 is the global batch, split over 4 ranks.*"
        r"e.g. data.batch_size=32",
    ):
        check_config(compose_train("trainer=ddp", "trainer.devices=2", "trainer.num_nodes=2", "data.batch_size=33"))
    with pytest.raises(ConfigError, match="data.n_validation=1 held-out simulations cannot be sharded over 2 ranks"):
        check_config(compose_train("trainer=ddp", "data.n_validation=1"))
    check_config(compose_train("trainer=ddp", "trainer.devices=auto", "data.batch_size=33"))  # ranks unknown here


def test_rule_accepts_exactly_its_range_and_extra_values():
    count = Rule("a.b", integer=True, minimum=0, meaning="m", example="a.b=1", also=(None, -1))
    assert [count.problem(v) is None for v in (0, 7, None, -1, -2, 1.0, False)] == [
        True,
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    rate = Rule("a.c", integer=False, minimum=0, meaning="m", example="a.c=1", strict=True)
    assert [rate.problem(v) is None for v in (1e-9, 3, 0, -1.0, float("inf"), "1")] == [
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    assert all(r.key.count(".") >= 1 and r.example.startswith(r.key.split(".")[0]) for r in RULES)


@pytest.mark.slow
def test_gensim_train_refuses_bad_overrides_before_any_simulation(tmp_path):
    run_dir = tmp_path / "run"
    bad = ["data.steps_per_epoch=0", "launcher.max_simulations=0", "data.n_validation=0", "data.batch_size=-1"]
    proc = subprocess.run(
        [sys.executable, "-m", "gensim.train", *bad, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    for override in bad:
        assert f"{override}: expected an integer >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Nothing started: no worker logs, no ledger.
    assert not (run_dir / "workers").exists()
    assert not (run_dir / "simulations.json").exists()
