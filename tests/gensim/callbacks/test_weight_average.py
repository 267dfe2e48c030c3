"""The weight average (gensim.callbacks.WeightAverage): its update, its restarts, its swaps."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from gensim.baselines import OfflineSurrogate
from gensim.callbacks import WeightAverage
from gensim.metrics import relative_l2
from gensim.simulations.base import FieldSpec


class Scalar(L.LightningModule):
    """One weight and a settable ``weights_version``, to drive the callback by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.weights_version = 0


def started(decay: float) -> tuple[WeightAverage, Scalar]:
    callback, module = WeightAverage(decay), Scalar()
    callback.setup(SimpleNamespace(), module, "fit")
    return callback, module


def step(callback: WeightAverage, module: Scalar, number: int, value: float) -> None:
    """Set the weight as an optimizer step would, then end optimizer step ``number`` (1-based)."""
    with torch.no_grad():
        module.w.fill_(value)
    callback.on_train_batch_end(SimpleNamespace(global_step=number), module, None, None, 0)


def averaged(callback: WeightAverage) -> float:
    return float(callback._average_model.module.w.detach())


def test_the_average_is_exponential_with_the_given_decay():
    callback, module = started(0.9)
    for number, value in enumerate([1.0, 2.0, 4.0], start=1):
        step(callback, module, number, value)
    # The first update copies; then a <- 0.9 a + 0.1 w.
    assert averaged(callback) == pytest.approx(0.9 * (0.9 * 1.0 + 0.1 * 2.0) + 0.1 * 4.0, rel=1e-6)


def test_the_average_restarts_at_the_current_weights_when_their_meaning_changes():
    callback, module = started(0.9)
    step(callback, module, 1, 1.0)
    step(callback, module, 2, 2.0)
    module.weights_version = 1  # e.g. a basis refit in the step that follows
    step(callback, module, 3, 5.0)
    assert averaged(callback) == pytest.approx(5.0)
    step(callback, module, 4, 6.0)  # and averages again from there
    assert averaged(callback) == pytest.approx(0.9 * 5.0 + 0.1 * 6.0, rel=1e-6)


def test_validation_sees_the_average_until_its_end_then_the_trained_weights_come_back():
    callback, module = started(0.5)
    step(callback, module, 1, 1.0)
    step(callback, module, 2, 3.0)  # average 2.0, weight 3.0
    trainer = SimpleNamespace()
    callback.on_validation_epoch_start(trainer, module)
    assert float(module.w.detach()) == pytest.approx(2.0)
    # The module's own epoch-end hook (which logs the training error too) runs after the
    # callbacks' one: the average must still be in place.
    callback.on_validation_epoch_end(trainer, module)
    assert float(module.w.detach()) == pytest.approx(2.0)
    callback.on_validation_end(trainer, module)
    assert float(module.w.detach()) == pytest.approx(3.0) and averaged(callback) == pytest.approx(2.0)


def test_a_decay_outside_zero_one_is_a_clear_error():
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        WeightAverage(1.0)


def pod_config(*overrides: str):
    """conf/model/pod.yaml and conf/trainer of conf/train.yaml, small."""
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        return compose(config_name="train", overrides=["model=pod", "model.net.hidden=[32,32]", *overrides])


def test_the_version_of_a_reduced_basis_model_changes_with_normalizer_updates_and_refits_only():
    cfg = pod_config("model.n_modes=4", "model.normalizer_warmup_batches=2")
    model = instantiate(cfg.model)(fields=[FieldSpec("u", (8,), "float32")], n_params=2)
    batch = {"params": torch.rand(16, 2), "t": torch.rand(16) + 0.1, "fields": torch.rand(16, 8)}
    versions = [model.weights_version]
    for _ in range(3):  # two normalizer updates, then frozen
        model.normalized_batch(batch)
        versions.append(model.weights_version)
    model.snapshots.offer(batch)
    model.refit_basis()
    versions.append(model.weights_version)
    assert versions == [0, 2, 4, 4, 5]


def test_offline_fit_with_the_average_logs_the_errors_of_the_model_it_returns(tmp_path):
    """The last validation (at the last step) scores the average, held-out and training errors
    alike, and the fitted module is that average."""
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(-1, 1, (600, 2)), rng.uniform(0.1, 1.0, 600)]).astype(np.float32)
    grid = np.linspace(0, 1, 16, dtype=np.float32)
    Y = np.sin(np.pi * (grid[None, :] + X[:, :1])) * np.exp(-X[:, 2:3]) + 0.5 * X[:, 1:2] * grid
    # Refits at steps 40 and 80: the average restarts there, and is in use at step 120.
    cfg = pod_config(
        "model.n_modes=6",
        "model.basis_rows=256",
        "model.refresh_every=40",
        "model.warmup_steps=5",
        "model.normalizer_warmup_batches=5",
    )
    estimator = OfflineSurrogate(
        model=instantiate(cfg.model),
        trainer=instantiate(cfg.trainer),
        fields=[FieldSpec("u", (16,), "float32")],
        max_steps=120,
        batch_size=32,
        val_every_n_steps=60,
        log_dir=str(tmp_path),
        callbacks=[WeightAverage(0.9)],
    )
    estimator.fit(X[:500], Y[:500], eval_set=(X[500:], Y[500:]))
    rows = [r.split(",") for r in (tmp_path / "logs" / "metrics.csv").read_text().splitlines()]
    header = rows[0]
    last = [r for r in rows[1:] if r[header.index("val_rel_l2_mean")]][-1]
    fields = estimator.module_.fields
    held_out = relative_l2(torch.from_numpy(estimator.predict(X[500:])), torch.from_numpy(Y[500:]), fields).mean()
    assert float(last[header.index("val_rel_l2_mean")]) == pytest.approx(float(held_out), rel=1e-5)
    trained = estimator.module_.training_metrics()["train_rel_l2_mean"]
    assert float(last[header.index("train_rel_l2_mean")]) == pytest.approx(trained, rel=1e-5)
