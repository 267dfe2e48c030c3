"""Simulations: the :class:`Simulation` interface and the built-in solvers (no torch here)."""

from gensim.simulations.base import FieldSpec, Sample, Simulation
from gensim.simulations.heat2d import Heat2D

__all__ = ["FieldSpec", "Heat2D", "Sample", "Simulation"]
