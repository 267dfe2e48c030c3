"""Off-line: the stochastic heat field's conditional mean by ridge regression on polynomial features.

The same 2 000 simulations, POD basis (64 modes) and held-out vectors as ``mean_regression.py``;
the 64 coefficients are regressed in closed form on every monomial of degree <= d of the
condition (the parameters scaled to [-1, 1] and 2 t - 1), with ridge penalty ``lam``. Printed:
``d``, the number of features, ``lam`` and ``bias2`` (the squared error of the predicted mean
against the exact mean in units of the exact variance, averaged over pixels and 16 held-out
vectors x t = 0.5 and 1)::

    python reports/generative/mean_ridge.py   # its printed numbers: mean_ridge.json

Every coefficient's estimate carries noise of about its variance times (features / effective
rows), and the noise sums over the 64 coefficients, most of which carry no mean: the closed
form spends its degrees of freedom where a weight-decayed MLP shrinks them.
"""

import itertools

import numpy as np
import torch
from offline_set import exact_moments, simulate

from gensim.models.components import ReducedBasis
from gensim.simulations import StochasticHeat

torch.set_num_threads(1)
torch.manual_seed(0)
sim = StochasticHeat(grid=32)
rng = np.random.default_rng(0)
lo, hi = np.array(sim.space.lower), np.array(sim.space.upper)
P, T, Y, hp = simulate(sim, rng)
P = torch.tensor(P, dtype=torch.float64)
T = torch.tensor(T, dtype=torch.float64)
Y = torch.tensor(Y, dtype=torch.float64)
mu, sd = Y.mean(0), Y.std(0)
N = ((Y - mu) / sd).float()
basis = ReducedBasis(N.shape[1], 64)
basis.fit(N[torch.randperm(len(N))[:4096]])
C = basis.project(N).double()
plo, phi = torch.tensor(lo), torch.tensor(hi)


def cond(p, t):
    return torch.cat([2 * (p - plo) / (phi - plo) - 1, (2 * t - 1)[:, None]], 1)


def features(x, degree):
    cols = [torch.ones(len(x), dtype=x.dtype)]
    for k in range(1, degree + 1):
        for idx in itertools.combinations_with_replacement(range(x.shape[1]), k):
            cols.append(torch.prod(x[:, list(idx)], 1))
    return torch.stack(cols, 1)


X = cond(P, T)
ex_m, ex_s, hc = (torch.tensor(a) for a in exact_moments(sim, hp))
HX = cond(hc[:, :4], hc[:, 4])


def bias2(coefficients):
    pred = basis.decode(coefficients.float()).double() * sd + mu
    return float((((pred - ex_m) / ex_s) ** 2).mean())


print("projection of the exact mean", bias2(basis.project(((ex_m - mu) / sd).float()).double()))
for degree in (1, 2, 3, 4, 5):
    F, HF = features(X, degree), features(HX, degree)
    for lam in (1e-6, 1e-2, 1.0, 10.0):
        beta = torch.linalg.solve(F.T @ F + lam * torch.eye(F.shape[1], dtype=F.dtype), F.T @ C)
        print(degree, F.shape[1], lam, f"{bias2(HF @ beta):.5f}", flush=True)
