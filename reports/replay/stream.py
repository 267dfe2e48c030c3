"""Each policy streams 50x its capacity (issue 4): flat memory, and divergence along the stream.

Each policy runs in its own process (so that peak RSS is its own): a buffer of 1 000 heat2d
samples (64 x 64 grid, 16 KiB each) receives 50 000 samples from 500 real simulations, 8 at a
time and each in step order, as the receiver would hand them over, while a training loop draws a
batch of 128 after every 8 arrivals (and whenever a FIFO or Melissa buffer must be drained to
accept more). No model is trained, so this costs minutes, not the hours of a training study. The
time spent in ``add`` (per sample) and ``draw`` (per batch of 128, read included) is reported
too: the buffer's own cost, which the training loop pays on every step.

At 1x the capacity and then every 5x, the process's RSS is read and the buffer's divergence from
the target is measured as :class:`gensim.callbacks.BufferStats` does (energy distance and chi2
over its strata, which are not the distribution-aware policy's own). The table goes to
``stream.md`` (and ``stream.json``).

    python reports/replay/stream.py
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil
from benchmark import divergence_floor

HERE = Path(__file__).resolve().parent
POLICIES = ("fifo", "firo", "reservoir", "melissa", "distribution")
CAPACITY, STREAM_FACTOR, N_PARALLEL, BATCH = 1000, 50, 8, 128


def make_policy(name: str, simulation):
    from gensim import buffers

    if name == "distribution":
        return buffers.DistributionAware(buffers.Strata.from_simulation(simulation))
    return {
        "fifo": buffers.FIFO,
        "firo": buffers.FIRO,
        "reservoir": buffers.Reservoir,
        "melissa": buffers.MelissaReservoir,
    }[name]()


def arrivals(simulation, n_sims: int):
    """Samples of ``n_sims`` Sobol simulations, ``N_PARALLEL`` at a time, each in step order."""
    from gensim.simulations.base import Sample
    from sampling import Sobol

    # A power of 2 keeps the Sobol design balanced (and scipy quiet); the first n_sims are used.
    params = Sobol(simulation.space, seed=0).sample(2 ** math.ceil(math.log2(n_sims)))[:n_sims]
    first = min(N_PARALLEL, n_sims)
    running = {i: simulation.run(params[i]) for i in range(first)}
    next_sim = first
    while running:
        for sim_id in list(running):
            try:
                step, t, fields = next(running[sim_id])
            except StopIteration:
                del running[sim_id]
                if next_sim < n_sims:
                    running[next_sim] = simulation.run(params[next_sim])
                    next_sim += 1
                continue
            yield Sample(sim_id, step, t, params[sim_id], dict(fields))


def measure(policy_name: str) -> dict:
    """Stream 50x the capacity through one policy's buffer; RSS and divergence along the way."""
    from gensim.buffers import ReplayBuffer
    from gensim.callbacks import BufferStats
    from gensim.simulations import Heat2D

    simulation = Heat2D(grid=64, n_steps=100)
    divergence = BufferStats()
    divergence.bind(simulation)
    n_samples = STREAM_FACTOR * CAPACITY
    buffer = ReplayBuffer(
        CAPACITY, simulation.fields, simulation.space.dim, policy=make_policy(policy_name, simulation), seed=0
    )
    process = psutil.Process()
    batch = min(BATCH, buffer.capacity)
    rss, stats = {}, {}
    add_s = draw_s = 0.0
    n_draws = 0
    for i, sample in enumerate(arrivals(simulation, n_samples // simulation.n_steps), start=1):
        start = time.perf_counter()
        while not buffer.policy.ready(buffer.storage):  # FIFO full, or Melissa with nothing drawn
            buffer.draw(batch)
            n_draws += 1
        if i % N_PARALLEL == 0 and not buffer.draw_rule.consumes and len(buffer) >= batch:
            buffer.draw(batch)
            n_draws += 1
        middle = time.perf_counter()
        buffer.add(sample, timeout=0)
        add_s += time.perf_counter() - middle
        draw_s += middle - start
        if i % (5 * CAPACITY) == 0 or i == CAPACITY:
            rss[i // CAPACITY] = process.memory_info().rss
            stats[i // CAPACITY] = divergence.measure(buffer)
    ed = [s["energy_distance"] for s in stats.values()]
    chi = [s["chi_square"] for s in stats.values()]
    return {
        "policy": policy_name,
        "capacity": buffer.capacity,
        "storage_bytes": buffer.storage.nbytes,
        "streamed": buffer.stats()["n_seen"],
        "add_us": 1e6 * add_s / n_samples,
        "draw_us": 1e6 * draw_s / max(n_draws, 1),
        "rss_after_fill": rss[1],
        "rss_end": rss[STREAM_FACTOR],
        "rss_max_after_fill": max(rss.values()),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
        "rss_by_multiple": rss,
        "energy_distance_mean": sum(ed) / len(ed),
        "energy_distance_end": ed[-1],
        "chi_square_mean": sum(chi) / len(chi),
        "chi_square_end": chi[-1],
        "stats_by_multiple": stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", choices=POLICIES, help="measure one policy in this process (internal)")
    args = parser.parse_args()
    if args.policy:
        print(json.dumps(measure(args.policy)))
        return
    rows = []
    for name in POLICIES:
        out = subprocess.run([sys.executable, __file__, "--policy", name], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    mib = 2**20
    lines = [
        f"Buffer of {CAPACITY} heat2d samples (64 x 64), {STREAM_FACTOR}x its capacity streamed "
        f"({STREAM_FACTOR * CAPACITY} samples, {N_PARALLEL} simulations at a time, steps in order), "
        f"one process per policy; `python reports/replay/stream.py`.",
        "",
        "| policy | storage MiB | samples streamed | RSS at 1x MiB | max RSS 1x..50x MiB | RSS at 50x MiB "
        "| growth 1x->50x MiB | peak RSS MiB | energy dist. mean / end | chi2 strata mean / end "
        "| add µs/sample | draw µs/batch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['storage_bytes'] / mib:.1f} | {r['streamed']} | {r['rss_after_fill'] / mib:.1f} | "
            f"{r['rss_max_after_fill'] / mib:.1f} | {r['rss_end'] / mib:.1f} | "
            f"{(r['rss_end'] - r['rss_after_fill']) / mib:+.1f} | {r['peak_rss'] / mib:.1f} | "
            f"{r['energy_distance_mean']:.2e} / {r['energy_distance_end']:.2e} | "
            f"{r['chi_square_mean']:.3f} / {r['chi_square_end']:.3f} | {r['add_us']:.0f} | {r['draw_us']:.0f} |"
        )
    lines += [
        "",
        "Divergences: mean over the 11 measurements (1x, 5x, ..., 50x) and at 50x. " + divergence_floor(CAPACITY),
    ]
    (HERE / "stream.md").write_text("\n".join(lines) + "\n")
    (HERE / "stream.json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
