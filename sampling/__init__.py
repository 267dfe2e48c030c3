"""sampling: parameter spaces and designs of experiments (numpy/scipy only, never torch)."""

from sampling.designs import Halton, LatinHypercube, Sampler, Sobol, Uniform
from sampling.space import ParameterSpace

__all__ = ["ParameterSpace", "Sampler", "Sobol", "Halton", "LatinHypercube", "Uniform"]
