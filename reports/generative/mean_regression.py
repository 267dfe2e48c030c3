"""Off-line: how well a least-squares MLP learns the stochastic heat field's conditional mean from 2 000 simulations.

2 000 simulations (32 x 32, 10 steps, uniform random parameters, one realization each) are
normalized per pixel and projected on 64 POD modes (fitted to 4 096 of the rows, as the flow's
basis); an MLP of (parameters scaled to [-1, 1], t) regresses the coefficients by least squares
on the field (AdamW, lr 1e-3, 200 warm-up steps, cosine to 1%, batch 128). Printed six times:
``bias2``, the squared error of the predicted mean against the exact mean in units of the exact
variance, averaged over pixels and 16 random held-out vectors x t = 0.5 and 1 (as
``diagnose.py``'s ``bias2``, without its Monte Carlo part)::

    python reports/generative/mean_regression.py STEPS HIDDEN WEIGHT_DECAY [BATCH]
    python reports/generative/mean_regression.py 6000 256 1.0   # 0.0016 at 6 000 steps
"""

import math
import sys
import time

import numpy as np
import torch
from offline_set import exact_moments, simulate

from gensim.models.components import MLP, ReducedBasis
from gensim.simulations import StochasticHeat

torch.set_num_threads(1)
torch.manual_seed(0)
sim = StochasticHeat(grid=32)
rng = np.random.default_rng(0)
lo, hi = np.array(sim.space.lower), np.array(sim.space.upper)
t0 = time.time()
P, T, Y, hp = simulate(sim, rng)
P = torch.tensor(P, dtype=torch.float32)
T = torch.tensor(T, dtype=torch.float32)
Y = torch.tensor(Y)
print("simulated", time.time() - t0)
mu, sd = Y.mean(0), Y.std(0)
N = (Y - mu) / sd
basis = ReducedBasis(N.shape[1], 64)
basis.fit(N[torch.randperm(len(N))[:4096]])
C = basis.project(N)
plo, phi = torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)


def cond(p, t):
    return torch.cat([2 * (p - plo) / (phi - plo) - 1, t[:, None]], 1)


X = cond(P, T)
ex_m, ex_s, hc = exact_moments(sim, hp)
ex_m, ex_s = torch.tensor(ex_m), torch.tensor(ex_s)
hc = torch.tensor(hc, dtype=torch.float32)
HX = cond(hc[:, :4], hc[:, 4])


def bias2(pred_c):
    pred = basis.decode(pred_c) * sd + mu
    return float((((pred.double() - ex_m) / ex_s) ** 2).mean())


# the exact mean projected on the basis: what the basis alone costs
print("projection of exact mean bias2", bias2(basis.project((ex_m.float() - mu) / sd)))
steps = int(sys.argv[1])
hidden = int(sys.argv[2])
wd = float(sys.argv[3])
bs = int(sys.argv[4]) if len(sys.argv) > 4 else 128
net = MLP(5, 64, hidden=[hidden] * 3)
opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=wd)


def sched(k):
    return min(1, (k + 1) / 200) * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * k / steps)))


w = basis.scale**2  # the field error in normalized units
t0 = time.time()
for k in range(steps):
    for g in opt.param_groups:
        g["lr"] = 1e-3 * sched(k)
    idx = torch.randint(0, len(X), (bs,))
    loss = (((net(X[idx]) - C[idx]) ** 2) * w).sum(1).mean() / N.shape[1]
    opt.zero_grad()
    loss.backward()
    opt.step()
    if (k + 1) % (steps // 6) == 0:
        with torch.no_grad():
            print(
                k + 1,
                f"loss {loss.item():.4f} heldout bias2 {bias2(net(HX)):.5f}",
                f"{time.time() - t0:.0f}s",
                flush=True,
            )
