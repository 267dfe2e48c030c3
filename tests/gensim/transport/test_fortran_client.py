"""The Fortran binding of clients/fortran, built by its script: its example streams the exact
decaying wave into a Receiver (the C client underneath is tested in test_c_client.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gensim.simulations import DecayingWave
from gensim.transport import Receiver, wire

ROOT = Path(__file__).parents[3]
#: .ci/run installs gfortran, libzmq and OpenSSL: under CI a missing one is a failure, not a skip.
SKIP = pytest.fail if os.environ.get("CI") == "true" else pytest.skip


def test_the_fortran_example_streams_the_exact_solution(tmp_path: Path) -> None:
    if shutil.which("gfortran") is None or shutil.which("cc") is None:
        SKIP("gfortran or a C compiler missing")
    build = subprocess.run(
        [str(ROOT / "clients" / "fortran" / "build.sh"), str(tmp_path)], capture_output=True, text=True, timeout=180
    )
    if build.returncode != 0 and any(m in build.stderr for m in ("zmq.h", "openssl/", "cannot find -l")):
        SKIP(f"libzmq or OpenSSL development files missing: {build.stderr.strip()[:200]}")
    assert build.returncode == 0, build.stderr
    sim = DecayingWave(size=12, n_steps=6)
    params, key, got = np.array([1.75, 0.625]), wire.new_key(), []
    with Receiver(sim.fields, key, n_steps=sim.n_steps, times=sim.times) as rx:
        rx.register(11, params, got.append)
        env = {
            **os.environ,
            "GENSIM_ADDRESS": rx.address,
            "GENSIM_TOKEN": key.hex(),
            "GENSIM_SIM_ID": "11",
            "GENSIM_PARAM_a": repr(float(params[0])),
            "GENSIM_PARAM_k": repr(float(params[1])),
        }
        run = subprocess.run([str(tmp_path / "decay"), "12", "6"], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert rx.wait_finished([11], timeout=10)
        assert rx.stats().rejected == {}
    assert [s.step for s in got] == list(range(6))
    np.testing.assert_allclose([s.t for s in got], sim.times, rtol=1e-15)
    for s in got:  # float32 values <= 1.75: rounding below 2 * 2**-24 * 1.75 = 2.1e-7
        np.testing.assert_allclose(s.fields["u"], sim.exact(params, s.t), rtol=0, atol=2.1e-7)
    # A missing parameter is a clear error, not a stream of garbage.
    del env["GENSIM_PARAM_k"]
    run = subprocess.run([str(tmp_path / "decay")], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "GENSIM_PARAM_k is not set" in run.stderr
