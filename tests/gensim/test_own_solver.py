"""End-to-end: a user's own solver, outside the package, joins a ``gensim-train`` study
(docs/your-own-solver.md): an external command; a Python simulation off the Python path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from processes import stop_process_tree
from tiny_study import TINY

# slow: end to end (gensim-train, gensim-report or trainer ranks in processes); pytest -m 'not slow' skips it
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).parents[2] / "examples" / "python" / "decay_solver.py"
#: TINY without its heat2d keys: the simulation here is the user's.
STUDY = [o for o in TINY if not o.startswith("simulation.")]


def _train(cwd: Path, *args: str, env: dict | None = None, timeout: float = 150) -> tuple[int, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gensim.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        stop_process_tree(proc)
    return proc.returncode, out


def test_an_external_command_trains_and_its_rejected_simulation_is_reported(tmp_path: Path) -> None:
    # The tutorial's solver, copied outside the repository; one training simulation (the
    # second, seed 5: held-out ones take seeds 0 to 3) sends float64 of the wrong shape.
    solver = tmp_path / "my_solver.py"
    solver.write_text(
        EXAMPLE.read_text().replace(
            'client.send(step, (step + 1) * dt, {"u": u.astype(np.float32)})',
            'client.send(step, (step + 1) * dt, {"u": np.ones(8) if os.environ["GENSIM_SEED"] == "5" '
            "else u.astype(np.float32)})",
        )
    )
    run_dir = tmp_path / "run"
    # A budget far above what 600 steps take: the summary must say how much was never run.
    # 200 optimizer steps: the analytic field is learnt well before (0.03 vs 0.29 for the
    # trivial predictor at 100 steps, measured), and the test stays short on busy cores. Logged
    # with logger=tensorboard (conf/logger), checked below: one study serves both.
    overrides = [o for o in STUDY if not o.startswith(("launcher.max_simulations", "trainer.max_steps"))]
    code, out = _train(
        tmp_path,
        "simulation=external",
        f"simulation.command={sys.executable} my_solver.py",
        "simulation.parameters={a: [1.0, 2.0], k: [0.1, 1.0]}",
        "simulation.n_steps=10",
        "simulation.fields=[{name: u, shape: [16], dtype: float32}]",
        *overrides,
        "launcher.max_simulations=400",
        "trainer.max_steps=200",
        "logger=tensorboard",
        f"hydra.run.dir={run_dir}",
        timeout=240,
    )
    assert code == 0, out[-4000:]
    # gensim-train logger=tensorboard: TensorBoard event files with the held-out error, no CSV log.
    (events,) = (run_dir / "tensorboard").glob("events.out.tfevents.*")
    assert b"val_rel_l2_mean" in events.read_bytes() and not (run_dir / "logs").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["simulations_finished"] >= 7 and metrics["samples_received"] >= 64
    assert metrics["val_rel_l2_mean"] < 0.5 * metrics["trivial_rel_l2_mean"]
    records = {r["seed"]: r for r in json.loads((run_dir / "simulations.json").read_text())}
    bad = records[5]
    assert bad["state"] == "failed" and bad["rejected"] == {"dtype": 10}, bad
    assert "all 10 message(s) it sent were rejected" in bad["error"]
    assert "expected dtype float32, got float64 (header: u float64 (8,); expected u float32 (16,))" in bad["error"]
    assert metrics["simulations_failed"] >= 1
    assert {"sim_id": bad["sim_id"], "purpose": "train", "error": bad["error"]} in metrics["failed_simulations"]
    assert f"FAILED train simulation {bad['sim_id']}: all 10 message(s)" in out
    # The receiver's log names the simulation from the (authenticated) header.
    assert f"rejected a message [dtype] from simulation {bad['sim_id']}" in out
    # The budget: 400, far from reached; every one is accounted for.
    started = sum(1 for r in records.values() if r["purpose"] == "train" and r["replaced_by"] is None)
    assert metrics["simulations_not_run"] == 400 - started > 0
    assert f"{metrics['simulations_not_run']} of 400 never ran" in out and "callbacks=until_budget" in out


def test_a_simulation_module_off_the_python_path_stops_the_study_with_the_folder_to_add(tmp_path: Path) -> None:
    """A Python simulation of the user's, its config in their folder, without PYTHONPATH: a usage
    error before anything starts, naming the folder (the C example of test_c_client.py trains from
    such a folder)."""
    user = tmp_path / "user"
    (user / "conf" / "simulation").mkdir(parents=True)
    (user / "my_solver.py").write_text("raise AssertionError('never imported by the check')\n")
    (user / "conf" / "simulation" / "mine.yaml").write_text("_target_: my_solver.Linear\nsize: 8\nn_steps: 5\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code, out = _train(tmp_path, "--config-dir", str(user / "conf"), "simulation=mine", env=env, timeout=90)
    assert code == 2, out[-3000:]
    assert f"my_solver is in {user}: run PYTHONPATH={user} gensim-train" in out
    # Hydra made the run directory, named after the chosen simulation; nothing ran in it.
    [run_dir] = (tmp_path / "outputs" / "mine").iterdir()
    assert not (run_dir / "workers").exists() and not (run_dir / "metrics.json").exists()
