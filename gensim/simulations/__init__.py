"""Simulations: the :class:`Simulation` interface and the built-in solvers (no torch here)."""

from gensim.simulations.analytic import DecayingWave
from gensim.simulations.base import FieldMesh, FieldSpec, Sample, Simulation
from gensim.simulations.burgers2d import Burgers2D
from gensim.simulations.external import ExternalSimulation
from gensim.simulations.heat2d import Heat2D
from gensim.simulations.plate_heat import PlateHeat
from gensim.simulations.plume2d import Plume2D
from gensim.simulations.stochastic_heat import StochasticHeat

__all__ = [
    "Burgers2D",
    "DecayingWave",
    "ExternalSimulation",
    "FieldMesh",
    "FieldSpec",
    "Heat2D",
    "PlateHeat",
    "Plume2D",
    "Sample",
    "Simulation",
    "StochasticHeat",
]
