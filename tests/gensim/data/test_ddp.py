"""Data-parallel on-line training for real: ``gensim-train trainer=ddp`` with 2 gloo ranks on CPU.

Each test runs the study as a user would (Lightning starts the second rank as a new process)
on the tiny analytic problem, bounded by a timeout, and stops every process it started.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from processes import stop_process_tree

from gensim.baselines.offline import study_simulations
from gensim.metrics import relative_l2, summarize_errors

# slow: end to end (gensim-train, gensim-report or trainer ranks in processes); pytest -m 'not slow' skips it
pytestmark = pytest.mark.slow

TESTS_DIR = Path(__file__).parent

TINY_DDP = [
    "simulation=decaying_wave",
    "launcher.max_simulations=24",
    "launcher.n_parallel=2",
    # The watermark is every training sample (24 x 10 steps, 120 per rank): training starts once
    # all arrived, so the per-rank counts below are exact whatever the machine's speed.
    "data.n_validation=4",
    "data.batch_size=32",
    "data.watermark=240",
    "data.steps_per_epoch=40",
    "buffer=reservoir",
    "buffer.capacity=256",
    "model.net.hidden=[32,32]",
    "model.warmup_steps=10",
    "model.normalizer_warmup_batches=5",
    "trainer.max_steps=120",
    "trainer=ddp",
    "trainer.devices=2",
    "trainer.accelerator=cpu",
    # Periodic checkpoints while both ranks train: written in the background, last.ckpt after
    # both ranks' stream files (test_both_ranks_checkpoint_in_the_background_and_the_study_resumes).
    "checkpoint.every_n_steps=30",
]


def run_study(run_dir: Path, *overrides: str, timeout: float = 240.0) -> str:
    """Run gensim-train to the end; return its output. Kills what is left on failure or timeout."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gensim.train", *overrides, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = "(timed out)"
    finally:
        stop_process_tree(proc)
    assert proc.returncode == 0, out[-6000:]
    return out


