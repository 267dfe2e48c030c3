"""Property-based fuzzing of a live receiver that feeds a real replay buffer.

More than 10,000 hostile messages drawn by hypothesis (random frames, truncated and garbled
headers, wrong tags, replays, impossible steps and times, messages after END, a second END,
unknown simulations, another study's messages, too many frames, over-size sums of small frames)
go to the receiver over an authenticated connection, interleaved with a valid stream of several
simulations, while three other processes send about 300 MB of large messages in parallel:
single frames of tens of MB and messages of thousands of frames, with and without the study's
password. Then:

- the receive thread is alive and the valid stream arrived in full: exactly the expected
  (simulation, step) pairs are in the buffer, once each;
- every hostile message that reached the receiver was rejected and counted: the rejection counts
  add up to the number sent, and each category whose reason is certain got exactly that reason;
- what ZeroMQ refuses before the receiver sees it is accounted for: connections without the
  password are counted in ``refused_connections``; single frames over the limit (from a password
  holder) are dropped by ZeroMQ before allocation (``ZMQ_MAXMSGSIZE``), and the accepted and
  rejected counts prove none of them reached the receiver;
- the RSS of this process (receiver, buffer, hypothesis; the large senders are other processes)
  grew by at most ``RSS_BOUND`` over the whole run.

Why the RSS bound holds: the receiver keeps at most one batch of messages of at most the size
limit (a few KB here), refuses an over-size message at the frame that crosses the limit and
discards the rest as it comes; ZeroMQ allocates nothing for peers without the password, and no
frame over the limit. What ZeroMQ does hold is whole messages of a password holder before the
reader sees their first frame (reports/transport/zmq_buffering.py): at most ``rcvhwm`` (64)
complete messages per connection. Here that is 2 x 64 x 128 KiB = 16 MiB for the two
many-frame senders and 64 x 120 KB = 7.3 MiB for the hostile connection, in the worst case
where the reader falls behind, plus the valid stream's 12 connections (under 1 MiB) and
allocator slack (freed frames are reused, not returned). 64 MiB covers these with room; the
measured growth (about 35 MiB) is printed.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gensim.buffers import ReplayBuffer
from gensim.client import Client
from gensim.simulations.base import FieldSpec
from gensim.transport import Receiver, wire
from gensim.transport.receiver import BatchSink

KEY = bytes(range(100, 132))
OTHER_KEY = bytes(32)
STUDY = wire.study_id(KEY)
FIELDS = (FieldSpec("u", (16, 16), "float32"),)
N_STEPS = 40
TIMES = 0.05 * np.arange(1, N_STEPS + 1)
PARAMS = np.array([0.25, 0.5])
N_VALID_SIMS = 12  # streamed by clients while the hostile messages flow
EXAMPLES, PER_EXAMPLE = 210, 50  # 10,500 hostile messages
RSS_BOUND = 64 * 2**20

# Simulation ids with a role in the test. REPLAYED: every step accepted before fuzzing, END at
# the very end (its replays are duplicates). FINISHED: all steps and END before fuzzing. OPEN:
# registered, nothing accepted until its END at the very end (its bad fields are judged as such).
# UNKNOWN: never registered.
FINISHED, REPLAYED, OPEN, UNKNOWN = 1, 2, 3, 999
VALID_IDS = range(10, 10 + N_VALID_SIMS)


def frame_of(step: int, sim_id: int, value: float = 1.0) -> np.ndarray:
    return np.full((16, 16), value + step + 1000 * sim_id, np.float32)


def message(
    sim_id: int,
    step: int,
    t: float | None = None,
    key: bytes = KEY,
    study: bytes | None = None,
    u: np.ndarray | None = None,
) -> list[bytes]:
    t = TIMES[min(step, N_STEPS - 1)] if t is None else t
    header = wire.encode_header(STUDY if study is None else study, sim_id, step, t, FIELDS)
    return wire.sign(key, [header, (frame_of(step, sim_id) if u is None else u).tobytes()])


def end_message(sim_id: int, key: bytes = KEY) -> list[bytes]:
    return wire.sign(key, [wire.encode_header(wire.study_id(key), sim_id, N_STEPS, TIMES[-1], kind=wire.KIND_END)])


REPLAYS = [message(REPLAYED, step) for step in range(N_STEPS)]
#: Reasons that neither random bytes nor a garbled header can produce (they need a valid tag and
#: a registered simulation): counted exactly.
CERTAIN = (
    "duplicate",
    "duplicate_end",
    "finished_sim",
    "step_range",
    "time_range",
    "non_finite",
    "fields",
    "shape",
    "frame_size",
)

# ------------------------------------------------------------------ hostile messages
# Each strategy draws (frames, reason): reason is the one reason the receiver must give, or None
# when it depends on the random bytes (any reason but an accepted message).
small_bytes = st.binary(min_size=0, max_size=600)
random_frames = st.lists(small_bytes, min_size=1, max_size=6).map(lambda f: (f, None))


@st.composite
def garbled_header(draw):
    """A header of an unregistered simulation, truncated or with flipped bytes (magic, version,
    field count, study id, descriptors; never the id, step or time, which would make another
    valid message), signed again or not."""
    frames = message(UNKNOWN, draw(st.integers(0, N_STEPS - 1)))
    header = bytearray(frames[0])
    if draw(st.booleans()):
        del header[draw(st.integers(0, len(header) - 1)) :]  # truncated
    else:
        offsets = [*range(0, 24), *range(48, len(header))]
        for _ in range(draw(st.integers(1, 4))):
            header[draw(st.sampled_from(offsets))] ^= draw(st.integers(1, 255))
    frames[0] = bytes(header)
    if draw(st.booleans()):
        frames = wire.sign(KEY, frames[:-1])  # a key holder's: the header's own checks must catch it
    return frames, None


@st.composite
def wrong_tag(draw):
    step = draw(st.integers(0, N_STEPS - 1))
    sim_id = draw(st.sampled_from([REPLAYED, *VALID_IDS, 999, draw(st.integers(-(2**63), 2**63 - 1))]))
    frames = message(sim_id, step)
    how = draw(st.sampled_from(["random", "other_key", "flip_data", "flip_tag", "short", "empty"]))
    if how == "random":
        frames[-1] = draw(st.binary(min_size=wire.TAG_BYTES, max_size=wire.TAG_BYTES))
    elif how == "other_key":
        frames = message(sim_id, step, key=OTHER_KEY)  # right study id, wrong key
    elif how == "flip_data":
        u = bytearray(frames[1])
        u[draw(st.integers(0, len(u) - 1))] ^= 1 << draw(st.integers(0, 7))
        frames[1] = bytes(u)
    elif how == "flip_tag":
        tag = bytearray(frames[-1])
        tag[draw(st.integers(0, wire.TAG_BYTES - 1))] ^= 1 << draw(st.integers(0, 7))  # nonce or GMAC
        frames[-1] = bytes(tag)
    elif how == "short":
        frames[-1] = frames[-1][: draw(st.integers(0, wire.TAG_BYTES - 1))]
    else:
        frames[-1] = b""
    # A random tag right for its own random nonce has probability 2**-128.
    return frames, "auth"


@st.composite
def impossible(draw):
    """Authentic (signed with the key) but impossible: the checks after the tag must catch it."""
    kind = draw(
        st.sampled_from(
            [
                "replay",
                "step",
                "time",
                "nan_time",
                "nan_field",
                "after_end",
                "second_end",
                "unknown",
                "other_study",
                "shape",
                "dtype",
                "frame_size",
                "names",
            ]
        )
    )
    if kind == "replay":
        return list(draw(st.sampled_from(REPLAYS))), "duplicate"
    if kind == "step":
        return message(REPLAYED, draw(st.integers(N_STEPS, 2**32 - 1)), t=TIMES[-1]), "step_range"
    if kind == "time":
        t = draw(st.one_of(st.floats(-1e300, TIMES[0] * 0.99), st.floats(TIMES[-1] * 1.01, 1e300)))
        return message(REPLAYED, draw(st.integers(0, N_STEPS - 1)), t=t), "time_range"
    if kind == "nan_time":
        t = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
        return message(REPLAYED, 0, t=t), "non_finite"
    if kind == "nan_field":
        u = frame_of(0, OPEN).copy()
        u.flat[draw(st.integers(0, u.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        return message(OPEN, draw(st.integers(0, N_STEPS - 1)), u=u), "non_finite"
    if kind == "after_end":
        return message(FINISHED, draw(st.integers(0, N_STEPS - 1))), "finished_sim"
    if kind == "second_end":
        return end_message(FINISHED), "duplicate_end"
    if kind == "unknown":
        sim_id = draw(st.one_of(st.integers(1000, 2**63 - 1), st.integers(-(2**63), -1)))
        return message(sim_id, 0), "unknown_sim"
    if kind == "other_study":
        return message(REPLAYED, 0, key=OTHER_KEY, study=wire.study_id(OTHER_KEY)), "study"
    step = draw(st.integers(0, N_STEPS - 1))
    if kind == "shape":
        header = wire.encode_header(STUDY, OPEN, step, TIMES[step], (FieldSpec("u", (8, 32), "float32"),))
        return wire.sign(KEY, [header, bytes(1024)]), "shape"
    if kind == "dtype":
        header = wire.encode_header(STUDY, OPEN, step, TIMES[step], (FieldSpec("u", (16, 16), "float64"),))
        return wire.sign(KEY, [header, bytes(2048)]), "dtype"
    if kind == "frame_size":
        frames = message(OPEN, step)
        return wire.sign(KEY, [frames[0], frames[1][: draw(st.integers(0, 1023))]]), "frame_size"
    header = wire.encode_header(STUDY, OPEN, step, TIMES[step], (FieldSpec("w", (16, 16), "float32"),))
    return wire.sign(KEY, [header, bytes(1024)]), "fields"


@st.composite
def too_big(draw):
    """Too many frames, or small frames over the size limit in sum."""
    frames = list(draw(st.sampled_from(REPLAYS)))
    if draw(st.booleans()):
        return frames + [b"x"] * draw(st.integers(1, 3000)), "malformed"
    return frames[:1] + [bytes(1200)] * draw(st.integers(3, 100)), "too_large"


hostile = st.one_of(random_frames, garbled_header(), wrong_tag(), impossible(), too_big())


# ------------------------------------------------------------------ large senders (other processes)
LARGE_SENDER = textwrap.dedent(
    """
    import sys, zmq
    address, password, role = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.SNDHWM, 4)
    s.setsockopt(zmq.SNDTIMEO, 20000)
    if password != b"-":
        s.setsockopt(zmq.PLAIN_USERNAME, b"gensim")
        s.setsockopt(zmq.PLAIN_PASSWORD, password)
    s.connect(address)
    sent = 0
    if role == "frames":      # 800 messages of 128 frames of 1 KiB: 100 MiB, each over the limit
        parts = [b"G" * 1024] * 128
        for _ in range(800):
            s.send_multipart(parts, copy=False)
            sent += 1
    elif role == "huge":      # one message of a single 150 MiB frame: dropped by ZeroMQ unallocated
        s.send(b"H" * (150 * 2**20), copy=False)
        sent += 1
    else:                     # no password: one message of 100 MiB in 1000 frames, and one of a
        try:                  # single 50 MiB frame; neither gets past the handshake
            s.send_multipart([b"S" * (100 * 2**10)] * 1000, zmq.NOBLOCK, copy=False)
            sent += 1
            s.send(b"S" * (50 * 2**20), zmq.NOBLOCK, copy=False)
            sent += 1
        except zmq.Again:
            pass
    s.close(linger=20000 if role == "frames" else 2000)
    ctx.term()
    print(sent)
    """
)


def serve_receiver(conn) -> None:
    """The trainer's side, in its own process (whose RSS is measured): a receiver feeding a
    replay buffer, answering "stats" and "stop" on ``conn``."""
    buffer = ReplayBuffer(capacity=4096, fields=FIELDS, n_params=2)
    rx = Receiver(FIELDS, KEY, n_steps=N_STEPS, times=TIMES).start()
    sink = BatchSink(buffer.add, buffer.add_many)
    for sim_id in (FINISHED, REPLAYED, OPEN, *VALID_IDS):
        rx.register(sim_id, PARAMS, sink)
    conn.send(rx.address)
    try:
        while True:
            command = conn.recv()
            if command == "stats":
                contents = buffer.contents()
                pairs = sorted(zip(contents["sim_id"].tolist(), contents["step"].tolist()))
                conn.send((rx.stats(), rx.running, len(buffer), pairs))
            else:
                break
    finally:
        rx.stop()
        buffer.close()
        conn.send("stopped")


class PeakRSS(threading.Thread):
    """Samples a process's RSS every 5 ms until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc, self.peak, self.done = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.peak, self.proc.memory_info().rss)


