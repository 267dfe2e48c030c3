"""StreamingDataModule end to end in one process: live simulations, bad messages, watermark."""

from __future__ import annotations

import threading
import time
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
import zmq

from gensim.buffers import FIFO, ReplayBuffer, Reservoir
from gensim.client import Client
from gensim.data import BufferStream, StreamingDataModule, ValidationStore
from gensim.data.streaming import StreamMean
from gensim.launch import Launcher
from gensim.launch.executors import LocalExecutor
from gensim.models import DeterministicSurrogate
from gensim.models.components import MLP
from gensim.simulations import DecayingWave, Sample
from gensim.transport import wire
from gensim.transport.receiver import Receiver
from sampling import Sobol

SIM_CFG = {"_target_": "gensim.simulations.DecayingWave", "size": 8, "n_steps": 5}


@pytest.fixture
def datamodule(tmp_path):
    sim = DecayingWave(size=8, n_steps=5)
    dm = StreamingDataModule(
        simulation=sim,
        sampler=Sobol(sim.space, seed=0),
        launcher=Launcher(SIM_CFG, LocalExecutor(), n_parallel=2, max_simulations=30, log_dir=str(tmp_path / "w")),
        buffer=partial(ReplayBuffer, capacity=100, policy=Reservoir(), seed=0),
        receiver=Receiver,
        validation_sampler=partial(Sobol, seed=99),
        batch_size=16,
        steps_per_epoch=50,
        watermark=40,
        n_validation=4,
        seed=0,
    )
    yield dm
    dm.shutdown()


def send_bad_messages(address: str, token: bytes, sim_id: int, t: float) -> None:
    """Garbage from a raw socket without the study's password (refused at the handshake) and
    with it (rejected as malformed); a wrong shape and a NaN field from a registered simulation."""
    ctx = zmq.Context()
    try:
        stranger = ctx.socket(zmq.PUSH)
        stranger.connect(address)
        stranger.send(b"\x00garbage\xff" * 10)
        stranger.close(linger=0)
        raw = ctx.socket(zmq.PUSH)
        raw.setsockopt(zmq.PLAIN_USERNAME, wire.ZAP_USERNAME)
        raw.setsockopt(zmq.PLAIN_PASSWORD, wire.zap_password(token))
        raw.connect(address)
        raw.send(b"\x00garbage\xff" * 10)
        raw.send_multipart([b"GSIM", b"not a header"])
        raw.close(linger=2000)
    finally:
        ctx.term()
    with Client(address, token, sim_id=sim_id) as client:
        client.send(0, t, {"u": np.zeros(9, np.float32)})  # wrong shape
        client.send(0, t, {"u": np.full(8, np.nan, np.float32)})  # NaN field


