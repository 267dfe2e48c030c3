"""Time one update of the weight average (callbacks=weight_average) on the benchmark's model.

The plate_heat pod model of the benchmark (``model.param_linear=true``), one thread:
``torch.optim.swa_utils.AveragedModel.update_parameters`` with the exponential average of
:class:`gensim.callbacks.WeightAverage`, the call the callback makes after every optimizer step.

    OMP_NUM_THREADS=1 python reports/online_offline/profile/average_cost.py
"""

from __future__ import annotations

import time

from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def main(n: int = 500) -> None:
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["model=pod", "simulation=plate_heat", "model.param_linear=true"])
    simulation = instantiate(cfg.simulation)
    model = instantiate(cfg.model)(fields=simulation.fields, n_params=simulation.space.dim)
    average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.99), use_buffers=False)
    for _ in range(5):  # the first update copies
        average.update_parameters(model)
    start = time.perf_counter()
    for _ in range(n):
        average.update_parameters(model)
    per_update_ms = (time.perf_counter() - start) / n * 1e3
    weights = sum(p.numel() for p in model.parameters())
    print(f"{weights} weights: {per_update_ms:.3f} ms per update (mean of {n})")


if __name__ == "__main__":
    main()