def evaluate_checkpoint(run_dir: Path) -> dict[str, float]:
    """Held-out relative L2 of the final checkpoint, in this one process, on the held-out
    simulations re-simulated from simulations.json (the analytic problem is deterministic)."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    simulation = instantiate(cfg.simulation)
    model = instantiate(cfg.model)(fields=simulation.fields, n_params=simulation.space.dim)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    model.load_state_dict(state["state_dict"])
    model.eval()
    sims, _ = study_simulations(run_dir, "validation")
    params, t, fields = (torch.from_numpy(np.asarray(a, np.float32)) for a in sims.snapshots())
    with torch.no_grad():
        errors = relative_l2(model(params, t), fields, simulation.fields)
    return summarize_errors(errors)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    return run_dir, run_study(run_dir, *TINY_DDP)


def test_the_ensemble_is_simulated_once_and_routed_to_both_ranks(ddp_run):
    run_dir, _ = ddp_run
    records = json.loads((run_dir / "simulations.json").read_text())
    ids = [r["sim_id"] for r in records]
    assert len(ids) == len(set(ids)) == 24 + 4, "each simulation must appear once in the ledger"
    train = [r for r in records if r["purpose"] == "train"]
    assert all(r["state"] == "done" for r in records), {r["state"] for r in records}
    # Round-robin: the training simulations alternate between the ranks; held-out ones on rank 0.
    assert sorted(r["rank"] for r in train) == [0] * 12 + [1] * 12
    assert all(r["rank"] == 0 for r in records if r["purpose"] == "validation")


def test_both_ranks_train_in_lockstep_on_their_own_stream(ddp_run):
    run_dir, _ = ddp_run
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["world_size"] == 2
    # 12 training simulations of 10 steps per rank; rank 0 also received the 4 x 10 held-out
    # steps, counted apart.
    assert m["samples_received_per_rank"] == [120, 120]
    assert m["samples_received"] == 240 and m["heldout_samples_received"] == 40
    assert m["steps_per_rank"] == [120, 120]
    # The global batch of 32 is split: 16 samples per rank and step.
    assert m["train_samples_per_rank"] == [120 * 16, 120 * 16]
    # Normalizer statistics merged over ranks before they froze: identical everywhere.
    assert len(set(m["normalizer_digest_per_rank"])) == 1, m["normalizer_digest_per_rank"]


def test_held_out_metrics_equal_a_single_process_evaluation_of_the_checkpoint(ddp_run):
    run_dir, _ = ddp_run
    m = json.loads((run_dir / "metrics.json").read_text())
    single = evaluate_checkpoint(run_dir)
    # Same weights, same 40 held-out rows, float32 on one CPU: equal up to summation order.
    assert math.isclose(m["val_rel_l2_mean"], single["mean"], rel_tol=1e-5), (m["val_rel_l2_mean"], single)
    assert math.isclose(m["val_rel_l2_p99"], single["p99"], rel_tol=1e-5), (m["val_rel_l2_p99"], single)
    # The last validation during training ran sharded over both ranks (20 rows each) and gathered
    # every row: it scores the same final weights, so it must equal the full-set value too.
    rows = (run_dir / "logs" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("val_rel_l2_mean")
    logged = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    assert math.isclose(logged[-1], single["mean"], rel_tol=1e-5), (logged[-1], single["mean"])


def test_only_rank_zero_writes_the_outputs(ddp_run):
    run_dir, out = ddp_run
    assert out.count("gensim study finished") == 1, "the summary must be printed by rank 0 only"
    assert sorted(p.name for p in run_dir.rglob("metrics.json")) == ["metrics.json"]
    assert len(list(run_dir.rglob("simulations.json"))) == 1


def test_a_rank_without_data_for_a_while_neither_hangs_nor_desynchronizes(tmp_path):
    """Rank 1 gets no simulation until the 10th (skewed routing), and its FIFO buffer runs dry
    while rank 0's still has data: the ranks wait for each other at the watermark, agree on every
    consuming draw, and stop together when one FIFO is used up."""
    run_dir = tmp_path / "run"
    overrides = [
        o
        for o in TINY_DDP
        if not o.startswith(("buffer", "trainer.max_steps", "launcher.n_parallel", "data.watermark"))
    ]
    run_study(
        run_dir,
        *overrides,
        "launcher.n_parallel=1",
        "buffer=fifo",
        "buffer.capacity=128",
        "data.watermark=64",
        "trainer.max_steps=100000",
        "data.routing._target_=skewed_routing.FirstToRankZero",
        "+data.routing.first=10",
    )
    m = json.loads((run_dir / "metrics.json").read_text())
    records = json.loads((run_dir / "simulations.json").read_text())
    train_ranks = [r["rank"] for r in records if r["purpose"] == "train"]  # the ledger is in creation order
    assert train_ranks[:10] == [0] * 10 and set(train_ranks[10:]) == {0, 1}
    assert m["samples_received_per_rank"][1] > 0
    assert m["steps_per_rank"][0] == m["steps_per_rank"][1] > 0
    # A FIFO uses every sample at most once: no rank trained on more samples than it received.
    assert m["train_samples_per_rank"][0] <= m["samples_received_per_rank"][0]
    assert m["train_samples_per_rank"][1] <= m["samples_received_per_rank"][1]


def test_both_ranks_checkpoint_in_the_background_and_the_study_resumes(ddp_run, tmp_path):
    from gensim.callbacks.checkpointing import CHECKPOINT_KEY, saved_steps

    run_dir, _ = ddp_run
    stream = run_dir / "checkpoints" / "stream"
    # Saves at 30, 60, 90, 120 (then the final one at 120): the two newest steps of each rank kept.
    assert saved_steps(stream, 0) == saved_steps(stream, 1) == [90, 120]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state[CHECKPOINT_KEY]["stream_step"] == 120 and state[CHECKPOINT_KEY]["world_size"] == 2
    # Continue the finished study (its budget is spent: each rank trains on its restored buffer).
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "gensim.train", f"resume={copy}", "trainer.max_steps=150"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    m = json.loads((copy / "metrics.json").read_text())
    assert m["steps_per_rank"] == [150, 150]
    assert (
        saved_steps(copy / "checkpoints" / "stream", 0) == saved_steps(copy / "checkpoints" / "stream", 1) == [120, 150]
    )


def test_a_weight_average_is_the_same_on_both_ranks_and_is_what_the_study_scores(tmp_path):
    """``callbacks=weight_average`` under DDP: each rank averages its own copy of the (identical)
    weights. The sharded validations gather both ranks' errors, so they equal a single-process
    evaluation of rank 0's checkpointed average only if both ranks held the same average."""
    run_dir = tmp_path / "run"
    run_study(run_dir, *TINY_DDP, "callbacks=weight_average")
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["steps_per_rank"] == [120, 120]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert {"current_model_state", "averaging_state"} <= ckpt.keys()
    single = evaluate_checkpoint(run_dir)
    assert math.isclose(m["val_rel_l2_mean"], single["mean"], rel_tol=1e-5), (m["val_rel_l2_mean"], single)
    rows = (run_dir / "logs" / "metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("val_rel_l2_mean")
    logged = [float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]]
    assert math.isclose(logged[-1], single["mean"], rel_tol=1e-5), (logged[-1], single["mean"])
