"""Plain ``nn.Module`` networks shared by the surrogates."""

from gensim.models.components.critic import Critic
from gensim.models.components.decoder import Decoder
from gensim.models.components.encoder import Encoder
from gensim.models.components.grid_decoder import GridDecoder
from gensim.models.components.mlp import MLP
from gensim.models.components.normalizer import RunningNormalizer
from gensim.models.components.prior import GaussianPrior
from gensim.models.components.reduced_basis import ReducedBasis

__all__ = ["MLP", "Critic", "Decoder", "Encoder", "GaussianPrior", "GridDecoder", "ReducedBasis", "RunningNormalizer"]
