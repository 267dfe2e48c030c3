"""How well a POD basis of the stream can represent held-out heat2d fields (32 x 32, 100 steps):
the relative L2 of the projection of 16 runs on the basis of 2048 rows of 128 other runs (random
parameters, seed 0), normalized per value as the surrogates normalize. python reports/models/pod_floor.py"""

import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from gensim.models.components import ReducedBasis

with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
    sim = instantiate(compose(config_name="train", overrides=["simulation.grid=32"]).simulation)
rng = np.random.default_rng(0)


def runs(n: int) -> np.ndarray:
    """Every step of n runs at random parameters, (n * n_steps, D) float32."""
    points = sim.space.from_unit(rng.random((n, sim.space.dim)))
    return np.stack(
        [
            np.concatenate([v.reshape(-1) for v in fields.values()])
            for p in points
            for _, _, fields in sim.run(p, seed=0)
        ]
    ).astype(np.float32)


train, heldout = runs(128), runs(16)
mean, std = train.mean(0), train.std(0)
std = np.maximum(std, 0.01 * std.mean())  # the output normalizer's floor
sample = torch.tensor((train[rng.choice(len(train), 2048, replace=False)] - mean) / std)
truth = torch.tensor(heldout)
for n_modes in (32, 64, 128):
    basis = ReducedBasis(sample.shape[1], n_modes)
    basis.fit(sample)
    z = (truth - torch.tensor(mean)) / torch.tensor(std)
    rebuilt = basis.decode(basis.project(z)) * torch.tensor(std) + torch.tensor(mean)
    rel = torch.linalg.norm(rebuilt - truth, dim=1) / torch.linalg.norm(truth, dim=1)
    print(f"{n_modes} modes: projection relative L2 mean {float(rel.mean()):.2e}, p99 {float(rel.quantile(0.99)):.2e}")
