"""ExternalSimulation: any command line as a simulation, run through a private receiver here
(the off-line path); the launcher path is in tests/gensim/launch/launcher_contract.py."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from gensim.simulations import DecayingWave, ExternalSimulation
from gensim.simulations.external import ExternalRunError

EXAMPLE = Path(__file__).parents[3] / "examples" / "python" / "decay_solver.py"
SPACE = {"a": [1.0, 2.0], "k": [0.1, 1.0]}
FIELDS = [{"name": "u", "shape": [16], "dtype": "float32"}]


def external(command, **kwargs) -> ExternalSimulation:
    return ExternalSimulation(command, SPACE, FIELDS, n_steps=kwargs.pop("n_steps", 10), **kwargs)


def test_the_example_solver_matches_the_exact_solution() -> None:
    sim = external(["{python}", str(EXAMPLE)], times=0.1 * np.arange(1, 11))
    params = np.array([1.5, 0.5])
    steps = list(sim.run(params, seed=3))
    assert [s for s, _, _ in steps] == list(range(10))
    exact = DecayingWave()
    # float32 fields of magnitude <= 2: rounding is below 2 * 2**-24 * 2 = 2.4e-7.
    for _, t, fields in steps:
        np.testing.assert_allclose(fields["u"], exact.exact(params, t), rtol=0, atol=2.4e-7)


def test_parameters_reach_the_process_as_arguments_environment_and_json(tmp_path: Path) -> None:
    script = tmp_path / "echo.py"
    script.write_text(
        textwrap.dedent("""
        import json, os, sys
        import numpy as np
        from gensim.client import Client
        a = float(sys.argv[1])
        doc = json.load(open(sys.argv[2]))
        assert doc["params"] == {"a": a, "k": float(os.environ["GENSIM_PARAM_k"])}, doc
        assert doc["seed"] == int(sys.argv[3]) == int(os.environ["GENSIM_SEED"]), doc
        assert os.environ["GENSIM_PARAMS_FILE"] == sys.argv[2]
        assert doc["fields"] == [{"name": "u", "shape": [16], "dtype": "float32"}]
        with Client.from_env() as client:
            for step in range(int(os.environ["GENSIM_N_STEPS"])):
                client.send(step, step, {"u": np.full(16, a * 10 + doc["params"]["k"], np.float32)})
            client.end()
    """)
    )
    sim = external(["{python}", str(script), "{a}", "{params_file}", "{seed}"], n_steps=3)
    params = np.array([1.25, 0.375])  # exact in binary: the values compare exactly
    steps = list(sim.run(params, seed=11))
    assert [s for s, _, _ in steps] == [0, 1, 2]
    assert all((f["u"] == np.float32(12.875)).all() for _, _, f in steps)


def test_a_failing_command_reports_its_exit_code_and_output() -> None:
    sim = external(["{python}", "-c", "import sys; print('solver diverged at step 3'); sys.exit(3)"])
    with pytest.raises(ExternalRunError, match="(?s)exited with code 3.*solver diverged at step 3") as err:
        list(sim.run(np.array([1.5, 0.5])))
    assert err.value.exit_code == 3


def test_a_run_past_its_time_limit_is_killed_with_what_it_started() -> None:
    script = "import subprocess, time; print(subprocess.Popen(['sleep', '60']).pid, flush=True); time.sleep(60)"
    sim = external(["{python}", "-c", script], timeout_s=1.0)
    with pytest.raises(ExternalRunError, match="timeout_s = 1 s and was killed") as err:
        list(sim.run(np.array([1.5, 0.5])))
    child = int(str(err.value).rsplit("\n", 1)[-1])  # the last output line: the pid of its `sleep`

    def gone() -> bool:  # killed: reaped by its new parent, or a zombie waiting for it
        try:
            return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 5
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(), f"the command's child {child} outlived its time limit"


def test_a_command_that_sends_no_end_fails() -> None:
    sim = external(["{python}", "-c", "pass"])
    with pytest.raises(ExternalRunError, match="exited with code 0 but no END reached the receiver"):
        list(sim.run(np.array([1.5, 0.5])))


@pytest.mark.parametrize(
    "size, match",
    [
        # float64 (4,): a message of the right size, its header checked: the dtype comes first.
        (
            4,
            r"\[dtype\] field 'u': expected dtype float32, got float64 \(header: u float64 \(4,\); "
            r"expected u float32 \(16,\)\)",
        ),
        # float64 (48,): a frame of 384 bytes, a message of 528, over twice a valid one (208 bytes):
        # refused while received, yet the log says what the header claimed. (A single frame over
        # the limit is dropped by ZeroMQ itself, unseen: test_a_command_that_sends_no_end_fails.)
        (48, r"too_large.*claims simulation 0 and fields u float64 \(48,\), expected u float32 \(16,\)"),
    ],
    ids=["dtype", "too_large"],
)
def test_rejected_messages_name_the_expected_and_received_header(tmp_path: Path, size: int, match: str) -> None:
    script = tmp_path / "wrong.py"  # float64 where float32 (16,) is declared
    script.write_text(
        textwrap.dedent(f"""
        import numpy as np
        from gensim.client import Client
        with Client.from_env() as client:
            for step in range(10):
                client.send(step, 0.1 * (step + 1), {{"u": np.ones({size})}})
            client.end()
    """)
    )
    sim = external(["{python}", str(script)])
    with pytest.raises(ExternalRunError, match=match):
        list(sim.run(np.array([1.5, 0.5])))


@pytest.mark.parametrize(
    "command, match",
    [
        ("{python} solver.py {nope}", "bad placeholder 'nope'"),
        ("", "simulation.command is empty"),
    ],
)
def test_bad_commands_are_refused_at_construction(command: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        external(command)


def test_a_missing_executable_is_named() -> None:
    sim = external(["no-such-solver-xyz"])
    with pytest.raises(ExternalRunError, match="cannot start 'no-such-solver-xyz'"):
        list(sim.run(np.array([1.5, 0.5])))


def test_the_config_file_builds_it() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).parents[3] / "conf" / "simulation" / "external.yaml")
    cfg.command, cfg.parameters, cfg.fields, cfg.n_steps = f"{sys.executable} {EXAMPLE}", SPACE, FIELDS, 10
    sim = instantiate(cfg)
    assert sim.space.names == ("a", "k") and sim.n_steps == 10 and sim.fields[0].shape == (16,)
    assert sim.command == [sys.executable, str(EXAMPLE)]