def test_training_goes_on_through_bad_messages(datamodule, tmp_path):
    torch.manual_seed(0)
    model = DeterministicSurrogate(
        datamodule.simulation.fields, 2, net=partial(MLP, hidden=(32,)), warmup_steps=5, normalizer_warmup_batches=5
    )
    started = threading.Event()

    class SendBadOnce(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 10 and not started.is_set():
                started.set()
                # A registered, running simulation whose messages are wrong in content only.
                datamodule.receiver.register(10_000, np.array([1.5, 0.5]), datamodule._train_sink)
                send_bad_messages(
                    datamodule.receiver.address,
                    datamodule.receiver.token,
                    10_000,
                    float(datamodule.simulation.times[0]),
                )
                time.sleep(0.5)  # let the receiver thread handle them while training continues

    trainer = L.Trainer(
        max_steps=150,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=[SendBadOnce()],
    )
    trainer.fit(model, datamodule=datamodule)
    assert started.is_set() and trainer.global_step == 150
    rejected = datamodule.receiver.stats().rejected
    assert rejected.get("malformed", 0) == 2, rejected
    assert rejected.get("shape", 0) == 1 and rejected.get("non_finite", 0) == 1, rejected
    assert datamodule.receiver.stats().refused_connections >= 1
    # None of them reached the held-out set: 4 simulations x 5 steps, all finite.
    val = datamodule.validation_tensors()
    assert val["fields"].shape == (20, 8) and torch.isfinite(val["fields"]).all()
    assert "val_rel_l2_mean" in trainer.callback_metrics


def test_validation_set_is_the_fixed_sobol_design(datamodule):
    datamodule.setup("fit")
    val = datamodule.validation_tensors()
    design = Sobol(datamodule.simulation.space, seed=99).sample(4)
    params = val["params"].numpy().reshape(4, 5, 2)[:, 0, :]
    np.testing.assert_allclose(params, design, rtol=1e-6)
    sim = datamodule.simulation
    expected = np.stack([sim.exact(p, t) for p in design for t in sim.times])
    np.testing.assert_allclose(val["fields"].numpy(), expected, rtol=1e-6)
    # The progress bar's count of received samples is of training samples: the 4 x 5 held-out
    # samples are counted apart (training simulations may stream meanwhile: status comes first).
    received = datamodule.status()["received"]
    stats = datamodule.receiver.stats()
    assert datamodule.heldout_samples_received(stats) == 20
    assert 0 <= received <= stats.accepted - 20


class FakeBuffer:
    """Just enough of a ReplayBuffer for BufferStream: never reaches the watermark."""

    def __init__(self, n: int) -> None:
        self.n = n

    def wait_for(self, n: int, timeout: float) -> bool:
        time.sleep(min(timeout, 0.01))
        return self.n >= n

    def __len__(self) -> int:
        return self.n

    def draw(self, batch_size: int, timeout: float):
        return {"fields": np.zeros((batch_size, 1), np.float32)}

    def close(self) -> None:
        pass


def test_stream_that_ends_empty_is_a_clear_error():
    stream = BufferStream(FakeBuffer(0), 4, 3, watermark=10, stream_ended=lambda: True)
    with pytest.raises(RuntimeError, match="simulations ended before sending any training sample"):
        next(iter(stream))


def test_stream_below_watermark_trains_on_what_it_has_when_the_stream_ended():
    stream = BufferStream(FakeBuffer(5), 4, 3, watermark=10, stream_ended=lambda: True)
    batches = list(stream)
    assert len(batches) == 3 and batches[0]["fields"].shape == (4, 1)


def test_a_resumed_stream_waits_until_samples_flow_again():
    """A restored (full) buffer alone does not start training: the first batch waits until the
    stream flows (a sample arrived in this process), or until it ended."""
    flowing = threading.Event()
    stream = BufferStream(FakeBuffer(20), 4, 1, watermark=10, stream_ended=lambda: False, flowing=flowing.is_set)
    got = []
    reader = threading.Thread(target=lambda: got.extend(stream), daemon=True)
    reader.start()
    reader.join(timeout=0.3)
    assert reader.is_alive() and not got, "trained on the restored buffer before the stream flowed"
    flowing.set()
    reader.join(timeout=10)
    assert not reader.is_alive() and len(got) == 1
    ended = BufferStream(FakeBuffer(20), 4, 1, watermark=10, stream_ended=lambda: True, flowing=lambda: False)
    assert len(list(ended)) == 1  # nothing more can come: train on the restored data


def wave_sample(sim_id: int, step: int) -> Sample:
    return Sample(
        sim_id, step, 0.5 * (step + 1), np.array([1.0, 0.5]), {"u": np.full(2, 10 * sim_id + step, np.float32)}
    )


def test_validation_store_orders_rows_by_design_order_and_step():
    sim = DecayingWave(size=2, n_steps=2)
    store = ValidationStore(sim, n_simulations=2)
    store.add(wave_sample(1, 1))  # before expect(): the launcher may start a simulation first
    # Ids are random: rows follow the design's order (the order of expect), not the ids'.
    store.expect([9, 1])
    for sim_id, step in [(9, 1), (1, 0), (9, 0)]:
        store.add(wave_sample(sim_id, step))
    t = store.tensors()
    assert t["sim_id"].tolist() == [9, 9, 1, 1]
    assert t["fields"][:, 0].tolist() == [90, 91, 10, 11]
    # The held-out set is stored once: the tensors are views of the store's arrays.
    assert t["fields"].data_ptr() == store.tensors()["fields"].data_ptr()


def test_validation_store_keeps_complete_simulations_only_and_no_foreign_samples():
    sim = DecayingWave(size=2, n_steps=2)
    store = ValidationStore(sim, n_simulations=3)
    store.expect([3, 7, 5])
    for step in (0, 1, 1):  # a step received twice (a retry resends it) is stored once
        store.add(wave_sample(7, step))
    store.add(wave_sample(3, 0))  # 3 lacks its step 1: left out whole
    store.add(wave_sample(7, 5))  # a step the simulation does not have
    store.add(wave_sample(99, 0))  # not a held-out simulation
    t = store.tensors()
    assert t["sim_id"].tolist() == [7, 7] and store.complete() == [7]
    with pytest.raises(RuntimeError, match="every validation simulation failed"):
        ValidationStore(sim, n_simulations=2).tensors()


def test_a_dropped_held_out_simulation_leaves_nothing_behind():
    sim = DecayingWave(size=2, n_steps=2)
    store = ValidationStore(sim, n_simulations=2)
    store.expect([4, 8])
    for sim_id, step in [(4, 0), (4, 1), (8, 0), (8, 1)]:
        store.add(wave_sample(sim_id, step))
    assert store.drop(8) == 2  # given up by the launcher (e.g. its last attempt hung after END)
    store.add(wave_sample(8, 1))  # a late step of it is ignored
    assert store.tensors()["sim_id"].tolist() == [4, 4] and len(store) == 2 and store.complete() == [4]
    assert store.drop(123) == 0


def filled_buffer(n: int = 64) -> ReplayBuffer:
    buffer = ReplayBuffer(capacity=100, fields=DecayingWave(size=2).fields, n_params=2, seed=3)
    for k in range(n):
        buffer.add(Sample(k // 10, k % 10, 0.1 * k, np.array([1.0, 0.5]), {"u": np.full(2, k, np.float32)}))
    return buffer


def test_prefetch_draws_the_same_batches_ahead_of_training():
    plain = BufferStream(filled_buffer(), 8, 5, watermark=8, stream_ended=lambda: False)
    ahead = BufferStream(filled_buffer(), 8, 5, watermark=8, stream_ended=lambda: False, prefetch=2)
    try:
        for a, b in zip(plain, ahead, strict=True):
            assert torch.equal(a["fields"], b["fields"]) and torch.equal(a["sim_id"], b["sim_id"])
    finally:
        ahead.close()


def test_prefetch_passes_on_the_end_of_a_consuming_stream_and_errors():
    buffer = ReplayBuffer(capacity=100, fields=DecayingWave(size=2).fields, n_params=2, policy=FIFO())
    for k in range(20):
        buffer.add(Sample(0, k, 0.1 * k, np.array([1.0, 0.5]), {"u": np.zeros(2, np.float32)}))
    stream = BufferStream(buffer, 8, 10, watermark=8, stream_ended=lambda: True, prefetch=1)
    try:
        sizes = [len(b["t"]) for b in stream]
        assert sizes == [8, 8, 4] and stream.exhausted
        assert list(stream) == []  # and stays ended
    finally:
        stream.close()

    class Broken(FakeBuffer):
        def draw(self, batch_size, timeout):
            raise ValueError("storage is corrupt")

    broken = BufferStream(Broken(100), 4, 3, watermark=10, stream_ended=lambda: False, prefetch=1)
    try:
        with pytest.raises(ValueError, match="corrupt"):
            next(iter(broken))
    finally:
        broken.close()


def test_batches_are_pinned_when_asked(monkeypatch):
    # No GPU here, so pinning itself cannot run: check that every tensor of the batch goes through it.
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(self) or self)
    batch = next(iter(BufferStream(filled_buffer(), 8, 1, watermark=8, stream_ended=lambda: False, pin_memory=True)))
    assert len(pinned) == len(batch) and {"params", "t", "fields", "sim_id", "step"} <= batch.keys()


def test_watermark_below_batch_size_is_rejected():
    sim = DecayingWave()
    with pytest.raises(ValueError, match="watermark"):
        StreamingDataModule(
            sim,
            Sobol(sim.space, seed=0),
            Launcher(SIM_CFG, LocalExecutor(), n_parallel=1),
            partial(ReplayBuffer, capacity=10),
            Receiver,
            partial(Sobol, seed=1),
            batch_size=32,
            watermark=8,
        )


def fifo_datamodule(tmp_path, capacity: int, **kwargs) -> StreamingDataModule:
    """12 training simulations of 5 steps into a FIFO buffer, 2 at a time."""
    sim = DecayingWave(size=8, n_steps=5)
    return StreamingDataModule(
        simulation=sim,
        sampler=Sobol(sim.space, seed=0),
        launcher=Launcher(SIM_CFG, LocalExecutor(), n_parallel=2, max_simulations=12, log_dir=str(tmp_path / "w")),
        buffer=partial(ReplayBuffer, capacity=capacity, policy=FIFO()),
        receiver=Receiver,
        validation_sampler=partial(Sobol, seed=99),
        steps_per_epoch=4,
        **kwargs,
    )


def test_a_used_up_fifo_stream_stops_training(tmp_path):
    from gensim.callbacks import StopWhenStreamExhausted

    dm = fifo_datamodule(tmp_path, 100, batch_size=10, watermark=10, n_validation=2)
    model = DeterministicSurrogate(dm.simulation.fields, 2, net=partial(MLP, hidden=(8,)), normalizer_warmup_batches=2)
    trainer = L.Trainer(
        max_steps=10_000,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=[StopWhenStreamExhausted()],
    )
    try:
        trainer.fit(model, datamodule=dm)
    finally:
        dm.shutdown()
    # FIFO: each of the 12 x 5 training samples is used exactly once, in batches of 10.
    assert trainer.global_step == 6
    assert dm.buffer.stats()["n_consumed"] == 60


def test_held_out_set_arrives_before_a_full_fifo_can_block_the_receiver(tmp_path):
    # A FIFO of 6 samples is full after one training simulation and a bit (5 steps each): its
    # add then waits for draws, holding the receiver thread that also takes the held-out
    # samples. Training simulations must therefore start only once the held-out set is in,
    # or setup waits for held-out samples queued behind a sink that training alone can free.
    dm = fifo_datamodule(tmp_path, 6, batch_size=2, watermark=2, n_validation=4, validation_timeout_s=30.0)
    arrivals: list[str] = []  # in the receiver thread's order
    val_add, buffer_add, buffer_add_many = dm.validation.add, dm.buffer.add, dm.buffer.add_many
    dm.validation.add = lambda sample: (arrivals.append("validation"), val_add(sample))[1]
    dm.buffer.add = lambda sample, timeout=None: (arrivals.append("train"), buffer_add(sample, timeout))[1]
    # The receiver hands queued training samples to the data module's batch sink.
    dm.buffer.add_many = lambda samples, timeout=None: (
        arrivals.extend(["train"] * len(samples)),
        buffer_add_many(samples, timeout),
    )[1]
    try:
        dm.setup("fit")
        assert dm.validation_tensors()["fields"].shape == (4 * 5, 8)
        assert dm.launcher.budget == 12  # the budget is back for training
        deadline = time.monotonic() + 30.0
        while "train" not in arrivals and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        dm.shutdown()
    assert arrivals.count("validation") == 4 * 5
    assert "train" in arrivals, "training simulations never started after the held-out set"
    assert arrivals.index("train") == 4 * 5, "a training sample arrived before the held-out set was complete"


def test_stream_mean_in_float32_blocks_matches_the_float64_mean():
    # Values around 300 with a spread (heat2d's temperatures), 1000 samples: 15 full blocks of 64
    # and a partial one. The mean is within 1e-5 relative of the float64 mean (the bound in the
    # docstring, from at most 64 float32 roundings per block).
    sim = DecayingWave(size=50)
    rng = np.random.default_rng(0)
    data = (300 + 50 * rng.standard_normal((1000, 50))).astype(np.float32)
    mean = StreamMean(sim)
    for row in data:
        mean.add({"u": row})
    exact = data.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(mean.mean(), exact, rtol=1e-5)
    total, count = mean.totals()
    assert count == 1000 and np.allclose(total / count, exact, rtol=1e-5)


def test_stream_mean_add_many_sums_as_add():
    # Batches across block boundaries (64) give bit for bit the sums of one add per sample.
    sim = DecayingWave(size=50)
    data = (300 + 50 * np.random.default_rng(1).standard_normal((300, 50))).astype(np.float32)
    one, many = StreamMean(sim), StreamMean(sim)
    for row in data:
        one.add({"u": row})
    for start in range(0, 300, 37):
        many.add_many([{"u": row} for row in data[start : start + 37]])
    (sum_one, n_one), (sum_many, n_many) = one.totals(), many.totals()
    assert n_one == n_many == 300
    np.testing.assert_array_equal(sum_many, sum_one)
