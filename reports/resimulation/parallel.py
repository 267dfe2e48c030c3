"""Side by side in one run: re-simulating 8 heat2d simulations (grid 192, 400 steps) serially
in-process, then through gensim.launch.resimulate.run_in_parallel with 1 and 2 local workers.

    python reports/resimulation/parallel.py

Results: reports/resimulation/parallel.md."""

import time

import numpy as np

from gensim.launch.executors import LocalExecutor
from gensim.launch.resimulate import run_in_parallel
from gensim.simulations import Heat2D

cfg = {"_target_": "gensim.simulations.Heat2D", "grid": 192, "n_steps": 400}
sim = Heat2D(grid=192, n_steps=400)
rng = np.random.default_rng(0)
params = sim.space.from_unit(rng.random((8, sim.space.dim)))
t = time.perf_counter()
for p in params:
    list(sim.run(p))
serial = time.perf_counter() - t
out = {}
for n in (1, 2):
    t = time.perf_counter()
    run_in_parallel(cfg, sim.fields, sim.n_steps, params, [None] * 8, LocalExecutor(), n)
    out[n] = time.perf_counter() - t
print(
    f"serial in-process {serial:.2f} s; 1 worker {out[1]:.2f} s; 2 workers {out[2]:.2f} s; speed-up 1->2 workers {out[1] / out[2]:.2f}x"
)
