"""Receiver: end to end with the client, validation by reason, robustness, lifecycle."""

from __future__ import annotations

import struct
import threading
import time

import numpy as np
import pytest
import zmq
from waiting import wait_until

from gensim.client import Client
from gensim.simulations.base import FieldSpec
from gensim.transport import Receiver, wire
from gensim.transport import receiver as receiver_module

TOKEN = bytes(range(32))  # the study key
STUDY = wire.study_id(TOKEN)
SPECS = (FieldSpec("u", (6, 5), "float32"), FieldSpec("v", (7,), "float64"))
PARAMS = np.array([0.5, 2.0])


@pytest.fixture
def make_receiver():
    """Factory of started receivers; all stopped at teardown, also on failure."""
    started: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        kwargs.setdefault("fields", SPECS)
        kwargs.setdefault("token", TOKEN)
        rx = Receiver(**kwargs)
        started.append(rx)
        return rx.start()

    yield make
    for rx in started:
        rx.stop()


@pytest.fixture
def make_client():
    clients: list[Client] = []

    def make(address, sim_id=0, **kwargs) -> Client:
        kwargs.setdefault("token", TOKEN)
        c = Client(address, sim_id=sim_id, **kwargs)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close(linger_s=0)


@pytest.fixture
def raw_push():
    """Raw PUSH sockets connected to an address, for hand-made (bad) messages."""
    ctx = zmq.Context()
    sockets = []

    def make(address):
        s = ctx.socket(zmq.PUSH)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDTIMEO, 2000)
        # A key holder's connection: the receiver lets it in, then judges each message.
        s.setsockopt(zmq.PLAIN_USERNAME, wire.ZAP_USERNAME)
        s.setsockopt(zmq.PLAIN_PASSWORD, wire.zap_password(TOKEN))
        s.connect(address)
        sockets.append(s)
        return s

    yield make
    for s in sockets:
        s.close(linger=0)
    ctx.term()


def fields_at(step):
    return {
        "u": (np.arange(30, dtype=np.float32).reshape(6, 5) + step) / 3,
        "v": np.linspace(0, 1, 7) * step + 1 / 7,
    }


def body(sim_id=0, step=0, specs=SPECS, study=STUDY, arrays=None, time=None):
    """Header and data frames of a message, without its tag."""
    arrays = fields_at(step) if arrays is None else arrays
    header = wire.encode_header(study, sim_id, step, 0.1 * step if time is None else time, specs)
    return [header] + [np.ascontiguousarray(arrays[s.name], dtype=s.dtype).tobytes() for s in specs]


def signed(frames, key=TOKEN):
    return wire.sign(key, frames)


def valid_frames(sim_id=0, step=0, **kwargs):
    return signed(body(sim_id, step, **kwargs))


def end_frames(sim_id=0, n_sent=0, key=TOKEN):
    return signed([wire.encode_header(wire.study_id(key), sim_id, n_sent, 0.0, kind=wire.KIND_END)], key)


def with_header(frames, offset, fmt, value):
    """``frames`` (unsigned) with a value packed into the header."""
    h = bytearray(frames[0])
    struct.pack_into(fmt, h, offset, value)
    return [bytes(h)] + frames[1:]


def test_end_to_end(make_receiver, make_client):
    rx = make_receiver()
    assert rx.address.startswith("tcp://127.0.0.1:")
    got = []
    rx.register(4, PARAMS, got.append)
    c = make_client(rx.address, 4, fields=SPECS)
    n = 25
    for step in range(n):
        f = fields_at(step)
        f["u"] = f["u"].astype(np.float64)  # cast by the client
        c.send(step, 0.1 * step, f)
    c.end()
    assert rx.wait_finished([4], timeout=5)
    assert rx.is_finished(4)
    assert [s.step for s in got] == list(range(n))
    for s in got:
        exp = fields_at(s.step)
        assert s.sim_id == 4 and s.t == 0.1 * s.step
        np.testing.assert_array_equal(s.params, PARAMS)
        assert list(s.fields) == ["u", "v"]
        assert s.fields["u"].dtype == np.float32 and s.fields["u"].shape == (6, 5)
        assert s.fields["v"].dtype == np.float64 and s.fields["v"].shape == (7,)
        np.testing.assert_array_equal(s.fields["u"], exp["u"].astype(np.float32))
        np.testing.assert_array_equal(s.fields["v"], exp["v"])
    st = rx.stats()
    assert st.accepted == n and st.n_rejected == 0 and st.rejected == {}
    assert st.accepted_per_sim == {4: n}
    assert st.finished == frozenset({4})
    assert st.bytes_accepted == n * rx.expected_message_bytes
    assert rx.expected_message_bytes == 48 + 2 * 64 + 30 * 4 + 7 * 8 + 28


