"""Error metrics of surrogates against simulations."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gensim.simulations.base import FieldSpec


def relative_l2(pred: torch.Tensor, true: torch.Tensor, fields: Sequence[FieldSpec]) -> torch.Tensor:
    """Relative L2 error ``||pred - true||_2 / ||true||_2`` of every field of every sample.

    Parameters
    ----------
    pred, true : Tensor, shape (n, D)
        Flattened fields, concatenated in ``fields`` order (D = sum of field sizes).
    fields : sequence of FieldSpec

    Returns
    -------
    Tensor, shape (n, n_fields)
        One error per sample and field. A field whose truth is all zeros gets the absolute error
        norm instead (its relative error is undefined).
    """
    out = []
    start = 0
    for spec in fields:
        stop = start + spec.size
        diff = torch.linalg.vector_norm((pred[:, start:stop] - true[:, start:stop]).double(), dim=1)
        norm = torch.linalg.vector_norm(true[:, start:stop].double(), dim=1)
        out.append(torch.where(norm > 0, diff / torch.where(norm > 0, norm, 1.0), diff))
        start = stop
    return torch.stack(out, dim=1)


def summarize_errors(errors: torch.Tensor) -> dict[str, float]:
    """Mean and 99th percentile of a set of errors (all samples and fields pooled).

    Parameters
    ----------
    errors : Tensor, any shape

    Returns
    -------
    dict
        ``{"mean": ..., "p99": ...}`` as Python floats.
    """
    flat = errors.reshape(-1).double()
    return {"mean": float(flat.mean()), "p99": float(torch.quantile(flat, 0.99))}
