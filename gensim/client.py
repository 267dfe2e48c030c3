"""The simulation side of the transport: stream time steps to the trainer over ZeroMQ.

Used inside simulation processes (it never imports torch)::

    from gensim.client import Client

    with Client.from_env(fields=my_field_specs) as client:   # GENSIM_ADDRESS, _TOKEN, _SIM_ID
        for step, t, fields in solver():
            client.send(step, t, fields)
        client.end()                                           # finished normally

A full send queue blocks ``send`` (back-pressure from a busy trainer); after ``send_timeout_s``
seconds without the trainer accepting anything, ``send`` raises :class:`TimeoutError`.
Every message carries a tag made with the study key (``GENSIM_TOKEN``): a fresh random nonce
and a GMAC (AES-256-GCM) over the message; the connection presents the study's ZeroMQ PLAIN
password; the trainer refuses anything else.
The wire format is specified in ``docs/wire-format.md`` (a C or Fortran code can speak it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import zmq

from gensim.transport import geometry, wire

if TYPE_CHECKING:  # importing gensim.simulations would pull scipy into every worker
    from gensim.simulations.base import FieldMesh, FieldSpec

#: Environment variables read by :meth:`Client.from_env` (set by the launcher).
ENV_ADDRESS = "GENSIM_ADDRESS"
ENV_TOKEN = "GENSIM_TOKEN"
ENV_SIM_ID = "GENSIM_SIM_ID"


class _Field(NamedTuple):
    name: str
    shape: tuple[int, ...]
    dtype: str


class Client:
    """Send the time steps of one simulation to a :class:`gensim.transport.Receiver`.

    Parameters
    ----------
    address : str
        The receiver's endpoint, e.g. ``"tcp://127.0.0.1:53817"`` (its ``address`` property).
    token : bytes or str
        Study key: 32 bytes or 64 hex characters (``GENSIM_TOKEN``). It signs every message
        and is never sent itself.
    sim_id : int
        This simulation's id, as registered with the receiver.
    fields : sequence of FieldSpec, optional
        Declared fields. When given, :meth:`send` checks names and shapes locally (with a clear
        error) and casts arrays to the declared dtype. When omitted, each array is sent with its
        own shape and dtype, which must be float32 or float64.
    sndhwm : int
        ZeroMQ send high-water mark, in messages: how many time steps may wait in this process
        before :meth:`send` blocks.
    send_timeout_s : float
        How long one :meth:`send` may block on a full queue before raising TimeoutError.
    linger_s : float
        How long :meth:`close` waits for queued messages to be delivered (bounded, so that a
        dead trainer cannot hang a finished simulation).
    """

    def __init__(
        self,
        address: str,
        token: bytes | str,
        sim_id: int,
        fields: Sequence[FieldSpec] | None = None,
        sndhwm: int = 32,
        send_timeout_s: float = 120.0,
        linger_s: float = 5.0,
    ) -> None:
        self.address = str(address)
        key = wire.parse_key(token)
        self.study = wire.study_id(key)
        self._mac = wire.new_mac(key)
        zap_password = wire.zap_password(key)
        del key  # only what derives from it is kept
        self.sim_id = int(sim_id)
        if not -(2**63) <= self.sim_id < 2**63:
            raise ValueError(f"sim_id must fit in an int64, got {sim_id}")
        if sndhwm < 1:
            raise ValueError(f"sndhwm must be >= 1, got {sndhwm}")
        if not send_timeout_s > 0:
            raise ValueError(f"send_timeout_s must be positive, got {send_timeout_s}")
        self.send_timeout_s = float(send_timeout_s)
        self.linger_s = float(linger_s)
        self.fields: tuple[FieldSpec, ...] | None = None
        self._declared_descriptors = b""
        if fields is not None:
            self.fields = tuple(fields)
            if not self.fields:
                raise ValueError("fields, when given, must declare at least one FieldSpec")
            names = [f.name for f in self.fields]
            if len(set(names)) != len(names):
                raise ValueError(f"field names must be unique, got {names}")
            self._declared_descriptors = wire.encode_descriptors(self.fields)
        self._last_key: tuple | None = None
        self._last_descriptors = b""
        self._n_sent = 0
        self._last_t = 0.0
        self._ended = False
        self._closed = False

        self._context = zmq.Context()
        try:
            self._socket = self._context.socket(zmq.PUSH)
            self._socket.setsockopt(zmq.SNDHWM, int(sndhwm))
            self._socket.setsockopt(zmq.SNDTIMEO, max(1, int(round(self.send_timeout_s * 1000))))
            self._socket.setsockopt(zmq.LINGER, max(0, int(round(self.linger_s * 1000))))
            self._socket.setsockopt(zmq.PLAIN_USERNAME, wire.ZAP_USERNAME)
            self._socket.setsockopt(zmq.PLAIN_PASSWORD, zap_password)
            self._socket.connect(self.address)
        except zmq.ZMQError as err:
            self._context.destroy(linger=0)
            raise ValueError(
                f"cannot connect to the trainer at {self.address!r}: {err}; expected an endpoint "
                "such as 'tcp://127.0.0.1:5555' (the receiver's address)"
            ) from err

    @classmethod
    def from_env(cls, fields: Sequence[FieldSpec] | None = None, **kwargs) -> Client:
        """Build a client from ``GENSIM_ADDRESS``, ``GENSIM_TOKEN`` (the key, 64 hex characters)
        and ``GENSIM_SIM_ID``.

        Other keyword arguments go to the constructor.

        Raises
        ------
        RuntimeError
            If a variable is missing or ``GENSIM_SIM_ID`` is not an integer.
        """
        env = {k: os.environ.get(k) for k in (ENV_ADDRESS, ENV_TOKEN, ENV_SIM_ID)}
        missing = [k for k, v in env.items() if not v]
        if missing:
            raise RuntimeError(
                f"environment variable(s) {', '.join(missing)} not set; the gensim launcher sets "
                f"{ENV_ADDRESS}, {ENV_TOKEN} and {ENV_SIM_ID} for each simulation it starts"
            )
        try:
            sim_id = int(env[ENV_SIM_ID])
        except ValueError:
            raise RuntimeError(f"{ENV_SIM_ID} must be an integer, got {env[ENV_SIM_ID]!r}") from None
        return cls(env[ENV_ADDRESS], env[ENV_TOKEN], sim_id, fields=fields, **kwargs)

    # ------------------------------------------------------------------ sending
    def _prepare(self, fields: Mapping[str, np.ndarray], copy: bool) -> tuple[bytes, list[np.ndarray]]:
        """Descriptor bytes and the arrays to send, little-endian and C-contiguous."""
        if self.fields is not None:
            given = list(fields)
            declared = [f.name for f in self.fields]
            if set(given) != set(declared) or len(given) != len(declared):
                missing = sorted(set(declared) - set(given))
                extra = sorted(set(given) - set(declared))
                raise ValueError(
                    f"simulation {self.sim_id}: expected fields {declared}, got {given} "
                    f"(missing {missing}, unexpected {extra}); send exactly the declared fields"
                )
            arrays = []
            for spec in self.fields:
                dtype = wire.numpy_dtype(spec.dtype)
                src = fields[spec.name]
                arr = np.ascontiguousarray(src, dtype=dtype)
                if arr.shape != spec.shape:
                    raise ValueError(
                        f"simulation {self.sim_id}: field {spec.name!r} expected shape {spec.shape}, got {arr.shape}"
                    )
                if copy and np.may_share_memory(arr, src):
                    arr = arr.copy()
                arrays.append(arr)
            return self._declared_descriptors, arrays

        specs, arrays = [], []
        for name, src in fields.items():
            a = np.asarray(src)
            if a.dtype.kind != "f" or a.dtype.itemsize not in (4, 8):
                raise ValueError(
                    f"simulation {self.sim_id}: field {name!r} has dtype {a.dtype}; send float32 "
                    "or float64, or declare fields=[FieldSpec(...)] so the client casts"
                )
            dtype = wire.numpy_dtype(f"float{8 * a.dtype.itemsize}")
            arr = np.ascontiguousarray(a, dtype=dtype)
            if copy and np.may_share_memory(arr, src):
                arr = arr.copy()
            specs.append(_Field(str(name), arr.shape, dtype.name))
            arrays.append(arr)
        if not specs:
            raise ValueError(f"simulation {self.sim_id}: send needs at least one field")
        key = tuple((s.name, s.shape, s.dtype) for s in specs)
        if key != self._last_key:
            self._last_descriptors = wire.encode_descriptors(specs)
            self._last_key = key
        return self._last_descriptors, arrays

    def _send_frames(self, frames: list, what: str) -> None:
        try:
            self._socket.send_multipart(frames, copy=False)
        except zmq.Again:
            raise TimeoutError(
                f"simulation {self.sim_id}: the trainer at {self.address} accepted nothing for "
                f"{self.send_timeout_s:g} s while sending {what}; is the trainer running and "
                f"reachable, and is {ENV_ADDRESS} right?"
            ) from None

    def send(self, step: int, t: float, fields: Mapping[str, np.ndarray], *, copy: bool = False) -> None:
        """Send one time step. Blocks while the queue is full (back-pressure).

        Arrays are cast to the declared dtype if needed and made C-contiguous, then handed to
        ZeroMQ without copying: ZeroMQ reads them later, on its I/O thread. **Do not modify an
        array in place after sending it** (yield fresh arrays), or pass ``copy=True``.

        Parameters
        ----------
        step : int
            Time-step index, ``0 <= step < 2**32``.
        t : float
            Physical time (finite).
        fields : mapping of str to ndarray
            One array per field (declared shape when ``fields`` was given to the constructor).
        copy : bool
            Copy arrays that the caller still owns before sending (for solvers that reuse
            their arrays in place).

        Raises
        ------
        ValueError
            Wrong field names, shapes or dtypes, step out of range, non-finite time.
        TimeoutError
            The trainer accepted nothing for ``send_timeout_s`` seconds.
        RuntimeError
            The client is closed or :meth:`end` was already sent.
        """
        self._check_open()
        step = int(step)
        if not 0 <= step < 2**32:
            raise ValueError(f"simulation {self.sim_id}: step must be in 0..2**32-1, got {step}")
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"simulation {self.sim_id}: time must be finite, got {t} at step {step}")
        descriptors, arrays = self._prepare(fields, copy)
        frames = [wire.encode_preamble(self.study, self.sim_id, step, t, len(arrays)) + descriptors, *arrays]
        # The tag reads the arrays (one joined copy), before ZeroMQ reads them.
        frames.append(wire.message_tag(self._mac, frames))
        self._send_frames(frames, f"step {step}")
        self._n_sent += 1
        self._last_t = t

    def send_mesh(self, name: str, mesh: FieldMesh) -> None:
        """Send the geometry of field ``name`` (a MESH message): once, before or between steps.

        The receiver checks it against the mesh its trainer declared for that field (reason
        ``mesh`` when it differs: another resolution, or the nodes in another order); data
        messages carry node values only. See :mod:`gensim.transport.geometry`.

        Parameters
        ----------
        name : str
            A declared field's name.
        mesh : FieldMesh
            Its node coordinates (N, d) and cells (M, 3) if any.

        Raises
        ------
        ValueError
            ``name`` is not a declared field (when ``fields`` was given) or its shape is not (N,).
        """
        self._check_open()
        if self.fields is not None:
            spec = {f.name: f for f in self.fields}.get(name)
            if spec is None or spec.shape != (mesh.n_nodes,):
                declared = [(f.name, f.shape) for f in self.fields]
                raise ValueError(
                    f"simulation {self.sim_id}: send_mesh({name!r}): expected a declared field of "
                    f"shape ({mesh.n_nodes},), the declared fields are {declared}"
                )
        frames = geometry.mesh_message(self._mac, self.study, self.sim_id, name, mesh)
        self._send_frames(frames, f"the mesh of {name!r}")

    def end(self) -> None:
        """Tell the trainer this simulation finished normally (an END message).

        Its step field is the number of DATA messages sent and its time the last time sent.
        """
        self._check_open()
        header = wire.encode_preamble(self.study, self.sim_id, self._n_sent % 2**32, self._last_t, 0, wire.KIND_END)
        self._send_frames(wire.sign(self._mac, [header]), "END")
        self._ended = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"simulation {self.sim_id}: the client is closed")
        if self._ended:
            raise RuntimeError(f"simulation {self.sim_id}: END was already sent; nothing may follow")

    def close(self, linger_s: float | None = None) -> None:
        """Close the socket, waiting at most ``linger_s`` (default: the constructor's) for queued
        messages to be delivered. Idempotent."""
        if self._closed:
            return
        self._closed = True
        linger = self.linger_s if linger_s is None else float(linger_s)
        self._socket.close(linger=max(0, int(round(linger * 1000))))
        self._context.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            if not self._closed:
                self.close(linger_s=0.0)
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"Client(address={self.address!r}, sim_id={self.sim_id}, sent={self._n_sent})"
