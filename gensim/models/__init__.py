"""Surrogates: LightningModules over the shared networks of :mod:`gensim.models.components`."""

from gensim.models.deterministic import DeterministicSurrogate

__all__ = ["DeterministicSurrogate"]
