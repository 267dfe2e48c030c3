"""The trajectory surrogate: a whole trajectory at once equals the per-time prediction, a basis refit
leaves the prediction unchanged with coefficients affine in the parameters, and the model learns."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from test_reduced_basis import assert_refit_keeps_prediction
from test_training_error import wave_batches
from torch.utils.data import DataLoader

from gensim.models import ReducedBasisSurrogate, TrajectorySurrogate
from gensim.models.components import MLP
from gensim.simulations import DecayingWave


def wave_model(sim: DecayingWave, param_linear: bool, **kwargs) -> TrajectorySurrogate:
    """A small trajectory surrogate of the decaying wave (2 parameters)."""
    options = {"n_modes": 4, "basis_rows": 256, "normalizer_warmup_batches": 1} | kwargs
    return TrajectorySurrogate(
        sim.fields,
        2,
        net=partial(MLP, hidden=(16,)),
        time_net=partial(MLP, hidden=(8,)),
        time_features=("t", "log_t"),
        rank=8,
        param_linear=param_linear,
        **options,
    )


def warmed(model, batch: dict[str, torch.Tensor]):
    """The model with its normalizers fed and its basis fitted on one batch."""
    model.on_train_batch_start(batch, 0)
    model.normalized_batch(batch)
    model.refit_basis()
    return model


@pytest.mark.parametrize("param_linear", [False, True])
def test_a_whole_trajectory_equals_the_prediction_at_each_of_its_times(param_linear):
    torch.manual_seed(0)
    sim = DecayingWave(size=8, n_steps=5)
    model = warmed(wave_model(sim, param_linear), wave_batches(sim, 64, 64, 1, seed=0)[0]).eval()
    params = torch.tensor(sim.space.from_unit(torch.rand(3, 2).double().numpy()), dtype=torch.float32)
    times = torch.tensor(sim.times, dtype=torch.float32)
    with torch.no_grad():
        whole = model.trajectory(params, times)
        each = torch.stack([model(params, t.expand(3)) for t in times], dim=1)
    assert whole.shape == (3, 5, 8)
    torch.testing.assert_close(whole, each, rtol=1e-5, atol=1e-5)


def test_a_refit_maps_every_group_of_the_output_layer_so_the_prediction_stays():
    """As the reduced-basis surrogate's test, with coefficients affine in the parameters: each of the
    n_params + 1 groups of outputs is rotated onto the new basis, the shift goes to the constant."""
    torch.manual_seed(0)
    sim = DecayingWave(size=8, n_steps=5)
    first, second = wave_batches(sim, 64, 64, 2, seed=0)
    # As many modes as field values: the new basis spans the old prediction.
    model = warmed(wave_model(sim, param_linear=True, n_modes=8, basis_rows=64), first)
    assert model.output_layer().out_features == 8 * 3
    assert_refit_keeps_prediction(model, second)


def test_learns_the_decaying_wave_with_coefficients_affine_in_the_parameters(tmp_path, single_threaded):
    torch.manual_seed(0)
    sim = DecayingWave(size=16, n_steps=10)
    model = TrajectorySurrogate(
        sim.fields,
        2,
        net=partial(MLP, hidden=(32, 32)),
        time_net=partial(MLP, hidden=(16,)),
        time_features=("t", "log_t"),
        rank=16,
        param_linear=True,
        n_modes=4,
        basis_rows=256,
        lr=3e-3,
        warmup_steps=10,
        normalizer_warmup_batches=5,
    )
    trainer = L.Trainer(
        max_steps=400,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DataLoader(wave_batches(sim, 4096, 64, 400, seed=0), batch_size=None))
    test = wave_batches(sim, 512, 512, 1, seed=1)[0]
    model.eval()
    with torch.no_grad():
        pred = model(test["params"], test["t"])
    rel = (torch.linalg.norm(pred - test["fields"], dim=1) / torch.linalg.norm(test["fields"], dim=1)).mean()
    # a exp(-k t) sin(pi x): one mode, a coefficient linear in a. The reduced-basis surrogate's
    # test asks 2% of the same map (the plain trajectory model is trained by the contract test).
    assert rel < 0.02, float(rel)


def test_rejects_a_bad_rank_or_output_layer():
    sim = DecayingWave(size=4, n_steps=2)
    with pytest.raises(ValueError, match="rank must be"):
        TrajectorySurrogate(
            sim.fields, 2, partial(MLP, hidden=(4,)), partial(MLP, hidden=(4,)), ("t",), 0, False, n_modes=2
        )
    with pytest.raises(ValueError, match="has no nn.Linear"):
        ReducedBasisSurrogate(sim.fields, 2, net=lambda i, o: torch.nn.Identity(), time_features=("t",), n_modes=2)
