"""Per-message cost of the authentication tag (GMAC), side by side with the rest of the receiver's work.

For fields of 64x64 and 256x256 float32, real ZeroMQ frames of a valid message are validated by
``Receiver._validate`` (everything the receive thread does per message except the sink and the
socket), and the tag check alone (``MessageMac.expected`` over the same frames: the tag the
message must carry, for its nonce) is timed: the cost of the MAC on the receiver (the sender
computes the same tag, at the same cost). For scale, the HMAC-SHA256 of wire version 2 over the
same bytes (lengths and frames) and a copy of the message's bytes.
Best of 9 interleaved passes over N messages each, in one run. Run: python reports/transport/mac_cost.py
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time

import numpy as np
import zmq

from gensim.simulations.base import FieldSpec
from gensim.transport import Receiver, wire

KEY = bytes(range(32))
REPEATS, N = 9, 2000


def real_frames(fields, n_steps):
    """Valid signed messages of n_steps steps, received through ZeroMQ (real zmq.Frame objects)."""
    ctx = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    pull.bind("inproc://bench")
    push.connect("inproc://bench")
    study, mac, out = wire.study_id(KEY), wire.new_mac(KEY), []
    rng = np.random.default_rng(0)
    arrays = [rng.random(f.shape).astype(f.dtype) for f in fields]
    descriptors = wire.encode_descriptors(fields)
    for step in range(n_steps):
        frames = [wire.encode_preamble(study, 0, step, 0.5, len(fields)) + descriptors, *arrays]
        push.send_multipart(frames + [wire.message_tag(mac, frames)])
        out.append(pull.recv_multipart(copy=False))
    push.close(0)
    pull.close(0)
    ctx.term()
    return out


def best_us(fns, inputs):
    """Best time per call of each function over REPEATS passes, the functions interleaved in
    every pass so that they see the same load (the machine may be shared)."""
    best = [float("inf")] * len(fns)
    for _ in range(REPEATS):
        for i, (fn, items) in enumerate(zip(fns, inputs)):
            t0 = time.perf_counter()
            for item in items:
                fn(item)
            best[i] = min(best[i], time.perf_counter() - t0)
    return [b / len(items) * 1e6 for b, items in zip(best, inputs)]


def main() -> None:
    print(
        f"{'field':>12} {'bytes':>8} {'validate':>10} {'of which MAC':>13} {'without MAC':>12} "
        f"{'MAC share':>9} {'copy of the bytes':>18} {'HMAC-SHA256 (v2)':>17}"
    )
    for n in (64, 256):
        fields = (FieldSpec("u", (n, n), "float32"),)
        rx = Receiver(fields, KEY)  # not started: _validate only
        rx.register(0, np.zeros(2), lambda s: None)
        messages = real_frames(fields, N)
        steps = rx._steps[0]

        def validate(m, rx=rx, steps=steps):
            rx._validate(m, 0)
            steps.extra.clear()  # the same steps again at every repeat

        mac = wire.new_mac(KEY)
        buffers = [np.frombuffer(m[1], np.uint8) for m in messages]

        def hmac_sha256(m):
            h = hmac.new(KEY, digestmod=hashlib.sha256)
            for frame in m[:-1]:
                h.update(struct.pack("<Q", len(frame)))
                h.update(frame.buffer)
            return h.digest()

        total, tag, copy, old = best_us(
            [validate, mac.expected, np.copy, hmac_sha256],  # the receiver's check; memory bandwidth
            [messages, messages, buffers, messages],
        )
        nbytes = sum(len(f) for f in messages[0])
        print(
            f"{n:>5}x{n:<6} {nbytes:>8} {total:>7.1f} us {tag:>10.1f} us {total - tag:>9.1f} us "
            f"{tag / total:>9.0%} {copy:>15.1f} us {old:>14.1f} us"
        )


if __name__ == "__main__":
    main()
