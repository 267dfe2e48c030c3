"""Off-line proxy of the reduced flow: what a training change does to the conditional mean's error.

The flow of ``model=flow`` (64 POD coefficients of the normalized field, a 128 x 3 gain-and-offset
velocity MLP, sinusoidal flow-time features, 4 midpoint steps, AdamW at 1e-3 with 200 warm-up
steps and a cosine to 1 %) trained off-line on 2 000 stochastic heat simulations (32 x 32, 10
steps, uniform random parameters, one realization each, as ``mean_regression.py``), without the
streaming pipeline. At every quarter of training it prints, over 16 random held-out vectors x
t = 0.5 and 1 and 2 048 samples each, ``bias2``: the squared error of the samples' mean against
the exact mean in units of the exact variance, averaged over pixels and conditions, less its
Monte Carlo part (1 / 2 048); and ``std_err``: the mean relative error of the pixel std.
Options (``key=value``): ``steps`` (12000), ``bs`` (128), ``seed`` (0), ``hidden`` (128),
``wd`` (AdamW weight decay, 0), ``law`` (flow-time law: ``uniform``, ``p0_F`` a fraction F of
every batch at s = 0, ``beta_B`` Beta(1, B)), ``cnoise`` (std of a Gaussian jitter of the
parameters, scaled to [-1, 1], in training; 0), ``stream`` (the 2 000 simulations become
available evenly over the first ``stream`` steps; 0: all from the start)::

    python reports/generative/flow_offline.py steps=12000 law=p0_0.25

The numbers it printed for this session are in ``flow_offline.json``.
"""

import math
import os
import sys
import tempfile
import time

import numpy as np
import torch
from flow_matching.solver import ODESolver
from flow_matching.utils import ModelWrapper
from offline_set import exact_moments, simulate

from gensim.models.components import MLP, ReducedBasis
from gensim.models.flow import FlowTimeEmbedding
from gensim.simulations import StochasticHeat

torch.set_num_threads(1)
args = dict(a.split("=") for a in sys.argv[1:])
seed, steps, bs = int(args.get("seed", 0)), int(args.get("steps", 12000)), int(args.get("bs", 128))
law, cnoise, stream = args.get("law", "uniform"), float(args.get("cnoise", 0)), int(args.get("stream", 0))
hidden, wd = int(args.get("hidden", 128)), float(args.get("wd", 0))
torch.manual_seed(seed)
sim = StochasticHeat(grid=32)
rng = np.random.default_rng(0)
lo, hi = np.array(sim.space.lower), np.array(sim.space.upper)
cache = os.path.join(tempfile.gettempdir(), "gensim_flow_offline.npz")
if not os.path.exists(cache):
    P, T, Y, hp = simulate(sim, rng)
    np.savez(cache, P=P, T=T, Y=Y, hp=hp)
d = np.load(cache)
P, T, Y = torch.tensor(d["P"], dtype=torch.float32), torch.tensor(d["T"], dtype=torch.float32), torch.tensor(d["Y"])
mu, sd = Y.mean(0), Y.std(0)
N = (Y - mu) / sd
basis = ReducedBasis(N.shape[1], 64)
basis.fit(N[torch.randperm(len(N), generator=torch.Generator().manual_seed(0))[:4096]])
C = basis.project(N)
plo, phi = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)


def cond(p, t):
    return torch.cat([2 * (p - plo) / (phi - plo) - 1, t[:, None]], 1)


X = cond(P, T)
ex_m, ex_s, hc = exact_moments(sim, d["hp"])
ex_m, ex_s = torch.tensor(ex_m), torch.tensor(ex_s)
hc = torch.tensor(hc, dtype=torch.float32)
HX = cond(hc[:, :4], hc[:, 4])
emb = FlowTimeEmbedding(8)
net = MLP(5 + 16 + 64, 128, hidden=[hidden] * 3)


def vel(x, s, c):
    g, h = net(torch.cat([c, emb(s), x], 1)).chunk(2, 1)
    return g * x + h


class Velocity(ModelWrapper):
    def forward(self, x, t, **extras):
        return vel(x, t.expand(x.shape[0]), extras["cond"])


solver = ODESolver(velocity_model=Velocity(None))
opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=wd)


def sched(k):
    return min(1, (k + 1) / 200) * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * k / steps)))


def draw_s(n):
    if law == "uniform":
        return torch.rand(n)
    if law.startswith("p0_"):  # a fraction of the batch at s = 0
        s = torch.rand(n)
        s[: int(round(float(law[3:]) * n))] = 0.0
        return s
    if law.startswith("beta_"):  # Beta(1, b): density proportional to (1 - s)^(b - 1)
        return torch.distributions.Beta(1.0, float(law[5:])).sample((n,))
    raise ValueError(law)


@torch.no_grad()
def evaluate():
    b2, se = 0.0, 0.0
    for i in range(len(HX)):
        z = torch.randn(2048, 64)
        grid = torch.linspace(0, 1, 5)
        x = solver.sample(
            x_init=z, step_size=None, method="midpoint", time_grid=grid, cond=HX[i : i + 1].expand(2048, -1)
        )
        f = basis.decode(x).double() * sd + mu
        b2 += float((((f.mean(0) - ex_m[i]) / ex_s[i]) ** 2).mean())
        se += float((f.std(0) / ex_s[i] - 1).abs().mean())
    n = len(HX)
    return b2 / n - 1 / 2048, se / n  # bias2 less its Monte Carlo part


t0 = time.time()
for k in range(steps):
    for g in opt.param_groups:
        g["lr"] = 1e-3 * sched(k)
    avail = len(X) if stream == 0 else min(len(X), 10 * max(1, (k + 1) * (len(X) // 10) // stream))
    idx = torch.randint(0, avail, (bs,))
    x1 = C[idx]
    x0 = torch.randn_like(x1)
    s = draw_s(bs)
    xs = (1 - s[:, None]) * x0 + s[:, None] * x1
    c = X[idx].clone()
    c[:, :4] += cnoise * torch.randn(bs, 4)  # drawn also at cnoise=0, as in the runs of flow_offline.json
    loss = ((vel(xs, s, c) - (x1 - x0)) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if (k + 1) % (steps // 4) == 0:
        b2, se = evaluate()
        print(sys.argv[1:], k + 1, f"bias2 {b2:.5f} std_err {se:.4f} {time.time() - t0:.0f}s", flush=True)
