"""Receiver batches: messages queued while the receive thread is busy are validated and dispatched together.

Each test holds the receive thread in a gate sink (simulation 0) while the messages under test
queue up in ZeroMQ, then opens the gate: the thread takes the queued messages as one batch.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from test_receiver import (  # noqa: F401
    PARAMS,
    TOKEN,
    body,
    end_frames,
    fields_at,
    make_receiver,
    raw_push,
    signed,
    valid_frames,
    wait_until,
)

from gensim.transport import BatchSink, wire


class Recorder:
    """A batch sink that records each call: ``calls`` holds the steps of each call, in order."""

    def __init__(self, fail_many: bool = False, fail_step: int | None = None) -> None:
        self.calls: list[list[int]] = []
        self.fail_many, self.fail_step = fail_many, fail_step
        self.sink = BatchSink(self.one, self.many)

    def one(self, sample) -> None:
        if sample.step == self.fail_step:
            raise RuntimeError(f"step {sample.step} refused")
        self.calls.append([sample.step])

    def many(self, samples) -> None:
        if self.fail_many:
            raise RuntimeError("batch refused")
        self.calls.append([s.step for s in samples])

    @property
    def steps(self) -> list[int]:
        return [step for call in self.calls for step in call]


@pytest.fixture
def gated(make_receiver, raw_push):  # noqa: F811 (fixtures imported from test_receiver)
    """A receiver whose thread is held in simulation 0's sink until ``release()``; the gate
    opens at teardown too, so the receiver stops even when a test fails."""
    rx = make_receiver()
    entered, gate = threading.Event(), threading.Event()

    def hold(sample) -> None:
        entered.set()
        gate.wait(10)

    rx.register(0, PARAMS, hold)
    sock = raw_push(rx.address)
    sock.send_multipart(valid_frames(0, 0))
    assert entered.wait(5), "the receive thread never reached the gate sink"

    def release() -> None:
        # Give ZeroMQ time to move what the test sent into the receiver's queue.
        time.sleep(0.2)
        gate.set()

    yield rx, sock, release
    gate.set()


def test_bad_messages_inside_a_batch_are_rejected_and_the_good_ones_kept(gated):
    rx, sock, release = gated
    rec = Recorder()
    rx.register(1, PARAMS, rec.sink)
    for step in range(10):
        frames = valid_frames(1, step)
        if step == 3:
            arrays = fields_at(step)
            arrays["u"] = np.full((6, 5), np.nan, np.float32)  # NaN field, signed
            frames = valid_frames(1, step, arrays=arrays)
        if step == 6:
            frames = valid_frames(1, step, study=wire.study_id(bytes(32)))  # another study
        sock.send_multipart(frames)
    sock.send_multipart(end_frames(1, 10))
    release()
    assert rx.wait_finished([1], timeout=5)
    assert rec.steps == [0, 1, 2, 4, 5, 7, 8, 9]
    assert max(map(len, rec.calls)) > 1, f"no batch was formed: calls {rec.calls}"
    stats = rx.stats()
    assert stats.rejected == {"non_finite": 1, "study": 1}
    assert stats.accepted == 1 + 8 and stats.accepted_per_sim == {0: 1, 1: 8}


def test_order_per_simulation_and_end_inside_a_batch(gated):
    # Two simulations interleaved in one batch, with the END of simulation 1 in the middle:
    # its samples before the END are in its sink when the END is recorded, one after it is
    # rejected, and simulation 2 carries on after it.
    rx, sock, release = gated
    recs = {1: Recorder(), 2: Recorder()}
    for sim_id, rec in recs.items():
        rx.register(sim_id, PARAMS, rec.sink)
    seen_at_end = []
    for step in range(6):
        for sim_id in (1, 2):
            sock.send_multipart(valid_frames(sim_id, step))
        if step == 3:
            sock.send_multipart(end_frames(1, 4))
    sock.send_multipart(end_frames(2, 6))

    def waiter() -> None:
        if rx.wait_finished([1], timeout=5):
            seen_at_end.append(list(recs[1].steps))

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        release()
        assert rx.wait_finished([1, 2], timeout=5)
    finally:
        thread.join(5)
    assert seen_at_end == [[0, 1, 2, 3]]
    assert recs[1].steps == [0, 1, 2, 3]
    assert recs[2].steps == [0, 1, 2, 3, 4, 5]
    assert rx.stats().rejected == {"finished_sim": 2}


def test_a_failing_batch_is_retried_one_by_one(gated):
    # add_many raises (it takes nothing then): the receiver hands the samples to the plain
    # sink one by one, so only the faulty sample counts as a sink error.
    rx, sock, release = gated
    rec = Recorder(fail_many=True, fail_step=2)
    rx.register(1, PARAMS, rec.sink)
    for step in range(5):
        sock.send_multipart(valid_frames(1, step))
    sock.send_multipart(end_frames(1, 5))
    release()
    assert rx.wait_finished([1], timeout=5)
    assert rec.calls == [[0], [1], [3], [4]]
    stats = rx.stats()
    assert stats.rejected == {"sink_error": 1} and stats.accepted_per_sim[1] == 4


def test_plain_sinks_get_one_sample_per_call_and_sinks_are_grouped(gated):
    # Simulations 1 and 2 share one batch sink (one call for their run of samples);
    # simulation 3's plain sink is called per sample, between them.
    rx, sock, release = gated
    shared, plain = Recorder(), []
    rx.register(1, PARAMS, shared.sink)
    rx.register(2, PARAMS, shared.sink)
    rx.register(3, PARAMS, plain.append)
    for sim_id, step in ((1, 0), (2, 0), (3, 0), (3, 1), (1, 1)):
        sock.send_multipart(valid_frames(sim_id, step))
    release()
    assert wait_until(lambda: rx.stats().accepted == 1 + 5)
    assert shared.calls == [[0, 0], [1]]
    assert [s.sim_id for s in plain] == [3, 3]
    assert rx.stats().rejected == {}


def test_batch_sink_checks_its_arguments():
    with pytest.raises(TypeError, match="two callables"):
        BatchSink(print, None)


def test_tags_of_a_large_batch_are_hashed_on_helper_threads(make_receiver, raw_push):  # noqa: F811
    # 64 KiB messages: a batch of 12 holds more than PARALLEL_TAG_BYTES, so its tags are split
    # between the receive thread and a helper. The verdicts are those of one thread: the
    # message signed with another key is refused ("auth"), every other one is taken in order.
    from gensim.simulations.base import FieldSpec
    from gensim.transport import receiver as receiver_module

    big = (FieldSpec("u", (128, 128), "float32"),)
    assert 12 * 128 * 128 * 4 > receiver_module.PARALLEL_TAG_BYTES
    rx = make_receiver(fields=big, tag_threads=2)
    hashed_on = []
    tags_of = rx._tags_of

    def spy(messages):
        hashed_on.append((threading.current_thread().name, len(messages)))
        return tags_of(messages)

    rx._tags_of = spy
    entered, gate = threading.Event(), threading.Event()

    def hold(sample) -> None:
        entered.set()
        gate.wait(10)

    rec = Recorder()
    rx.register(0, PARAMS, hold)
    rx.register(1, PARAMS, rec.sink)
    sock = raw_push(rx.address)
    field = {"u": np.ones((128, 128), np.float32)}
    sock.send_multipart(valid_frames(0, 0, specs=big, arrays=field))
    assert entered.wait(5), "the receive thread never reached the gate sink"
    try:
        for step in range(12):
            frames = body(1, step, specs=big, arrays=field)
            frames = signed(frames, bytes(32)) if step == 5 else signed(frames)
            sock.send_multipart(frames)
        sock.send_multipart(end_frames(1, 12))
        time.sleep(0.2)  # ZeroMQ moves the messages into the receiver's queue
    finally:
        gate.set()
    assert rx.wait_finished([1], timeout=10)
    assert rec.steps == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert rx.stats().rejected == {"auth": 1}
    helpers = [n for name, n in hashed_on if name.startswith("gensim-receiver-tag")]
    assert helpers and sum(helpers) >= 6, hashed_on


def test_tag_threads_must_be_a_positive_integer():
    from test_receiver import SPECS

    from gensim.transport import Receiver

    with pytest.raises(ValueError, match="tag_threads must be an integer >= 1"):
        Receiver(SPECS, TOKEN, tag_threads=0)


def test_messages_sent_one_at_a_time_within_the_wake_interval_come_in_one_batch(make_receiver, raw_push):  # noqa: F811
    # After a wake-up the receive thread sleeps out wake_interval_s (1 s here): the messages
    # sent one by one meanwhile queue in ZeroMQ and are taken together, in order, by one
    # add_many call, instead of one wake-up (and one sink call) each.
    from gensim.transport.receiver import RATE_WINDOW_S

    rx = make_receiver(wake_interval_s=1.0)
    rec = Recorder()
    rx.register(1, PARAMS, rec.sink)
    sock = raw_push(rx.address)
    # After a first rate window with no message, the stream counts as slow (1 message in more
    # than RATE_WINDOW_S: far below a full batch per second).
    time.sleep(RATE_WINDOW_S + 0.05)
    sock.send_multipart(valid_frames(1, 0))
    assert wait_until(lambda: rec.steps == [0])
    for step in range(1, 6):
        sock.send_multipart(valid_frames(1, step))
    sock.send_multipart(end_frames(1, 6))
    assert rx.wait_finished([1], timeout=10)
    assert rec.calls == [[0], [1, 2, 3, 4, 5]]


def test_only_a_slow_stream_waits_out_the_wake_interval():
    # 20 ms and batches of DRAIN_MESSAGES: a stream waits while it brings fewer than
    # DRAIN_MESSAGES per 20 ms (3 200 messages/s), and never after a full batch, nor before its
    # rate is measured; 0 turns the wait off.
    from test_receiver import SPECS

    from gensim.transport import Receiver
    from gensim.transport.receiver import DRAIN_BYTES, DRAIN_MESSAGES

    rx = Receiver(SPECS, TOKEN, wake_interval_s=0.02)
    assert rx.wait_after(1100.0, 1, 1000) == 0.02  # a simulation's steps, one at a time
    assert rx.wait_after(3100.0, 5, 1000) == 0.02
    assert rx.wait_after(3300.0, 5, 1000) == 0.0  # at tens of thousands a second: no wait
    assert rx.wait_after(float("inf"), 1, 1000) == 0.0  # not yet measured
    assert rx.wait_after(100.0, DRAIN_MESSAGES, 1000) == 0.0  # a full batch
    assert rx.wait_after(100.0, 2, DRAIN_BYTES) == 0.0
    assert Receiver(SPECS, TOKEN, wake_interval_s=0.0).wait_after(1.0, 1, 1000) == 0.0


@pytest.mark.parametrize("bad", [-0.01, 1.5, float("nan")])
def test_wake_interval_must_be_between_0_and_1_second(bad):
    from test_receiver import SPECS

    from gensim.transport import Receiver

    with pytest.raises(ValueError, match="wake_interval_s must be in"):
        Receiver(SPECS, TOKEN, wake_interval_s=bad)
