"""Lightning callbacks of gensim."""

from gensim.callbacks.active_learning import ActiveLearning, SimulationPacing, SnapshotDisagreement
from gensim.callbacks.buffer_stats import BufferStats
from gensim.callbacks.ensemble import EnsembleProgressBar, StopWhenStreamExhausted, TrainingThroughput, TrainUntilBudget
from gensim.callbacks.wall_clock import WallClock
from gensim.callbacks.weight_average import WeightAverage

__all__ = [
    "ActiveLearning",
    "BufferStats",
    "EnsembleProgressBar",
    "SimulationPacing",
    "SnapshotDisagreement",
    "StopWhenStreamExhausted",
    "TrainingThroughput",
    "TrainUntilBudget",
    "WallClock",
    "WeightAverage",
]
