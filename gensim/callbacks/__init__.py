"""Lightning callbacks of gensim."""

from gensim.callbacks.ensemble import EnsembleProgressBar, StopWhenStreamExhausted, TrainingThroughput

__all__ = ["EnsembleProgressBar", "StopWhenStreamExhausted", "TrainingThroughput"]
