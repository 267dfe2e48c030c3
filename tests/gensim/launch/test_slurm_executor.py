"""The launcher with the SlurmExecutor, on the real single-node cluster of the ``slurm_cluster`` fixture.

Every simulation runs as a SLURM job-array element submitted through submitit; the jobs stream
to a receiver in this process over loopback (the single node is this machine).
"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from launcher_contract import LauncherContract, wait_until

from gensim.launch import Launcher, SlurmExecutor
from gensim.simulations import DecayingWave
from sampling import Sobol

pytest.importorskip("submitit")
pytestmark = pytest.mark.slurm


def sobol() -> Sobol:
    """A fresh sampler per study."""
    return Sobol(DecayingWave().space, seed=0)


def queued_job_ids(env: dict[str, str]) -> set[str]:
    """Ids of the jobs and array elements SLURM still knows as pending, running or completing."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "-t", "PD,R,CG", "-o", "%i"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return set(out.split())


class TestSlurmExecutorContract(LauncherContract):
    # A job costs the scheduler's dispatch plus two Python start-ups (the job, its worker).
    timeout_s = 120.0
    parallel = 2

    @pytest.fixture(autouse=True)
    def _cluster(self, slurm_cluster):
        self.cluster = slurm_cluster

    def make_executor(self, tmp_path: Path) -> SlurmExecutor:
        return SlurmExecutor(
            partition=self.cluster.partition,
            time=5,
            cpus_per_task=1,
            mem_gb=0.5,
            sims_per_job=1,
            folder=str(tmp_path / "slurm"),
        )

    def running_handles(self, launcher: Launcher) -> list[str]:
        return launcher.executor.job_ids()

    def assert_nothing_left(self, launcher: Launcher, started: list[str]) -> None:
        assert started, "no SLURM job was running before shutdown"
        assert wait_until(lambda: not set(started) & queued_job_ids(self.cluster.env), 60), (
            f"jobs {set(started) & queued_job_ids(self.cluster.env)} still queued or running after "
            f"shutdown\n{self.cluster.log_tails()}"
        )
        assert launcher.executor.job_ids() == []

    def check_record_origin(self, records) -> None:
        # Each simulation ran in a SLURM job that the controller saw complete.
        assert all(r.job_id and r.worker is None for r in records)
        for job_id in {r.job_id for r in records}:  # the result comes before SLURM's epilogue ends
            assert wait_until(lambda job_id=job_id: self.cluster.job_state(job_id) == "COMPLETED", 30), (
                self.cluster.job_state(job_id)
            )

    def check_output_logged(self, launcher: Launcher, text: str) -> None:
        assert text in "".join(p.read_text() for p in launcher.executor.folder.glob("*_log.err"))

    def check_broken_config_logs(self, launcher: Launcher) -> None:
        folder = launcher.executor.folder
        assert "NoSuchSolver" in "".join(p.read_text() for p in folder.glob("*_log.err"))

    def test_jobs_hold_the_token_in_a_private_folder_only(self, study):
        launcher = study.make(n_parallel=2, max_simulations=2)
        launcher.start(study.router, sobol(), study.token)
        assert wait_until(lambda: launcher.exhausted, self.timeout_s)
        folder = launcher.executor.folder
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        scripts = list(folder.glob("*.sh")) + list(folder.glob(".submission_file_*"))
        assert scripts, f"no sbatch script in {folder}: {sorted(p.name for p in folder.iterdir())}"
        secret = study.token.hex()
        assert not [p for p in scripts if secret in p.read_text()]
        # The payloads that held the token are gone with their jobs.
        assert not list(folder.glob("*_submitted.pkl"))

    def test_groups_of_simulations_share_a_job(self, study, tmp_path):
        grouped = SlurmExecutor(
            partition=self.cluster.partition, time=5, mem_gb=0.5, sims_per_job=2, folder=str(tmp_path / "grouped")
        )
        launcher = study.make(n_parallel=4, max_simulations=4, executor=grouped)
        launcher.start(study.router, sobol(), study.token)
        assert wait_until(lambda: launcher.exhausted, self.timeout_s)
        records = list(launcher.ledger.records.values())
        assert all(r.state == "done" for r in records)
        assert len({r.job_id for r in records}) == 2  # one array of two elements, two simulations each


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="sims_per_job must be >= 1, got 0"):
        SlurmExecutor(sims_per_job=0)
    with pytest.raises(ValueError, match="mem_gb must be positive"):
        SlurmExecutor(mem_gb=0)
    with pytest.raises(ValueError, match="time must be >= 3 minutes, got 2"):
        SlurmExecutor(time=2)  # SLURM could send the job its USR2 warning at its start
    with pytest.raises(ValueError, match="heartbeat_stale_s .* must be at least twice heartbeat_s"):
        SlurmExecutor(heartbeat_s=5, heartbeat_stale_s=6)
