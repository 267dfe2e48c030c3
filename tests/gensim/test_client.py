"""gensim.client.Client: environment, local checks, back-pressure timeout, a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gensim.client import Client
from gensim.simulations.base import FieldSpec
from gensim.transport import Receiver, wire

TOKEN = bytes(range(32))
SPECS = (FieldSpec("u", (4, 3), "float32"),)


@pytest.fixture
def receiver():
    rx = Receiver(SPECS, TOKEN).start()
    yield rx
    rx.stop()


@pytest.fixture
def make_client():
    clients: list[Client] = []

    def make(*args, **kwargs) -> Client:
        c = Client(*args, **kwargs)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close(linger_s=0)


def test_from_env(monkeypatch, receiver):
    got = []
    receiver.register(12, [1.0], got.append)
    monkeypatch.setenv("GENSIM_ADDRESS", receiver.address)
    monkeypatch.setenv("GENSIM_TOKEN", TOKEN.hex())
    monkeypatch.setenv("GENSIM_SIM_ID", "12")
    with Client.from_env(fields=SPECS, sndhwm=4) as c:
        assert (c.address, c.study, c.sim_id, c.fields) == (receiver.address, receiver.study, 12, SPECS)
        assert not hasattr(c, "token")  # the client keeps what derives from the key, not the key
        c.send(0, 0.0, {"u": np.ones((4, 3))})
        c.end()
    assert receiver.wait_finished([12], timeout=5)
    assert len(got) == 1 and got[0].fields["u"].dtype == np.float32


def test_from_env_missing(monkeypatch):
    monkeypatch.delenv("GENSIM_ADDRESS", raising=False)
    monkeypatch.setenv("GENSIM_TOKEN", TOKEN.hex())
    monkeypatch.setenv("GENSIM_SIM_ID", "x")
    with pytest.raises(RuntimeError, match="GENSIM_ADDRESS"):
        Client.from_env()
    monkeypatch.setenv("GENSIM_ADDRESS", "tcp://127.0.0.1:1")
    with pytest.raises(RuntimeError, match="GENSIM_SIM_ID must be an integer"):
        Client.from_env()


def test_bad_token_and_address():
    with pytest.raises(ValueError, match="hex"):
        Client("tcp://127.0.0.1:1", "zz", 0)
    with pytest.raises(ValueError, match="cannot connect"):
        Client("nonsense", TOKEN, 0)


def test_declared_fields_checked_locally(make_client, tmp_path):
    c = make_client(f"ipc://{tmp_path}/nobody", TOKEN, 0, fields=SPECS)
    with pytest.raises(ValueError, match=r"expected fields \['u'\].*unexpected \['w'\]"):
        c.send(0, 0.0, {"w": np.zeros((4, 3))})
    with pytest.raises(ValueError, match=r"missing \['u'\]"):
        c.send(0, 0.0, {})
    with pytest.raises(ValueError, match=r"expected shape \(4, 3\), got \(3, 4\)"):
        c.send(0, 0.0, {"u": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="finite"):
        c.send(0, float("nan"), {"u": np.zeros((4, 3))})
    with pytest.raises(ValueError, match="step"):
        c.send(-1, 0.0, {"u": np.zeros((4, 3))})


def test_undeclared_fields_need_float(make_client, tmp_path):
    c = make_client(f"ipc://{tmp_path}/nobody", TOKEN, 0)
    with pytest.raises(ValueError, match="float32 or float64"):
        c.send(0, 0.0, {"u": np.zeros((4, 3), dtype=np.int64)})
    with pytest.raises(ValueError, match="1 to 31"):
        c.send(0, 0.0, {"x" * 40: np.zeros(3)})


def test_send_timeout(make_client, tmp_path):
    c = make_client(f"ipc://{tmp_path}/nobody", TOKEN, 3, sndhwm=1, send_timeout_s=0.1)
    # Without the timeout the loop would block for good (pytest-timeout would end it): the error
    # is the proof, no wall-clock bound needed.
    with pytest.raises(TimeoutError, match=r"trainer at ipc://.*accepted nothing for 0.1 s"):
        for step in range(50):
            c.send(step, 0.0, {"u": np.zeros(3)})


def test_close_is_bounded_and_idempotent(tmp_path, monkeypatch):
    c = Client(f"ipc://{tmp_path}/nobody", TOKEN, 0, linger_s=0.2)
    c.send(0, 0.0, {"u": np.zeros(3)})  # queued, never delivered
    # Bounded by the linger given to ZeroMQ (checked, rather than a wall-clock bound).
    lingers = []
    close = c._socket.close
    monkeypatch.setattr(c._socket, "close", lambda linger=None: (lingers.append(linger), close(linger=linger)))
    c.close()
    assert lingers == [200]
    c.close()
    with pytest.raises(RuntimeError, match="closed"):
        c.send(1, 0.0, {"u": np.zeros(3)})


def test_nothing_after_end(make_client, receiver):
    receiver.register(0, [0.0], lambda s: None)
    c = make_client(receiver.address, TOKEN, 0, fields=SPECS)
    c.end()
    with pytest.raises(RuntimeError, match="END"):
        c.send(0, 0.0, {"u": np.zeros((4, 3))})
    assert receiver.wait_finished([0], timeout=5)


def test_copy_protects_arrays_reused_in_place(make_client):
    specs = (FieldSpec("big", (300, 100), "float64"),)  # over pyzmq's copy threshold
    got = []
    with Receiver(specs, TOKEN) as rx:
        rx.register(0, [0.0], got.append)
        c = make_client(rx.address, TOKEN, 0, fields=specs)
        buf = np.empty((300, 100))
        for step in range(5):
            buf[:] = step  # a solver updating its state in place
            c.send(step, 0.0, {"big": buf}, copy=True)
        buf[:] = -1.0
        c.end()
        assert rx.wait_finished([0], timeout=5)
    assert [float(s.fields["big"].mean()) for s in got] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_subprocess_simulation(receiver):
    """A simulation in its own process; the client pulls in neither torch nor scipy."""
    got = []
    receiver.register(5, [2.0], got.append)
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from gensim.client import Client

        def loaded(*names):
            return [m for m in sys.modules if m.split(".")[0] in names]

        assert not loaded("torch", "lightning", "scipy"), loaded("torch", "lightning", "scipy")
        with Client.from_env() as c:
            for step in range(3):
                c.send(step, 0.5 * step, {"u": np.full((4, 3), step, dtype=np.float32)})
            c.end()
        import gensim.simulations
        assert not loaded("torch", "lightning"), loaded("torch", "lightning")
        """
    )
    env = {
        "GENSIM_ADDRESS": receiver.address,
        "GENSIM_TOKEN": TOKEN.hex(),
        "GENSIM_SIM_ID": "5",
    }
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert receiver.wait_finished([5], timeout=5)
    assert [(s.step, s.t, float(s.fields["u"][0, 0])) for s in got] == [
        (0, 0.0, 0.0),
        (1, 0.5, 1.0),
        (2, 1.0, 2.0),
    ]


