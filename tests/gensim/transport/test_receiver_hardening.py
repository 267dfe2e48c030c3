"""Receiver hardening: authentication at connection and per message, replays, impossible steps
and times, a second END, over-size messages refused while they are received."""

from __future__ import annotations

import numpy as np
import pytest
import zmq
from test_receiver import (  # noqa: F401 (fixtures)
    PARAMS,
    SPECS,
    TOKEN,
    body,
    end_frames,
    fields_at,
    make_client,
    make_receiver,
    raw_push,
    signed,
    valid_frames,
    wait_until,
)

from gensim.client import Client
from gensim.transport import wire

N_STEPS = 6
TIMES = 0.1 * np.arange(1, N_STEPS + 1)  # a grid like the solvers': (step + 1) * dt


@pytest.fixture
def rx(make_receiver):  # noqa: F811
    return make_receiver(n_steps=N_STEPS, times=TIMES)


def frames_at(step, sim_id=0, time=None):
    return valid_frames(sim_id, step, time=TIMES[min(step, N_STEPS - 1)] if time is None else time)


def test_replays_are_rejected_even_within_one_batch(rx, raw_push):  # noqa: F811
    got = []
    rx.register(0, PARAMS, got.append)
    push = raw_push(rx.address)
    for step in (0, 1, 1, 0, 2, 2):
        push.send_multipart(frames_at(step))
    assert wait_until(lambda: rx.stats().accepted + rx.stats().n_rejected == 6)
    assert [s.step for s in got] == [0, 1, 2]
    assert rx.stats().rejected == {"duplicate": 3}


@pytest.mark.parametrize(
    "step, time, reason",
    [
        (N_STEPS, TIMES[-1], "step_range"),
        (2**32 - 1, TIMES[-1], "step_range"),
        (0, 1e300, "time_range"),
        (0, -1.0, "time_range"),
        (0, TIMES[-1] * (1 + 1e-3), "time_range"),
        (0, float("inf"), "non_finite"),
        (0, float("nan"), "non_finite"),
    ],
)
def test_impossible_steps_and_times(rx, raw_push, step, time, reason):  # noqa: F811
    got = []
    rx.register(0, PARAMS, got.append)
    push = raw_push(rx.address)
    push.send_multipart(frames_at(step, time=time))
    # The grid's ends, give or take rounding, are in range.
    push.send_multipart(frames_at(0, time=TIMES[0] * (1 - 1e-9)))
    push.send_multipart(frames_at(N_STEPS - 1, time=TIMES[-1] * (1 + 1e-9)))
    assert wait_until(lambda: rx.stats().accepted == 2)
    assert rx.stats().rejected == {reason: 1}
    assert [s.step for s in got] == [0, N_STEPS - 1]


def test_a_second_end_has_its_own_reason(rx, raw_push):  # noqa: F811
    rx.register(0, PARAMS, lambda s: None)
    push = raw_push(rx.address)
    push.send_multipart(end_frames(0))
    assert rx.wait_finished([0], timeout=5)
    push.send_multipart(end_frames(0))
    push.send_multipart(frames_at(1))
    assert wait_until(lambda: rx.stats().n_rejected == 2)
    assert rx.stats().rejected == {"duplicate_end": 1, "finished_sim": 1}


def test_a_retried_simulation_cannot_insert_a_step_twice(rx, make_client):  # noqa: F811
    """A retry keeps its id and registration and sends every step again: only the missing ones
    are taken."""
    got = []
    rx.register(3, PARAMS, got.append)
    first = make_client(rx.address, 3, fields=SPECS)
    for step in range(3):  # then the first attempt dies
        first.send(step, TIMES[step], fields_at(step))
    assert wait_until(lambda: rx.stats().accepted == 3)
    with pytest.raises(ValueError, match="already registered"):
        rx.register(3, PARAMS, got.append)
    second = make_client(rx.address, 3, fields=SPECS)
    for step in range(N_STEPS):
        second.send(step, TIMES[step], fields_at(step))
    second.end()
    assert rx.wait_finished([3], timeout=5)
    assert sorted(s.step for s in got) == list(range(N_STEPS))
    stats = rx.stats()
    assert stats.rejected == {"duplicate": 3}
    assert stats.accepted == N_STEPS and stats.accepted_per_sim == {3: N_STEPS}
    with pytest.raises(ValueError, match="already finished"):
        rx.register(3, PARAMS, got.append)


def test_accepted_steps_outlive_an_unregistration(rx, make_client):  # noqa: F811
    got = []
    rx.register(4, PARAMS, got.append)
    first = make_client(rx.address, 4, fields=SPECS)
    for step in range(2):
        first.send(step, TIMES[step], fields_at(step))
    assert wait_until(lambda: rx.stats().accepted == 2)
    rx.unregister(4)
    rx.register(4, PARAMS, got.append)
    second = make_client(rx.address, 4, fields=SPECS)
    for step in range(N_STEPS):
        second.send(step, TIMES[step], fields_at(step))
    second.end()
    assert rx.wait_finished([4], timeout=5)
    assert sorted(s.step for s in got) == list(range(N_STEPS))
    assert rx.stats().rejected == {"duplicate": 2} and rx.stats().accepted_per_sim == {4: N_STEPS}


