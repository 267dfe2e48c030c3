"""Simulations per second through the local and the SLURM executors (issue 11): a benchmark, not a test.

The same tiny study runs through :class:`gensim.launch.Launcher` with each executor, side by side
in one run and interleaved (local, SLURM, SLURM in groups, then again), so that every variant
sees the same machine: ``--n`` training simulations of the analytic ``DecayingWave`` (a 32-point
field, 10 steps: the simulation itself costs microseconds, so what is measured is the
executor's overhead), ``--n-parallel`` in flight, streaming to one real receiver in this process.

Measured per variant, in wall seconds (what a study waits for): from ``launcher.start`` to the
first simulation done (start-up latency) and to the last (``exhausted``); simulations/s is
``n`` over the latter.

The SLURM variants need a cluster: ``SLURM_CONF`` in the environment (e.g. the single-node test
cluster of ``tests/slurm/cluster.sh``, whose node is this machine, so that jobs reach the
receiver on loopback) and ``--partition``. Without one only the local executor is measured.

    SLURM_CONF=/tmp/c/slurm.conf python reports/scaleout/executors.py --partition gensim
    # writes executors.json and executors.md here
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gensim.launch import Launcher, LocalExecutor, SimulationRecord, SlurmExecutor
from gensim.simulations import DecayingWave
from gensim.transport.receiver import Receiver
from sampling import Sobol

HERE = Path(__file__).resolve().parent
SIMULATION = {"_target_": "gensim.simulations.DecayingWave", "size": 32, "n_steps": 10}


class _Router:
    """One receiver, every sample dropped: the benchmark counts simulations, not data."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def assign(self, record: SimulationRecord) -> str:
        self.receiver.register(record.sim_id, np.asarray(record.params), lambda sample: None)
        record.rank = 0
        return self.receiver.address


def run_variant(executor, n: int, n_parallel: int, work: Path, timeout_s: float) -> dict:
    """Wall time of ``n`` simulations through ``executor``; raises if the study fails."""
    token = os.urandom(16)
    sim = DecayingWave(size=SIMULATION["size"], n_steps=SIMULATION["n_steps"])
    receiver = Receiver(sim.fields, token=token).start()
    launcher = Launcher(SIMULATION, executor, n_parallel=n_parallel, max_simulations=n, log_dir=str(work))
    first = None
    try:
        start = time.perf_counter()
        launcher.start(_Router(receiver), Sobol(sim.space, seed=0), token)
        while not launcher.exhausted:
            if first is None and launcher.counts("train")["done"] >= 1:
                first = time.perf_counter() - start
            if time.perf_counter() - start > timeout_s:
                raise TimeoutError(f"{n} simulations took over {timeout_s} s: {launcher.counts()}")
            time.sleep(0.02)
        wall = time.perf_counter() - start
        counts = launcher.counts("train")
        if launcher.error or counts["done"] != n:
            raise RuntimeError(f"the study failed: {launcher.error} {counts}")
        jobs = sorted({r.job_id for r in launcher.ledger.records.values() if r.job_id})
    finally:
        launcher.shutdown()
        receiver.stop()
    return {
        "wall_s": round(wall, 3),
        "first_done_s": round(first or wall, 3),
        "simulations_per_s": round(n / wall, 3),
        "slurm_jobs": len(jobs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="simulations per variant and repeat")
    parser.add_argument("--n-parallel", type=int, default=4, help="launcher.n_parallel")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--partition", default=None, help="SLURM partition (needs SLURM_CONF)")
    parser.add_argument("--sims-per-job", type=int, default=4, help="group size of the grouped SLURM variant")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args()

    variants = {"local": lambda: LocalExecutor()}
    slurm = bool(os.environ.get("SLURM_CONF")) and shutil.which("sbatch") is not None
    if slurm:
        for k in (1, args.sims_per_job):
            variants[f"slurm, {k} sim/job"] = lambda k=k: SlurmExecutor(
                partition=args.partition, time=10, mem_gb=0.5, sims_per_job=k
            )
    else:
        print("no SLURM_CONF or no sbatch: measuring the local executor only", file=sys.stderr)

    load_before = os.getloadavg()
    results: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="gensim-executors-") as tmp:
        for r in range(args.repeats):
            for name, make in variants.items():
                work = Path(tmp) / f"{name.replace(' ', '').replace(',', '-').replace('/', '')}-{r}"
                res = run_variant(make(), args.n, args.n_parallel, work, args.timeout_s)
                print(f"round {r}: {name:>18}: {res}", file=sys.stderr)
                results[name].append(res)
    load_after = os.getloadavg()

    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError:
            return "not installed"

    import submitit

    summary = {
        name: {
            "simulations_per_s_median": round(float(np.median([x["simulations_per_s"] for x in runs])), 3),
            "first_done_s_median": round(float(np.median([x["first_done_s"] for x in runs])), 3),
            "runs": runs,
        }
        for name, runs in results.items()
    }
    out = {
        "command": "python reports/scaleout/executors.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "submitit": submitit.__version__,
            "slurm": version(["sbatch", "--version"]) if slurm else None,
            "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "simulation": SIMULATION,
        "n_simulations": args.n,
        "n_parallel": args.n_parallel,
        "repeats": args.repeats,
        "results": summary,
    }
    (HERE / "executors.json").write_text(json.dumps(out, indent=1) + "\n")

    rows = "\n".join(
        f"| {name} | {s['simulations_per_s_median']:.2f} | {s['first_done_s_median']:.1f} | "
        f"{', '.join(format(x['wall_s'], '.1f') for x in s['runs'])} | {s['runs'][0]['slurm_jobs']} |"
        for name, s in summary.items()
    )
    m = out["machine"]
    (HERE / "executors.md").write_text(f"""# Simulations/s through the local and SLURM executors

`{out["command"]}` ({args.n} simulations of `DecayingWave` (32 points, 10 steps) per variant and
round, `n_parallel={args.n_parallel}`, {args.repeats} interleaved rounds; wall time from
`launcher.start` to `exhausted`; medians over rounds; raw numbers in `executors.json`).

Machine: {m["cpus"]} CPUs, {m["platform"]}, Python {m["python"]}, submitit {m["submitit"]},
{m["slurm"] or "no SLURM"}. Shared with other jobs: 1-minute load average {m["load_average_1min_before_after"][0]}
before, {m["load_average_1min_before_after"][1]} after. The SLURM cluster is the single-node test
cluster (`tests/slurm/cluster.sh`) on this same machine, without accounting.

| executor | simulations/s | first done (s) | wall per round (s) | SLURM jobs per round |
|---|---|---|---|---|
{rows}

The simulation costs microseconds: these numbers are the executors' overheads. The local
executor pays one Python start-up per worker for the whole study; a SLURM job pays the
scheduler's dispatch, `srun`, and two Python start-ups (the submitit job and its worker
subprocess, which isolates the job from a crashing solver) per job, which `sims_per_job`
amortizes over a group. On a real cluster the jobs run on other nodes and no longer compete
with the trainer for these CPUs.
""")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
