"""Injection: a local process that knows everything an unprivileged user can read about a live
``gensim-train`` study gets no sample accepted.

The hostile process (``injector.py`` beside this file) reads every process's command line,
``ps`` and the world-readable files of the run directory, and is moreover given the worst case:
the receiver's address, the public study id, and the study's ZeroMQ PLAIN password (as if
sniffed on a network). It forges time steps of value 1e30 with every key it can build out of
what it read, for guessed simulation ids (0..63, and any id found in what it read; the launcher's ids
are random 62-bit numbers), with steps and times in range. The study must finish as if nothing happened:
no forged sample accepted, every forged message that reached the receiver rejected as ``auth``,
the connections without the password refused, and the key nowhere in what the process read.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from processes import stop_process_tree
from tiny_study import TINY

from gensim.transport import wire

HERE = Path(__file__).parent


def _wait_for_worker(proc: subprocess.Popen, timeout: float) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "gensim.launch.worker" in child.cmdline():
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.1)
    raise AssertionError(f"no simulation worker within {timeout} s (study exit code {proc.poll()})")


def _receiver_address(pid: int) -> str:
    """The study's loopback TCP listener (the defender's view: the attacker would scan for it)."""
    ports = {
        c.laddr.port
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.ip == "127.0.0.1"
    }
    assert len(ports) == 1, f"expected one receiver port, got {ports}"
    return f"tcp://127.0.0.1:{ports.pop()}"


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_a_local_attacker_gets_no_sample_accepted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gensim.train", *TINY, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        worker = _wait_for_worker(proc, 90)
        t0 = time.monotonic()
        # The defender's privileged view (same user): the key in the worker's environment.
        key = wire.parse_key(worker.environ()["GENSIM_TOKEN"])
        address = _receiver_address(proc.pid)
        out = tmp_path / "injector.json"
        attack = subprocess.run(
            [
                sys.executable,
                str(HERE / "injector.py"),
                address,
                wire.study_id(key).hex(),
                wire.zap_password(key).decode(),
                str(run_dir),
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert attack.returncode == 0, attack.stderr[-4000:]
        # Still training: every forged message was sent to a live receiver (raise
        # trainer.max_steps above if a slow machine makes this fail).
        assert proc.poll() is None, "the study ended before the attack did"
        attack_s = time.monotonic() - t0
        log, _ = proc.communicate(timeout=240)
        print(
            f"attack took {attack_s:.1f} s; the study ended {time.monotonic() - t0:.1f} s after its first worker started"
        )
    finally:
        stop_process_tree(proc)
    assert proc.returncode == 0, log[-4000:]
    report = json.loads(out.read_text())
    material = Path(str(out) + ".material").read_bytes()

    # Nothing the attacker could read holds the key, in any form.
    assert report["material_bytes"] > 10_000
    for form in (key.hex(), key.hex().upper()):
        assert form.encode() not in material
    assert key not in material

    metrics = json.loads((run_dir / "metrics.json").read_text())
    records = json.loads((run_dir / "simulations.json").read_text())
    n_forged = report["sent"]["with_password"]
    assert n_forged >= 1000 and report["sent"]["without_password"] > 0
    # Guessing ids gained nothing: the launcher's ids are random 62-bit numbers, none of them
    # among the guesses or in anything the attacker read. (A forged message that does carry a
    # registered id is rejected as "auth" too: tests/gensim/transport/test_receiver.py, wrong_key.)
    assert not {r["sim_id"] for r in records} & set(report["ids"])
    # 0 forged samples accepted: what was received is exactly what the simulations sent ...
    sent = sum(r["steps"] for r in records)
    assert metrics["samples_received"] + metrics["heldout_samples_received"] == sent, (metrics, records)
    # ... every forged message that reached the receiver was rejected for its tag ...
    assert metrics["samples_rejected"] == n_forged, metrics
    assert metrics["samples_rejected_by_reason"] == {"auth": n_forged}
    # ... and the connections without the password never got a frame in.
    assert "refused a connection" in log
    # The model was not poisoned by 1e30 values.
    assert metrics["val_rel_l2_mean"] < 0.5 * metrics["trivial_rel_l2_mean"]
