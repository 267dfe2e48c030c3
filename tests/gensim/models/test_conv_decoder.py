"""The convolutional surrogate: output shapes on grids that are not powers of two, a fit of two fields
on such a grid, and the fields it refuses (meshes, mixed shapes)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from gensim.models import ConvDecoderSurrogate
from gensim.models.components import MLP, GridDecoder
from gensim.models.components.grid_decoder import upsampling_plan
from gensim.simulations.base import FieldMesh, FieldSpec

NET = partial(MLP, hidden=(16,))
ARCH = {"latent_size": 4, "channels": 8, "min_channels": 4, "kernel": 3, "activation": "silu"}
OPT = {
    "lr": 1e-3,
    "weight_decay": 0.0,
    "warmup_steps": 2,
    "final_lr_ratio": 0.01,
    "normalizer_warmup_batches": 1,
    "time_features": ("t", "log_t"),
}


@pytest.mark.parametrize(
    ("shape", "stages", "latent"),
    [((32, 32), 3, (4, 4)), ((48, 20), 4, (3, 2)), ((33,), 4, (3,)), ((3, 2), 0, (3, 2)), ((6, 6), 1, (3, 3))],
)
def test_the_plan_reaches_the_grid_by_doublings_with_less_than_one_latent_cell_of_surplus(shape, stages, latent):
    assert upsampling_plan(shape, 4) == (stages, latent)
    assert all(0 <= m * 2**stages - n < 2**stages for m, n in zip(latent, shape))


@pytest.mark.parametrize("shape", [(48, 20), (33,), (5, 6, 7)])
def test_grid_decoder_gives_the_grid_it_was_built_for(shape):
    torch.manual_seed(0)
    decoder = GridDecoder(5, 2, shape, NET, **ARCH)
    out = decoder(torch.randn(3, 5))
    assert out.shape == (3, 2, *shape) and torch.isfinite(out).all()


def test_surrogate_trains_on_two_fields_of_a_grid_that_is_not_a_power_of_two():
    torch.manual_seed(0)
    shape = (12, 20)
    fields = [FieldSpec("u", shape), FieldSpec("v", shape)]
    model = ConvDecoderSurrogate(fields, 3, NET, **ARCH, **OPT)
    params, t = torch.rand(8, 3), torch.rand(8) + 0.1
    # Field u is a ramp along the second axis, v its negative: a field-major, C-order target.
    ramp = torch.linspace(0, 1, shape[1]).expand(shape)
    target = torch.cat([(ramp * params[:, :1, None]).flatten(1), (-ramp * params[:, :1, None]).flatten(1)], dim=1)
    cond, y = model.normalized_batch({"params": params, "t": t, "fields": target})  # normalizers learn, freeze
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(300):
        optimizer.zero_grad()
        loss = (model.normalized_prediction(cond) - y).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        pred = model(params, t)
    assert pred.shape == (8, 2 * 12 * 20) and pred.dtype == torch.float32
    assert losses[-1] < 0.02 * losses[0]
    assert float((pred - target).norm() / target.norm()) < 0.1


def test_surrogate_refuses_mesh_fields_and_fields_of_different_shapes():
    mesh = FieldMesh(np.arange(8.0).reshape(4, 2))
    with pytest.raises(ValueError, match="grid fields of one shape"):
        ConvDecoderSurrogate([FieldSpec("u", (4,), mesh=mesh)], 2, NET, **ARCH, **OPT)
    with pytest.raises(ValueError, match="grid fields of one shape"):
        ConvDecoderSurrogate([FieldSpec("u", (8, 8)), FieldSpec("v", (8, 4))], 2, NET, **ARCH, **OPT)
