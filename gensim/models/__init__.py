"""Surrogates: LightningModules over the shared networks of :mod:`gensim.models.components`."""

from gensim.models.autoencoder import Autoencoder
from gensim.models.cgan import ConditionalGAN
from gensim.models.conv_decoder import ConvDecoderSurrogate
from gensim.models.cvae import ConditionalVAE
from gensim.models.deterministic import DeterministicSurrogate
from gensim.models.flow import FlowMatchingSurrogate
from gensim.models.generative import DistributionCheck
from gensim.models.neural_field import NeuralFieldSurrogate
from gensim.models.reduced_basis import ReducedBasisSurrogate
from gensim.models.trajectory import TrajectorySurrogate

__all__ = [
    "Autoencoder",
    "ConditionalGAN",
    "ConditionalVAE",
    "ConvDecoderSurrogate",
    "DeterministicSurrogate",
    "DistributionCheck",
    "FlowMatchingSurrogate",
    "NeuralFieldSurrogate",
    "ReducedBasisSurrogate",
    "TrajectorySurrogate",
]