def test_a_step_the_sink_refused_can_come_again(rx, make_client):  # noqa: F811
    got, fail = [], {"on": True}

    def sink(sample):
        if fail["on"]:
            raise RuntimeError("buffer full")
        got.append(sample.step)

    rx.register(0, PARAMS, sink)
    c = make_client(rx.address, 0, fields=SPECS)
    c.send(0, TIMES[0], fields_at(0))
    assert wait_until(lambda: rx.stats().rejected == {"sink_error": 1})
    fail["on"] = False
    c.send(0, TIMES[0], fields_at(0))
    assert wait_until(lambda: rx.stats().accepted == 1)
    assert got == [0]


def test_the_step_record_is_a_bitmap(make_receiver):  # noqa: F811
    rx = make_receiver(n_steps=1000)
    rx.register(0, PARAMS, lambda s: None)
    assert len(rx._steps[0].bits) == 125  # 1000 bits
    unbounded = make_receiver()
    unbounded.register(0, PARAMS, lambda s: None)
    assert unbounded._steps[0].bits is None  # no n_steps: a set of the steps seen


def test_peers_without_the_study_password_are_refused_at_the_handshake(rx):
    """No PLAIN credentials, or another study's: ZeroMQ never takes a frame from them."""
    got = []
    rx.register(0, PARAMS, got.append)
    ctx = zmq.Context()
    sockets = []
    try:
        for password in (None, wire.zap_password(bytes(32)), b"x"):
            s = ctx.socket(zmq.PUSH)
            sockets.append(s)  # closed in finally: a socket left open would hang ctx.term()
            s.setsockopt(zmq.LINGER, 0)
            if password is not None:
                s.setsockopt(zmq.PLAIN_USERNAME, wire.ZAP_USERNAME)
                s.setsockopt(zmq.PLAIN_PASSWORD, password)
            s.connect(rx.address)
            try:
                s.send_multipart(frames_at(0), zmq.NOBLOCK)  # a valid message, queued in vain
            except zmq.Again:
                pass  # the refusal already tore the connection's pipe down: nothing to queue
        assert wait_until(lambda: rx.stats().refused_connections >= 3)
    finally:
        for s in sockets:
            s.close(linger=0)
        ctx.term()
    with Client(rx.address, TOKEN, 0, fields=SPECS) as client:  # the real one gets in
        client.send(0, TIMES[0], fields_at(0))
        client.end()
    assert rx.wait_finished([0], timeout=5)
    stats = rx.stats()
    assert stats.accepted == 1 and stats.rejected == {}


def test_a_forged_message_from_a_password_holder_is_rejected_before_anything_else(rx, raw_push):  # noqa: F811
    """The tag is checked before the registry: a forger learns nothing about which ids exist."""
    rx.register(0, PARAMS, lambda s: None)
    push = raw_push(rx.address)
    forged = [*body(0, 0, time=TIMES[0]), bytes(32)]
    push.send_multipart(forged)
    push.send_multipart([*body(99, 0, time=TIMES[0]), bytes(32)])  # unknown id
    push.send_multipart([wire.encode_header(rx.study, 0, 1, 0.0, kind=wire.KIND_END), bytes(32)])
    assert wait_until(lambda: rx.stats().n_rejected == 3)
    assert rx.stats().rejected == {"auth": 3}
    assert not rx.is_finished(0)


def test_many_frames_are_discarded_as_they_come(make_receiver, raw_push):  # noqa: F811
    """A message of 5000 small frames: refused at the frame after the allowed count."""
    rx = make_receiver(n_steps=N_STEPS)
    rx.register(0, PARAMS, lambda s: None)
    push = raw_push(rx.address)
    push.send_multipart([frames_at(0)[0]] + [b"x" * 10] * 5000)
    push.send_multipart(signed(body(0, 0)[:1] + [b"\0" * 500] * 4))  # under the frame count, over the bytes
    push.send_multipart(frames_at(1))
    assert wait_until(lambda: rx.stats().accepted == 1)
    assert rx.stats().rejected == {"malformed": 1, "too_large": 1}


def test_rejections_are_charged_to_the_simulation_the_header_names(rx, raw_push, caplog):  # noqa: F811
    """Per-simulation rejection counts and first details: the authenticated id, or the id an
    unauthenticated header claims when it is registered here (a forger cannot grow the table)."""
    rx.register(0, PARAMS, lambda s: None)
    push = raw_push(rx.address)
    with caplog.at_level("WARNING", logger="gensim.transport"):
        push.send_multipart([*body(0, 0, time=TIMES[0]), bytes(32)])  # a bad tag: id 0 only claimed
        push.send_multipart([*body(99, 0, time=TIMES[0]), bytes(32)])  # claims an id nobody registered
        push.send_multipart(valid_frames(0, N_STEPS, time=TIMES[0]))  # authentic, step out of range
        assert wait_until(lambda: rx.stats().n_rejected == 3)
    stats = rx.stats()
    assert stats.rejected_per_sim == {0: {"auth": 1, "step_range": 1}}
    assert stats.rejection_details[0].startswith("[auth] authentication tag does not match (claims to be simulation 0")
    assert "from a sender claiming to be simulation 0 (unauthenticated)" in caplog.text
    assert "[step_range] from simulation 0: step 6 outside [0, 6)" in caplog.text