def test_several_simulations_and_ipc(make_receiver, make_client, tmp_path):
    rx = make_receiver(address=f"ipc://{tmp_path}/rx")
    assert rx.address == f"ipc://{tmp_path}/rx"
    got = {0: [], 1: []}
    for i in got:
        rx.register(i, PARAMS + i, got[i].append)
    clients = [make_client(rx.address, i) for i in got]  # no declared fields
    for step in range(5):
        for c in clients:
            c.send(step, step, fields_at(step))
    for c in clients:
        c.end()
    assert rx.wait_finished([0, 1], timeout=5)
    assert not rx.wait_finished([0, 1, 2], timeout=0.05)
    for i in got:
        assert [s.step for s in got[i]] == list(range(5))
        assert got[i][0].params[0] == 0.5 + i
    assert rx.stats().accepted_per_sim == {0: 5, 1: 5}


def _other_study():
    other = bytes(32 * [0xEE])
    return signed(body(study=wire.study_id(other)), other)


def _wrong_shape():
    specs = (FieldSpec("u", (5, 6), "float32"), SPECS[1])
    arrays = fields_at(0)
    arrays["u"] = arrays["u"].reshape(5, 6)
    return valid_frames(specs=specs, arrays=arrays)


def _wrong_dtype():
    specs = (FieldSpec("u", (6, 5), "float64"), SPECS[1])
    return valid_frames(specs=specs)


def _with(name, value):
    arrays = fields_at(0)
    arrays[name] = arrays[name].copy()
    arrays[name].flat[3] = value
    return valid_frames(arrays=arrays)


def _wrong_names():
    specs = (FieldSpec("w", (6, 5), "float32"), SPECS[1])
    arrays = fields_at(0)
    arrays["w"] = arrays.pop("u")
    return valid_frames(specs=specs, arrays=arrays)


def _short_frame():
    f = body()
    return signed(f[:-1] + [f[-1][:-8]])


def _oversize():
    # Every frame under the limit (ZeroMQ would drop a larger one), their sum over it.
    return signed(body()[:1] + [b"\0" * 700, b"\0" * 700])


def _reordered(arrays=None):
    """A message whose descriptors list the fields in another order than declared: the slow path."""
    return body(specs=SPECS[::-1], arrays=arrays)


def _reordered_with(name, value):
    arrays = fields_at(0)
    arrays[name] = arrays[name].copy()
    arrays[name].flat[3] = value
    return signed(_reordered(arrays))


def _reserved_byte():
    f = body()
    h = bytearray(f[0])
    h[wire.PREAMBLE_SIZE + 34] = 1  # a reserved byte of the first descriptor
    return signed([bytes(h)] + f[1:])


def _flipped_data_bit():
    f = valid_frames()
    u = bytearray(f[1])
    u[5] ^= 1
    return [f[0], bytes(u), *f[2:]]


