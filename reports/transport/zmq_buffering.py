"""Does libzmq hold a whole multipart message before the reader sees its first frame?

A PUSH in a child process sends one message of N_FRAMES frames of FRAME_BYTES bytes to a PULL
socket here that does not read; the RSS of this process is sampled while it arrives, then the
first frame is read and the rest drained. Run: python reports/transport/zmq_buffering.py
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import zmq

N_FRAMES, FRAME_BYTES = 20_000, 10_000  # 200 MB in small frames, each far under any limit

SENDER = f"""
import sys, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.PUSH); s.connect(sys.argv[1])
s.send_multipart([b"x" * {FRAME_BYTES}] * {N_FRAMES}, copy=False)
s.close(linger=60000); ctx.term()
"""


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    base = rss_mb()
    child = subprocess.Popen([sys.executable, "-c", SENDER, f"tcp://127.0.0.1:{port}"])
    peak, t0 = base, time.monotonic()
    while time.monotonic() - t0 < 20 and not pull.poll(0):
        peak = max(peak, rss_mb())
        time.sleep(0.01)
    readable_at = rss_mb()
    first = pull.recv(copy=False)
    n, t1 = 1, time.perf_counter()
    while first.more if n == 1 else frame.more:  # noqa: F821 - frame set in the loop
        frame = pull.recv(copy=False)
        n += 1
    drain_s = time.perf_counter() - t1
    child.wait(30)
    print(f"message: {N_FRAMES} frames x {FRAME_BYTES} B = {N_FRAMES * FRAME_BYTES / 2**20:.0f} MiB")
    print(
        f"RSS before: {base:.0f} MiB; when the first frame became readable: {readable_at:.0f} MiB "
        f"(+{readable_at - base:.0f} MiB); peak while arriving: {peak:.0f} MiB"
    )
    print(f"then the remaining {n - 1} frames were read without waiting in {drain_s * 1e3:.0f} ms")
    del first, frame
    print(f"RSS after draining: {rss_mb():.0f} MiB")
    pull.close(0)
    ctx.term()


if __name__ == "__main__":
    main()
