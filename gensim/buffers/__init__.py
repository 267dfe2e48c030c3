"""Replay buffers: bounded memory that turns the simulation stream into training batches.

Split as in torchrl, each part with ``state_dict``: :class:`Storage` (preallocated arrays), an
insert policy (:class:`FIFO`, :class:`FIRO`, :class:`Reservoir`, :class:`MelissaReservoir`,
:class:`DistributionAware`: which slot an arrival takes, if any) and a draw rule
(:class:`UniformDraw`, :class:`ConsumeOldest`: which slots a batch reads), joined by the
thread-safe :class:`ReplayBuffer`. :class:`Strata` partitions (parameters, time) and holds the
target law that the distribution-aware policy balances and :mod:`gensim.buffers.divergence`
measures. numpy only: the data module makes tensors.
"""

from gensim.buffers.distribution import DistributionAware
from gensim.buffers.divergence import buffer_divergence, chi_square_divergence, unbiased_energy_distance
from gensim.buffers.draw import ConsumeOldest, DrawRule, UniformDraw
from gensim.buffers.policies import FIFO, FIRO, InsertPolicy, MelissaReservoir, Reservoir
from gensim.buffers.replay import ReplayBuffer
from gensim.buffers.storage import Storage
from gensim.buffers.strata import Strata

__all__ = [
    "FIFO",
    "FIRO",
    "ConsumeOldest",
    "DistributionAware",
    "DrawRule",
    "InsertPolicy",
    "MelissaReservoir",
    "ReplayBuffer",
    "Reservoir",
    "Storage",
    "Strata",
    "UniformDraw",
    "buffer_divergence",
    "chi_square_divergence",
    "unbiased_energy_distance",
]
