"""Lightning callbacks of gensim."""

from gensim.callbacks.ensemble import EnsembleProgressBar, TrainingThroughput

__all__ = ["EnsembleProgressBar", "TrainingThroughput"]
