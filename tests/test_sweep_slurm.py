"""Sweeps on SLURM: ``gensim-train -m hydra/launcher=submitit_slurm ...`` runs each study as a job.

The recipe of docs/clusters.md ("Sweeps of studies on SLURM"), on the test cluster: a sweep of two
tiny studies (seed=0,1) goes through Hydra's submitit launcher as one job array, each array task
runs one study, and each study's run directory gets its ``metrics.json``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from waiting import wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(360)]


def require(module: str):
    """Import ``module``; skip the test without it, except in CI, which installs it (.ci/run)."""
    if os.environ.get("CI", "").lower() == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)


# A study of a few seconds (tests/gensim/test_train.py's TINY scaled down to the decaying wave).
TINY = [
    "simulation=decaying_wave",
    "launcher.max_simulations=8",
    "launcher.n_parallel=1",
    "data.n_validation=2",
    "data.batch_size=16",
    "data.watermark=32",
    "data.steps_per_epoch=20",
    "trainer.max_steps=40",
    "buffer=reservoir",
    "buffer.capacity=512",
    "trainer.accelerator=cpu",
]
JOB_NAME = "gensim-sweep-test"


def _active_jobs(cluster) -> list[str]:
    """Ids of this sweep's jobs that are pending, running or completing on ``cluster``."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "--name", JOB_NAME, "-t", "PD,R,CG", "-o", "%i"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return out.split()


def test_sweep_of_two_studies_runs_as_slurm_jobs(slurm_cluster, tmp_path: Path) -> None:
    require("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "multirun"
    command = [
        sys.executable,
        "-m",
        "gensim.train",
        "-m",
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={slurm_cluster.partition}",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=5",
        f"hydra.launcher.name={JOB_NAME}",
        f"hydra.sweep.dir={sweep_dir}",
        "seed=0,1",
        *TINY,
    ]
    start = time.monotonic()
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=slurm_cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out, _ = proc.communicate(timeout=300)
        # submitit returns once each task has written its result, while SLURM may still be
        # ending the task (COMPLETING): let the jobs end before the clean-up below, which would
        # otherwise cancel a job that was about to complete (seen in CI).
        wait_until(lambda: not _active_jobs(slurm_cluster), timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        # Whatever happened, no job of this sweep is left on the cluster for the next tests.
        subprocess.run(["scancel", "--name", JOB_NAME], env=slurm_cluster.env, capture_output=True, timeout=30)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, out[-6000:] + "\n" + slurm_cluster.log_tails()

    # Hydra's submitit launcher submitted one array: its tasks' folders are <array id>_<task>.
    job_dirs = sorted(p for p in (sweep_dir / ".submitit").iterdir() if p.is_dir() and "_" in p.name)
    assert [p.name.split("_")[1] for p in job_dirs] == ["0", "1"], job_dirs
    array_id = job_dirs[0].name.split("_")[0]
    assert array_id.isdigit() and all(p.name.startswith(f"{array_id}_") for p in job_dirs)

    for task in (0, 1):
        job_id = f"{array_id}_{task}"
        # It was a real SLURM job of the cluster, and it completed.
        info = slurm_cluster.scontrol_job(job_id)
        assert info["JobState"] == "COMPLETED", (info, slurm_cluster.log_tails())
        assert info["ExitCode"] == "0:0" and info["Partition"] == slurm_cluster.partition
        assert info["JobName"] == JOB_NAME
        # The job ran the study in SLURM (submitit's log says which job it was).
        log = (sweep_dir / ".submitit" / job_id / f"{job_id}_0_log.out").read_text()
        assert f"JobEnvironment(job_id={job_id}" in log, log[-2000:]
        assert (sweep_dir / ".submitit" / job_id / f"{job_id}_0_result.pkl").is_file()

        # One study per sweep point, in the sweep's run directories 0/ and 1/.
        run_dir = sweep_dir / str(task)
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        assert f"seed={task}" in overrides
        metrics = json.loads((run_dir / "metrics.json").read_text())
        for key in ("val_rel_l2_mean", "val_rel_l2_p99", "trivial_rel_l2_mean"):
            assert math.isfinite(metrics[key]) and metrics[key] >= 0, (key, metrics[key])
        assert metrics["simulations_finished"] == 8 and metrics["simulations_failed"] == 0
    print(f"sweep of 2 studies as SLURM array {array_id}: {elapsed:.1f} s")
