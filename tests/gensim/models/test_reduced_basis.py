"""The reduced-basis surrogate: a seeded randomized SVD equal to the exact one on a low-rank set, a
basis whose refits leave the prediction unchanged where they can, and a model that learns."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch
from test_training_error import wave_batches
from torch.utils.data import DataLoader

from gensim.models import ReducedBasisSurrogate
from gensim.models.components import MLP, ReducedBasis
from gensim.models.components.reduced_basis import randomized_svd
from gensim.simulations import DecayingWave


def low_rank(n: int, d: int, rank: int, seed: int) -> torch.Tensor:
    """An (n, d) float64 matrix of exact rank ``rank`` with singular values 10, 5, 2.5, ..."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(n, rank, generator=gen, dtype=torch.float64)).Q
    v = torch.linalg.qr(torch.randn(d, rank, generator=gen, dtype=torch.float64)).Q
    return (u * 10 * 0.5 ** torch.arange(rank, dtype=torch.float64)) @ v.T


def test_randomized_svd_recovers_the_exact_decomposition_of_a_low_rank_matrix():
    x = low_rank(300, 80, 6, seed=0)
    s, v = randomized_svd(x, 6, seed=3)
    s_exact, v_exact = torch.linalg.svd(x, full_matrices=False)[1:]
    # Exact rank 6 < 6 + oversampling: the range is found exactly, up to float64 round-off.
    torch.testing.assert_close(s, s_exact[:6], rtol=1e-10, atol=0)
    torch.testing.assert_close((v @ v_exact[:6].T).abs(), torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-10)
    # Seeded: the same matrix gives the same basis, bit for bit (every rank of a DDP study fits it).
    assert torch.equal(randomized_svd(x, 6, seed=3)[1], v)


def test_basis_decodes_its_projections_and_floors_the_scale_of_missing_modes():
    x = low_rank(40, 20, 3, seed=1).float() + 5.0
    basis = ReducedBasis(20, 5)
    assert not basis.fitted
    basis.fit(x)
    assert basis.fitted
    # Rank 3 after centering (the mean is removed): 3 modes reproduce the data.
    torch.testing.assert_close(basis.decode(basis.project(x)), x, rtol=0, atol=1e-4)
    # Coefficients of the snapshots are about unit variance; modes 4 and 5 are empty, floored.
    torch.testing.assert_close(basis.project(x)[:, :3].std(0), torch.ones(3), rtol=1e-4, atol=0)
    assert (basis.scale[3:] < 1e-5 * basis.scale[0]).all() and (basis.scale[3:] > 0).all()
    with pytest.raises(ValueError, match="n_modes must be in"):
        ReducedBasis(20, 21)


def test_an_unwhitened_basis_gives_the_plain_projections():
    """whiten=False: the same modes, but coefficients are the orthogonal projections themselves
    (their std is each mode's scale, not 1), and they decode back to the fields."""
    x = low_rank(40, 20, 3, seed=1).float() + 5.0
    whitened, plain = ReducedBasis(20, 5), ReducedBasis(20, 5, whiten=False)
    whitened.fit(x)
    plain.fit(x)
    torch.testing.assert_close(plain.modes, whitened.modes)
    torch.testing.assert_close(plain.project(x), (x - x.mean(0)) @ plain.modes.T, rtol=0, atol=1e-4)
    torch.testing.assert_close(plain.project(x)[:, :3].std(0), plain.scale[:3], rtol=1e-4, atol=0)
    torch.testing.assert_close(plain.decode(plain.project(x)), x, rtol=0, atol=1e-4)


@pytest.mark.parametrize(("param_linear", "whiten"), [(False, True), (True, True), (True, False)])
def test_a_refit_maps_the_output_layer_so_the_prediction_stays(param_linear, whiten):
    """With as many modes as field values the new basis spans the old prediction: a refit on other
    snapshots changes the basis but not what the model predicts (with coefficients affine in the
    parameters too: each group of outputs is mapped; and with plain, unwhitened coefficients)."""
    torch.manual_seed(0)
    sim = DecayingWave(size=8, n_steps=5)
    model = ReducedBasisSurrogate(
        sim.fields,
        2,
        net=partial(MLP, hidden=(16,)),
        time_features=("t",),
        n_modes=8,
        basis_rows=64,
        normalizer_warmup_batches=1,
        param_linear=param_linear,
        whiten=whiten,
    )
    assert model.output_layer().out_features == 8 * (3 if param_linear else 1)
    first, second = wave_batches(sim, 64, 64, 2, seed=0)
    model.on_train_batch_start(first, 0)
    model.normalized_batch(first)
    model.refit_basis()
    assert_refit_keeps_prediction(model, second)


def test_learns_the_decaying_wave_through_its_one_mode(tmp_path, single_threaded):
    torch.manual_seed(0)
    sim = DecayingWave(size=16, n_steps=10)
    model = ReducedBasisSurrogate(
        sim.fields,
        2,
        net=partial(MLP, hidden=(32, 32)),
        n_modes=4,
        basis_rows=256,
        lr=3e-3,
        warmup_steps=10,
        normalizer_warmup_batches=5,
        time_features=("t", "log_t"),
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
    # The field is a sin(pi x) exp(-k t): one mode holds it exactly. Measured 0.0041; the
    # deterministic surrogate's test asks 2% of a larger network on the same map.
    assert rel < 0.02, float(rel)
    # Modes past the first carry round-off only.
    assert model.basis.scale[1] < 1e-3 * model.basis.scale[0]


def test_log_time_needs_positive_times():
    sim = DecayingWave(size=4, n_steps=2)
    model = ReducedBasisSurrogate(sim.fields, 2, net=partial(MLP, hidden=(4,)), n_modes=2, time_features=("log_t",))
    batch = {"params": torch.ones(3, 2), "t": torch.tensor([0.0, 0.5, 1.0]), "fields": torch.ones(3, 4)}
    with pytest.raises(ValueError, match="t <= 0"):
        model.normalized_batch(batch)
    with pytest.raises(ValueError, match="time_features must be"):
        ReducedBasisSurrogate(sim.fields, 2, net=partial(MLP, hidden=(4,)), n_modes=2, time_features=("sqrt_t",))


def assert_refit_keeps_prediction(model, batch: dict) -> None:
    """Refit the model's basis on noisy copies of ``batch``: the basis changes, its predictions on
    ``batch`` do not (the output layer is mapped onto the new basis)."""
    with torch.no_grad():
        before = model(batch["params"], batch["t"])
    modes = model.basis.modes.clone()
    model.snapshots = type(model.snapshots)(64)
    model.snapshots.offer({k: v + 0.3 * torch.randn_like(v) if k == "fields" else v for k, v in batch.items()})
    model.refit_basis()
    assert not torch.allclose(model.basis.modes, modes, atol=1e-3)
    with torch.no_grad():
        after = model(batch["params"], batch["t"])
    # float32 products over 8 modes: agreement to about 1e-6 of the field values (up to 2).
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
