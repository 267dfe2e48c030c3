"""Launchers: start simulations, feed them parameters, and record their outcome."""

from gensim.launch.local import LocalLauncher
from gensim.launch.records import Ledger, SimulationRecord

__all__ = ["Ledger", "LocalLauncher", "SimulationRecord"]
