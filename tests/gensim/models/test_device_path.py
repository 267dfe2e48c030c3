"""The GPU data path, checked on a CPU: which batch entries go to the device, how they are copied,
and bf16 mixed precision with float64 normalizers."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from gensim.models import DeterministicSurrogate
from gensim.models.components import MLP
from gensim.models.generative import standard_normal
from gensim.simulations import DecayingWave

SIM = DecayingWave(size=8, n_steps=5)


def tiny_model() -> DeterministicSurrogate:
    torch.manual_seed(0)
    return DeterministicSurrogate(
        SIM.fields, 2, net=partial(MLP, hidden=(16,)), warmup_steps=2, normalizer_warmup_batches=2
    )


def stream_batch(n: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """A training batch as the replay buffer gives it, importance weights included."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "params": torch.rand(n, 2, generator=gen) + torch.tensor([1.0, 0.1]),
        "t": torch.rand(n, generator=gen),
        "fields": torch.rand(n, 8, generator=gen) + 0.5,
        "weight": torch.rand(n, generator=gen) + 0.5,
        "sim_id": torch.randint(0, 4, (n,), generator=gen),
        "step": torch.randint(0, 5, (n,), generator=gen),
    }


def test_only_the_model_inputs_go_to_the_device():
    batch = stream_batch()
    # The meta device stands in for a GPU: a real move, without one.
    moved = tiny_model().transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert {k for k, v in moved.items() if v.device.type == "meta"} == {"params", "t", "fields", "weight"}
    assert moved["sim_id"] is batch["sim_id"] and moved["step"] is batch["step"]  # left on the host


def test_pinned_sources_are_copied_without_blocking(monkeypatch):
    calls: dict[int, bool] = {}
    to = torch.Tensor.to

    def spy(self, *args, **kwargs):
        calls[id(self)] = kwargs.get("non_blocking", False)
        return to(self, *args, **kwargs)

    batch = stream_batch()
    model = tiny_model()
    monkeypatch.setattr(torch.Tensor, "to", spy)
    model.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert set(calls.values()) == {False}  # pageable memory: an asynchronous copy is not possible
    calls.clear()
    # Pinning needs a GPU; stand in with every tensor reporting pinned memory.
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self: True)
    model.transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert calls == {id(batch[k]): True for k in ("params", "t", "fields", "weight")}


def test_other_batches_move_as_lightning_moves_them():
    params, t = torch.zeros(3, 2), torch.zeros(3)
    moved = tiny_model().transfer_batch_to_device((params, t), torch.device("meta"), 0)
    assert all(x.device.type == "meta" for x in moved)


def test_bf16_mixed_precision_trains_and_validates_on_cpu(tmp_path):
    torch.manual_seed(0)
    batches = [stream_batch(seed=k) for k in range(6)]
    model = tiny_model()
    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        max_steps=6,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    loader = DataLoader(batches, batch_size=None)
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=DataLoader(batches[:2], batch_size=None))
    assert trainer.global_step == 6
    # The normalizers learned in float64 under autocast and froze; the network stayed float32.
    assert model.out_norm.frozen and model.out_norm.mean.dtype == torch.float64
    assert next(model.decoder.parameters()).dtype == torch.float32
    assert np.isfinite(float(trainer.callback_metrics["train_loss"]))
    assert np.isfinite(float(trainer.callback_metrics["val_rel_l2_mean"]))


def test_seeded_generative_draws_do_not_depend_on_the_models_device():
    host = standard_normal((3, 4), torch.zeros(0), torch.Generator().manual_seed(7))
    assert torch.equal(host, torch.randn(3, 4, generator=torch.Generator().manual_seed(7)))
    # A host generator cannot draw on a GPU: the draws are made on the host, then copied.
    moved = standard_normal((3, 4), torch.zeros(0, device="meta"), torch.Generator().manual_seed(7))
    assert moved.device.type == "meta" and moved.shape == (3, 4)
