"""The study's Lightning logger, from the ``logger`` config group (``conf/logger``)."""

from __future__ import annotations

import inspect
import time
from importlib.resources import files
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf


def study_logger(config: DictConfig | None, run_dir: Path, resumed: bool) -> Logger:
    """Instantiate the ``logger`` group's partial with the study's run directory.

    Parameters
    ----------
    config : DictConfig or None
        A ``conf/logger`` option: a partial of a Lightning logger (``_partial_: true``). None (the
        saved config of a study begun before ``logger`` was a config group, on resume): the
        default option, ``conf/logger/csv.yaml``.
    run_dir : Path
        Passed as ``save_dir``: the logger writes under the run directory.
    resumed : bool
        Whether the study continues a checkpoint. Loggers with a ``version`` (CSV, TensorBoard)
        then write into ``resumed-<time>`` beside the first run's files, which they would
        otherwise overwrite; a new study writes into ``<name>/`` itself (``version=""``), so
        the CSV logger's file is ``<run dir>/logs/metrics.csv``.

    Returns
    -------
    Logger
    """
    if config is None:
        config = OmegaConf.load(files("gensim.conf").joinpath("logger", "csv.yaml"))
    factory = instantiate(config)
    if not callable(factory) or not hasattr(factory, "func"):
        raise TypeError(
            f"logger must be a partial of a Lightning logger (_partial_: true), got {type(factory).__name__}; "
            "pick an option of conf/logger, e.g. logger=csv"
        )
    kwargs = {"save_dir": str(run_dir)}
    if "version" in inspect.signature(factory.func).parameters:
        kwargs["version"] = time.strftime("resumed-%Y%m%d-%H%M%S") if resumed else ""
    return factory(**kwargs)
