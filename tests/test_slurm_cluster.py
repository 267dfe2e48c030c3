"""The test SLURM cluster works: submitit runs a Python function as a real SLURM job."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm


def require(module: str):
    """Import ``module``; skip the test without it, except in CI, which installs it (.ci/run)."""
    if os.environ.get("CI", "").lower() == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)


FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def wait_for_job(job, cluster, timeout_s: float) -> str:
    """Wait until SLURM says the submitit ``job`` ended; return its final state.

    ``job.result()`` alone would wait forever for a job that died before writing its result
    (submitit cannot ask ``sacct`` here: the test cluster has no accounting), so poll the
    controller too, and fail with the job's and the daemons' logs.
    """
    deadline = time.monotonic() + timeout_s
    state = "UNKNOWN"
    while time.monotonic() < deadline:
        state = cluster.job_state(job.job_id)
        if state in FINISHED and (job.done() or state != "COMPLETED"):
            return state
        time.sleep(0.5)
    pytest.fail(f"job {job.job_id} still {state} after {timeout_s} s\n"
                f"stdout: {job.stdout()}\nstderr: {job.stderr()}\n{cluster.log_tails()}")


def test_submitit_runs_a_function_as_a_slurm_job(slurm_cluster, tmp_path: Path) -> None:
    submitit = require("submitit")

    def where_am_i(x: int) -> dict:
        import os
        import socket
        return {"double": 2 * x, "job_id": os.environ.get("SLURM_JOB_ID"),
                "partition": os.environ.get("SLURM_JOB_PARTITION"), "host": socket.gethostname()}

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j", cluster="slurm")
    executor.update_parameters(slurm_partition=slurm_cluster.partition, timeout_min=2,
                               cpus_per_task=1, mem_gb=1, name="gensim-smoke")
    start = time.monotonic()
    job = executor.submit(where_am_i, 21)
    assert job.job_id.isdigit(), job.job_id
    state = wait_for_job(job, slurm_cluster, timeout_s=90)
    assert state == "COMPLETED", f"{state}\n{job.stderr()}\n{slurm_cluster.log_tails()}"
    result = job.result()
    print(f"job {job.job_id} {state} in {time.monotonic() - start:.1f} s: {result}")
    assert result["double"] == 42
    # It ran inside that SLURM job, in the cluster's partition.
    assert result["job_id"] == job.job_id
    assert result["partition"] == slurm_cluster.partition
    info = slurm_cluster.scontrol_job(job.job_id)
    assert info["ExitCode"] == "0:0"
    assert info["Partition"] == slurm_cluster.partition
    assert info["JobName"] == "gensim-smoke"
    # submitit's per-job folder holds the job's logs and result.
    assert job.paths.folder == tmp_path / "submitit" / job.job_id
    assert job.paths.stdout.is_file() and job.paths.result_pickle.is_file()


# Run by the outer job's tasks: task 0 submits a one-task job through submitit from inside the
# outer job's two-task step, as rank 0 of a trainer launched by srun submits its simulations.
NESTED = '''
import json, os, sys
import submitit

if os.environ["SLURM_PROCID"] != "0":
    sys.exit(0)

def inner():
    import os
    return {k: os.environ.get(k) for k in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_CPUS_PER_TASK")}

executor = submitit.AutoExecutor(folder=sys.argv[1] + "/%j", cluster="slurm")
executor.update_parameters(slurm_partition=sys.argv[2], timeout_min=2, cpus_per_task=1, mem_gb=1,
                           name=sys.argv[3])
# A job submitted from a job inherits its SLURM_* variables; the outer step's SLURM_NTASKS=2
# then makes the inner job's srun fail ("More processors requested than permitted"). Hide them
# while submitting, but keep SLURM_CONF, which says where the cluster is.
conf = os.environ.get("SLURM_CONF")
with submitit.helpers.clean_env():
    if conf:
        os.environ["SLURM_CONF"] = conf
    job = executor.submit(inner)
print("INNER", json.dumps({"job_id": job.job_id, "result": job.result()}), flush=True)
'''


def test_a_job_submits_a_job_from_a_multi_task_step(slurm_cluster, tmp_path: Path) -> None:
    """Nested submission, as the trainer's rank 0 does with ``launcher=slurm`` under ``srun``."""
    require("submitit")
    if slurm_cluster.cpus < 3:
        pytest.skip(f"the node advertises {slurm_cluster.cpus} CPUs; this test needs 2 + 1")
    name = f"gensim-nested-{os.getpid()}"
    script = tmp_path / "nested.py"
    script.write_text(NESTED)
    out = tmp_path / "outer.out"
    batch = tmp_path / "outer.sbatch"
    batch.write_text(
        "#!/bin/bash\n"
        f"#SBATCH --job-name={name} --partition={slurm_cluster.partition}\n"
        "#SBATCH --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --mem=1G --time=3\n"
        f"#SBATCH --output={out}\n"
        "export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK\n"
        f"srun {sys.executable} {script} {tmp_path / 'inner'} {slurm_cluster.partition} {name}-inner\n")
    try:
        outer = subprocess.run(["sbatch", "--parsable", str(batch)], env=slurm_cluster.env,
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        deadline = time.monotonic() + 150
        state = "PENDING"
        while time.monotonic() < deadline:
            state = slurm_cluster.job_state(outer)
            if state in FINISHED:
                break
            time.sleep(1)
        log = out.read_text() if out.exists() else ""
        assert state == "COMPLETED", f"{state}\n{log[-3000:]}\n{slurm_cluster.log_tails()}"
        line = next(x for x in log.splitlines() if x.startswith("INNER "))
        inner = json.loads(line[len("INNER "):])
        assert inner["result"]["SLURM_JOB_ID"] == inner["job_id"] != outer
        assert inner["result"]["SLURM_NTASKS"] == "1"
        assert slurm_cluster.job_state(inner["job_id"]) == "COMPLETED"
    finally:
        for job_name in (name, f"{name}-inner"):
            subprocess.run(["scancel", "--name", job_name], env=slurm_cluster.env,
                           capture_output=True, timeout=30)
