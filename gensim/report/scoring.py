"""Scores of a report's methods on a study's held-out simulations, and their inference times."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate

from gensim.baselines import OfflineSurrogate, SimulationSet
from gensim.metrics import relative_l2, simulator_samples, summarize_errors
from gensim.report.studies import StudyData
from gensim.simulations.base import FieldSpec, Simulation

#: Name of the simulator's own realizations among the sources of :func:`law_samples`.
SIMULATOR = "simulator"


def score(pred: np.ndarray, sims: SimulationSet, fields: Sequence[FieldSpec], train_mean: np.ndarray) -> dict:
    """Held-out relative L2 (mean, p99) of a prediction and of the trivial predictor.

    Parameters
    ----------
    pred : ndarray, shape (S, T, D)
    sims : SimulationSet
        The truth, fields (S, T, D).
    fields : sequence of FieldSpec
    train_mean : ndarray, shape (D,)
        Mean training field (the trivial predictor).
    """
    true = torch.from_numpy(sims.fields.reshape(-1, sims.fields.shape[-1]))
    ours = summarize_errors(relative_l2(torch.from_numpy(pred.reshape(true.shape)), true, fields))
    trivial = summarize_errors(relative_l2(torch.from_numpy(train_mean).expand_as(true), true, fields))
    return {
        "val_rel_l2_mean": ours["mean"],
        "val_rel_l2_p99": ours["p99"],
        "trivial_rel_l2_mean": trivial["mean"],
        "trivial_rel_l2_p99": trivial["p99"],
    }


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def best_time(predict: Callable[[], np.ndarray], repeats: int = 3) -> tuple[np.ndarray, float]:
    """Run ``predict`` once to warm up, then ``repeats`` times; return its output and the best time (s).

    The best of a few runs, after a warm-up, measures the inference itself rather than first-call
    allocations or a busy neighbour on a shared machine.
    """
    out = predict()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        predict()
        best = min(best, time.perf_counter() - start)
    return out, best


#: Fitted attributes of the baselines worth recording in their metrics.json.
_ESTIMATOR_INFO = (
    "n_components_",
    "n_samples_seen_",
    "n_samples_fit_",
    "n_samples_hyper_",
    "subsampled_",
    "restarted_modes_",
    "collapsed_modes_",
    "degrees_",
)


def fit_baseline(
    estimator, layout, data: StudyData, run_dir: Path, cases: np.ndarray, step: int, eval_set: bool = False
) -> dict:
    """Fit a baseline on a study's training simulations and score it on its held-out ones.

    Writes ``cases.npz`` (the predictions of the figure cases at ``step``) to ``run_dir``.

    Returns
    -------
    dict
        The scores of :func:`score`, ``fit_s``, ``predict_s_per_field``, the training-set sizes and
        the estimator's fitted sizes (modes, Gaussian-process rows, degrees).
    """
    train, heldout = data.train, data.heldout
    X, Y = layout.xy(train)
    kwargs = {"eval_set": layout.xy(heldout)} if eval_set else {}
    start = time.perf_counter()
    estimator.fit(X, Y, **kwargs)
    fit_s = time.perf_counter() - start
    pred, predict_s = best_time(lambda: layout.predict(estimator, heldout))
    np.savez_compressed(
        run_dir / "cases.npz", sim_ids=heldout.sim_ids[cases], step=step, pred=pred[cases, step].astype(np.float32)
    )
    fields = data.simulation.fields
    metrics = score(pred, heldout, fields, train.fields.reshape(-1, train.fields.shape[-1]).mean(0, dtype=np.float64))
    info = {k: _jsonable(getattr(estimator, k)) for k in _ESTIMATOR_INFO if hasattr(estimator, k)}
    return (
        metrics
        | info
        | {
            "fit_s": fit_s,
            "predict_s_per_field": predict_s / heldout.fields[:, :, 0].size,
            "n_train_simulations": len(train),
            "n_train_rows": len(X),
            "layout": repr(layout),
        }
    )


def load_surrogate(data: StudyData) -> torch.nn.Module:
    """An on-line study's final surrogate, from its config and last checkpoint, in eval mode."""
    model = instantiate(data.config.model)(fields=data.simulation.fields, n_params=data.simulation.space.dim)
    ckpt = torch.load(data.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def evaluate_online(data: StudyData, run_dir: Path, cases: np.ndarray, step: int) -> dict:
    """Reload an on-line study's final surrogate, time it and re-score it on re-simulated held-out data.

    The recomputed error must equal the study's own (same simulations, same metric): it checks that
    the off-line baselines are scored on the held-out set the on-line surrogate was scored on.
    For a generative surrogate the prediction is its mean prediction.
    """
    model = load_surrogate(data)
    heldout = data.heldout
    params, t, fields = heldout.snapshots()
    params_t, t_t = torch.from_numpy(params.astype(np.float32)), torch.from_numpy(t.astype(np.float32))

    @torch.no_grad()
    def predict() -> np.ndarray:
        return torch.cat([model(p, tt) for p, tt in zip(params_t.split(1024), t_t.split(1024))]).numpy()

    pred, predict_s = best_time(predict)
    pred = pred.reshape(heldout.fields.shape)
    np.savez_compressed(
        run_dir / "cases.npz", sim_ids=heldout.sim_ids[cases], step=step, pred=pred[cases, step].astype(np.float32)
    )
    errors = summarize_errors(
        relative_l2(torch.from_numpy(pred.reshape(fields.shape)), torch.from_numpy(fields), data.simulation.fields)
    )
    return {"predict_s_per_field": predict_s / len(params), "val_rel_l2_mean_recomputed": errors["mean"]}


def offline_neural(data: StudyData, seed: int, run_dir: Path) -> OfflineSurrogate:
    """The study's own model and trainer, same steps and batch size, trained by epochs off-line."""
    cfg = data.config
    return OfflineSurrogate(
        model=instantiate(cfg.model),
        trainer=instantiate(cfg.trainer),
        fields=data.simulation.fields,
        max_steps=int(cfg.trainer.max_steps),
        batch_size=int(cfg.data.batch_size),
        val_every_n_steps=int(cfg.data.steps_per_epoch),
        seed=seed,
        log_dir=str(run_dir),
    )


def law_samples(
    simulation: Simulation, models: Mapping[str, torch.nn.Module], params: np.ndarray, step: int, n: int, seed: int
) -> tuple[dict[str, np.ndarray], float]:
    """Simulator realizations and model samples at one parameter vector and time step.

    Parameters
    ----------
    simulation : Simulation
    models : mapping of str to a generative surrogate
        Each has ``sample(params (1, P), t (1,), n) -> (1, n, D)``.
    params : ndarray, shape (P,)
    step : int
        Time step index.
    n : int
        Realizations and samples per source.
    seed : int
        Seed of the first simulator realization (they use consecutive seeds) and of the latents.

    Returns
    -------
    samples : dict of str to ndarray, shape (n, D)
        ``"simulator"`` first, then one entry per model, flattened in field order.
    t : float
        The time of ``step``.
    """
    reference, times = simulator_samples(simulation, params, [step], n, seed)
    samples = {SIMULATOR: reference[0].numpy()}
    t = times[:1]
    p = torch.as_tensor(np.asarray(params, dtype=np.float32))[None]
    for name, model in models.items():
        with torch.no_grad():
            drawn = model.sample(p, t, n, generator=torch.Generator().manual_seed(seed))
        samples[name] = drawn[0].numpy()
    return samples, float(times[0])
