"""sampling: parameter spaces, designs of experiments and active sampling (numpy/scipy only, never torch)."""

from sampling.active import Acquisition, ActiveSampler, History, LossAcquisition, UncertaintyAcquisition
from sampling.designs import Halton, LatinHypercube, Sampler, Sobol, Uniform
from sampling.space import ParameterSpace

__all__ = [
    "ParameterSpace",
    "Sampler",
    "Sobol",
    "Halton",
    "LatinHypercube",
    "Uniform",
    "ActiveSampler",
    "Acquisition",
    "History",
    "LossAcquisition",
    "UncertaintyAcquisition",
]