def test_messages_are_signed_and_the_key_never_sent(make_client):
    """What leaves the client: header, fields and the tag (nonce, GMAC); never the key, not even in the
    ZeroMQ handshake (only the derived PLAIN password)."""
    import zmq
    from zmq.auth.thread import ThreadAuthenticator

    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)  # pyzmq's own ZAP handler, told the derived password only
    auth.start()
    auth.configure_plain(domain="*", passwords={"gensim": wire.zap_password(TOKEN).decode()})
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.PLAIN_SERVER, 1)
    pull.setsockopt(zmq.RCVTIMEO, 5000)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    try:
        c = make_client(f"tcp://127.0.0.1:{port}", TOKEN.hex(), 7, fields=SPECS)
        c.send(3, 0.25, {"u": np.ones((4, 3))})
        c.end()
        data = pull.recv_multipart()
        end = pull.recv_multipart()
    finally:
        pull.close(linger=0)
        auth.stop()
        ctx.term()
    assert len(data) == 3 and len(end) == 2
    assert data[0][8:24] == wire.study_id(TOKEN)
    mac = wire.new_mac(TOKEN)  # the receiver's check: the tag right for the nonce it carries
    assert len(data[-1]) == wire.TAG_BYTES and mac.expected(data) == data[-1]
    assert len(end[-1]) == wire.TAG_BYTES and mac.expected(end) == end[-1]
    assert data[-1][: wire.NONCE_BYTES] != end[-1][: wire.NONCE_BYTES]  # a fresh nonce per message
    assert all(TOKEN not in frame and TOKEN.hex().encode() not in frame for frame in data + end)
