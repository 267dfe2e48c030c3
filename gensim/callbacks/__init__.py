"""Lightning callbacks of gensim."""

from gensim.callbacks.active_learning import ActiveLearning, SimulationPacing, SnapshotDisagreement
from gensim.callbacks.ensemble import EnsembleProgressBar, StopWhenStreamExhausted, TrainingThroughput

__all__ = ["ActiveLearning", "EnsembleProgressBar", "SimulationPacing", "SnapshotDisagreement",
           "StopWhenStreamExhausted", "TrainingThroughput"]
