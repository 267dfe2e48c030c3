"""Side-by-side step time of the deterministic, reduced-basis, trajectory and convolutional surrogates
(one process, 1 thread, 6 parameters as heat2d's, a 32 x 32 and a 64 x 64 grid field):
OMP_NUM_THREADS=1 python reports/models/step_time.py"""

import time
from functools import partial
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from gensim.models import DeterministicSurrogate, ReducedBasisSurrogate, TrajectorySurrogate
from gensim.models.components import MLP
from gensim.simulations.base import FieldSpec

torch.set_num_threads(1)
N_PARAMS = 6


def batches(d, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "params": torch.rand(128, N_PARAMS, generator=g) + 1,
            "t": torch.rand(128, generator=g) + 0.01,
            "fields": torch.randn(128, d, generator=g),
            "sim_id": torch.randint(10**6, (128,), generator=g),
            "step": torch.zeros(128, dtype=torch.int64),
        }
        for _ in range(n)
    ]


def fit_time(make, data, steps):
    model = make()
    tr = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    t0 = time.perf_counter()
    tr.fit(model, DataLoader(data[:steps], batch_size=None))
    return time.perf_counter() - t0


net = partial(MLP, hidden=(256, 256, 256))
time_net = partial(MLP, hidden=(64, 64))
times = ("t", "log_t")
#: The convolutional surrogate as conf/model/conv.yaml builds it (its time features are [t, log_t]).
conv = instantiate(OmegaConf.load(Path(__file__).parents[2] / "conf" / "model" / "conv.yaml"))
for side in (32, 64):
    d = side * side
    fields = [FieldSpec("u", (side, side), "float32")]
    makers = {
        "deterministic": lambda fields=fields: DeterministicSurrogate(fields, N_PARAMS, net, time_features=times),
        "pod": lambda fields=fields: ReducedBasisSurrogate(fields, N_PARAMS, net, n_modes=64, time_features=times),
        "trajectory": lambda fields=fields: TrajectorySurrogate(
            fields, N_PARAMS, net, time_net, time_features=times, rank=256, param_linear=True, n_modes=64
        ),
        "conv": lambda fields=fields: conv(fields=fields, n_params=N_PARAMS),
    }
    data = batches(d, 600)
    per = {k: [] for k in makers}
    for _rep in range(1):
        for name, make in makers.items():
            per[name].append((fit_time(make, data, 400) - fit_time(make, data, 100)) / 300)
    print(
        d,
        {k: [round(1e3 * v, 2) for v in vs] for k, vs in per.items()},
        "ratio det/pod",
        round(sum(per["deterministic"]) / sum(per["pod"]), 2),
        "det/trajectory",
        round(sum(per["deterministic"]) / sum(per["trajectory"]), 2),
        "det/conv",
        round(sum(per["deterministic"]) / sum(per["conv"]), 2),
        flush=True,
    )
