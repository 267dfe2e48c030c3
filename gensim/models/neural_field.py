"""A mesh-agnostic surrogate: a conditional neural field ``(coordinates, parameters, t) -> value``.

The field is a function of space evaluated where asked, not a vector of fixed length: the same
network predicts the values at the nodes of the training mesh, of a refined mesh, or at any
point of the domain (:meth:`NeuralFieldSurrogate.predict_at`). Training takes, for every sample
of a batch, the values at ``nodes_per_sample`` random nodes, so the activations of a training
step do not grow with the number of nodes: a mesh of a million nodes costs a step what a mesh
of a thousand does (reports/plate_heat/memory.md).

It is not used as the decoder of :class:`~gensim.models.ConditionalVAE`: the cVAE's encoder
reads the whole field (N values per sample), which is the cost a mesh-agnostic model avoids,
and its decoder is trained on whole fields; a neural-field cVAE would need an encoder of node
subsets (a set or point-cloud encoder) as well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from gensim.models.base import FieldSurrogate
from gensim.models.components.decoder import NetFactory
from gensim.models.components.normalizer import RunningNormalizer
from gensim.simulations.base import FieldSpec

__all__ = ["NeuralFieldSurrogate", "field_coordinates"]


def field_coordinates(fields: Sequence[FieldSpec]) -> torch.Tensor:
    """The coordinates of the values of ``fields``, shape (N, d), float32.

    A field on a mesh has its nodes; a grid field of shape ``(n_1, ..., n_d)`` has the centres
    of its cells in ``[0, 1]^d``, in C (row-major) order, the order of its flattened values.

    Raises
    ------
    ValueError
        When the fields do not share one geometry (same mesh, or same grid shape).
    """
    first = fields[0]
    for f in fields[1:]:
        if (f.mesh, f.shape) != (first.mesh, first.shape):
            raise ValueError(
                f"a neural field needs every field on one geometry; {f.name!r} ({f.shape}, {f.mesh}) "
                f"differs from {first.name!r} ({first.shape}, {first.mesh})"
            )
    if first.mesh is not None:
        return torch.tensor(first.mesh.nodes, dtype=torch.float32)  # a copy: the mesh's arrays are read-only
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n for n in first.shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(first.shape))


class FourierFeatures(nn.Module):
    """``x -> [x, sin(2 pi x B), cos(2 pi x B)]`` with a fixed Gaussian matrix ``B`` (d, n_fourier).

    ``B`` has entries of standard deviation ``scale`` (in units of the normalized box
    ``[-1, 1]^d``), drawn from a fixed seed so that a model built twice from one config is the
    same; it is a buffer, so a checkpoint restores it too.

    Shapes
    ------
    (..., d) -> (..., d + 2 n_fourier)
    """

    def __init__(self, dim: int, n_fourier: int, scale: float) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.register_buffer("matrix", scale * torch.randn(dim, n_fourier, generator=gen))
        self.out_features = dim + 2 * n_fourier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angle = 2 * math.pi * (x @ self.matrix)
        return torch.cat([x, torch.sin(angle), torch.cos(angle)], dim=-1)


class NeuralFieldSurrogate(FieldSurrogate):
    """Conditional neural field, branch/trunk form: ``u_f(x; c) = sum_j b_fj(c) s_fj(x) + s_f0(x)``.

    The trunk ``s`` (the ``net`` factory) maps Fourier features of the coordinates to
    ``n_basis + 1`` functions per field, the last one a mean field; the branch ``b`` maps the
    normalized condition (parameters, features of t) to ``n_basis`` coefficients per field.
    The product form is the structure of a reduced basis (a field is a combination of spatial
    modes with condition-dependent coefficients), learnt here as functions of space rather than
    as vectors on one mesh.

    Values are normalized per field by one mean and standard deviation over nodes and samples
    (fitted on the sampled values of the first batches, then frozen): a per-node normalization
    would tie the model to the training mesh. Coordinates are mapped to ``[-1, 1]^d`` by the
    bounding box of the training geometry.

    Parameters
    ----------
    fields : sequence of FieldSpec (or dicts of its arguments)
        Output fields, all on one geometry: a mesh (:class:`~gensim.simulations.base.FieldMesh`)
        or a grid (cell centres in ``[0, 1]^d``).
    n_params : int
        Length of the parameter vector.
    net : callable
        Trunk: ``net(in_features, out_features) -> nn.Module`` (e.g. :class:`~gensim.models.components.MLP`).
    branch : callable
        Branch: ``branch(n_cond, n_fields * n_basis) -> nn.Module``.
    n_basis : int
        Functions per field combined by the branch's coefficients.
    n_fourier : int
        Fourier frequencies of the coordinates.
    fourier_scale : float
        Standard deviation of the frequencies (cycles over the normalized box ``[-1, 1]``).
    nodes_per_sample : int
        Random nodes (with replacement) whose values train each sample of a batch, drawn once
        per batch; all nodes when the geometry has no more.
    lr, weight_decay, warmup_steps, final_lr_ratio, normalizer_warmup_batches, time_features
        As in :class:`~gensim.models.DeterministicSurrogate`.

    Batches
    -------
    ``{"params": (B, n_params), "t": (B,), "fields": (B, D)}`` with ``D = n_fields * N``.
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec | dict],
        n_params: int,
        net: NetFactory,
        branch: NetFactory,
        n_basis: int,
        n_fourier: int,
        fourier_scale: float,
        nodes_per_sample: int,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        final_lr_ratio: float,
        normalizer_warmup_batches: int,
        time_features: Sequence[str],
    ) -> None:
        super().__init__(fields, n_params, normalizer_warmup_batches, time_features)
        self.save_hyperparameters(ignore=["net", "branch", "fields"])
        self.record_fields()
        for name, value in (("n_basis", n_basis), ("n_fourier", n_fourier), ("nodes_per_sample", nodes_per_sample)):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}; e.g. model.{name}=64")
        if not fourier_scale > 0:
            raise ValueError(f"fourier_scale must be positive, got {fourier_scale}; e.g. model.fourier_scale=2.0")
        coords = field_coordinates(self.fields)
        self.n_fields, self.n_basis, self.nodes_per_sample = len(self.fields), int(n_basis), int(nodes_per_sample)
        # Persistent: the geometry the model was trained on travels with its checkpoint.
        self.register_buffer("coords", coords)
        lo, hi = coords.min(0).values, coords.max(0).values
        self.register_buffer("box_lo", lo)
        self.register_buffer("box_size", torch.where(hi > lo, hi - lo, torch.ones_like(hi)))
        # One (mean, std) per field: node-independent, so the model applies on any mesh.
        self.out_norm = RunningNormalizer(self.n_fields, normalizer_warmup_batches)
        self.features = FourierFeatures(coords.shape[1], int(n_fourier), float(fourier_scale))
        self.trunk = net(self.features.out_features, self.n_fields * (self.n_basis + 1))
        self.branch = branch(self.n_cond, self.n_fields * self.n_basis)

    @property
    def n_nodes(self) -> int:
        """Nodes of the training geometry, N."""
        return int(self.coords.shape[0])

    def _normalized(self, cond: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Normalized values at ``coords`` (K, d) for ``cond`` (B, n_cond): (B, K, n_fields)."""
        x = 2 * (coords - self.box_lo) / self.box_size - 1
        trunk = self.trunk(self.features(x)).unflatten(-1, (self.n_fields, self.n_basis + 1))
        coeff = self.branch(cond).unflatten(-1, (self.n_fields, self.n_basis))
        return torch.einsum("kfj,bfj->bkf", trunk[..., :-1], coeff) + trunk[..., -1]

    def predict_at(self, params: torch.Tensor, t: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """The fields at any points of the domain, in physical units.

        Parameters
        ----------
        params : Tensor, shape (B, n_params)
        t : Tensor, shape (B,)
        coords : Tensor, shape (K, d)
            Points in the coordinates of the training geometry (e.g. the nodes of a refined mesh).

        Returns
        -------
        Tensor, shape (B, K, n_fields)
        """
        if coords.dim() != 2 or coords.shape[1] != self.coords.shape[1]:
            raise ValueError(f"coords: expected shape (K, {self.coords.shape[1]}), got {tuple(coords.shape)}")
        z = self._normalized(self.condition(params, t), coords.to(self.coords))
        mean, std = (s.to(z.dtype) for s in (self.out_norm.mean, self.out_norm.std()))
        return z * std + mean

    def forward(self, params: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predict the fields at the training geometry's nodes, in physical units.

        Parameters
        ----------
        params : Tensor, shape (B, n_params)
        t : Tensor, shape (B,)

        Returns
        -------
        Tensor, shape (B, D), fields concatenated in order, each its N node values.
        """
        return self.predict_at(params, t, self.coords).transpose(1, 2).reshape(params.shape[0], -1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        cond = self.normalized_condition(batch)
        y = batch["fields"].unflatten(1, (self.n_fields, self.n_nodes))  # (B, n_fields, N), a view
        if self.nodes_per_sample >= self.n_nodes:
            index = torch.arange(self.n_nodes, device=y.device)
        else:
            # One random subset per batch, shared by its samples: the trunk (a function of x alone)
            # then runs on K points rather than B K, at the cost of correlated nodes within a batch.
            index = torch.randint(self.n_nodes, (self.nodes_per_sample,), device=y.device)
        # Only the sampled values are read: the step's memory is O(B K), whatever N.
        values = y[:, :, index].transpose(1, 2)  # (B, K, n_fields)
        self.out_norm.update(values.reshape(-1, self.n_fields))
        target = self.out_norm.normalize(values)
        pred = self._normalized(cond, self.coords[index])
        loss = self.batch_mean((pred - target).pow(2).mean(dim=(1, 2)), batch)
        self.log_step({"train_loss": loss}, prog_bar=True)
        return loss