BAD_MESSAGES = {
    "garbage": (lambda: [b"\x00garbage" * 9], "malformed"),
    "garbage_multi": (lambda: [b"GSIM", b"xyz", b""], "malformed"),
    "empty_frame": (lambda: [b""], "malformed"),
    "wrong_version": (lambda: signed(with_header(body(), 4, "<H", 1)), "version"),
    "other_study": (_other_study, "study"),
    "no_tag": (lambda: body(), "malformed"),
    "too_many_frames": (lambda: valid_frames() + [b"x"], "malformed"),
    "wrong_key": (lambda: signed(body(), bytes(32)), "auth"),
    "short_tag": (lambda: valid_frames()[:-1] + [valid_frames()[-1][:16]], "auth"),
    "flipped_data_bit": (_flipped_data_bit, "auth"),
    "tag_of_another_step": (lambda: body() + valid_frames(step=1)[-1:], "auth"),
    "frames_reshuffled": (
        lambda: [valid_frames()[0], *(lambda f: [f[1] + f[2][:8], f[2][8:]])(valid_frames()), valid_frames()[-1]],
        "auth",
    ),
    "unknown_sim": (lambda: valid_frames(sim_id=99), "unknown_sim"),
    "wrong_shape": (_wrong_shape, "shape"),
    "wrong_dtype": (_wrong_dtype, "dtype"),
    "wrong_names": (_wrong_names, "fields"),
    "short_frame": (_short_frame, "frame_size"),
    "nan": (lambda: _with("u", np.nan), "non_finite"),
    "inf": (lambda: _with("v", np.inf), "non_finite"),
    "minus_inf": (lambda: _with("u", -np.inf), "non_finite"),
    "nan_time": (lambda: valid_frames(time=float("nan")), "non_finite"),
    "oversize": (_oversize, "too_large"),
    "reordered_nan": (lambda: _reordered_with("v", np.nan), "non_finite"),
    "reordered_short_frame": (lambda: signed(_reordered()[:-1] + [_reordered()[-1][:-4]]), "frame_size"),
    "reserved_byte": (_reserved_byte, "malformed"),
    "end_kind_with_fields": (lambda: signed(with_header(body(), 36, "<I", wire.KIND_END)), "malformed"),
}


@pytest.mark.parametrize("case", list(BAD_MESSAGES))
def test_rejection_counted_never_delivered(case, make_receiver, raw_push, caplog):
    build, reason = BAD_MESSAGES[case]
    rx = make_receiver()
    got = []
    rx.register(0, PARAMS, got.append)
    push = raw_push(rx.address)
    with caplog.at_level("WARNING", logger="gensim.transport"):
        push.send_multipart(build())
        assert wait_until(lambda: rx.stats().n_rejected == 1)
        # training goes on: a valid message after the bad one is accepted
        push.send_multipart(valid_frames(step=1))
        assert wait_until(lambda: rx.stats().accepted == 1)
    st = rx.stats()
    assert st.rejected == {reason: 1}
    assert [s.step for s in got] == [1]
    assert any(reason in r.getMessage() for r in caplog.records)


def test_one_flipped_bit_anywhere_is_rejected(make_receiver, raw_push):
    """A valid message with one bit flipped, in every byte of every frame in turn (header, data,
    the tag's nonce and its GMAC): nothing accepted; where the header's own checks do not catch
    the change (simulation id, step, time), the tag does."""
    rx = make_receiver()
    got = []
    rx.register(0, PARAMS, got.append)
    push = raw_push(rx.address)
    frames = valid_frames()
    n = 0
    for i, frame in enumerate(frames):
        for offset in range(len(frame)):
            flipped = bytearray(frame)
            flipped[offset] ^= 1 << (offset % 8)
            push.send_multipart([*frames[:i], bytes(flipped), *frames[i + 1 :]])
            n += 1
    assert n == 176 + 120 + 56 + wire.TAG_BYTES
    assert wait_until(lambda: rx.stats().n_rejected == n, timeout=30)
    st = rx.stats()
    assert got == [] and st.accepted == 0
    # sim_id, step, time (24 bytes of the preamble), the data frames and the whole tag: auth.
    assert st.rejected["auth"] >= 24 + 120 + 56 + wire.TAG_BYTES
    assert set(st.rejected) <= {"auth", "malformed", "version", "study", "dtype", "fields", "shape"}


