"""The C clients: the example of docs/wire-format.md and the C client library of clients/c,
compiled and streamed into a Receiver. A client that follows the document is accepted step for
step; the library sends the very bytes of the Python client; its heat2d example matches its exact
solution and trains a study."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from processes import stop_process_tree

from gensim.client import Client
from gensim.simulations.base import FieldSpec
from gensim.transport import Receiver, wire

ROOT = Path(__file__).parents[3]
DOC = ROOT / "docs" / "wire-format.md"
CLIENT = ROOT / "clients" / "c"
#: .ci/run installs the compiler and headers: under CI a missing one is a failure, not a skip.
SKIP = pytest.fail if os.environ.get("CI") == "true" else pytest.skip
MISSING = ("zmq.h", "openssl/", "cannot find -l", "not found")


@pytest.fixture(scope="module")
def c_build(tmp_path_factory) -> Path:
    """clients/c built by its own script (the library and heat2d), in a fresh folder."""
    if shutil.which("cc") is None:
        SKIP("no C compiler")
    out = tmp_path_factory.mktemp("c-client")
    build = subprocess.run([str(CLIENT / "build.sh"), str(out)], capture_output=True, text=True, timeout=120)
    if build.returncode != 0 and any(m in build.stderr for m in MISSING):
        SKIP(f"libzmq or OpenSSL development files missing: {build.stderr.strip()[:200]}")
    assert build.returncode == 0, build.stderr
    return out


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
    build = subprocess.run(
        [cc, "-std=c11", "-Wall", "-Werror", "-O1", str(source), "-o", str(tmp_path / "sim"), "-lzmq", "-lcrypto"],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0 and (
        "zmq.h" in build.stderr or "openssl/" in build.stderr or "cannot find -l" in build.stderr
    ):
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


def test_the_c_client_sends_the_bytes_of_the_python_client(c_build: Path, tmp_path: Path) -> None:
    # The library's source with the test's nonce source compiled in (build.sh has none), so that
    # both clients tag with the same nonces; everything else is the library as built.
    program, production = tmp_path / "fixed_stream", tmp_path / "random_stream"
    subprocess.run(
        [
            "cc",
            "-std=c11",
            "-D_DEFAULT_SOURCE",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-DGENSIM_TEST_NONCE_SOURCE=fixed_nonce",
            f"-I{CLIENT}",
            str(Path(__file__).parent / "c_fixed_stream.c"),
            str(CLIENT / "gensim_client.c"),
            "-o",
            str(program),
            "-lzmq",
            "-lcrypto",
        ],
        check=True,
    )
    key, sim_id = wire.new_key(), -(2**62) + 12345  # a negative id: the int64 goes through as is

    def python_stream(address: str) -> None:
        fields = (FieldSpec("u", (3, 4), "float32"), FieldSpec("velocity", (5,), "float64"))
        with Client(address, key, sim_id, fields=fields) as client:
            # The C program's nonces 1, 2, 3, ... (12-byte little-endian), through the client's
            # own MAC (private: tests only).
            counter = itertools.count(1)
            client._mac = wire.new_mac(key, nonce_source=lambda n: next(counter).to_bytes(n, "little"))
            for step in range(3):
                client.send(
                    step,
                    0.5 * (step + 1),
                    {
                        "u": 0.25 * np.arange(12, dtype=np.float32).reshape(3, 4) + step,
                        "velocity": np.arange(5) / 8.0 - step,
                    },
                )
            client.end()

    def c_stream(address: str) -> None:
        env = {**os.environ, "GENSIM_ADDRESS": address, "GENSIM_TOKEN": key.hex(), "GENSIM_SIM_ID": str(sim_id)}
        run = subprocess.run([str(program)], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr

    got = [_raw_messages(send, key, 4) for send in (python_stream, c_stream)]
    assert len(got[0]) == 4 and [len(m) for m in got[0]] == [4, 4, 4, 2]  # 3 DATA (header, 2 fields, tag), END
    assert got[1] == got[0]  # every frame, tags included, byte for byte
    assert [m[-1][: wire.NONCE_BYTES] for m in got[0]] == [i.to_bytes(12, "little") for i in range(1, 5)]

    # The library as built (clients/c/build.sh) draws random nonces: the same stream, other tags.
    subprocess.run(
        ["cc", "-std=c11", "-Wall", "-Werror", f"-I{CLIENT}", str(Path(__file__).parent / "c_fixed_stream.c"),
         "-o", str(production), f"-L{c_build}", "-lgensim_client", "-lzmq", "-lcrypto"],
        check=True,
    )  # fmt: skip
    program = production
    randomized = _raw_messages(c_stream, key, 4)
    assert [m[:-1] for m in randomized] == [m[:-1] for m in got[0]]
    nonces = {m[-1][: wire.NONCE_BYTES] for m in randomized}
    assert len(nonces) == 4 and not nonces & {m[-1][: wire.NONCE_BYTES] for m in got[0]}


def _raw_messages(send, key: bytes, n: int) -> list[list[bytes]]:
    """The frames of the first ``n`` messages that ``send(address)`` streams to a bare PULL socket
    (a PLAIN server that lets the study's password in), unvalidated."""
    from zmq.auth.thread import ThreadAuthenticator

    context = zmq.Context()
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_plain(domain="*", passwords={"gensim": wire.zap_password(key).decode()})
    try:
        pull = context.socket(zmq.PULL)
        pull.setsockopt(zmq.PLAIN_SERVER, 1)
        pull.setsockopt(zmq.RCVTIMEO, 30_000)
        pull.setsockopt(zmq.LINGER, 0)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        send(f"tcp://127.0.0.1:{port}")
        return [pull.recv_multipart() for _ in range(n)]
    finally:
        auth.stop()
        context.destroy(linger=0)


def heat2d_exact(params: dict, n: int, n_steps: int, t_final: float) -> np.ndarray:
    """The exact discrete solution of clients/c/examples/heat2d.c, shape (n_steps, n, n)."""
    h, dt_out = 1.0 / (n + 1), t_final / n_steps
    diffusivity = 10.0 ** params["log10_diffusivity"]
    m = int(np.ceil(diffusivity * dt_out / (0.2 * h * h)))
    r = diffusivity * (dt_out / m) / (h * h)
    lam = 1 - 8 * r * np.sin(np.pi * h / 2) ** 2
    x = np.sin(np.pi * np.arange(1, n + 1) * h)
    mode = np.outer(x, x)
    return np.stack([params["wall"] + params["amplitude"] * lam ** (m * (k + 1)) * mode for k in range(n_steps)])


def test_the_c_heat2d_example_matches_its_exact_solution(c_build: Path) -> None:
    params = {"wall": 300.0, "amplitude": 80.0, "log10_diffusivity": -0.5}
    key, n, n_steps = wire.new_key(), 12, 5
    got = []
    with Receiver(
        (FieldSpec("u", (n, n), "float32"),), key, n_steps=n_steps, times=0.02 * np.arange(1, n_steps + 1)
    ) as rx:
        rx.register(3, np.zeros(3), got.append)
        env = {
            **os.environ,
            "GENSIM_ADDRESS": rx.address,
            "GENSIM_TOKEN": key.hex(),
            "GENSIM_SIM_ID": "3",
            **{f"GENSIM_PARAM_{k}": repr(v) for k, v in params.items()},
        }
        run = subprocess.run(
            [str(c_build / "heat2d"), str(n), str(n_steps), "0.1"], env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        assert rx.wait_finished([3], timeout=10)
        assert rx.stats().rejected == {}
    exact = heat2d_exact(params, n, n_steps, 0.1)
    assert [s.step for s in got] == list(range(n_steps))
    # float32 values near 300: rounding 300 * 2**-24 = 1.8e-5; the double-precision march adds
    # far less (m * n_steps = 360 sub-steps of contraction).
    np.testing.assert_allclose(np.stack([s.fields["u"] for s in got]), exact, rtol=0, atol=4e-5)
    # The mode decays by 30% over the run: the test would see a wrong rate or sign.
    assert exact[-1].max() - 300 < 0.75 * (exact[0].max() - 300)


@pytest.mark.slow
def test_the_c_heat2d_example_trains_a_study_from_a_config_folder_of_its_own(c_build: Path, tmp_path: Path) -> None:
    """As docs/your-own-solver.md says: the solver's description in a folder outside the package,
    selected with --config-dir; the study is named after it."""
    (tmp_path / "conf" / "simulation").mkdir(parents=True)
    (tmp_path / "conf" / "simulation" / "heat2d_c.yaml").write_text(
        textwrap.dedent(f"""
        defaults:
          - external
          - _self_
        command: "{c_build / "heat2d"} 8 5 0.1"
        parameters: {{wall: [100.0, 500.0], amplitude: [0.0, 100.0], log10_diffusivity: [-2.5, -0.5]}}
        fields: [{{name: u, shape: [8, 8], dtype: float32}}]
        n_steps: 5
    """)
    )
    overrides = [
        "--config-dir",
        str(tmp_path / "conf"),
        "simulation=heat2d_c",
        "launcher.max_simulations=16",
        "data.n_validation=2",
        "data.watermark=32",
        "data.batch_size=16",
        "data.steps_per_epoch=20",
        "buffer.capacity=64",
        "model.net.hidden=[32]",
        "model.warmup_steps=5",
        "model.normalizer_warmup_batches=2",
        "trainer.max_steps=40",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gensim.train", *overrides],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=150)
    finally:
        stop_process_tree(proc)
    assert proc.returncode == 0, out[-4000:]
    [path] = (tmp_path / "outputs" / "heat2d_c").glob("*/metrics.json")
    metrics = json.loads(path.read_text())
    assert metrics["samples_rejected"] == 0 and metrics["simulations_failed"] == 0
    assert metrics["simulations_finished"] >= 4 and metrics["samples_received"] >= 32
