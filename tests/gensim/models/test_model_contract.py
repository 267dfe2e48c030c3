"""The contract every surrogate of conf/model/ keeps, checked for each of them: it is built from its
yaml through Hydra, trains on streamed batches, ``forward(params, t)`` gives (B, D) fields in
physical units, a generative model's ``sample(params, t, n)`` gives (B, n, D), the training error
is measured beside the held-out one, and a Lightning checkpoint restores a model built afresh from
the same config to identical outputs. A new model file in conf/model/ is checked by adding it there."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from gensim.models.base import FieldSurrogate

CONF = Path(__file__).resolve().parents[3] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
#: Models with time features (``time_features`` in their yaml) are also checked with log t.
CASES = [(name, ()) for name in MODELS] + [
    (name, ("model.time_features=[t,log_t]",))
    for name in MODELS
    if "time_features:" in (CONF / "model" / f"{name}.yaml").read_text()
]
#: Small networks and a short warm-up: the contract, not the accuracy, is under test.
SMALL = ["model.net.hidden=[32]", "model.warmup_steps=2", "model.normalizer_warmup_batches=2"]
STEPS, BATCH = 6, 16


def build(name: str, overrides: tuple[str, ...] = ()):
    """The model of conf/model/<name>.yaml for a heat2d simulation on a 6 x 6 grid (D = 36)."""
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                f"model={name}",
                "simulation.grid=6",
                "simulation.n_steps=4",
                *SMALL,
                *(["model.n_modes=8"] if name in ("pod", "flow", "trajectory") else []),
                *overrides,
            ],
        )
    simulation = instantiate(cfg.simulation)
    return instantiate(cfg.model)(fields=simulation.fields, n_params=simulation.space.dim), simulation


def batches(simulation, n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Stream-like batches: parameters in the space, times of the run, smooth random fields (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    d, p = sum(f.size for f in simulation.fields), simulation.space.dim
    times = torch.tensor(simulation.times, dtype=torch.float32)
    out = []
    for _ in range(n):
        step = torch.randint(len(times), (BATCH,), generator=gen)
        params = torch.tensor(
            simulation.space.from_unit(torch.rand(BATCH, p, generator=gen).double().numpy()), dtype=torch.float32
        )
        fields = params[:, :1] * (1 + 0.1 * torch.randn(BATCH, d, generator=gen)) / (1 + times[step, None])
        out.append(
            {
                "params": params,
                "t": times[step],
                "fields": fields,
                "sim_id": torch.randint(10**6, (BATCH,), generator=gen),
                "step": step,
            }
        )
    return out


def fit(model, simulation, tmp_path: Path) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=STEPS,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
        limit_val_batches=0,
    )
    trainer.fit(model, DataLoader(batches(simulation, STEPS * 4, seed=0), batch_size=None))
    return trainer


@pytest.mark.parametrize(("name", "overrides"), CASES, ids=[" ".join((n, *o)) for n, o in CASES])
def test_model_contract(name, overrides, tmp_path, single_threaded):
    torch.manual_seed(0)
    model, simulation = build(name, overrides)
    assert model.n_cond == simulation.space.dim + len(model.time_features)
    if overrides:
        assert model.time_features == ("t", "log_t")
    assert isinstance(model, FieldSurrogate)
    trainer = fit(model, simulation, tmp_path)
    # Adam's fused kernel on the CPU (gensim.models.base.fused_adam): a sixth of a small model's step.
    assert trainer.optimizers and all(opt.defaults.get("fused") for opt in trainer.optimizers)
    d = sum(f.size for f in simulation.fields)
    probe = batches(simulation, 1, seed=1)[0]
    model.eval()
    with torch.no_grad():
        pred = model(probe["params"], probe["t"])
    assert pred.shape == (BATCH, d) and pred.dtype == torch.float32 and torch.isfinite(pred).all()
    if hasattr(model, "sample"):
        draws = model.sample(probe["params"], probe["t"], 3, generator=torch.Generator().manual_seed(0))
        assert draws.shape == (BATCH, 3, d) and torch.isfinite(draws).all()

    metrics = model.training_metrics()
    assert metrics["train_probe_rows"] == len(model.train_probe) > 0
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    # As a resumed study restores it: a model built from the same config, then the checkpoint's state.
    restored, _ = build(name, overrides)
    restored.load_state_dict(torch.load(path, weights_only=False)["state_dict"])
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored(probe["params"], probe["t"]), pred)
        if hasattr(model, "sample"):
            again = restored.sample(probe["params"], probe["t"], 3, generator=torch.Generator().manual_seed(0))
            assert torch.equal(again, draws)


class _Losses(L.Callback):
    """The training loss of every step, as the training step returned it."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step - 1] = float(outputs["loss"])


@pytest.mark.parametrize("name", ["deterministic", "pod", "cvae", "flow"])
def test_training_loss_is_logged_at_every_written_step_with_that_steps_value(name, tmp_path, single_threaded):
    """``FieldSurrogate.log_step`` logs only where Lightning writes (every ``log_every_n_steps``):
    the CSV must still hold the loss of each of those steps, and of no other step."""
    torch.manual_seed(0)
    model, simulation = build(name)
    losses = _Losses()
    trainer = L.Trainer(
        max_steps=23,
        log_every_n_steps=5,
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="logs", version=0),
        callbacks=[losses],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        limit_val_batches=0,
    )
    trainer.fit(model, DataLoader(batches(simulation, 23, seed=0), batch_size=None))
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train_loss")]
    assert [int(r["step"]) for r in rows] == [4, 9, 14, 19]
    for r in rows:
        assert float(r["train_loss"]) == pytest.approx(losses.losses[int(r["step"])], rel=1e-6)
