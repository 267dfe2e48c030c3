"""Replay buffers: bounded memory that turns the simulation stream into training batches.

Split as in torchrl, each part with ``state_dict``: :class:`Storage` (preallocated arrays), an
insert policy (:class:`FIFO`, :class:`FIRO`, :class:`Reservoir`: which slot an arrival takes,
if any) and a draw rule (:class:`UniformDraw`, :class:`ConsumeOldest`: which slots a batch
reads), joined by the thread-safe :class:`ReplayBuffer`. numpy only: the data module makes
tensors.
"""

from gensim.buffers.draw import ConsumeOldest, DrawRule, UniformDraw
from gensim.buffers.policies import FIFO, FIRO, InsertPolicy, Reservoir
from gensim.buffers.replay import ReplayBuffer
from gensim.buffers.storage import Storage

__all__ = [
    "FIFO",
    "FIRO",
    "ConsumeOldest",
    "DrawRule",
    "InsertPolicy",
    "ReplayBuffer",
    "Reservoir",
    "Storage",
    "UniformDraw",
]
