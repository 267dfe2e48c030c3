"""End-to-end: ``gensim-train`` as a user runs it, on a tiny heat2d study."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from processes import run_study, stop_process_tree
from tiny_study import TINY

# slow: end to end (gensim-train, gensim-report or trainer ranks in processes); pytest -m 'not slow' skips it
pytestmark = pytest.mark.slow

REQUIRED_KEYS = {
    "val_rel_l2_mean",
    "val_rel_l2_p99",
    "trivial_rel_l2_mean",
    "simulations_started",
    "simulations_finished",
    "simulations_failed",
    "samples_received",
    "samples_rejected",
    "train_samples_per_s",
    "wall_s",
    "train_rel_l2_mean",
    "train_rel_l2_p99",
}


def _train_cmd(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "gensim.train", *overrides, f"hydra.run.dir={run_dir}"]


def test_smoke_run_writes_metrics(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # With the BufferStats callback, whose final numbers go into metrics.json too.
    # schedule.steps_per_simulation=25 x 24 simulations: the 600 steps of TINY's trainer.max_steps.
    out, metrics = run_study(
        _train_cmd(run_dir, *TINY, "callbacks=buffer_stats", "trainer.max_steps=7", "schedule.steps_per_simulation=25"),
        run_dir,
    )
    assert REQUIRED_KEYS <= metrics.keys()
    assert all(math.isfinite(metrics[k]) for k in REQUIRED_KEYS)
    # The watermark (64 samples = 7 simulations of 10 steps) must have been reached by streaming.
    assert metrics["simulations_finished"] >= 7
    assert metrics["samples_received"] >= 64 and metrics["heldout_samples_received"] == 4 * 10
    assert metrics["samples_rejected"] == 0
    assert metrics["simulations_failed"] == 0
    assert metrics["train_samples_per_s"] > 0
    assert metrics["steps_per_rank"] == [25 * 24]
    # The training error is measured on distinct training rows: at most the 240 streamed.
    assert 0 < metrics["train_probe_rows"] <= 240
    assert math.isfinite(metrics["buffer_chi_square"]) and math.isfinite(metrics["buffer_energy_distance"])
    # The model beats the training-mean predictor by far. Its error depends on the order in which
    # the stream arrived (the buffer's content at each step): at 300 steps the ratio was 0.36 to
    # 0.50 over 16 runs on 2 busy cores (a CI run failed at 0.503), at 600 steps 0.25 to 0.37
    # over 9 runs, so 0.5 leaves a margin of a quarter over the worst one measured.
    assert metrics["val_rel_l2_mean"] < 0.5 * metrics["trivial_rel_l2_mean"]
    # Wall time since the study's start beside every validation (error-against-time curves).
    log = (run_dir / "logs" / "metrics.csv").read_text().splitlines()
    column = log[0].split(",").index("elapsed_s")
    elapsed = [float(row.split(",")[column]) for row in log[1:] if row.split(",")[column]]
    assert len(elapsed) >= 2 and elapsed == sorted(elapsed) and elapsed[-1] <= metrics["wall_s"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # The step and time triggers share last.ckpt: a resume reads the newest checkpoint.
    assert not list((run_dir / "checkpoints").glob("last-v*.ckpt"))
    records = json.loads((run_dir / "simulations.json").read_text())
    assert sum(r["purpose"] == "validation" for r in records) == 4
    # No simulation data on disk outside the checkpoints: re-simulate one training simulation
    # (heat2d is deterministic) and look for a piece of each of its fields in every other file.
    record = next(r for r in records if r["purpose"] == "train")
    simulation = instantiate(OmegaConf.load(run_dir / ".hydra" / "config.yaml").simulation)
    pieces = [
        np.ascontiguousarray(values, dtype=np.float32).tobytes()[128:192]
        for _, _, fields in simulation.run(np.asarray(record["params"]), seed=record["seed"])
        for values in fields.values()
    ]
    assert len(pieces) == 10 and all(len(p) == 64 for p in pieces)
    for path in (f for f in run_dir.rglob("*") if f.is_file() and f.suffix != ".ckpt"):
        content = path.read_bytes()
        assert not any(p in content for p in pieces), f"{path} holds simulation fields"
        assert path.suffix not in (".npy", ".npz", ".pt", ".h5"), f"{path}: an array file beside the checkpoints"
    assert "held-out relative L2" in out


@pytest.fixture
def sigint_as_in_a_terminal():
    """Python's own SIGINT handler in this process while the test runs.

    Lightning ignores SIGINT from its first KeyboardInterrupt on (lightning/pytorch/trainer/
    call.py) and never restores it, so after any test that interrupts a Trainer in this process,
    SIGINT is ignored here, and an ignored signal is inherited by child processes: the study
    under test would never see the interrupt (seen in full-suite runs: still training 60 s
    after SIGINT). A user's terminal delivers SIGINT to a process that handles it.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.usefixtures("sigint_as_in_a_terminal")
