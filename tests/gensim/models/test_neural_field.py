"""The neural field: evaluable anywhere, trained on node subsets whose cost does not grow with the mesh."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from gensim.simulations import FieldMesh, FieldSpec
from gensim.simulations.meshes import plate_with_holes

K = 64  # nodes per sample, below the node count of both meshes


def model_on(h: float, *overrides: str):
    mesh = plate_with_holes(h)
    spec = FieldSpec("temperature", (len(mesh.nodes),), "float32", FieldMesh(mesh.nodes, mesh.cells))
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "model=neural_field",
                f"model.nodes_per_sample={K}",
                "model.net.hidden=[32]",
                "model.branch.hidden=[32]",
                "model.normalizer_warmup_batches=1",
                *overrides,
            ],
        )
    model = instantiate(cfg.model)(fields=[spec], n_params=3)
    model.log = lambda *args, **kwargs: None  # no trainer attached
    return model, spec


def batch(n_nodes: int, b: int = 8) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "params": torch.rand(b, 3, generator=gen),
        "t": torch.rand(b, generator=gen),
        "fields": torch.randn(b, n_nodes, generator=gen),
    }


def saved_bytes(model, data: dict[str, torch.Tensor]) -> int:
    """Bytes autograd saves for the backward pass of one training step (the activations)."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.training_step(data, 0).backward()
    return total[0]


def test_step_activations_do_not_grow_with_the_mesh(single_threaded):
    torch.manual_seed(0)
    small, small_spec = model_on(0.1)
    large, large_spec = model_on(0.05)
    assert large_spec.size > 2 * small_spec.size > 2 * K
    # Exact: the step touches K nodes per sample whatever N, so the saved tensors are the same.
    assert saved_bytes(small, batch(small_spec.size)) == saved_bytes(large, batch(large_spec.size))
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in large.parameters())


def test_predict_at_any_points_matches_forward_at_the_nodes(single_threaded):
    torch.manual_seed(0)
    model, spec = model_on(0.1)
    model.training_step(batch(spec.size), 0)  # fits the normalizers
    model.eval()
    params, t = torch.rand(4, 3), torch.rand(4)
    with torch.no_grad():
        at_nodes = model.predict_at(params, t, torch.tensor(spec.mesh.nodes, dtype=torch.float32))
        elsewhere = model.predict_at(params, t, torch.tensor([[0.05, 0.05], [1.0, 0.5], [1.93, 0.91]]))
        assert torch.equal(at_nodes[..., 0], model(params, t))
    assert elsewhere.shape == (4, 3, 1) and torch.isfinite(elsewhere).all()
    with pytest.raises(ValueError, match=r"expected shape \(K, 2\)"):
        model.predict_at(params, t, torch.zeros(5, 3))


def test_fields_on_different_geometries_are_refused():
    mesh = plate_with_holes(0.1)
    on_mesh = FieldSpec("u", (len(mesh.nodes),), "float32", FieldMesh(mesh.nodes, mesh.cells))
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["model=neural_field"])
    with pytest.raises(ValueError, match="needs every field on one geometry"):
        instantiate(cfg.model)(fields=[on_mesh, FieldSpec("v", (len(mesh.nodes),), "float32")], n_params=3)
