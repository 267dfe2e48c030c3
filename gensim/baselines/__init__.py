"""Off-line baselines fitted on stored simulations: Kriging, polynomial chaos, off-line neural training."""

from gensim.baselines.kriging import KrigingBaseline
from gensim.baselines.offline import (
    OfflineSurrogate,
    SimulationSet,
    SnapshotLayout,
    TrajectoryLayout,
    simulate,
    study_config,
    study_simulations,
)
from gensim.baselines.pod import POD, fit_pod
from gensim.baselines.polynomial_chaos import PolynomialChaosBaseline

__all__ = [
    "KrigingBaseline",
    "OfflineSurrogate",
    "POD",
    "PolynomialChaosBaseline",
    "SimulationSet",
    "SnapshotLayout",
    "TrajectoryLayout",
    "fit_pod",
    "simulate",
    "study_config",
    "study_simulations",
]
