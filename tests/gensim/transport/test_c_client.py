"""The C example of docs/wire-format.md, compiled and streamed into a Receiver: an external
client that follows the document is accepted, step for step, and its tag is the Python one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from gensim.simulations.base import FieldSpec
from gensim.transport import Receiver, wire

DOC = Path(__file__).parents[3] / "docs" / "wire-format.md"


def c_example() -> str:
    blocks = re.findall(r"```c\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/wire-format.md should hold exactly one C example"
    return blocks[0]


def test_the_documented_c_client_is_accepted(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    # .ci/run installs the compiler and headers: under CI a missing one is a failure, not a skip.
    skip = pytest.fail if os.environ.get("CI") == "true" else pytest.skip
    if cc is None:
        skip("no C compiler")
    source = tmp_path / "sim.c"
    source.write_text(c_example())
    build = subprocess.run([cc, "-std=c11", "-Wall", "-Werror", "-O1", str(source), "-o", str(tmp_path / "sim"),
                            "-lzmq", "-lcrypto"], capture_output=True, text=True)
    if build.returncode != 0 and ("zmq.h" in build.stderr or "openssl/" in build.stderr
                                  or "cannot find -l" in build.stderr):
        skip(f"libzmq or OpenSSL development files missing: {build.stderr.strip()[:200]}")
    assert build.returncode == 0, build.stderr

    key = wire.new_key()
    got = []
    fields = (FieldSpec("u", (64, 64), "float64"),)
    with Receiver(fields, key, n_steps=100, times=0.01 * np.arange(1, 101)) as rx:
        rx.register(7, np.zeros(1), got.append)
        env = {**os.environ, "GENSIM_ADDRESS": rx.address, "GENSIM_TOKEN": key.hex(), "GENSIM_SIM_ID": "7"}
        run = subprocess.run([str(tmp_path / "sim")], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, (run.returncode, run.stderr)
        assert rx.wait_finished([7], timeout=10)
        stats = rx.stats()
    assert stats.rejected == {} and stats.refused_connections == 0
    assert [s.step for s in got] == list(range(100))
    assert [s.t for s in got] == pytest.approx(0.01 * np.arange(1, 101))

    # The same C client with another key: refused at the handshake, nothing received.
    with Receiver(fields, wire.new_key(), n_steps=100) as rx:
        rx.register(7, np.zeros(1), got.append)
        env = {**os.environ, "GENSIM_ADDRESS": rx.address, "GENSIM_TOKEN": key.hex(), "GENSIM_SIM_ID": "7"}
        proc = subprocess.Popen([str(tmp_path / "sim")], env=env)
        try:
            assert _wait(lambda: rx.stats().refused_connections >= 1)
        finally:
            proc.kill()
            proc.wait(10)
        assert rx.stats().accepted == 0


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not pred():
        time.sleep(0.02)
    return pred()
