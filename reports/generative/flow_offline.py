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
available evenly over the first ``stream`` steps; 0: all from the start), ``heldout`` (``random``:
16 uniform random vectors from the data set's generator; ``study``: the studies' held-out design,
16 points of ``sampling.Sobol`` with ``conf/data/streaming.yaml``'s seed), ``members`` (K flows from seeds
``seed`` to ``seed + K - 1`` on the same data; K > 1 also prints the bias2 of their averaged sample
means: how much of the error is the optimizer's rather than the data's; 1), ``per_condition``
(``1``: the last flow's bias2 at every held-out condition; 0), ``vweight`` (p: a variance network trained with the flow weighs each row by its predicted total
variance^-p, as the ``variance_weight_power`` option of ``model=flow`` did in commit 6dd1f14; 0),
``mean`` (``1``: a least-squares mean network, 256 x 3 with AdamW weight decay ``mwd`` (1.0), trained
beside the flow, which learns the law of the residual about it, as ``model.mean_weight_decay`` does;
also prints the mean network's own bias2; 0), ``odd`` (``1``, with ``mean``: the velocity made odd in
x, ``(v(x) - v(-x)) / 2``, so that the flow's law is symmetric about 0 and the samples' mean is the
mean network's; 0), ``meanin`` (the condition columns the mean network sees, of ``0,1,2,3,4`` =
log10 D, damping, noise, corr_length, t: ``0,1,4`` is the oracle that knows the mean depends on D,
damping and t only), ``glasso`` (a group-lasso penalty on the mean network's first-layer weights of
each input, which lets it learn to ignore inputs; 0)::

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
from sampling import Sobol

STUDY_HELDOUT_SEED = 20240917

torch.set_num_threads(1)
args = dict(a.split("=") for a in sys.argv[1:])
seed, steps, bs = int(args.get("seed", 0)), int(args.get("steps", 12000)), int(args.get("bs", 128))
law, cnoise, stream = args.get("law", "uniform"), float(args.get("cnoise", 0)), int(args.get("stream", 0))
hidden, wd = int(args.get("hidden", 128)), float(args.get("wd", 0))
heldout = args.get("heldout", "random")
vweight = float(args.get("vweight", 0))
members, per_condition = int(args.get("members", 1)), args.get("per_condition", "0") == "1"
with_mean, odd = args.get("mean", "0") == "1", args.get("odd", "0") == "1"
mwd, glasso = float(args.get("mwd", 1.0)), float(args.get("glasso", 0))
mean_inputs = [int(i) for i in args.get("meanin", "0,1,2,3,4").split(",")]

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
# The studies' held-out design: conf/data/streaming.yaml's validation_sampler.
hp = d["hp"] if heldout == "random" else Sobol(sim.space, seed=STUDY_HELDOUT_SEED).sample(16)
ex_m, ex_s, hc = exact_moments(sim, hp)
ex_m, ex_s = torch.tensor(ex_m), torch.tensor(ex_s)
hc = torch.tensor(hc, dtype=torch.float32)
HX = cond(hc[:, :4], hc[:, 4])


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


def sched(k):
    return min(1, (k + 1) / 200) * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * k / steps)))


class Flow(ModelWrapper):
    """The gain-and-offset velocity of ``model=flow`` on the 64 coefficients."""

    def __init__(self):
        super().__init__(None)
        self.emb = FlowTimeEmbedding(8)
        self.net = MLP(5 + 16 + 64, 128, hidden=[hidden] * 3)

    def velocity(self, x, s, c):
        if not odd:
            g, h = self.net(torch.cat([c, self.emb(s), x], 1)).chunk(2, 1)
            return g * x + h
        # (v(x) - v(-x)) / 2 in one evaluation of the net on [x; -x]
        n, ce = len(x), torch.cat([c, self.emb(s)], 1)
        g, h = self.net(torch.cat([torch.cat([ce, ce]), torch.cat([x, -x])], 1)).chunk(2, 1)
        return 0.5 * (x * (g[:n] + g[n:]) + h[:n] - h[n:])

    def forward(self, x, t, **extras):
        return self.velocity(x, t.expand(x.shape[0]), extras["cond"])