def test_fields_in_any_wire_order_are_accepted(make_receiver, raw_push):
    # The declared order takes the fast path, another order the full decode: same samples.
    rx = make_receiver()
    got = []
    rx.register(0, PARAMS, got.append)
    push = raw_push(rx.address)
    push.send_multipart(valid_frames(step=0))
    push.send_multipart(valid_frames(step=1, specs=SPECS[::-1]))
    assert wait_until(lambda: rx.stats().accepted == 2)
    assert rx.stats().rejected == {}
    for sample in got:
        assert list(sample.fields) == [spec.name for spec in SPECS]
        for name, expected in fields_at(sample.step).items():
            np.testing.assert_array_equal(sample.fields[name], expected.astype(sample.fields[name].dtype))


def test_end_then_data_is_rejected(make_receiver, raw_push):
    rx = make_receiver()
    got = []
    rx.register(0, PARAMS, got.append)
    push = raw_push(rx.address)
    push.send_multipart(end_frames(0))
    assert rx.wait_finished([0], timeout=5)
    push.send_multipart(valid_frames())
    push.send_multipart(end_frames(0))
    assert wait_until(lambda: rx.stats().n_rejected == 2)
    assert rx.stats().rejected == {"finished_sim": 1, "duplicate_end": 1}
    assert got == []
    with pytest.raises(ValueError, match="already"):
        rx.register(0, PARAMS, got.append)


def test_unregister(make_receiver, raw_push):
    rx = make_receiver()
    got = []
    rx.register(0, PARAMS, got.append)
    push = raw_push(rx.address)
    push.send_multipart(valid_frames())
    assert wait_until(lambda: rx.stats().accepted == 1)
    rx.unregister(0)
    push.send_multipart(valid_frames(step=1))
    assert wait_until(lambda: rx.stats().rejected == {"unknown_sim": 1})
    assert rx.stats().accepted_per_sim == {0: 1}


def test_custom_size_limit(make_receiver, make_client):
    # Frames of 176 (header), 120, 56 and 28 bytes: each under the limit, the second one takes
    # the message over it.
    rx = make_receiver(max_message_bytes=200)
    rx.register(0, PARAMS, lambda s: None)
    make_client(rx.address, 0).send(0, 0.0, fields_at(0))
    assert wait_until(lambda: rx.stats().rejected == {"too_large": 1})


def test_rejection_log_is_rate_limited(make_receiver, raw_push, caplog):
    rx = make_receiver()
    push = raw_push(rx.address)
    with caplog.at_level("WARNING", logger="gensim.transport"):
        for _ in range(30):
            push.send_multipart(valid_frames(sim_id=7))
        assert wait_until(lambda: rx.stats().n_rejected == 30)
    msgs = [r.getMessage() for r in caplog.records if r.name == "gensim.transport"]
    assert len(msgs) == 5
    assert all("unknown_sim" in m and "simulation 7" in m for m in msgs)


def test_sink_error_does_not_kill_receiver(make_receiver, make_client):
    rx = make_receiver()
    got = []

    def sink(sample):
        if sample.step % 2 == 0:
            raise RuntimeError("buffer is unhappy")
        got.append(sample.step)

    rx.register(0, PARAMS, sink)
    c = make_client(rx.address, 0, fields=SPECS)
    for step in range(6):
        c.send(step, 0.0, fields_at(step))
    c.end()
    assert rx.wait_finished([0], timeout=5)
    assert got == [1, 3, 5]
    st = rx.stats()
    assert st.rejected == {"sink_error": 3} and st.accepted == 3
    assert rx.running


def test_internal_error_is_counted(make_receiver, raw_push, monkeypatch):
    rx = make_receiver()
    rx.register(0, PARAMS, lambda s: None)
    calls = {"n": 0}
    real = wire.match_data_header

    def flaky(buf, descriptors):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("boom")
        return real(buf, descriptors)

    # The first header the receiver decodes raises: the fast path every valid header takes.
    monkeypatch.setattr(wire, "match_data_header", flaky)
    push = raw_push(rx.address)
    push.send_multipart(valid_frames())
    push.send_multipart(valid_frames(step=1))
    assert wait_until(lambda: rx.stats().accepted == 1)
    assert rx.stats().rejected == {"internal": 1}


