"""Launching simulations: the launcher (what runs) and its executors (how a worker starts)."""

from gensim.launch.executors import Executor, LocalExecutor, SlurmExecutor
from gensim.launch.launcher import Launcher, Router
from gensim.launch.records import Attempt, Ledger, SimulationRecord

__all__ = ["Attempt", "Executor", "Launcher", "Ledger", "LocalExecutor", "Router", "SimulationRecord", "SlurmExecutor"]
