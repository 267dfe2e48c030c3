"""Models under a real 2-process gloo group: normalizer statistics merged across ranks before they
freeze, held-out metrics over the whole (sharded) set, the same numbers on every rank."""

from __future__ import annotations

import os
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from gloo_ranks import WORLD, run_ranks
from torch.utils.data import DataLoader

from gensim.metrics import relative_l2, summarize_errors
from gensim.models import DeterministicSurrogate
from gensim.models.components import MLP, RunningNormalizer
from gensim.simulations import DecayingWave

# slow: end to end (gensim-train, gensim-report or trainer ranks in processes); pytest -m 'not slow' skips it
pytestmark = pytest.mark.slow

# --- normalizer ----------------------------------------------------------------------------------

DIM, WARMUP = 3, 4


def rank_batches(rank: int) -> list[np.ndarray]:
    """Rank ``rank``'s batches, one per update plus one after the freeze: unequal sizes across
    ranks, an empty batch on rank 1 at the second update, and a huge post-freeze batch."""
    rng = np.random.default_rng(10 + rank)
    sizes = [(7, 3, 5, 6), (4, 0, 9, 2)][rank]
    batches = [rng.normal([1.0, -50.0, 1e3], [2.0, 0.5, 40.0], size=(n, DIM)) for n in sizes]
    return batches + [np.full((5, DIM), 1e9)]


def _normalizer_worker(rank: int) -> dict:
    norm = RunningNormalizer(DIM, warmup_batches=WARMUP)
    frozen_at = None
    for k, batch in enumerate(rank_batches(rank)):
        norm.update(torch.from_numpy(batch))
        if frozen_at is None and norm.frozen:
            frozen_at = k + 1
    return {"state": norm.state_dict(), "std": norm.std(), "frozen_at": frozen_at}


def test_normalizer_statistics_are_merged_across_ranks_and_identical(tmp_path):
    results = run_ranks(_normalizer_worker, tmp_path)
    first, second = results
    for key in ("count", "updates", "mean", "m2"):
        assert torch.equal(first["state"][key], second["state"][key]), key  # bit-identical
    assert first["frozen_at"] == second["frozen_at"] == WARMUP
    # Equal to one process's statistics of the concatenated warm-up data (the post-freeze batch
    # left out). Chan's merge is exact in real arithmetic; the merge order differs from numpy's
    # two-pass formulas, so the float64 round-off (~1e-16 per operation, tens of operations) is
    # far below the tolerance.
    data = np.concatenate([b for rank in range(WORLD) for b in rank_batches(rank)[:WARMUP]])
    assert first["state"]["count"].item() == len(data)
    np.testing.assert_allclose(first["state"]["mean"].numpy(), data.mean(0), rtol=1e-12)
    np.testing.assert_allclose(first["std"].numpy(), data.std(0, ddof=1), rtol=1e-10)


# --- held-out metrics -----------------------------------------------------------------------------

SIM = DecayingWave(size=8, n_steps=5)
N_HELDOUT = 40


def heldout_model() -> DeterministicSurrogate:
    """A deterministic surrogate with seeded weights and normalizers fitted to the held-out set,
    the same on every rank: the statistics are loaded, since an update inside a process group
    would merge both ranks' copies of the data."""
    torch.manual_seed(0)
    model = DeterministicSurrogate(SIM.fields, 2, net=partial(MLP, hidden=(16,)), normalizer_warmup_batches=1)
    data = heldout_set()
    for norm, x in ((model.in_norm, model.inputs(data)), (model.out_norm, data["fields"])):
        x = x.double()
        norm.load_state_dict(
            {
                "count": torch.tensor(float(len(x)), dtype=torch.float64),
                "updates": torch.tensor(1),
                "mean": x.mean(0),
                "m2": ((x - x.mean(0)) ** 2).sum(0),
            }
        )
    return model.eval()


def heldout_set() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return {
        "params": torch.rand(N_HELDOUT, 2, generator=gen) + torch.tensor([1.0, 0.1]),
        "t": torch.rand(N_HELDOUT, generator=gen),
        "fields": torch.rand(N_HELDOUT, SIM.fields[0].size, generator=gen) + 0.5,
    }


def shard_batches(rows: range, batch_size: int = 16) -> DataLoader:
    """The held-out rows of one rank in batches; an empty shard gives one empty batch, so that
    the rank still runs its validation loop (Lightning skips a loader without batches)."""
    data = heldout_set()
    idx = torch.arange(rows.start, rows.stop)
    chunks = idx.split(batch_size) if len(idx) else [idx]
    return DataLoader([{k: v[chunk] for k, v in data.items()} for chunk in chunks], batch_size=None)