def wait_until(pred, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        time.sleep(0.01)
    return pred()


def stream_valid(address: str, errors: list) -> None:
    """The valid stream: N_VALID_SIMS simulations, interleaved step by step, through the client."""
    try:
        clients = [Client(address, KEY, sim_id, fields=FIELDS) for sim_id in VALID_IDS]
        try:
            for step in range(N_STEPS):
                for client in clients:
                    client.send(step, TIMES[step], {"u": frame_of(step, client.sim_id)})
                time.sleep(0.05)  # spread over the fuzzing
            for client in clients:
                client.end()
        finally:
            for client in clients:
                client.close()
    except Exception as err:  # reported by the test
        errors.append(err)


@pytest.mark.timeout(240)
def test_fuzzed_hostile_traffic_is_all_rejected_and_the_valid_stream_arrives():
    mp = multiprocessing.get_context("spawn")
    conn, child_conn = mp.Pipe()
    trainer = mp.Process(target=serve_receiver, args=(child_conn,), daemon=True)
    trainer.start()
    ctx = zmq.Context()
    children: list[subprocess.Popen] = []

    def stats():
        conn.send("stats")
        return conn.recv()

    try:
        assert conn.poll(60), "the receiver process did not start"
        address = conn.recv()
        hostile_sock = ctx.socket(zmq.PUSH)  # a password holder: every message reaches the receiver
        hostile_sock.setsockopt(zmq.PLAIN_USERNAME, wire.ZAP_USERNAME)
        hostile_sock.setsockopt(zmq.PLAIN_PASSWORD, wire.zap_password(KEY))
        hostile_sock.setsockopt(zmq.SNDHWM, 1000)
        hostile_sock.connect(address)
        for step in range(N_STEPS):
            hostile_sock.send_multipart(message(FINISHED, step))
        hostile_sock.send_multipart(end_message(FINISHED))
        for frames in REPLAYS:
            hostile_sock.send_multipart(frames)
        assert wait_until(lambda: stats()[0].accepted == 2 * N_STEPS, 10), stats()
        assert FINISHED in stats()[0].finished

        # Baseline: the trainer process with its receiver, buffer and first connection.
        rss = PeakRSS(trainer.pid)
        base = rss.proc.memory_info().rss
        rss.start()
        t0 = time.monotonic()

        # The large senders, in parallel with everything below.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        password = wire.zap_password(KEY).decode()
        for role, pw in (
            ("frames", password),
            ("frames", password),
            ("huge", password),
            ("huge", password),
            ("stranger", "-"),
            ("stranger", wire.zap_password(OTHER_KEY).decode()),
        ):
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", LARGE_SENDER, address, pw, role], stdout=subprocess.PIPE, text=True, env=env
                )
            )
        errors: list = []
        valid = threading.Thread(target=stream_valid, args=(address, errors), daemon=True)
        valid.start()

        expected: dict[str, int] = {}
        sent = {"n": 0}

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(st.lists(hostile, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
        def fuzz(batch):
            for frames, reason in batch:
                hostile_sock.send_multipart(frames)
                sent["n"] += 1
                if reason is not None:
                    expected[reason] = expected.get(reason, 0) + 1

        fuzz()
        n_hostile = sent["n"]
        assert n_hostile >= 10_000

        outputs = [child.communicate(timeout=120)[0] for child in children]
        valid.join(60)
        assert not errors, errors
        hostile_sock.send_multipart(end_message(REPLAYED))
        hostile_sock.send_multipart(end_message(OPEN))
        n_frames_msgs = int(outputs[0]) + int(outputs[1])
        assert n_frames_msgs == 1600
        total_rejected = n_hostile + n_frames_msgs
        all_ids = {FINISHED, REPLAYED, OPEN, *VALID_IDS}
        assert wait_until(lambda: stats()[0].finished == all_ids, 30), stats()
        assert wait_until(lambda: stats()[0].n_rejected == total_rejected, 30), (stats(), total_rejected)
        growth = rss.stop() - base
        elapsed = time.monotonic() - t0

        final, running, n_buffer, pairs = stats()
        assert running
        # The valid stream, in full and once: 2 simulations before the fuzzing, N_VALID_SIMS during it.
        n_valid = (2 + N_VALID_SIMS) * N_STEPS
        assert final.accepted == n_valid == n_buffer
        assert pairs == sorted((s, k) for s in (FINISHED, REPLAYED, *VALID_IDS) for k in range(N_STEPS))
        # Every hostile message rejected, each certain category with its reason.
        assert final.n_rejected == total_rejected
        for reason in CERTAIN:
            assert final.rejected.get(reason, 0) == expected.get(reason, 0), (reason, final.rejected, expected)
        assert final.rejected.get("auth", 0) >= expected["auth"]
        assert final.rejected["too_large"] >= n_frames_msgs + expected.get("too_large", 0)
        assert "internal" not in final.rejected and "sink_error" not in final.rejected
        # The strangers never got in: each of their (re)connections was refused.
        assert final.refused_connections >= 2
        print(
            f"\n{n_hostile} hostile messages + {n_frames_msgs} messages of 128 frames (200 MiB) + "
            f"2 frames of 150 MiB + 300 MiB from 2 strangers, in {elapsed:.1f} s; "
            f"rejected {final.rejected}; refused connections {final.refused_connections}; trainer "
            f"RSS growth {growth / 2**20:.1f} MiB (bound {RSS_BOUND / 2**20:.0f} MiB)"
        )
        assert growth <= RSS_BOUND, f"RSS grew by {growth / 2**20:.1f} MiB"
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        ctx.destroy(linger=0)
        if trainer.is_alive():
            conn.send("stop")
            conn.poll(10)
            trainer.join(10)
            if trainer.is_alive():
                trainer.kill()
                trainer.join(10)
