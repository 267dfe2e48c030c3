"""Generating a field vs simulating it, on the same CPU (issue 3): a benchmark, not a timed test.

For each problem (heat2d 64 x 64, 100 steps; the stochastic heat field 64 x 64, 10 steps) it
times, in this one process and on one thread each (``torch.set_num_threads(1)``; numpy's and
scipy's FFTs are single-threaded too), in CPU seconds (``time.process_time``: the machine is
shared, and wall time would also count other jobs' turns), alternating the two measurements so
that both see the same machine:

- the simulator: whole runs ``simulation.run(params, seed)``, several parameter vectors;
- the generator: ``model.sample(params, t, n)`` of the default cVAE, cGAN and flow-matching
  configs (``conf/model/cvae.yaml``, ``cgan.yaml``, ``flow.yaml``: the flow on 64 POD
  coefficients with its default sampler, 4 midpoint steps, 8 velocity evaluations), and the
  flow in field space as it was the default before (``flow_field``: ``model.space=field``, a
  512 x 3 velocity net, 8 midpoint steps), batched, 1 024 fields per call.

Generation cost does not depend on the weights' values, so the networks are untrained (their
normalizers see a few simulated fields). Three simulator costs are set beside one generated
field, because a surrogate gives the field at any (params, t) directly while a solver must
integrate from t = 0:

- *field at the final time*: a whole run;
- *field at a random emitted time*: on average (n_steps + 1) / 2 steps of a run;
- *amortized*: a whole run divided by its n_steps emitted fields (the solver's best case, when
  every step of a trajectory is wanted).

    python reports/generative/speed.py      # writes speed.md and speed.json here
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

HERE = Path(__file__).resolve().parent
BATCH = 1024
REPEATS = 15
#: name -> overrides: the default configs conf/model/<name>.yaml, and the field-space flow.
MODELS = {
    "cvae": ["model=cvae"],
    "cgan": ["model=cgan"],
    "flow": ["model=flow"],
    "flow_field": ["model=flow", "model.space=field", "model.net.hidden=[512,512,512]", "model.sampling_steps=8"],
}
PROBLEMS = {"heat2d": ["simulation=heat2d"], "stochastic_heat": ["simulation=stochastic_heat"]}


def cpu_seconds(fn) -> float:
    """CPU time of one call of ``fn()`` (this process, all threads)."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median CPU time of each function, measured in turn ``repeats`` times after a warm-up."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(cpu_seconds(fn))
    return {k: statistics.median(v) for k, v in times.items()}


@torch.no_grad()
def generate(model, params: torch.Tensor, t: torch.Tensor, gen: torch.Generator) -> None:
    """One batch of generated fields, one per (params, t) row."""
    model.sample(params, t, 1, gen)


def time_against_simulation(sim, models: dict, n_runs: int, repeats: int) -> dict[str, float]:
    """CPU seconds of one whole simulator run (``"run_s"``) and of one generated field of each model.

    The runs (``n_runs`` parameter vectors) and the models' batches of ``BATCH`` fields at random
    (params, t) rows are timed in turn, ``repeats`` times (see :func:`interleaved`).
    """
    rng = np.random.default_rng(0)
    params = sim.space.from_unit(rng.random((n_runs, sim.space.dim)))

    def simulate_all() -> None:
        for k, p in enumerate(params):
            for _ in sim.run(p, seed=k):
                pass

    p_t = torch.tensor(params[rng.integers(0, len(params), BATCH)], dtype=torch.float32)
    t_t = torch.tensor(sim.times[rng.integers(0, sim.n_steps, BATCH)], dtype=torch.float32)
    fns = {"simulate": simulate_all} | {
        name: partial(generate, m, p_t, t_t, torch.Generator().manual_seed(0)) for name, m in models.items()
    }
    timing = interleaved(fns, repeats)
    return {"run_s": timing["simulate"] / n_runs} | {name: timing[name] / BATCH for name in models}


def measure(problem: str, overrides: list[str]) -> dict:
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        cfg = {m: compose(config_name="train", overrides=[*overrides, *o]) for m, o in MODELS.items()}
    sim = instantiate(cfg["cvae"].simulation)
    centre = sim.space.from_unit(np.full((1, sim.space.dim), 0.5))
    fields = torch.tensor(np.stack([f[sim.fields[0].name].reshape(-1) for _, _, f in sim.run(centre[0], seed=0)]))
    models = {}
    for name, c in cfg.items():
        model = instantiate(c.model)(fields=sim.fields, n_params=sim.space.dim)
        for _ in range(model.in_norm.warmup_batches):  # fit and freeze the normalizers
            model.normalized_batch(
                {
                    "params": torch.tensor(centre, dtype=torch.float32).expand(len(fields), -1),
                    "t": torch.tensor(sim.times, dtype=torch.float32),
                    "fields": fields,
                }
            )
        models[name] = model.eval()
    timing = time_against_simulation(sim, models, 8, REPEATS)
    run_s = timing["run_s"]
    out = {"problem": problem, "grid": list(sim.fields[0].shape), "n_steps": sim.n_steps, "run_s": run_s}
    for name in cfg:
        field_s = timing[name]
        out[name] = {
            "field_s": field_s,
            "speedup_final_time": run_s / field_s,
            "speedup_random_time": run_s * (sim.n_steps + 1) / (2 * sim.n_steps) / field_s,
            "speedup_amortized": run_s / sim.n_steps / field_s,
        }
    return out


def main() -> None:
    torch.set_num_threads(1)
    results = [measure(name, overrides) for name, overrides in PROBLEMS.items()]
    meta = {
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "batch": BATCH,
        "repeats": REPEATS,
        "clock": "time.process_time (CPU seconds)",
        "note": "shared 2-core machine; medians of interleaved repeated calls",
    }
    (HERE / "speed.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = [
        "| problem | grid | steps | simulate one run (CPU ms) | model | generate one field, batched (CPU µs) |"
        " speed-up: field at final time | at a random time | amortized per emitted field |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for name in MODELS:
            g = r[name]
            grid = "x".join(map(str, r["grid"]))
            lines.append(
                f"| {r['problem']} | {grid} | {r['n_steps']} | {r['run_s'] * 1e3:.2f} "
                f"| {name} | {g['field_s'] * 1e6:.1f} | {g['speedup_final_time']:.0f}x "
                f"| {g['speedup_random_time']:.0f}x | {g['speedup_amortized']:.1f}x |"
            )
    text = (
        "# Generation vs simulation speed (same CPU, one thread each)\n\n"
        f"CPU time (`time.process_time`), medians of {REPEATS} interleaved repeats; batches of {BATCH} "
        "generated fields; untrained default networks (the cost does not depend on the weights); "
        "8 parameter vectors per simulator measurement. `flow`: 64 POD coefficients, 4 midpoint steps "
        "(the default); `flow_field`: the whole field, 8 midpoint steps. Produced by "
        "`python reports/generative/speed.py`.\n\n" + "\n".join(lines) + "\n"
    )
    (HERE / "speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