SPLITS = {"unequal": (range(0, 27), range(27, 40)), "empty": (range(0, 40), range(40, 40))}


def ddp_trainer(rank: int, **kwargs) -> L.Trainer:
    """A Lightning DDP trainer in an already spawned rank of the gloo group.

    Lightning reads the ranks from the environment (as under torchrun) and finds the process
    group initialized. The loaders are the ranks' own shards: no DistributedSampler on top.
    """
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), NODE_RANK="0")
    return L.Trainer(
        accelerator="cpu",
        devices=WORLD,
        strategy="ddp",
        use_distributed_sampler=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kwargs,
    )


def _validation_worker(rank: int) -> dict:
    trainer = ddp_trainer(rank)
    model = heldout_model()
    out = {}
    for name, shards in SPLITS.items():
        [metrics] = trainer.validate(model, dataloaders=shard_batches(shards[rank]), verbose=False)
        out[name] = metrics
    return out


def test_heldout_metrics_cover_the_whole_set_and_agree_across_ranks(tmp_path):
    results = run_ranks(_validation_worker, tmp_path)
    model, data = heldout_model(), heldout_set()
    with torch.no_grad():
        expected = summarize_errors(relative_l2(model(data["params"], data["t"]), data["fields"], SIM.fields))
    # Single process, through Lightning: the same numbers (no process group here).
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    [single] = trainer.validate(model, dataloaders=shard_batches(range(0, N_HELDOUT)), verbose=False)
    for name in SPLITS:
        assert results[0][name] == results[1][name], name  # logged without reduction: identical
        for metrics in (results[0][name], single):
            # Logged values are float32, and the forward pass runs in other batch sizes than the
            # reference's: agreement to float32 precision.
            assert metrics["val_rel_l2_mean"] == pytest.approx(expected["mean"], rel=1e-6)
            assert metrics["val_rel_l2_p99"] == pytest.approx(expected["p99"], rel=1e-6)


# --- a DDP fit: the normalizers learn from both ranks' streams and freeze together ----------------

FIT_STEPS, FIT_WARMUP = 5, 3


def train_batches(rank: int) -> list[dict[str, torch.Tensor]]:
    """Rank ``rank``'s stream: different data, and batch sizes, on each rank (seeded)."""
    gen = torch.Generator().manual_seed(20 + rank)
    size = (6, 10)[rank]
    return [
        {
            "params": torch.rand(size, 2, generator=gen) * (1 + rank) + torch.tensor([1.0, 0.1]),
            "t": torch.rand(size, generator=gen),
            "fields": torch.rand(size, SIM.fields[0].size, generator=gen) + rank,
            "sim_id": torch.full((size,), rank),
            "step": torch.zeros(size, dtype=torch.int64),
        }
        for _ in range(FIT_STEPS)
    ]


def _fit_worker(rank: int) -> dict:
    torch.manual_seed(0)
    model = DeterministicSurrogate(
        SIM.fields, 2, net=partial(MLP, hidden=(16,)), warmup_steps=2, normalizer_warmup_batches=FIT_WARMUP
    )
    trainer = ddp_trainer(rank, max_steps=FIT_STEPS, num_sanity_val_steps=0)
    trainer.fit(model, train_dataloaders=DataLoader(train_batches(rank), batch_size=None))
    return {
        "global_step": trainer.global_step,
        "frozen": model.out_norm.frozen and model.in_norm.frozen,
        "training": model.training_metrics(),
        "norms": {k: v for k, v in model.state_dict().items() if k.startswith(("in_norm.", "out_norm."))},
    }


def test_ddp_fit_freezes_the_same_normalizers_on_every_rank(tmp_path):
    first, second = run_ranks(_fit_worker, tmp_path)
    assert first["global_step"] == second["global_step"] == FIT_STEPS
    assert first["frozen"] and second["frozen"]
    # The training error covers both ranks' probes (one distinct row each: every row of a rank's
    # stream has its sim_id and step 0), the same numbers on both ranks.
    assert first["training"] == second["training"] and first["training"]["train_probe_rows"] == 2
    assert 0 < first["training"]["train_rel_l2_mean"] <= first["training"]["train_rel_l2_p99"]
    for key, value in first["norms"].items():
        assert torch.equal(value, second["norms"][key]), key
    # The statistics of both ranks' warm-up batches together; round-off as in the test above.
    fields = torch.cat([b["fields"] for rank in range(WORLD) for b in train_batches(rank)[:FIT_WARMUP]]).double()
    assert first["norms"]["out_norm.count"].item() == len(fields)
    torch.testing.assert_close(first["norms"]["out_norm.mean"], fields.mean(0), rtol=1e-12, atol=0)
