"""Off-line baselines on a study's simulations: re-simulation, layouts, the off-line neural surrogate."""

from __future__ import annotations

import csv
import functools
import io
import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from omegaconf import OmegaConf
from sklearn.base import clone

from gensim.baselines import (
    KrigingBaseline,
    OfflineSurrogate,
    SnapshotLayout,
    TrajectoryLayout,
    simulate,
    study_simulations,
)
from gensim.models import DeterministicSurrogate
from gensim.models.components import MLP
from gensim.simulations import DecayingWave


def _fake_study(run_dir: Path, records: list[dict]) -> Path:
    """The two files an off-line baseline reads from a gensim-train run directory."""
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = {"simulation": {"_target_": "gensim.simulations.DecayingWave", "size": 8, "n_steps": 5}}
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run_dir / "simulations.json").write_text(json.dumps(records))
    return run_dir


def _record(sim_id: int, params: list[float], purpose: str = "train", state: str = "done") -> dict:
    return {
        "sim_id": sim_id,
        "params": params,
        "seed": 7 + sim_id,
        "purpose": purpose,
        "state": state,
        "steps": 5,
        "seconds": 0.01,
    }


def test_study_simulations_re_simulates_the_finished_records(tmp_path):
    records = [
        _record(0, [1.0, 0.2]),
        _record(1, [1.5, 0.5]),
        _record(2, [2.0, 0.9], state="failed"),
        _record(3, [1.2, 0.3], purpose="validation"),
    ]
    run_dir = _fake_study(tmp_path / "run", records)
    sims, info = study_simulations(run_dir, "train")
    assert sims.sim_ids.tolist() == [0, 1]
    assert info == {"recorded": 2, "used": 2, "subsampled": False, "simulate_s_per_field": pytest.approx(0.002)}
    sim = DecayingWave(size=8, n_steps=5)
    assert sims.fields.shape == (2, 5, 8)
    np.testing.assert_allclose(sims.fields[1, 3], sim.exact([1.5, 0.5], sim.times[3]), rtol=1e-6)
    np.testing.assert_allclose(sims.times, sim.times)
    heldout, _ = study_simulations(run_dir, "validation")
    assert heldout.sim_ids.tolist() == [3]


def test_parallel_re_simulation_gives_the_serial_fields(tmp_path):
    records = [_record(i, [1.0 + i / 10, 0.2 + i / 10]) for i in range(5)]
    run_dir = _fake_study(tmp_path / "run", records)
    serial, _ = study_simulations(run_dir, "train")
    parallel, info = study_simulations(run_dir, "train", n_parallel=2)  # local worker processes
    assert info["used"] == 5 and parallel.sim_ids.tolist() == serial.sim_ids.tolist()
    np.testing.assert_array_equal(parallel.fields, serial.fields)  # the same code, the same float32
    np.testing.assert_array_equal(parallel.times, serial.times)
    assert (run_dir / "workers" / "resimulate-train" / "worker-1.log").is_file()  # logs beside the study's


def test_study_simulations_subsamples_and_says_so(tmp_path):
    run_dir = _fake_study(tmp_path / "run", [_record(i, [1.0 + i / 10, 0.5]) for i in range(6)])
    sims, info = study_simulations(run_dir, "train", max_simulations=4, seed=3)
    assert (info["recorded"], info["used"], info["subsampled"]) == (6, 4, True)
    assert len(sims) == 4 and len(set(sims.sim_ids.tolist())) == 4
    again, _ = study_simulations(run_dir, "train", max_simulations=4, seed=3)
    assert again.sim_ids.tolist() == sims.sim_ids.tolist()


def test_study_simulations_explains_an_empty_study(tmp_path):
    run_dir = _fake_study(tmp_path / "run", [_record(0, [1.0, 0.2], state="cancelled")])
    with pytest.raises(ValueError, match="no finished 'train' simulation"):
        study_simulations(run_dir, "train")
    with pytest.raises(FileNotFoundError, match="gensim-train"):
        study_simulations(tmp_path, "train")


@pytest.fixture(scope="module")
def wave():
    sim = DecayingWave(size=8, n_steps=5)
    params = sim.space.from_unit(np.random.default_rng(0).uniform(size=(12, 2)))
    return sim, simulate(sim, params, [None] * 12, range(12))


