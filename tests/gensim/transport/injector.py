"""A hostile local process, for tests/gensim/transport/test_injection.py (not a test module).

It uses only what any user of the machine can read: every process's ``/proc/<pid>/cmdline``,
the output of ``ps``, and the files of a run directory that are readable by others. Out of
that it builds every key it can think of (each hex string found, as a 32-byte key or a 16-byte
version-1 token; plus random keys), guesses simulation ids (0..63, sequential as a launcher
might give them, and every integer found in the run directory), learns the fields, step count
and time grid from the simulation config on the workers' command lines, and sends forged time
steps of value 1e30 that pass every other check of the receiver.

What it is given beyond that is the worst case for the defender, stated on the command line:
the receiver's address (a port scan or ``/proc/net/tcp`` finds it), the public study id (it is
in every header), and optionally the study's ZeroMQ PLAIN password (as if sniffed on a network,
where PLAIN travels in clear).

Usage::

    python injector.py ADDRESS STUDY_ID_HEX (PASSWORD|-) RUN_DIR OUT_JSON
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import zmq

from gensim.transport import wire

HEX = re.compile(rb"(?<![0-9a-fA-F])([0-9a-fA-F]{32}|[0-9a-fA-F]{64})(?![0-9a-fA-F])")
FORGED_VALUE = 1e30


def readable_material(run_dir: Path) -> tuple[bytes, list[dict]]:
    """Everything an unprivileged user can read about the study, and the simulation configs
    found on the workers' command lines."""
    chunks, configs, cmdlines, parents = [], [], {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdlines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()  # mode 0444: anyone
            parents[pid] = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        chunks.append(cmdlines[pid])
    for pid, cmdline in cmdlines.items():
        # The study's workers: children of the gensim-train whose command line names run_dir.
        args = cmdline.split(b"\0")
        if (
            b"gensim.launch.worker" in args
            and b"--simulation" in args
            and str(run_dir).encode() in cmdlines.get(parents.get(pid), b"")
        ):
            try:
                configs.append(json.loads(args[args.index(b"--simulation") + 1]))
            except (IndexError, ValueError):
                pass
    chunks.append(subprocess.run(["ps", "-eo", "pid,user,args", "--no-headers"], capture_output=True).stdout)
    for path in sorted(run_dir.rglob("*")):
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        # Only what "others" may read, in folders they may enter.
        parents_ok = all(p.stat().st_mode & stat.S_IXOTH for p in path.parents if run_dir in (p, *p.parents))
        if path.is_file() and mode & stat.S_IROTH and parents_ok:
            try:
                chunks.append(path.read_bytes())
            except OSError:
                pass
    return b"\n".join(chunks), configs


def candidate_keys(material: bytes) -> list[bytes]:
    keys = []
    for match in {m.group(1).lower() for m in HEX.finditer(material)}:
        raw = bytes.fromhex(match.decode())
        keys.append(raw if len(raw) == 32 else raw * 2)  # a 16-byte token, stretched
    return keys + [secrets.token_bytes(32) for _ in range(3)]


def guessed_ids(material: bytes) -> list[int]:
    found = {int(m) for m in re.findall(rb'"sim_id":\s*(-?\d+)', material)}
    return sorted(set(range(64)) | found)


def forge(study: bytes, key: bytes, sim_id: int, step: int, t: float, fields) -> list[bytes]:
    header = wire.encode_header(study, sim_id, step, t, fields)
    arrays = [np.full(f.shape, FORGED_VALUE, dtype=f.dtype) for f in fields]
    return wire.sign(key, [header, *arrays])


def main(address: str, study_hex: str, password: str, run_dir: str, out: str) -> None:
    from hydra.utils import instantiate

    material, configs = readable_material(Path(run_dir))
    assert configs, "no simulation worker found on any command line"
    simulation = instantiate(configs[0])  # public code + a public config: fields, steps, times
    fields, times = simulation.fields, np.asarray(simulation.times)
    study = bytes.fromhex(study_hex)
    keys, ids = candidate_keys(material), guessed_ids(material)

    ctx = zmq.Context()
    sent = {"with_password": 0, "without_password": 0}
    try:
        # 1. Connections with what was found: no PLAIN credentials, or a password derived from
        #    each candidate key. The receiver refuses them at the handshake.
        for creds in [None, *(wire.zap_password(k) for k in keys)]:
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 100_000)
            if creds is not None:
                sock.setsockopt(zmq.PLAIN_USERNAME, wire.ZAP_USERNAME)
                sock.setsockopt(zmq.PLAIN_PASSWORD, creds)
            sock.connect(address)
            for key in keys[:2]:
                for sim_id in ids[:8]:
                    try:
                        sock.send_multipart(forge(study, key, sim_id, 0, float(times[0]), fields), zmq.NOBLOCK)
                        sent["without_password"] += 1
                    except zmq.Again:
                        break
            sock.close(linger=500)
        # 2. With the real password (sniffed): forged messages reach the receiver, with every
        #    candidate key, every guessed id, steps and times that are in range, an END each.
        if password != "-":
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.PLAIN_USERNAME, wire.ZAP_USERNAME)
            sock.setsockopt(zmq.PLAIN_PASSWORD, password.encode())
            sock.setsockopt(zmq.SNDTIMEO, 30_000)
            sock.connect(address)
            for key in keys:
                for sim_id in ids:
                    for step in (0, len(times) // 2, len(times) - 1):
                        sock.send_multipart(forge(study, key, sim_id, step, float(times[step]), fields))
                        sent["with_password"] += 1
                    end = wire.encode_header(study, sim_id, len(times), float(times[-1]), kind=wire.KIND_END)
                    sock.send_multipart(wire.sign(key, [end]))
                    sent["with_password"] += 1
            sock.close(linger=30_000)  # until the receiver has them all
    finally:
        ctx.term()
    Path(out).write_text(json.dumps({"sent": sent, "n_keys": len(keys), "ids": ids, "material_bytes": len(material)}))
    Path(out + ".material").write_bytes(material)  # for the test to audit


if __name__ == "__main__":
    main(*sys.argv[1:6])
