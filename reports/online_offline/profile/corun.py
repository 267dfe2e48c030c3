"""How much two busy processes slow each other on this machine: the simulation and a training loop.

    OMP_NUM_THREADS=1 python reports/online_offline/profile/corun.py > corun.json

Times a PlateHeat(substeps=12) loop (ms per simulation) and a training loop shaped like the pod
model's (MLP 5+2 -> 256 x 3 -> 64 coefficients -> 882 values, batch 128, Adam; ms per step),
each alone, then both at once in two processes. No gensim transport: what is left is the
machine's own cost of running the two pipelines' work side by side (shared caches, memory
bandwidth, the host's scheduling of the virtual cores).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time

import numpy as np

SECONDS = 12.0


def simulate(seconds: float, out: mp.Queue) -> None:
    from gensim.simulations import PlateHeat

    sim = PlateHeat(substeps=12)
    rng = np.random.default_rng(0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in sim.run(sim.space.lower + rng.random(sim.space.dim) * (sim.space.upper - sim.space.lower)):
            pass
        n += 1
    out.put(("simulate_ms_per_sim", (time.perf_counter() - start) / n * 1e3))


def train(seconds: float, out: mp.Queue) -> None:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(7, 256),
        torch.nn.SiLU(),
        torch.nn.Linear(256, 256),
        torch.nn.SiLU(),
        torch.nn.Linear(256, 256),
        torch.nn.SiLU(),
        torch.nn.Linear(256, 64),
    )
    basis = torch.randn(64, 882) / 8
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.randn(4096, 7), torch.randn(4096, 882)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        idx = torch.randint(0, 4096, (128,))
        loss = ((net(x[idx]) @ basis - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += 1
    out.put(("train_ms_per_step", (time.perf_counter() - start) / n * 1e3))


def run(*targets) -> dict:
    """Run the targets in parallel processes; their rates, by name (a list when a name repeats)."""
    out = mp.Queue()
    procs = [mp.Process(target=t, args=(SECONDS, out)) for t in targets]
    for p in procs:
        p.start()
    result: dict = {}
    for _ in procs:
        name, value = out.get()
        result.setdefault(name, []).append(round(value, 2))
    for p in procs:
        p.join()
    return {k: v[0] if len(v) == 1 else v for k, v in result.items()}


if __name__ == "__main__":
    load = os.getloadavg()[0]
    result = {
        "command": "OMP_NUM_THREADS=1 python reports/online_offline/profile/corun.py",
        "seconds_each": SECONDS,
        "load_1min_before": round(load, 2),
        "simulate alone": run(simulate),
        "train alone": run(train),
        "both at once": run(simulate, train),
        "two simulation loops at once": run(simulate, simulate),
    }
    result["load_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=1))
