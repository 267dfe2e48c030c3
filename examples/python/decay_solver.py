"""A stand-alone solver joined to a gensim study by 5 added lines (marked ``# gensim``).

It integrates ``du/dt = -k u`` from ``u(x, 0) = a sin(pi x)`` on ``size`` points of (0, 1), one
exact exponential step per time step, so ``u(x, t) = a exp(-k t) sin(pi x)`` (the field of
``gensim.simulations.DecayingWave``). Run it in a study with::

    gensim-train simulation=external \\
        'simulation.command="{python} examples/python/decay_solver.py"'

It reads its parameters ``a`` and ``k`` from the JSON file the launcher writes
(``GENSIM_PARAMS_FILE``) and streams to the address in ``GENSIM_ADDRESS``. Without the marked
lines it is the same solver, printing nothing.
"""

import argparse
import json
import os

import numpy as np

from gensim.client import Client  # gensim


def main(size: int = 16, n_steps: int = 10, t_final: float = 1.0) -> None:
    params = json.load(open(os.environ["GENSIM_PARAMS_FILE"]))["params"]  # gensim
    a, k = params["a"], params["k"]
    dt = t_final / n_steps
    u = a * np.sin(np.pi * (np.arange(size) + 0.5) / size)
    with Client.from_env() as client:  # gensim
        for step in range(n_steps):
            u = u * np.exp(-k * dt)
            client.send(step, (step + 1) * dt, {"u": u.astype(np.float32)})  # gensim
        client.end()  # gensim


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="du/dt = -k u, u(x, 0) = a sin(pi x)")
    parser.add_argument("--size", type=int, default=16, help="points per field")
    parser.add_argument("--n-steps", type=int, default=10, help="time steps")
    parser.add_argument("--t-final", type=float, default=1.0, help="time of the last step")
    args = parser.parse_args()
    main(args.size, args.n_steps, args.t_final)