@torch.no_grad()
def sample_means(flow, mean_net=None):
    """Each held-out condition's sample mean minus the exact mean, in exact std units (32, 1024);
    the mean relative error of the pixel std (32,); the mean network's error as the first (or None)."""
    solver = ODESolver(velocity_model=flow)
    err, se, mean_err = [], [], []
    for i in range(len(HX)):
        z = torch.randn(2048, 64)
        x = solver.sample(
            x_init=z,
            step_size=None,
            method="midpoint",
            time_grid=torch.linspace(0, 1, 5),
            cond=HX[i : i + 1].expand(2048, -1),
        )
        if mean_net is not None:
            m = mean_net(HX[i : i + 1, mean_inputs])
            x = x + m
            mean_err.append(((basis.decode(m)[0].double() * sd + mu - ex_m[i]) / ex_s[i]).numpy())
        f = basis.decode(x).double() * sd + mu
        err.append(((f.mean(0) - ex_m[i]) / ex_s[i]).numpy())
        se.append(float((f.std(0) / ex_s[i] - 1).abs().mean()))
    return np.array(err), np.array(se), (np.array(mean_err) if mean_net is not None else None)


def train(member_seed, tag):
    """Train one flow from ``member_seed``; print its bias2 and std error at every quarter."""
    torch.manual_seed(member_seed)
    flow = Flow()
    # The variance network of vweight (only if used: the other runs draw as before).
    vnet = MLP(5, 128, hidden=[hidden] * 3) if vweight else None
    params = [*flow.parameters(), *(vnet.parameters() if vweight else [])]
    mean_net = MLP(len(mean_inputs), 64, hidden=[256] * 3) if with_mean else None
    groups = [{"params": params}] + (
        [{"params": list(mean_net.parameters()), "weight_decay": mwd}] if with_mean else []
    )
    opt = torch.optim.AdamW(groups, lr=1e-3, weight_decay=wd)
    first = mean_net.layers[0].weight if with_mean else None  # (256, inputs): a column per input
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
        mean_loss = 0.0
        if with_mean:  # least squares on the field, as model.mean_weight_decay; the flow on the residual
            m = mean_net(c[:, mean_inputs])
            mean_loss = (((m - x1) ** 2) * basis.scale**2).sum(1).mean() / N.shape[1]
            mean_loss = mean_loss + glasso * first.norm(dim=0).sum()
            x1 = x1 - m.detach()
            xs = (1 - s[:, None]) * x0 + s[:, None] * x1
        loss = (flow.velocity(xs, s, c) - (x1 - x0)) ** 2
        if vweight:  # as FlowMatchingSurrogate.variance_weights did in commit 6dd1f14
            m, lv = vnet(c).chunk(2, 1)
            w = torch.exp(-vweight * torch.logsumexp(lv.detach(), 1, keepdim=True))
            loss = (loss * w / w.mean()).mean() + (0.5 * lv + 0.5 * (x1 - m) ** 2 * torch.exp(-lv)).mean()
        else:
            loss = loss.mean()
        loss = loss + mean_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (k + 1) % (steps // 4) == 0:
            err, se, mean_err = sample_means(flow, mean_net)
            # bias2 less its Monte Carlo part (1 / 2 048)
            b2 = float((err**2).mean()) - 1 / 2048
            extra = ""
            if with_mean:  # the mean network's own error, and the norm of its weights of each input
                extra = f" mean_net_bias2 {float((mean_err**2).mean()):.5f} input_norms {[round(v, 3) for v in first.norm(dim=0).tolist()]}"
            print(tag, k + 1, f"bias2 {b2:.5f} std_err {se.mean():.4f}{extra} {time.time() - t0:.0f}s", flush=True)
    return err


errors = [train(seed + m, sys.argv[1:] + ([f"member {m}"] if members > 1 else [])) for m in range(members)]
if per_condition:  # the last member's bias2 at each held-out condition (parameters, t)
    for i, c in enumerate(hc.tolist()):
        print("condition", i, [round(v, 3) for v in c], f"bias2 {float((errors[-1][i] ** 2).mean()) - 1 / 2048:.5f}")
if members > 1:  # the members' sample means averaged: the Monte Carlo part is 1 / (2 048 K)
    avg = np.mean(errors, 0)
    print(sys.argv[1:], f"ensemble of {members}", f"bias2 {float((avg**2).mean()) - 1 / (2048 * members):.5f}")