def test_interrupt_leaves_no_simulation_process(tmp_path: Path, sig: signal.Signals) -> None:
    overrides = [o for o in TINY if not o.startswith(("trainer.max_steps", "launcher.max_simulations"))]
    log = open(tmp_path / "study.log", "w")  # noqa: SIM115 - closed in the finally
    proc = subprocess.Popen(
        _train_cmd(tmp_path / "run", *overrides, "trainer.max_steps=1000000", "launcher.max_simulations=100000"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        workers: list[psutil.Process] = []
        while time.monotonic() < deadline and len(workers) < 2:
            workers = [
                p
                for p in psutil.Process(proc.pid).children(recursive=True)
                if "gensim.launch.worker" in " ".join(p.cmdline())
            ]
            time.sleep(0.2)
        assert len(workers) == 2, "the study did not start its two simulation workers within 60 s"
        # Training started (the progress bar's first line), so the interrupt lands inside trainer.fit.
        while time.monotonic() < deadline and "Epoch 0" not in (tmp_path / "study.log").read_text():
            time.sleep(0.2)
        assert "Epoch 0" in (tmp_path / "study.log").read_text(), "training did not start within 60 s"
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGUSR1)  # gensim-train prints every thread's stack
            time.sleep(2.0)
            raise AssertionError(
                f"the study did not exit within 60 s of {sig.name}; its threads:\n"
                + (tmp_path / "study.log").read_text()[-8000:]
            ) from None
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"simulation workers left running after {sig.name}: {[p.pid for p in alive]}"
        assert proc.returncode != 0  # an interrupted study does not report success
    finally:
        stop_process_tree(proc)
        log.close()


def test_a_weight_averaged_study_reports_and_saves_the_average_and_resumes(tmp_path: Path) -> None:
    """``callbacks=weight_average`` on a reduced-basis model (normalizers and basis refits restart
    the average): the final evaluation scores the average, the checkpoint holds it beside the
    trained weights, and the finished study continues from them."""
    run_dir = tmp_path / "run"
    study = [*TINY, "model=pod", "model.n_modes=16", "model.refresh_every=100", "callbacks=weight_average"]
    _, metrics = run_study(_train_cmd(run_dir, *study, "trainer.max_steps=300"), run_dir)
    # The last validation (step 300, the average in place) and the final evaluation (the average
    # copied into the model at the end of training) score the same weights.
    rows = [r.split(",") for r in (run_dir / "logs" / "metrics.csv").read_text().splitlines()]
    column = rows[0].index("val_rel_l2_mean")
    assert float([r for r in rows[1:] if r[column]][-1][column]) == pytest.approx(metrics["val_rel_l2_mean"], rel=1e-4)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert {"current_model_state", "averaging_state"} <= ckpt.keys()
    assert ckpt["state_dict"].keys() == ckpt["current_model_state"].keys()
    _, resumed = run_study(
        [sys.executable, "-m", "gensim.train", f"resume={run_dir}", "trainer.max_steps=400"], run_dir
    )
    assert resumed["steps_per_rank"] == [400]
    # No accuracy bound here: the resumed tiny pod study scored 0.55x to 0.82x the trivial
    # predictor in three runs (the stream's order differs from run to run); the average's scoring
    # is checked above and in tests/gensim/callbacks/test_weight_average.py.
    assert math.isfinite(resumed["val_rel_l2_mean"])
    resumed_ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert resumed_ckpt["global_step"] == 400 and "current_model_state" in resumed_ckpt
