"""Fixtures shared by every test folder.

``slurm_cluster``: a real single-node SLURM cluster (``tests/slurm/cluster.sh``) for the tests
marked ``slurm``. It is skipped where SLURM is not installed, except under ``CI=true``, where it
fails: CI installs ``slurm-wlm`` and ``munge`` (``.ci/run``) and must run these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SLURM_SCRIPT = Path(__file__).parent / "slurm" / "cluster.sh"
SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "srun")
# Debian installs the daemons in /usr/sbin, which a non-login PATH may lack.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


@dataclass(frozen=True)
class SlurmCluster:
    """A running single-node SLURM cluster, private to this test session.

    Attributes
    ----------
    partition : str
        The partition to submit to (the node's only one, also the default).
    conf : Path
        Its ``slurm.conf``; clients find the cluster through ``SLURM_CONF=conf``.
    directory : Path
        Configuration, state, logs and munge key of the cluster (a pytest temporary folder).
    env : dict[str, str]
        ``os.environ`` plus what SLURM clients need (``SLURM_CONF``), for subprocesses.
    cpus : int
        CPUs the node advertises: at least 4, more than this machine may have (jobs asking for
        more than ``cpus`` in all stay pending).

    Notes
    -----
    Accounting is off (no slurmdbd), so ``sacct`` does not work: read a job's state with
    :meth:`job_state` (``scontrol show job``, which knows a finished job for ``MinJobAge`` = 300 s).
    While the fixture is active ``os.environ["SLURM_CONF"]`` points at this cluster too, so that
    ``submitit`` executors created in the test process submit to it.
    """

    partition: str
    conf: Path
    directory: Path
    env: dict[str, str] = field(repr=False)
    cpus: int = 1

    def scontrol_job(self, job_id: str | int) -> dict[str, str]:
        """``scontrol show job -o <id>`` as a dict of its ``Key=Value`` fields (e.g. ``JobState``)."""
        out = subprocess.run(
            ["scontrol", "show", "job", "-o", str(job_id)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        fields: dict[str, str] = {}
        for token in out.split():
            key, sep, value = token.partition("=")
            if sep and key not in fields:
                fields[key] = value
        return fields

    def job_state(self, job_id: str | int) -> str:
        """The job's state as the controller sees it: PENDING, RUNNING, COMPLETED, FAILED, ..."""
        return self.scontrol_job(job_id)["JobState"]

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of the daemons' logs, to attach to a failing assertion."""
        parts = []
        for log in sorted((self.directory / "log").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- {log.name} -----\n" + "\n".join(text))
        return "\n".join(parts)


def _missing_slurm() -> str | None:
    missing = [p for p in SLURM_PROGRAMS if shutil.which(p, path=_SEARCH_PATH) is None]
    if missing:
        return f"SLURM is not installed (missing {', '.join(missing)}): apt-get install -y slurm-wlm munge"
    if os.geteuid() != 0:
        return "the test SLURM cluster runs its daemons as root (SlurmUser=root); run the tests as root"
    return None


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Start a single-node SLURM cluster for the session; stop its daemons afterwards, always."""
    reason = _missing_slurm()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the SLURM tests: {reason}")
        pytest.skip(reason)

    directory = tmp_path_factory.mktemp("slurm")
    partition = "gensim"
    # The node advertises at least 4 CPUs (SlurmdParameters=config_overrides lets it exceed
    # nproc): a two-task job and a job it submits must fit at once on a 2-core CI machine, and
    # the tests' jobs are tiny. GENSIM_SLURM_CPUS overrides.
    cpus = os.environ.get("GENSIM_SLURM_CPUS") or str(max(4, os.cpu_count() or 1))
    script_env = {**os.environ, "PATH": _SEARCH_PATH, "GENSIM_SLURM_PARTITION": partition, "GENSIM_SLURM_CPUS": cpus}
    command = ["bash", str(SLURM_SCRIPT)]
    previous_conf = os.environ.get("SLURM_CONF")
    try:
        started = subprocess.run(
            [*command, "start", str(directory)], env=script_env, capture_output=True, text=True, timeout=180
        )
        if started.returncode != 0:
            pytest.fail(
                f"tests/slurm/cluster.sh start failed ({started.returncode}):\n{started.stdout}\n{started.stderr}"
            )
        conf = directory / "slurm.conf"
        advertised = int(
            subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%c"],
                capture_output=True,
                text=True,
                env={**script_env, "SLURM_CONF": str(conf)},
                timeout=30,
                check=True,
            ).stdout.split()[0]
        )
        os.environ["SLURM_CONF"] = str(conf)
        yield SlurmCluster(
            partition=partition,
            conf=conf,
            directory=directory,
            env={**os.environ, "PATH": _SEARCH_PATH, "SLURM_CONF": str(conf)},
            cpus=advertised,
        )
    finally:
        if previous_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous_conf
        stopped = subprocess.run(
            [*command, "stop", str(directory)], env=script_env, capture_output=True, text=True, timeout=120
        )
        if stopped.returncode != 0:
            print(f"tests/slurm/cluster.sh stop failed:\n{stopped.stdout}\n{stopped.stderr}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slurm`` start a SLURM cluster and jobs: slow too (``pytest -m 'not slow'`` skips them)."""
    for item in items:
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.slow)
