"""Simulations: the :class:`Simulation` interface and the built-in solvers (no torch here)."""

from gensim.simulations.analytic import DecayingWave
from gensim.simulations.base import FieldSpec, Sample, Simulation
from gensim.simulations.heat2d import Heat2D

__all__ = ["DecayingWave", "FieldSpec", "Heat2D", "Sample", "Simulation"]
