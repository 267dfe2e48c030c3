"""Executors: how a simulation worker starts (local subprocess, SLURM job through submitit)."""

from gensim.launch.executors.base import TOKEN_ENV, Executor, Outcome, Task
from gensim.launch.executors.local import LocalExecutor
from gensim.launch.executors.slurm import SlurmExecutor

__all__ = ["TOKEN_ENV", "Executor", "LocalExecutor", "Outcome", "SlurmExecutor", "Task"]