def test_layouts_round_trip(wave):
    _, sims = wave
    X, Y = TrajectoryLayout().xy(sims)
    assert (X.shape, Y.shape) == ((12, 2), (12, 40))
    X, Y = SnapshotLayout(log_time=True).xy(sims)
    assert (X.shape, Y.shape) == ((60, 3), (60, 8))
    np.testing.assert_allclose(X[:5, 2], np.log(sims.times))
    np.testing.assert_array_equal(Y.reshape(sims.fields.shape), sims.fields)

    class Echo:  # an "estimator" returning the rows of Y for the rows of X, to check the reshapes
        def predict(self, X_new):
            return Y[: len(X_new)]

    np.testing.assert_array_equal(SnapshotLayout(log_time=True).predict(Echo(), sims), sims.fields)


def test_kriging_on_whole_trajectories_is_accurate(wave):
    sim, sims = wave
    layout = TrajectoryLayout()
    model = KrigingBaseline(
        n_components=0.9999999, max_components=None, hyperparameter_samples=None, max_samples=2000
    ).fit(*layout.xy(sims))
    test = simulate(sim, sim.space.from_unit(np.array([[0.3, 0.6], [0.7, 0.2]])), [None] * 2, [0, 1])
    pred = layout.predict(model, test)
    # a exp(-k t) over a 2-D box from 12 points: measured 2e-4 relative error; 1e-2 leaves room.
    assert np.linalg.norm(pred - test.fields) / np.linalg.norm(test.fields) < 1e-2


def _offline(**kwargs) -> OfflineSurrogate:
    model = functools.partial(
        DeterministicSurrogate,
        net=functools.partial(MLP, hidden=[32, 32]),
        lr=3e-3,
        warmup_steps=10,
        normalizer_warmup_batches=5,
    )
    trainer = functools.partial(
        L.Trainer,
        accelerator="cpu",
        devices=1,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    return OfflineSurrogate(model=model, trainer=trainer, **{"max_steps": 150, "batch_size": 16} | kwargs)


def test_offline_surrogate_trains_by_epochs_and_logs(wave, tmp_path):
    sim, sims = wave
    layout = SnapshotLayout(log_time=False)
    X, Y = layout.xy(sims)
    est = _offline(fields=sim.fields, log_dir=str(tmp_path), val_every_n_steps=50)
    assert clone(est).get_params()["max_steps"] == 150
    assert est.fit(X, Y, eval_set=(X, Y)) is est
    pred = est.predict(X)
    trivial = np.linalg.norm(Y - Y.mean(0)) / np.linalg.norm(Y)
    # 150 steps on 60 smooth rows: far better than the mean field (measured about 0.02 vs 0.27).
    assert np.linalg.norm(pred - Y) / np.linalg.norm(Y) < 0.3 * trivial
    assert est.module_.trainer.global_step == 150
    log = (tmp_path / "logs" / "metrics.csv").read_text()
    assert "val_rel_l2_mean" in log and "train_loss" in log
    # Wall time beside each of the 3 validations, counted from clock_start (here: fit's start).
    rows = list(csv.DictReader(io.StringIO(log)))
    elapsed = [float(r["elapsed_s"]) for r in rows if r.get("elapsed_s")]
    assert len(elapsed) == 3 and 0 < elapsed[0] < elapsed[1] < elapsed[2]


def test_offline_clock_counts_from_the_given_start(wave, tmp_path):
    sim, sims = wave
    X, Y = SnapshotLayout(log_time=False).xy(sims)
    # A pipeline that simulated for 1000 s before training: its times include them.
    _offline(
        fields=sim.fields, log_dir=str(tmp_path), val_every_n_steps=150, clock_start=time.perf_counter() - 1000.0
    ).fit(X, Y, eval_set=(X, Y))
    rows = list(csv.DictReader(open(tmp_path / "logs" / "metrics.csv")))
    assert [1000 < float(r["elapsed_s"]) < 1300 for r in rows if r.get("elapsed_s")] == [True]


def test_offline_surrogate_checks_its_inputs(wave):
    sim, sims = wave
    X, Y = SnapshotLayout(log_time=False).xy(sims)
    with pytest.raises(ValueError, match="fields add up to"):
        _offline(fields=(sim.fields[0], sim.fields[0])).fit(X, Y)
    with pytest.raises(ValueError, match="parameters then t"):
        _offline().fit(X[:, :1], Y)