def test_stop_is_prompt_and_idempotent():
    rx = Receiver(SPECS, TOKEN)
    try:
        rx.start()
        thread = rx._thread
        assert thread.is_alive()
        time.sleep(0.1)
        rx.stop()  # joins the thread: it returns once the thread has ended
        assert not thread.is_alive() and not rx.running
        assert "gensim-receiver" not in [t.name for t in threading.enumerate()]
        rx.stop()  # idempotent
        with pytest.raises(RuntimeError):
            rx.start()
    finally:
        rx.stop()


def test_context_manager_and_bind_error(make_receiver):
    with Receiver(SPECS, TOKEN) as rx:
        address = rx.address
        assert rx.running
        other = Receiver(SPECS, TOKEN, address=address)
        with pytest.raises(RuntimeError, match="cannot bind"):
            other.start()
        assert not other.running
    assert not rx.running
    with pytest.raises(RuntimeError, match="start"):
        _ = Receiver(SPECS, TOKEN).address


def test_constructor_checks():
    with pytest.raises(ValueError, match="at least one"):
        Receiver([], TOKEN)
    with pytest.raises(ValueError, match="unique"):
        Receiver([SPECS[0], SPECS[0]], TOKEN)
    with pytest.raises(ValueError, match="32 bytes"):
        Receiver(SPECS, b"x")
    with pytest.raises(ValueError, match="32 bytes"):
        Receiver(SPECS, bytes(16))  # a version-1 token
    with pytest.raises(ValueError, match="n_steps"):
        Receiver(SPECS, TOKEN, n_steps=0)
    with pytest.raises(ValueError, match="times"):
        Receiver(SPECS, TOKEN, times=[0.0, float("nan")])


def test_absurd_frame_dropped_by_zmq(make_receiver, raw_push):
    """A frame over the limit never gets allocated (ZMQ_MAXMSGSIZE); the receiver carries on."""
    rx = make_receiver(max_message_bytes=1000)
    assert rx.hard_frame_bytes == 1000
    got = []
    rx.register(0, PARAMS, got.append)
    raw_push(rx.address).send_multipart(signed(body()[:1] + [b"\0" * 20_000]))
    time.sleep(0.2)
    raw_push(rx.address).send_multipart(valid_frames(step=1))
    assert wait_until(lambda: rx.stats().accepted == 1)
    assert [s.step for s in got] == [1]
    assert rx.stats().rejected == {}


@pytest.mark.parametrize("n", [7, receiver_module.FINITE_DOT_MAX, receiver_module.FINITE_DOT_MAX + 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_both_ways(n, dtype):
    # Small fields: dot product with zeros; large ones: isfinite into a mask. Both must find
    # one NaN or Inf anywhere, and never call the largest finite values non-finite.
    scratch = np.zeros(n, dtype) if n <= receiver_module.FINITE_DOT_MAX else np.empty(n, bool)
    values = np.random.default_rng(0).random(n).astype(dtype)
    assert receiver_module._all_finite(values, scratch)
    assert receiver_module._all_finite(np.full(n, np.finfo(dtype).max, dtype), scratch)
    for position in (0, n // 2, n - 1):
        for bad in (np.nan, np.inf, -np.inf):
            broken = values.copy()
            broken[position] = bad
            with np.errstate(invalid="ignore"):
                assert not receiver_module._all_finite(broken, scratch)


def test_wait_finished_waiters_are_independent(make_receiver, raw_push):
    # Two waiters on different sets: each returns when its own set has ended, a set that never
    # ends times out, and an already finished set returns at once.
    rx = make_receiver()
    for sim_id in range(3):
        rx.register(sim_id, PARAMS, lambda s: None)
    push = raw_push(rx.address)
    results = {}
    waiters = [
        threading.Thread(target=lambda key=key, ids=ids: results.__setitem__(key, rx.wait_finished(ids, 5)))
        for key, ids in (("first", [0]), ("first_two", [0, 1]))
    ]
    for waiter in waiters:
        waiter.start()
    for sim_id in (0, 1):
        push.send_multipart(end_frames(sim_id))
    for waiter in waiters:
        waiter.join(10)
    assert results == {"first": True, "first_two": True}
    assert not rx.wait_finished([1, 2], timeout=0.2)
    assert rx.wait_finished([0, 1], timeout=0)
    assert rx._finish_waiters == []
