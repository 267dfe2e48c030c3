"""Checkpoints and resume (gensim.resume, gensim.callbacks.checkpointing, issue 12 item 4).

Unit tests of each piece in one process, then the acceptance test: SIGKILL of ``gensim-train``
mid-study, ``gensim-train resume=<run dir>``, compared with an uninterrupted study.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import pytest
import resume_study as rs
import yaml
from omegaconf import OmegaConf

from gensim.buffers import ReplayBuffer, Reservoir
from gensim.callbacks.checkpointing import checkpoint_callbacks, load_state, stream_files
from gensim.data import StreamingDataModule, ValidationStore
from gensim.data.delivered import DeliveredSteps
from gensim.launch import Launcher
from gensim.launch.executors.base import Executor
from gensim.resume import check_run_dir, load_run_config
from gensim.simulations import DecayingWave, Sample
from gensim.transport.receiver import Receiver
from sampling import Sobol


def sample(sim_id: int, step: int, value: float | None = None) -> Sample:
    v = float(10 * sim_id + step) if value is None else value
    return Sample(sim_id, step, 0.1 * (step + 1), np.array([1.5, 0.5]), {"u": np.full(4, v, np.float32)})


# -- the delivered (simulation, step) pairs ---------------------------------------------------
def test_delivered_steps_take_each_pair_once_and_survive_a_state_round_trip():
    d = DeliveredSteps()
    assert [s.step for s in d.claim([sample(1, 0), sample(1, 1), sample(1, 0)])] == [0, 1]
    assert d.n_duplicates == 1
    d.release([sample(1, 1)])  # not stored after all: may come again
    assert [s.step for s in d.claim([sample(1, 1), sample(2, 70)])] == [1, 70]
    restored = DeliveredSteps()
    restored.load_state_dict(d.state_dict())
    fresh = restored.claim([sample(1, 0), sample(2, 70), sample(1, 2)])
    assert [(s.sim_id, s.step) for s in fresh] == [(1, 2)]
    assert restored.count(1) == 3 and restored.count(2) == 1
    other = DeliveredSteps()
    other.claim([sample(5, 3)])
    restored.merge(other.state_dict())  # another rank's pairs
    assert restored.claim([sample(5, 3)]) == []


# -- the launcher ledger ----------------------------------------------------------------------
class RecordingExecutor(Executor):
    """Records submitted tasks; never reports an outcome."""

    def __init__(self) -> None:
        self.tasks = []

    def start(self, simulation, token, n_parallel, log_dir=None, simulation_timeout_s=None) -> None:
        pass

    def submit(self, task) -> None:
        self.tasks.append(task)

    def poll(self, timeout: float) -> list:
        time.sleep(timeout)
        return []

    def shutdown(self) -> None:
        pass


class AnyRank:
    def assign(self, record) -> str:
        record.rank = 0
        return "tcp://127.0.0.1:1"


def test_a_restored_launcher_reruns_interrupted_simulations_only_then_continues_the_design():
    sim = DecayingWave(size=4, n_steps=3)
    cfg = {"_target_": "gensim.simulations.DecayingWave", "size": 4, "n_steps": 3}
    first = Launcher(cfg, RecordingExecutor(), n_parallel=2, max_simulations=6)
    sampler = Sobol(sim.space, seed=0)
    ids = [first._new_record(sampler.sample(1)[0], "train").sim_id for _ in range(4)]
    states = ["done", "failed", "running", "pending"]
    for i, state in zip(ids, states):
        first.ledger.records[i].state = state
    first.ledger.records[ids[0]].seconds = 1.25
    saved, saved_sampler = first.state_dict(), sampler.state_dict()

    executor = RecordingExecutor()
    resumed = Launcher(cfg, executor, n_parallel=8, max_simulations=6)
    resumed.load_state_dict(saved)
    sampler2 = Sobol(sim.space, seed=0)
    sampler2.load_state_dict(saved_sampler)
    resumed.start(AnyRank(), sampler2, b"k" * 16, seed=0)
    try:
        deadline = time.monotonic() + 10
        while len(executor.tasks) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        resumed.shutdown()
    ran = [t.sim_id for t in executor.tasks]
    # The interrupted two first, with their parameters and seeds; then the budget's remaining
    # two (6 - 4 recorded) from where the design stopped; the done and failed ones never.
    assert ran[:2] == [ids[2], ids[3]] and len(ran) == 4
    for task in executor.tasks[:2]:
        rec = saved["ledger"]["records"][ids.index(task.sim_id)]
        assert list(task.params) == rec["params"] and task.seed == rec["seed"]
    expected_next = Sobol(sim.space, seed=0).sample(6)[4:]
    np.testing.assert_allclose([t.params for t in executor.tasks[2:]], expected_next)
    assert resumed.ledger.records[ids[0]].seconds == 1.25


# -- the data module's stream and held-out set ------------------------------------------------
def small_datamodule(tmp_path: Path) -> StreamingDataModule:
    sim = DecayingWave(size=4, n_steps=3)
    return StreamingDataModule(
        simulation=sim,
        sampler=Sobol(sim.space, seed=0),
        launcher=Launcher(
            {"_target_": "gensim.simulations.DecayingWave", "size": 4, "n_steps": 3},
            RecordingExecutor(),
            n_parallel=2,
            max_simulations=4,
        ),
        buffer=partial(ReplayBuffer, capacity=50, policy=Reservoir(), seed=0),
        receiver=Receiver,
        validation_sampler=partial(Sobol, seed=1),
        batch_size=2,
        watermark=2,
        n_validation=2,
    )


def test_a_restored_stream_takes_no_pair_twice_and_keeps_buffer_and_mean(tmp_path):
    dm = small_datamodule(tmp_path)
    dm.train_sink.add_many([sample(0, 0), sample(0, 1), sample(1, 0)])  # sim 1 interrupted after step 0
    state = dm.stream_state_dict()
    again = small_datamodule(tmp_path)
    again.load_stream_state_dict(state)
    assert len(again.buffer) == 3
    # Simulation 1 runs again from step 0: its step 0 is in the restored buffer already.
    again.train_sink.add_many([sample(1, 0, value=99.0), sample(1, 1), sample(1, 2)])
    pairs = sorted(zip(again.buffer.contents()["sim_id"].tolist(), again.buffer.contents()["step"].tolist()))
    assert pairs == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert again.delivered.n_duplicates == 1
    # The trivial predictor's mean counts each pair once: values 0, 1, 10, 11, 12.
    np.testing.assert_allclose(again.stream_mean.mean(), np.full(4, np.mean([0, 1, 10, 11, 12])), rtol=1e-6)


def test_a_stream_saved_while_the_receiver_adds_never_loses_a_buffered_pair_from_delivered(tmp_path):
    """The snapshot order (mean, buffer, delivered) against the sink's (delivered, buffer, mean):
    whatever the interleaving, every pair in the saved buffer is in the saved delivered set."""
    dm = small_datamodule(tmp_path)
    stop = threading.Event()

    def feed() -> None:
        k = 0
        while not stop.is_set():
            dm.train_sink.add_many([sample(k // 3, k % 3)])
            k += 1

    thread = threading.Thread(target=feed)
    thread.start()
    try:
        for _ in range(50):
            state = dm.stream_state_dict()
            d = DeliveredSteps()
            d.load_state_dict(state["delivered"])
            live = state["buffer"]["storage"]["live"]
            sims, steps = state["buffer"]["storage"]["sim_id"][live], state["buffer"]["storage"]["step"][live]
            assert d.claim([sample(int(a), int(b)) for a, b in zip(sims, steps)]) == []
            # Every sample in the saved mean is in the saved delivered set (all simulations counted:
            # a buffer that samples its arrivals may hold none of the latest ones).
            assert state["stream_mean_count"] <= sum(bin(m).count("1") for m in state["delivered"]["masks"].values())
    finally:
        stop.set()
        thread.join()


def test_validation_store_round_trip_and_shape_check():
    sim = DecayingWave(size=4, n_steps=3)
    store = ValidationStore(sim, n_simulations=2)
    store.expect([4, 9])
    for sim_id, step in [(4, 0), (4, 1), (4, 2), (9, 0)]:
        store.add(sample(sim_id, step))
    again = ValidationStore(sim, n_simulations=2)
    again.load_state_dict(store.state_dict())
    a, b = store.tensors(), again.tensors()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    with pytest.raises(ValueError, match="data.n_validation"):
        ValidationStore(sim, n_simulations=3).load_state_dict(store.state_dict())


def test_loading_the_study_state_after_setup_is_an_error_unless_restored_before(tmp_path):
    dm = small_datamodule(tmp_path)
    state = dm.state_dict()
    dm._val = {"t": np.zeros(1)}  # as after setup
    with pytest.raises(RuntimeError, match="resume=<run dir>"):
        dm.load_state_dict(state)
    restored = small_datamodule(tmp_path)
    restored.load_state_dict(state)
    restored._val = {"t": np.zeros(1)}
    restored.load_state_dict(state)  # Lightning's second call: a no-op


@pytest.mark.parametrize(
    "buffer,max_bytes,saved", [("auto", 1e9, True), ("auto", 100, False), (True, 100, True), (False, 1e9, False)]
)
def test_study_checkpoint_writes_each_ranks_stream_and_keeps_the_two_newest(tmp_path, buffer, max_bytes, saved):
    from types import SimpleNamespace

    from gensim.callbacks.checkpointing import CHECKPOINT_KEY, StudyCheckpoint, stream_files

    dm = small_datamodule(tmp_path)
    dm.train_sink.add_many([sample(0, 0)])
    callback = StudyCheckpoint(tmp_path / "stream", buffer=buffer, heldout=True, buffer_max_bytes=max_bytes)
    for step in (10, 20, 30):
        ckpt: dict = {}
        trainer = SimpleNamespace(datamodule=dm, global_step=step, global_rank=1, world_size=2)
        callback.on_save_checkpoint(trainer, None, ckpt)
    assert ckpt[CHECKPOINT_KEY]["stream_step"] == 30 and ckpt[CHECKPOINT_KEY]["buffer"] is saved
    assert ckpt[CHECKPOINT_KEY]["heldout"] is None  # rank 1 holds no held-out set
    kept = sorted(p.name for p in (tmp_path / "stream").iterdir())
    expected = [f.name for step in (20, 30) for f in stream_files(tmp_path / "stream", 1, step)[(0 if saved else 1) :]]
    assert kept == sorted(expected)


def test_restore_deletes_the_stream_files_a_killed_run_wrote_after_its_last_ckpt(tmp_path):
    # A run killed between its stream files of step 20 and the last.ckpt of step 20 leaves
    # them beside last.ckpt of step 10; the resumed run writes step 20 again, and rank 0 must
    # not take the stale files for the new ones (StudyCheckpoint.wait_for_peers).
    from types import SimpleNamespace

    import torch

    from gensim.callbacks.checkpointing import CHECKPOINT_KEY, StudyCheckpoint, saved_steps
    from gensim.resume import restore

    dm = small_datamodule(tmp_path)
    dm.train_sink.add_many([sample(0, 0), sample(0, 1)])
    stream = tmp_path / "checkpoints" / "stream"
    callback = StudyCheckpoint(stream, buffer=True, heldout=False)
    saved = {}
    for step in (10, 20):
        callback.on_save_checkpoint(
            SimpleNamespace(datamodule=dm, global_step=step, global_rank=0, world_size=1), None, saved
        )
        if step == 10:
            ckpt = {
                "StreamingDataModule": dm.state_dict(),
                CHECKPOINT_KEY: dict(saved[CHECKPOINT_KEY]),
                "global_step": 10,
            }
    torch.save(ckpt, tmp_path / "checkpoints" / "last.ckpt")
    assert saved_steps(stream, 0) == [10, 20]
    again = small_datamodule(tmp_path)
    assert restore(tmp_path / "checkpoints" / "last.ckpt", again, rank=0)["global_step"] == 10
    assert saved_steps(stream, 0) == [10]
    assert len(again.buffer) == 2


# -- config ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match", [({"every_n_steps": 0}, "every_n_steps"), ({"every_minutes": -1.0}, "every_minutes")]
)
def test_bad_checkpoint_intervals_are_clear_errors(tmp_path, kwargs, match):
    args = {"every_n_steps": None, "every_minutes": None, "buffer": True, "heldout": True} | kwargs
    with pytest.raises(ValueError, match=match):
        checkpoint_callbacks(tmp_path, **args)


def test_each_checkpoint_trigger_is_one_model_checkpoint_keeping_last_ckpt(tmp_path):
    from datetime import timedelta

    from lightning.pytorch.callbacks import ModelCheckpoint

    from gensim.callbacks.checkpointing import StudyCheckpoint

    callbacks = checkpoint_callbacks(tmp_path, every_n_steps=7, every_minutes=0.5, buffer="auto", heldout=True)
    steps, minutes, study = callbacks
    assert isinstance(steps, ModelCheckpoint) and isinstance(minutes, ModelCheckpoint)
    assert (steps._every_n_train_steps, steps._train_time_interval) == (7, None)
    assert (minutes._every_n_train_steps, minutes._train_time_interval) == (0, timedelta(seconds=30))
    assert all(
        c.save_last and c.save_top_k == 0 and c.dirpath == str(tmp_path / "checkpoints") for c in (steps, minutes)
    )
    # Both write the one last.ckpt (no last-v1.ckpt beside it, which resume would not read).
    assert not steps._enable_version_counter and not minutes._enable_version_counter
    assert isinstance(study, StudyCheckpoint)


def test_no_trigger_means_no_periodic_checkpoint(tmp_path):
    # Without any ModelCheckpoint Lightning adds its default one, which saves at every epoch
    # end (a pseudo-epoch of data.steps_per_epoch steps), with the buffer through StudyCheckpoint.
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from gensim.callbacks.checkpointing import StudyCheckpoint

    callbacks = checkpoint_callbacks(tmp_path, None, None, buffer=False, heldout=False)
    trainer = L.Trainer(callbacks=list(callbacks), default_root_dir=str(tmp_path), logger=False, max_steps=1)
    (only,) = trainer.checkpoint_callbacks
    assert isinstance(only, ModelCheckpoint) and only in callbacks
    assert (only._every_n_train_steps, only._every_n_epochs, only._train_time_interval) == (0, 0, None)
    assert not only.save_last and only.save_top_k == 0
    assert isinstance(callbacks[-1], StudyCheckpoint)  # the final last.ckpt still gets the stream files


def test_resume_paths_that_cannot_be_resumed_say_why(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        check_run_dir(tmp_path / "typo")
    with pytest.raises(FileNotFoundError, match="not the run directory"):
        check_run_dir(tmp_path)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(FileNotFoundError, match="before its first checkpoint"):
        check_run_dir(tmp_path)


def test_the_saved_config_is_resolved_with_the_first_runs_hydra_choices(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(
        "study: ${hydra:runtime.choices.simulation}\nseed: 3\ntrainer:\n  max_steps: 10\ncheckpoint: {}\n"
    )
    (tmp_path / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": {"simulation": "plume2d", "model": "cvae"}}}})
    )
    cfg = load_run_config(tmp_path, ["resume=x", "trainer.max_steps=20"])
    assert OmegaConf.to_container(cfg) == {
        "study": "plume2d",
        "seed": 3,
        "trainer": {"max_steps": 20},
        "checkpoint": {},
        "resume": str(tmp_path),
    }
    for bad, match in [
        ("model=deterministic", "config groups"),
        ("+extra=1", "config groups"),
        ("trainer.max_stepz=5", "no key"),
    ]:
        with pytest.raises(ValueError, match=match):
            load_run_config(tmp_path, [bad])
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 3\n")  # a run from before checkpoints
    with pytest.raises(ValueError, match="without resumable checkpoints"):
        load_run_config(tmp_path)


@pytest.mark.parametrize(
    "args,match",
    [
        (["resume=/nonexistent/run"], "no such directory"),
        (["+ckpt_path=/tmp/x.ckpt"], "resume=<its run directory>"),
    ],
)
@pytest.mark.slow
def test_gensim_train_refuses_wrong_resume_requests_before_starting(tmp_path, args, match):
    proc = subprocess.run(
        [sys.executable, "-m", "gensim.train", *args, f"hydra.run.dir={tmp_path / 'run'}"]
        if args[0].startswith("+")
        else [sys.executable, "-m", "gensim.train", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert match in proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "workers").exists()  # no simulation started


# -- acceptance ------------------------------------------------------------------------------
#: Tolerance on the final held-out error of a resumed study against an uninterrupted one, from
#: the issue; reports/resume/measure.txt measures the spread of uninterrupted runs of this study
#: (see docs/reliability.md) to show that 10% is not inside the run-to-run noise.
REL_TOLERANCE = 0.10


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_study(tmp_path):
    reference = rs.run_study(tmp_path / "uninterrupted")

    run_dir = tmp_path / "killed"
    killed = rs.kill_after_checkpoint(run_dir)
    saved = killed["ckpt"]["StreamingDataModule"]["launcher"]["ledger"]["records"]
    # No worker of the killed trainer alive 10 s after its death (issue 12 item 5).
    time.sleep(max(0.0, killed["killed_at"] + 10 - time.monotonic()))
    orphans = rs.alive(killed["workers"])
    for p in killed["workers"]:  # do not let them compete with the resumed study
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    # A second uninterrupted study: the reference is the mean of two, whose spread is about 1.5%
    # (reports/resume/measure.txt: 1.0-2.0% run to run on each side). Since a resumed study waits
    # for its stream to flow again before training, the resumed mean is 0.994x the uninterrupted
    # one (3 + 3 runs); before, it trained on the saved data alone while its workers started
    # again, 1.046x on a quiet machine and up to 1.12x in CI.
    second = rs.run_study(tmp_path / "uninterrupted-2")
    interrupted = {r["sim_id"]: r for r in rs.in_flight(killed["ckpt"])}
    finished = {r["sim_id"]: r for r in saved if r["state"] in ("done", "failed")}
    assert interrupted, "the study was killed with no simulation in flight: the test checks nothing"
    delivered = DeliveredSteps()  # the pairs taken before the checkpoint
    delivered.load_state_dict(
        load_state(stream_files(run_dir / "checkpoints" / "stream", 0, killed["ckpt"]["global_step"])[1])["delivered"]
    )

    rc, out = rs.resume(run_dir)
    assert rc == 0, out[-4000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    final = {r["sim_id"]: r for r in json.loads((run_dir / "simulations.json").read_text())}
    # What a failure message shows: the ledgers and counters of both runs.
    context = (
        f"killed at step {killed['ckpt']['global_step']}; saved ledger "
        f"{[(r['sim_id'], r['state']) for r in saved]}; final ledger "
        f"{[(r['sim_id'], r['state'], r['steps']) for r in final.values()]}; resumed metrics "
        f"{ {k: metrics[k] for k in ('samples_received', 'samples_duplicate_dropped', 'simulations_finished', 'val_rel_l2_mean')} }; "
        f"uninterrupted {reference['simulations_finished']} done, val {reference['val_rel_l2_mean']}"
    )

    # Finished simulations were not run again: their records are untouched (a rerun would
    # have rewritten at least the wall time), and the resumed run received only the steps of
    # the simulations it ran: the interrupted ones and the new ones (all 16 are done by then).
    for sim_id, rec in finished.items():
        assert final[sim_id] == rec, context
    for sim_id, rec in interrupted.items():
        assert final[sim_id]["state"] == "done", context
        assert (final[sim_id]["params"], final[sim_id]["seed"]) == (rec["params"], rec["seed"]), context
    n_steps = 10
    ran_again = [r for r in final.values() if r["sim_id"] not in finished]
    assert all(r["state"] == "done" for r in ran_again), context
    assert metrics["samples_received"] == n_steps * len(ran_again), context
    # The steps of interrupted simulations taken before the checkpoint came again and were
    # dropped, each one; the final buffer holds every (simulation, step) at most once.
    assert metrics["samples_duplicate_dropped"] == sum(delivered.count(i) for i in interrupted), context
    final_buffer = load_state(stream_files(run_dir / "checkpoints" / "stream", 0, rs.MAX_STEPS)[0])
    live = final_buffer["storage"]["live"]
    pairs = list(zip(final_buffer["storage"]["sim_id"][live].tolist(), final_buffer["storage"]["step"][live].tolist()))
    assert len(pairs) == len(set(pairs)) > 0
    # The whole budget, each simulation once, like the uninterrupted study.
    assert metrics["simulations_finished"] == reference["simulations_finished"] == 16, context
    assert metrics["steps_per_rank"] == [rs.MAX_STEPS], context
    assert metrics["validation_simulations"] == 4, context  # the held-out set came with the checkpoint
    # Final held-out error within 10% of the uninterrupted studies' (their mean).
    ratio = metrics["val_rel_l2_mean"] / ((reference["val_rel_l2_mean"] + second["val_rel_l2_mean"]) / 2)
    assert abs(ratio - 1) <= REL_TOLERANCE, f"{context}; second uninterrupted val {second['val_rel_l2_mean']}"
    assert not orphans, f"workers of the killed trainer alive 10 s after its SIGKILL: {orphans}"
