"""Plain ``nn.Module`` networks shared by the surrogates."""

from gensim.models.components.mlp import MLP
from gensim.models.components.normalizer import RunningNormalizer

__all__ = ["MLP", "RunningNormalizer"]
