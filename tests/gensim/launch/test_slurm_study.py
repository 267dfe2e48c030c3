"""Integration: a whole study whose simulations run as jobs of a real SLURM cluster.

``gensim-train launcher=slurm`` on the single-node cluster of ``tests/slurm/cluster.sh``
(fixture ``slurm_cluster``): the held-out and training simulations are submitted by the SLURM
executor as job arrays through submitit, stream their steps to the trainer, and the trainer
learns from them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from processes import stop_process_tree

pytestmark = pytest.mark.slurm

TINY = [
    "simulation=decaying_wave",
    "launcher.max_simulations=12",
    "launcher.n_parallel=4",
    # The watermark is every training sample (12 x 10 steps): training starts once every job ran.
    "data.n_validation=2",
    "data.batch_size=16",
    "data.watermark=120",
    "data.steps_per_epoch=50",
    "buffer=reservoir",
    "buffer.capacity=256",
    "model.net.hidden=[32,32]",
    "model.warmup_steps=10",
    "model.normalizer_warmup_batches=5",
    "trainer.max_steps=150",
    "trainer.accelerator=cpu",
]


def run_to_end(cmd: list[str], cluster, timeout_s: float = 300.0) -> str:
    """Run ``cmd`` against the cluster until it exits; its output. Fails with the daemons' logs."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**cluster.env, "OMP_NUM_THREADS": "1"}
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        out = f"(timed out after {timeout_s} s)\n" + cluster.log_tails()
    finally:
        stop_process_tree(proc)
    assert proc.returncode == 0, out[-6000:]
    return out


def test_a_study_trains_on_simulations_run_as_slurm_jobs(slurm_cluster, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "gensim.train",
        *TINY,
        "launcher=slurm",
        f"launcher.executor.partition={slurm_cluster.partition}",
        "launcher.executor.sims_per_job=2",
        "launcher.executor.time=5",
        "launcher.executor.mem_gb=1",
        f"hydra.run.dir={run_dir}",
    ]
    run_to_end(cmd, slurm_cluster)

    records = json.loads((run_dir / "simulations.json").read_text())
    assert len(records) == 12 + 2 and all(r["state"] == "done" for r in records), [
        (r["sim_id"], r["state"], r["error"]) for r in records if r["state"] != "done"
    ]
    # Every simulation ran inside a SLURM job that the cluster knows and reports completed.
    job_ids = {r["job_id"] for r in records}
    assert None not in job_ids
    states = {job_id: slurm_cluster.job_state(job_id) for job_id in job_ids}
    assert set(states.values()) == {"COMPLETED"}, states
    # sims_per_job=2: at most half as many jobs as simulations.
    assert len(job_ids) <= 7, job_ids

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["simulations_finished"] == 12 and metrics["simulations_failed"] == 0
    assert metrics["samples_received"] == 12 * 10 and metrics["heldout_samples_received"] == 2 * 10
    assert metrics["samples_rejected"] == 0
    assert math.isfinite(metrics["val_rel_l2_mean"])
    # 150 steps on this smooth analytic problem beat the training-mean predictor by far.
    assert metrics["val_rel_l2_mean"] < 0.5 * metrics["trivial_rel_l2_mean"], metrics


def test_a_ddp_trainer_under_srun_submits_its_simulations_as_slurm_jobs(slurm_cluster, tmp_path: Path) -> None:
    """The cluster layout of docs/clusters.md on one node: 2 DDP ranks started by ``srun``
    (Lightning's SLURM environment), rank 0 submitting the simulations as job arrays from inside
    the trainer's step, each simulation streaming to one rank."""
    if slurm_cluster.cpus < 3:
        pytest.skip(f"the node advertises {slurm_cluster.cpus} CPUs; this test needs 2 (trainer) + 1 (jobs)")
    run_dir = tmp_path / "run"
    cmd = [
        "srun",
        f"--partition={slurm_cluster.partition}",
        "--nodes=1",
        "--ntasks-per-node=2",
        "--cpus-per-task=1",
        "--time=5",
        sys.executable,
        "-m",
        "gensim.train",
        *TINY,
        "trainer=ddp",
        "trainer.devices=2",
        "launcher=slurm",
        f"launcher.executor.partition={slurm_cluster.partition}",
        "launcher.executor.sims_per_job=2",
        "launcher.executor.time=5",
        "launcher.executor.mem_gb=1",
        f"hydra.run.dir={run_dir}",
    ]
    out = run_to_end(cmd, slurm_cluster)
    assert "GLOBAL_RANK: 1" in out, "Lightning did not start the second rank from SLURM's environment"

    records = json.loads((run_dir / "simulations.json").read_text())
    assert all(r["state"] == "done" for r in records) and len(records) == 12 + 2
    assert {slurm_cluster.job_state(r["job_id"]) for r in records} == {"COMPLETED"}
    assert sorted(r["rank"] for r in records if r["purpose"] == "train") == [0] * 6 + [1] * 6
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps_per_rank"] == [150, 150]
    assert metrics["samples_received_per_rank"] == [6 * 10, 6 * 10]  # training samples; held-out apart
    assert metrics["val_rel_l2_mean"] < 0.5 * metrics["trivial_rel_l2_mean"], metrics
