"""FlowMatchingSurrogate learns a conditional law in field space and in a reduced (POD) space, samples
it with a few ODE steps, predicts its mean and round-trips a checkpoint."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from generative_toy import FIELDS, N_PARAMS, ToyBatches, toy_batch, toy_moments
from torch.utils.data import DataLoader

from gensim.models import FlowMatchingSurrogate
from gensim.models.components import MLP

NET = partial(MLP, hidden=(64, 64))


def make_flow(**kwargs) -> FlowMatchingSurrogate:
    args = dict(net=NET, lr=3e-3, warmup_steps=20, normalizer_warmup_batches=5, sampling_steps=8, space="field")
    return FlowMatchingSurrogate(FIELDS, N_PARAMS, **(args | kwargs))


#: The toy's fields span 3 directions (the mean's and the two fluctuations'): 3 modes hold the
#: law exactly, so the reduced flow is held to the field flow's bounds. Its default sampler
#: (4 midpoint steps) is used there.
#: ``reduced_mean``: the same with a mean network, the flow on the residual.
REDUCED = {"space": "reduced", "n_modes": 3, "sampling_steps": 4, "basis_refits": (0, 10, 40)}
SPACES = {"field": {}, "reduced": REDUCED, "reduced_mean": REDUCED | {"mean_weight_decay": 0.01}}


@pytest.mark.parametrize("space", list(SPACES))
def test_learns_the_toy_law_and_restores_from_checkpoint(space, tmp_path, single_threaded):
    torch.manual_seed(0)
    model = make_flow(**SPACES[space])
    trainer = L.Trainer(
        max_steps=600,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DataLoader(ToyBatches(seed=0), batch_size=None))
    model.eval()
    test = toy_batch(6, np.random.default_rng(1))
    mean, std = toy_moments(test["params"].double().numpy(), test["t"].double().numpy())
    with torch.no_grad():
        samples = model.sample(test["params"], test["t"], 2000, torch.Generator().manual_seed(0)).double().numpy()
        pred = model(test["params"], test["t"])
    assert samples.shape == (6, 2000, 8)
    # Mean and std errors in units of the true std, pooled over conditions and points: the same
    # bounds as the cVAE's test on this law (Monte Carlo ~2% with 2000 samples; a small network
    # trained 600 steps leaves ~5-10%).
    scale = np.sqrt((std**2).mean())
    assert np.sqrt(((samples.mean(1) - mean) ** 2).mean()) / scale < 0.25
    assert np.abs(samples.std(1) - std).mean() / std.mean() < 0.25
    assert np.sqrt(((pred.double().numpy() - mean) ** 2).mean()) / scale < 0.5  # 8 draws averaged

    path = tmp_path / "flow.ckpt"
    trainer.save_checkpoint(path)
    restored = FlowMatchingSurrogate.load_from_checkpoint(path, net=NET)
    if space != "field":  # fitted at the listed steps only, then frozen; the checkpoint holds it
        assert int(model.basis.n_fits) == 3 and torch.equal(restored.basis.modes, model.basis.modes)
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored(test["params"], test["t"]), pred)  # common random numbers


def test_sampling_is_the_ode_solution_with_the_configured_steps():
    # A velocity network that returns zero moves nothing: samples are their Gaussian start points.
    model = make_flow(sampling_steps=3, solver="euler")
    calls = []
    # The network's output is (gain, offset) per coordinate: v = gain * x + offset.
    model.decoder.forward = lambda cond, z: (calls.append(z.shape), torch.zeros_like(z).repeat(1, 2))[1]
    cond, z = torch.zeros(5, model.n_cond), torch.randn(5, model.n_out)
    assert torch.equal(model.generate(cond, z), z)
    assert len(calls) == 3  # one velocity evaluation per Euler step
    calls.clear()
    make_mid = make_flow(sampling_steps=3, solver="midpoint")
    make_mid.decoder.forward = lambda cond, z: (
        calls.append(z.shape),
        torch.cat([torch.zeros_like(z), torch.ones_like(z)], 1),
    )[1]
    # dx/ds = 1 from s = 0 to 1 adds exactly 1, whatever the solver.
    assert torch.allclose(make_mid.generate(cond, z), z + 1)
    assert len(calls) == 6  # two evaluations per midpoint step


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="solver"):
        make_flow(solver="dopri5")
    with pytest.raises(ValueError, match="sampling_steps"):
        make_flow(sampling_steps=0)
    with pytest.raises(ValueError, match="time_grid_power"):
        make_flow(time_grid_power=0.0)
    with pytest.raises(ValueError, match="space"):
        make_flow(space="latent")
    with pytest.raises(ValueError, match="basis_refits must include step 0"):
        make_flow(space="reduced", n_modes=3, basis_refits=(10, 20))
    with pytest.raises(ValueError, match="n_modes"):
        make_flow(space="reduced", n_modes=9)  # the toy's field has 8 values


def test_time_grid_shortens_the_steps_towards_the_end():
    # The solver evaluates the velocity at the grid's flow times: s_i = 1 - (1 - i / n)^power.
    model = make_flow(sampling_steps=4, solver="euler", time_grid_power=2.0)
    assert torch.allclose(model.time_grid(), torch.tensor([0.0, 0.4375, 0.75, 0.9375, 1.0]))
    assert torch.allclose(make_flow(sampling_steps=4).time_grid(), torch.linspace(0, 1, 5))
    seen = []
    model.velocity = lambda x, s, cond: (seen.append(float(s[0])), torch.ones_like(x))[1]
    cond, z = torch.zeros(2, model.n_cond), torch.zeros(2, model.n_out)
    assert torch.allclose(model.generate(cond, z), torch.ones_like(z))  # dx/ds = 1 over [0, 1]
    assert seen == pytest.approx([0.0, 0.4375, 0.75, 0.9375])


def test_weight_average_follows_the_trained_net_and_samples_outside_training():
    torch.manual_seed(0)
    model = make_flow(ema_decay=0.75)
    before = [p.detach().clone() for p in model.decoder_ema.parameters()]
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(1.0)  # as if an optimizer step moved every weight by 1
    model.on_train_batch_end(None, {}, 0)
    for avg, old in zip(model.decoder_ema.parameters(), before):
        assert torch.allclose(avg, old + 0.25)  # a quarter of the way to the new weights
    cond, x, s = torch.zeros(3, model.n_cond), torch.randn(3, model.n_out), torch.full((3,), 0.5)
    model.train()
    trained = model.velocity(x, s, cond)
    model.eval()
    averaged = model.velocity(x, s, cond)
    assert not torch.allclose(trained, averaged)
    gain, offset = model.decoder_ema(torch.cat([cond, model.time_embedding(s)], 1), x).chunk(2, 1)
    assert torch.allclose(averaged, gain * x + offset)
    with pytest.raises(ValueError, match="ema_decay"):
        make_flow(ema_decay=1.0)


def test_mean_network_is_added_to_the_flow_end_point_and_has_its_own_weight_decay():
    model = make_flow(mean_weight_decay=0.5, weight_decay=0.0, sampling_steps=2, solver="euler")
    # A zero velocity leaves the start point: the sample is the start plus the mean network's output.
    model.decoder.forward = lambda cond, z: torch.zeros_like(z).repeat(1, 2)
    cond, z = torch.randn(4, model.n_cond), torch.randn(4, model.n_out)
    with torch.no_grad():
        assert torch.allclose(model.generate(cond, z), z + model.mean_net(cond))
    groups = make_flow(mean_weight_decay=0.5, weight_decay=0.0).configure_optimizers()["optimizer"].param_groups
    assert [g["weight_decay"] for g in groups] == [0.0, 0.5]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
