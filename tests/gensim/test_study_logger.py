"""The ``logger`` config group: each option instantiates into the run directory and writes there."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from gensim.study_logger import study_logger

CONF = Path(__file__).resolve().parents[2] / "conf"


def logger_config(option: str):
    # study: resolved by gensim-train's Hydra run (the simulation's name), set here.
    with initialize_config_module(config_module="gensim.conf", version_base="1.3"):
        return compose(config_name="train", overrides=[f"logger={option}", "study=heat2d"]).logger


def test_csv_logger_writes_metrics_csv_where_the_reports_read_it(tmp_path):
    logger = study_logger(logger_config("csv"), tmp_path, resumed=False)
    logger.log_metrics({"val_rel_l2_mean": 0.5}, step=3)
    logger.finalize("success")
    lines = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",") == ["step", "val_rel_l2_mean"] and lines[1] == "3,0.5"


def test_a_resumed_study_logs_beside_the_first_runs_file(tmp_path):
    logger = study_logger(logger_config("csv"), tmp_path, resumed=True)
    logger.log_metrics({"loss": 1.0}, step=1)
    logger.finalize("success")
    (written,) = (tmp_path / "logs").glob("resumed-*/metrics.csv")
    assert not (tmp_path / "logs" / "metrics.csv").exists() and written.read_text().splitlines()[1] == "1.0,1"


def test_a_config_without_logger_gets_the_default_csv_logger(tmp_path):
    # A study saved before logger was a config group, resumed: its config has no logger key.
    logger = study_logger(None, tmp_path, resumed=False)
    assert type(logger) is type(study_logger(logger_config("csv"), tmp_path, resumed=False))
    assert Path(logger.log_dir) == tmp_path / "logs"


def test_tensorboard_logger_writes_event_files(tmp_path):
    logger = study_logger(logger_config("tensorboard"), tmp_path, resumed=False)
    logger.log_metrics({"val_rel_l2_mean": 0.5}, step=3)
    logger.finalize("success")
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_mlflow_logger_writes_a_file_store_in_the_run_directory(tmp_path, monkeypatch):
    # mlflow is not a test dependency (a large install): skipped where it is missing.
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses the file store otherwise
    logger = study_logger(logger_config("mlflow"), tmp_path, resumed=False)
    logger.log_metrics({"val_rel_l2_mean": 0.5}, step=3)
    logger.finalize("success")
    (written,) = tmp_path.glob("*/*/metrics/val_rel_l2_mean")
    assert written.read_text().split()[1:] == ["0.5", "3"]


def test_every_option_is_tested():
    assert sorted(p.stem for p in (CONF / "logger").glob("*.yaml")) == ["csv", "mlflow", "tensorboard"]
