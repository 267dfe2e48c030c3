"""The trainer side of the transport: a ZeroMQ PULL socket on a background thread.

The receiver binds, receives one multipart message per time step (see :mod:`gensim.transport.wire`),
validates it completely and hands each accepted time step as a :class:`~gensim.simulations.base.Sample`
to the sink registered for its simulation. Nothing that fails validation reaches a sink; every
rejection is counted by reason and logged (rate-limited) on the ``gensim.transport`` logger.

Authentication is always on, whatever the bind address: a peer must present the study's
ZeroMQ PLAIN password (:func:`gensim.transport.wire.zap_password`) to connect at all, and every
message must carry a tag made with the study key (a nonce and a GMAC, wire version 3); nothing
reaches a sink before its tag is verified. Messages are received frame by frame and refused as
soon as their accumulated size or frame count is over the limit, without keeping their frames
(ZeroMQ itself never allocates a single frame over the limit: ``ZMQ_MAXMSGSIZE``).

There is no Python-side queue: the receive thread calls the sink directly, so when the sink
(a replay buffer insert) is slow, ZeroMQ's high-water marks fill up and the simulations block
in ``send``, which is the intended back-pressure.

The receive thread works in batches to spread its per-message Python over many messages: each
wake-up takes what ZeroMQ has already queued (up to :data:`DRAIN_MESSAGES` messages or
:data:`DRAIN_BYTES` bytes), validates every message, and hands the accepted samples of
consecutive messages with the same sink to that sink's ``add_many`` when it has one
(:class:`BatchSink`), in arrival order. Unless a wake-up took a full batch, the next one comes
``wake_interval_s`` later at the earliest: messages that arrive one at a time (a simulation's
steps) then wait in ZeroMQ and come in one batch, and the thread takes Python's interpreter
lock from the training thread once per batch, not once per message.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import zmq
import zmq.utils.monitor

from gensim.simulations.base import FieldSpec, Sample
from gensim.transport import geometry, wire
from gensim.transport.wire import WireError

logger = logging.getLogger("gensim.transport")

#: Poll period of the receive thread, in milliseconds (bounds how long ``stop`` waits).
POLL_MS = 50
#: The first this many rejections of each reason are logged, then every ``LOG_EVERY``-th.
LOG_FIRST = 5
LOG_EVERY = 1000
#: Bytes of the first frame kept from a message refused while received: enough for the header
#: of 1000 fields, to say in the log what it claimed to be.
HEAD_KEPT_BYTES = 65536
#: Relative tolerance of the time-range check: a time may lie outside the simulation's time grid
#: ``[min(times), max(times)]`` by this fraction of ``max(|min|, |max|, max - min)`` (rounding
#: in a solver that accumulates ``t += dt``, or a C code that computes its times in float32).
TIME_RTOL = 1e-6

#: Fields of at most this many values are checked for NaN/Inf by a dot product with zeros,
#: larger ones by ``np.isfinite`` into a mask: BLAS runs such a dot product on the calling
#: thread (OpenBLAS threads one over about 10 000 values, and its threads would fight the
#: training's for the cores).
FINITE_DOT_MAX = 8192

#: A wake-up of the receive thread takes at most this many messages already queued in ZeroMQ,
#: and stops early once they hold :data:`DRAIN_BYTES` bytes: the frames of a batch stay alive
#: until its sinks return.
DRAIN_MESSAGES = 64
DRAIN_BYTES = 32 * 2**20

#: The receive thread measures the arrival rate over windows of at least this many seconds
#: (``wake_interval_s`` applies only while that rate brings less than a full batch per interval).
RATE_WINDOW_S = 0.25

#: A batch's tags are computed on several threads only when its messages hold at least this
#: many bytes: below, handing a share to a helper thread costs more than hashing it here.
PARALLEL_TAG_BYTES = 2**18

Sink = Callable[[Sample], None]

#: Where the PULL socket's monitor reports failed handshakes (inproc: private to the receiver's
#: ZeroMQ context), and the events counted as refused connections.
_MONITOR_ENDPOINT = "inproc://gensim-receiver-monitor"
_HANDSHAKE_EVENTS = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol error, e.g. no PLAIN credentials",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "wrong password",
}


class BatchSink:
    """A sink with a batch method: the receiver hands it consecutive samples in one call.

    Parameters
    ----------
    one : callable
        Takes one :class:`Sample` (the plain sink protocol; used for a lone sample, and for
        each sample of a batch whose ``many`` call raised).
    many : callable
        Takes a list of samples, in arrival order, and does what ``one`` would do with each.
        It must take all of them or raise before taking any (e.g. check every sample first):
        when it raises, the receiver hands the samples to ``one`` one by one, so that only
        the faulty ones are counted as ``"sink_error"``.

    Examples
    --------
    >>> rx.register(0, params, BatchSink(buffer.add, buffer.add_many))    # doctest: +SKIP
    """

    __slots__ = ("add_many", "one")

    def __init__(self, one: Sink, many: Callable[[list[Sample]], object]) -> None:
        if not callable(one) or not callable(many):
            raise TypeError(f"BatchSink needs two callables, got {type(one).__name__} and {type(many).__name__}")
        self.one = one
        self.add_many = many

    def __call__(self, sample: Sample) -> None:
        self.one(sample)

    def __repr__(self) -> str:
        return f"BatchSink({self.one!r}, {self.add_many!r})"


def _describe(fields) -> str:
    """``u float32 (64, 64), v float64 (8,)``: fields or descriptors, for messages."""
    return ", ".join(f"{f.name} {f.dtype} {tuple(f.shape)}" for f in fields) or "none"


def _all_finite(flat: np.ndarray, scratch: np.ndarray) -> bool:
    """Whether every value of ``flat`` is finite, in one pass and without allocating.

    For a small field, ``x * 0`` is 0 for a finite ``x`` and NaN for NaN or +-Inf, so a dot
    product with zeros is 0 exactly when every value is finite (no overflow is possible):
    about twice as fast as ``np.isfinite(flat).all()``. The caller silences numpy's "invalid"
    warning (see ``Receiver._run``).

    Parameters
    ----------
    flat : ndarray, shape (n,)
    scratch : ndarray, shape (n,)
        Zeros of ``flat``'s dtype when ``n <= FINITE_DOT_MAX``, else a bool mask to write into.
    """
    if scratch.dtype == bool:
        return bool(np.isfinite(flat, out=scratch).all())
    return math.isfinite(np.dot(flat, scratch))


@dataclass(frozen=True)
class ReceiverStats:
    """A snapshot of a receiver's counters.

    Attributes
    ----------
    accepted : int
        DATA messages validated and taken by their sink.
    rejected : dict of str to int
        Rejected messages by reason (see :data:`gensim.transport.wire.REASONS`).
    bytes_accepted : int
        Total size (header and data frames) of the accepted DATA messages.
    accepted_per_sim : dict of int to int
        Accepted DATA messages per simulation id (registered ids only, zeros included).
    finished : frozenset of int
        Simulation ids whose END message was received.
    refused_connections : int
        Connections refused at the ZeroMQ handshake (no or wrong PLAIN password): their
        messages never reach the receiver, so they are not in ``rejected``.
    rejected_per_sim : dict of int to dict of str to int
        Rejected messages by reason, per simulation known to this receiver (registered now or
        before): the authenticated id, or, for rejections decided before the tag is checked
        (``too_large``, ``study``, ``auth``, ...), the id its header claims.
    rejection_details : dict of int to str
        Per simulation of ``rejected_per_sim``: the message of its first rejection (the reason,
        and what was expected versus what came: dtype, shape, size).
    """

    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    bytes_accepted: int = 0
    accepted_per_sim: dict[int, int] = field(default_factory=dict)
    finished: frozenset[int] = frozenset()
    refused_connections: int = 0
    rejected_per_sim: dict[int, dict[str, int]] = field(default_factory=dict)
    rejection_details: dict[int, str] = field(default_factory=dict)

    @property
    def n_rejected(self) -> int:
        """Total number of rejected messages."""
        return sum(self.rejected.values())


class _Rejected(Exception):
    """Internal: a validation failure with the sim id when known."""

    def __init__(self, reason: str, message: str, sim_id: int | None = None, claimed: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.sim_id = sim_id
        self.claimed = claimed  # the id an unauthenticated header claims, when it could be read


class _Oversize:
    """Internal: what is left of a message refused while it was received (its frames are gone)."""

    __slots__ = ("frames", "head", "nbytes", "too_large")

    def __init__(self, nbytes: int, frames: int, too_large: bool, head: bytes) -> None:
        # too_large: the bytes crossed the limit (else the frame count did), decided when the
        # limit was crossed, not after the rest was drained. head: the start of frame 0, kept
        # to say what the refused message claimed to be (its simulation id and fields).
        self.nbytes, self.frames, self.too_large, self.head = nbytes, frames, too_large, head


@dataclass
class _Sim:
    params: np.ndarray
    sink: Sink
    accepted: int = 0


class _Steps:
    """The steps of one simulation taken so far: a bitmap of ``n_steps`` bits (a set without
    ``n_steps``). Kept across re-registrations (a retried simulation resends its steps)."""

    __slots__ = ("bits", "extra")

    def __init__(self, n_steps: int | None) -> None:
        self.bits = bytearray((n_steps + 7) // 8) if n_steps is not None else None
        self.extra: set[int] | None = None if n_steps is not None else set()

    def add(self, step: int) -> None:
        """Record ``step`` (in ``[0, n_steps)`` when there is a bitmap)."""
        if self.bits is None:
            self.extra.add(step)
        else:
            self.bits[step >> 3] |= 1 << (step & 7)

    def __contains__(self, step: int) -> bool:
        if self.bits is None:
            return step in self.extra
        byte = step >> 3
        return byte < len(self.bits) and bool(self.bits[byte] & (1 << (step & 7)))

    def discard(self, step: int) -> None:
        if self.bits is None:
            self.extra.discard(step)
        else:
            self.bits[step >> 3] &= ~(1 << (step & 7)) & 0xFF


class Receiver:
    """Receive, validate and dispatch the time steps streamed by simulations.

    Parameters
    ----------
    fields : sequence of FieldSpec
        The fields every simulation of the study sends (names, shapes, dtypes). Messages are
        matched by field name; the descriptor order in a message is free.
    token : bytes or str
        Study key: 32 bytes, or 64 hex characters (``GENSIM_TOKEN``). A peer must present the
        ZeroMQ PLAIN password derived from it to connect, and every message must carry a
        tag made with it (GMAC, :class:`~gensim.transport.wire.MessageMac`; reason ``"auth"``);
        a message from another study (another key) is rejected with reason ``"study"``. The key
        never appears in a log or an error message.
    address : str
        ZeroMQ endpoint to bind. Default ``"tcp://127.0.0.1:*"``: loopback, ephemeral port.
        ``"ipc:///private/dir/name"`` works too. Read the actual endpoint from :attr:`address`
        after :meth:`start`. Authentication is on whatever the address.
    n_steps : int, optional
        Time steps of one simulation (``Simulation.n_steps``): steps outside ``[0, n_steps)``
        are rejected (``"step_range"``), and the steps taken per simulation are kept as a
        bitmap of ``n_steps`` bits. None: any uint32 step, kept in a set.
    times : sequence of float, optional
        The simulation's time grid (``Simulation.times``, when it has one): times outside
        ``[min(times), max(times)]`` (give or take :data:`TIME_RTOL`) are rejected
        (``"time_range"``). None: any finite time.
    max_message_bytes : int, optional
        Largest accepted message (header, data frames and tag) in bytes. Default: twice the
        size of a valid message. A message is refused (``"too_large"``) as soon as the frames
        received so far exceed it, and its other frames are discarded unread; ZeroMQ drops a
        single larger frame before allocating it (``ZMQ_MAXMSGSIZE``) and disconnects its
        sender: such a frame never reaches the receiver and is not counted.
    rcvhwm : int
        ZeroMQ receive high-water mark, in messages per connected simulation (bounds memory
        held by the socket).
    tag_threads : int
        Threads that compute the authentication tags of a batch: the receive thread and
        ``tag_threads - 1`` helpers, each checking a share of the batch's messages (OpenSSL
        releases the GIL), for batches of at least :data:`PARALLEL_TAG_BYTES` bytes.
        1: everything on the receive thread.
    wake_interval_s : float
        Shortest time between two wake-ups of the receive thread, in seconds, for a slow stream.
        Messages that arrive one at a time are then taken together, so the thread takes the
        interpreter lock from the training thread about ``1 / wake_interval_s`` times a second
        instead of once per message (on a 2-core machine, with a 882-node field streamed at 1100
        messages a second, once per message made the optimizer steps about 1.6 times slower).
        It delays each message by at most this much; ZeroMQ queues them meanwhile (``rcvhwm``
        per connection, then the senders' queues). A stream is slow while its arrival rate over
        the last :data:`RATE_WINDOW_S` brings less than a full batch (:data:`DRAIN_MESSAGES`)
        per interval and its last wake-up took less than a full batch (or :data:`DRAIN_BYTES`).
        A faster stream is taken at once: the interval would only hold its senders back (at
        64 x 64, applied to every stream, 20 ms cut the default buffer's ingest from 0.73 to
        0.38 of a bare pyzmq loop, ``reports/scaleout/ingest.py``). 0: wake up for every message.

    Examples
    --------
    >>> key = wire.new_key()
    >>> with Receiver(fields, key, n_steps=100) as rx:              # doctest: +SKIP
    ...     rx.register(0, params, buffer.add)
    ...     launch_simulation(address=rx.address, key=key, sim_id=0)   # GENSIM_TOKEN=key.hex()
    ...     rx.wait_finished([0], timeout=60)
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec],
        token: bytes | str,
        address: str = "tcp://127.0.0.1:*",
        max_message_bytes: int | None = None,
        rcvhwm: int = 64,
        n_steps: int | None = None,
        times: Sequence[float] | np.ndarray | None = None,
        tag_threads: int = 2,
        wake_interval_s: float = 0.02,
    ) -> None:
        self.fields = tuple(fields)
        if not self.fields:
            raise ValueError("a Receiver needs at least one FieldSpec, got none")
        self._specs = {f.name: f for f in self.fields}
        if len(self._specs) != len(self.fields):
            names = [f.name for f in self.fields]
            raise ValueError(f"field names must be unique, got {names}")
        self._np_dtypes = {f.name: wire.numpy_dtype(f.dtype) for f in self.fields}
        # The header a conforming client sends (fields in declaration order): a header with
        # exactly these descriptor bytes needs no per-descriptor decoding or checks.
        self._descriptors = wire.encode_descriptors(self.fields)
        # Per field in declaration order: name, numpy dtype, shape, frame bytes, and the scratch
        # array of the finiteness check (see _all_finite; only the receive thread uses it).
        self._layout = tuple(
            (
                f.name,
                self._np_dtypes[f.name],
                f.shape,
                f.size * self._np_dtypes[f.name].itemsize,
                np.zeros(f.size, self._np_dtypes[f.name]) if f.size <= FINITE_DOT_MAX else np.empty(f.size, dtype=bool),
            )
            for f in self.fields
        )
        #: The study key (32 bytes). Never logged: messages name the public :attr:`study` id.
        self.token = wire.parse_key(token)
        #: The public study id that every header carries.
        self.study = wire.study_id(self.token)
        self._mac = wire.new_mac(self.token)
        self._zap_password = wire.zap_password(self.token)
        self._bind_address = address
        if n_steps is not None and not 1 <= int(n_steps) <= 2**32:
            raise ValueError(f"n_steps must be in 1..2**32, got {n_steps}")
        self.n_steps = None if n_steps is None else int(n_steps)
        self.time_range: tuple[float, float] | None = None
        if times is not None:
            grid = np.asarray(times, dtype=np.float64).reshape(-1)
            if grid.size == 0 or not np.isfinite(grid).all():
                raise ValueError(f"times must be a non-empty grid of finite values, got {grid.tolist()[:8]}")
            lo, hi = float(grid.min()), float(grid.max())
            tol = TIME_RTOL * max(abs(lo), abs(hi), hi - lo) or 1e-12
            self.time_range = (lo - tol, hi + tol)
        # A message has a header, one frame per field and a tag: more frames are refused unread
        # (a MESH message has at most two data frames: coordinates and cells).
        meshed = [f for f in self.fields if f.mesh is not None]
        self.max_frames = max(len(self.fields), 2 if meshed else 0) + 2
        self.expected_message_bytes = (
            wire.header_size(len(self.fields))
            + wire.TAG_BYTES
            + sum(f.size * self._np_dtypes[f.name].itemsize for f in self.fields)
        )
        #: Valid MESH messages received per field name (:mod:`gensim.transport.geometry`).
        self.meshes_verified: dict[str, int] = {f.name: 0 for f in meshed}
        if max_message_bytes is None:
            max_message_bytes = max([2 * self.expected_message_bytes, *map(geometry.mesh_message_bytes, meshed)])
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        self.max_message_bytes = int(max_message_bytes)
        if rcvhwm < 1:
            raise ValueError(f"rcvhwm must be >= 1, got {rcvhwm}")
        self.rcvhwm = int(rcvhwm)
        if int(tag_threads) != tag_threads or tag_threads < 1:
            raise ValueError(
                f"tag_threads must be an integer >= 1 (1: tags on the receive thread only), got {tag_threads!r}"
            )
        self.tag_threads = int(tag_threads)
        if not 0 <= wake_interval_s <= 1:
            raise ValueError(f"wake_interval_s must be in [0, 1] seconds, got {wake_interval_s!r}")
        self.wake_interval_s = float(wake_interval_s)
        #: Largest single frame ZeroMQ lets through (``ZMQ_MAXMSGSIZE``): the message limit.
        self.hard_frame_bytes = self.max_message_bytes

        self._lock = threading.Lock()
        # wait_finished callers: the ids each still waits for, and the event set when none is left.
        self._finish_waiters: list[tuple[set[int], threading.Event]] = []
        self._sims: dict[int, _Sim] = {}
        self._steps: dict[int, _Steps] = {}  # per simulation not finished, across registrations
        self._finished: set[int] = set()
        self._refused_connections = 0
        self._dropped_counts: dict[int, int] = {}  # accepted counts of sims no longer registered
        self._accepted = 0
        self._bytes_accepted = 0
        self._rejected: dict[str, int] = {}
        self._rejected_per_sim: dict[int, dict[str, int]] = {}
        self._rejection_details: dict[int, str] = {}

        self._context: zmq.Context | None = None
        self._thread: threading.Thread | None = None
        self._zap_thread: threading.Thread | None = None
        self._tag_pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._endpoint: str | None = None
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def address(self) -> str:
        """The bound endpoint (e.g. ``"tcp://127.0.0.1:53817"``) to hand to simulations."""
        if self._endpoint is None:
            raise RuntimeError("the receiver is not started; call start() first")
        return self._endpoint

    @property
    def running(self) -> bool:
        """Whether the receive thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Receiver:
        """Bind the socket and start the receive thread (a daemon). Returns ``self``.

        Raises
        ------
        RuntimeError
            If already started or stopped, or if binding fails (the cause is chained).
        """
        if self._thread is not None or self._stopped:
            raise RuntimeError("a Receiver can be started once; create a new one")
        self._context = zmq.Context()
        # The ZAP handler must be bound before the PULL socket: without one, a PLAIN server lets
        # every peer in (libzmq < 4.3) or none (4.3.5: nothing is delivered).
        zap = self._context.socket(zmq.REP)
        zap.setsockopt(zmq.LINGER, 0)
        zap.bind("inproc://zeromq.zap.01")
        # Handshake failures (no PLAIN, wrong password, garbage) reported by the PULL socket's
        # monitor, connected before the receive thread binds it so that none is missed.
        monitor = self._context.socket(zmq.PAIR)
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.connect(_MONITOR_ENDPOINT)
        self._zap_thread = threading.Thread(
            target=self._serve_zap, args=(zap, monitor), name="gensim-receiver-zap", daemon=True
        )
        self._zap_thread.start()
        if self.tag_threads > 1:
            self._tag_pool = ThreadPoolExecutor(self.tag_threads - 1, thread_name_prefix="gensim-receiver-tag")
        self._thread = threading.Thread(target=self._run, name="gensim-receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30.0):
            self.stop()
            raise RuntimeError(f"the receive thread did not bind {self._bind_address!r} in 30 s")
        if self._start_error is not None:
            err = self._start_error
            self.stop()
            raise RuntimeError(
                f"cannot bind the receiver to {self._bind_address!r}: {err}; "
                "use an ephemeral port ('tcp://127.0.0.1:*') or a private ipc:// path"
            ) from err
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the receive thread, join it, close the socket (linger 0) and the context.

        Idempotent. Messages still queued in ZeroMQ are dropped.
        """
        self._stopped = True
        self._stop.set()
        thread = self._thread
        if thread is threading.current_thread():
            return  # called from a sink: the thread exits after this message
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():  # pragma: no cover - a sink stuck forever
                logger.error("gensim receiver thread did not stop within %.1f s (a sink blocks?)", timeout)
                return
        if self._zap_thread is not None:
            self._zap_thread.join(timeout)
        if self._tag_pool is not None:
            self._tag_pool.shutdown(wait=True)  # a receive thread that never bound did not
        if self._context is not None:
            self._context.term()
            self._context = None

    def __enter__(self) -> Receiver:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            if self._thread is not None and not self._stopped:
                self.stop()
        except Exception:
            pass

    # ------------------------------------------------------------------ registry
    def register(self, sim_id: int, params: np.ndarray, sink: Sink) -> None:
        """Accept messages from simulation ``sim_id`` and hand its samples to ``sink``.

        Parameters
        ----------
        sim_id : int
            Simulation id, as given to the simulation (``GENSIM_SIM_ID``).
        params : ndarray, shape (n_params,)
            Its parameter vector; copied (float64, read-only) into every :class:`Sample`.
        sink : callable
            Called on the receive thread with each accepted :class:`Sample`; a
            :class:`BatchSink` (or any callable with an ``add_many(samples)`` method that keeps
            its contract) is given the accepted samples of consecutive messages at once. It
            should be quick
            (e.g. copy into a buffer); while it runs, nothing else is received. The field
            arrays are views of the received ZeroMQ frames (a sink that keeps them keeps the
            frames alive: copy into preallocated storage instead). An exception is counted as
            ``"sink_error"`` and logged with its traceback; the receiver carries on. numpy's
            "invalid" floating-point warnings are off on the receive thread (see ``_run``).

        Notes
        -----
        A registration lasts until the simulation's END: another attempt of a failed simulation
        streams under the same id without registering again, and the steps already accepted
        from it are rejected as ``"duplicate"`` instead of reaching the sink twice. They are
        kept through :meth:`unregister` too (a later registration of the id starts from them).

        Raises
        ------
        ValueError
            If ``sim_id`` has already finished, or is already registered.
        """
        sim_id = int(sim_id)
        p = np.array(params, dtype=np.float64, copy=True).reshape(-1)
        p.setflags(write=False)
        if not callable(sink):
            raise TypeError(f"sink must be callable, got {type(sink).__name__}")
        with self._lock:
            if sim_id in self._finished:
                raise ValueError(
                    f"simulation {sim_id} already finished (its END was received); a finished "
                    "simulation cannot be registered again"
                )
            if sim_id in self._sims:
                raise ValueError(
                    f"simulation id {sim_id} is already registered; another attempt of the same "
                    "simulation streams under its registration, a new simulation needs a new id"
                )
            self._sims[sim_id] = _Sim(p, sink, self._dropped_counts.pop(sim_id, 0))
            if sim_id not in self._steps:
                self._steps[sim_id] = _Steps(self.n_steps)

    def unregister(self, sim_id: int) -> None:
        """Stop accepting messages from ``sim_id`` (e.g. a failed simulation). No-op if unknown.

        Later messages from it are rejected as ``"unknown_sim"``; its counts stay in the stats.
        """
        with self._lock:
            sim = self._sims.pop(int(sim_id), None)
            if sim is not None:
                self._dropped_counts[int(sim_id)] = sim.accepted

    def is_finished(self, sim_id: int) -> bool:
        """Whether the END message of ``sim_id`` was received."""
        with self._lock:
            return int(sim_id) in self._finished

    def wait_finished(self, sim_ids: Iterable[int], timeout: float) -> bool:
        """Wait until every simulation of ``sim_ids`` has sent END.

        The caller is woken once, when the last of them ends (not at every END: a thread woken
        takes the GIL from the receive thread, which costs milliseconds on busy cores).

        Returns
        -------
        bool
            True if all finished within ``timeout`` seconds, False otherwise.
        """
        with self._lock:
            remaining = {int(s) for s in sim_ids} - self._finished
            if not remaining:
                return True
            waiter = (remaining, threading.Event())
            self._finish_waiters.append(waiter)
        try:
            return waiter[1].wait(timeout)
        finally:
            with self._lock:
                self._finish_waiters.remove(waiter)

    def stats(self) -> ReceiverStats:
        """A consistent snapshot of the counters (thread-safe)."""
        with self._lock:
            per_sim = dict(self._dropped_counts)
            per_sim.update({k: s.accepted for k, s in self._sims.items()})
            return ReceiverStats(
                accepted=self._accepted,
                rejected=dict(self._rejected),
                bytes_accepted=self._bytes_accepted,
                accepted_per_sim=per_sim,
                finished=frozenset(self._finished),
                refused_connections=self._refused_connections,
                rejected_per_sim={k: dict(v) for k, v in self._rejected_per_sim.items()},
                rejection_details=dict(self._rejection_details),
            )

    # ------------------------------------------------------------------ receive thread
    def _serve_zap(self, sock: zmq.Socket, monitor: zmq.Socket) -> None:
        """Answer ZeroMQ's authentication (ZAP) requests: let in the PLAIN peers that present
        the study's user name and password, refuse every other one; count every failed
        handshake (the PULL socket's monitor reports them) and log the first ones."""
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(POLL_MS))
                if monitor in ready:
                    self._count_handshake_failure(monitor.recv_multipart())
                if sock not in ready:
                    continue
                request = sock.recv_multipart()
                # RFC 27: version, request id, domain, address, routing id, mechanism, credentials.
                version, request_id = request[0], request[1] if len(request) > 1 else b""
                ok = (
                    len(request) == 8
                    and request[5] == b"PLAIN"
                    and hmac.compare_digest(request[6], wire.ZAP_USERNAME)
                    and hmac.compare_digest(request[7], self._zap_password)
                )
                if ok:
                    sock.send_multipart([version, request_id, b"200", b"OK", b"", b""])
                    continue
                sock.send_multipart([version, request_id, b"400", b"not a gensim simulation of this study", b"", b""])
        except zmq.ContextTerminated:  # pragma: no cover - stop() joins this thread first
            pass
        finally:
            sock.close(linger=0)
            monitor.close(linger=0)

    def _count_handshake_failure(self, event: list[bytes]) -> None:
        """Count (and log, rate-limited) one failed handshake reported by the monitor."""
        try:
            what = zmq.utils.monitor.parse_monitor_message(event)
        except Exception:  # pragma: no cover - a monitor message of another libzmq version
            what = {"event": 0, "value": 0, "endpoint": b"?"}
        with self._lock:
            self._refused_connections += 1
            n = self._refused_connections
        if n <= LOG_FIRST or n % LOG_EVERY == 0:
            logger.warning(
                "gensim receiver refused a connection on %s (%s, error %s): not a simulation of "
                "this study; a simulation must connect with gensim.client.Client, or set "
                "ZMQ_PLAIN_USERNAME and ZMQ_PLAIN_PASSWORD as docs/wire-format.md says "
                "(refusal #%d; further ones are logged every %dth)",
                what["endpoint"].decode("utf-8", "replace"),
                _HANDSHAKE_EVENTS.get(what["event"], what["event"]),
                what["value"],
                n,
                LOG_EVERY,
            )

    def _run(self) -> None:
        assert self._context is not None
        try:
            sock = self._context.socket(zmq.PULL)
            sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
            # ZeroMQ drops a frame over the limit before allocating it (and disconnects its sender).
            sock.setsockopt(zmq.MAXMSGSIZE, self.hard_frame_bytes)
            sock.setsockopt(zmq.LINGER, 0)
            # PLAIN with the ZAP handler of _serve_zap: peers without the study password are
            # refused at the handshake, before ZeroMQ buffers any of their frames.
            sock.setsockopt(zmq.PLAIN_SERVER, 1)
            sock.setsockopt(zmq.ZAP_DOMAIN, b"gensim")
            sock.monitor(_MONITOR_ENDPOINT, sum(_HANDSHAKE_EVENTS))
            try:
                sock.bind(self._bind_address)
                self._endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            except BaseException:
                sock.close(linger=0)
                raise
        except BaseException as err:
            self._start_error = err
            self._ready.set()
            return
        self._ready.set()
        # The finiteness check sets numpy's "invalid" flag on every field holding a NaN or an
        # Inf; such messages are rejected and logged, so numpy's warning would only be noise.
        # numpy's error state is per thread: the other threads keep theirs.
        try:
            with np.errstate(invalid="ignore"):
                self._receive(sock)
        finally:
            sock.close(linger=0)
            if self._tag_pool is not None:  # also when stop() came from a sink and returned early
                self._tag_pool.shutdown(wait=True)  # idle: this thread was its only submitter

    def _receive(self, sock: zmq.Socket) -> None:
        """Receive and handle batches of messages until :meth:`stop`."""
        # A receive timeout instead of poll-then-receive: one call per message, not two.
        sock.setsockopt(zmq.RCVTIMEO, POLL_MS)
        next_wake = 0.0
        # Arrival rate (messages/s) over the last window of at least RATE_WINDOW_S; taken as fast
        # until the first window is measured (no wait is imposed on a stream not yet measured).
        rate, window_start, window_messages = math.inf, time.monotonic(), 0
        while not self._stop.is_set():
            # Sleep out the rest of the wake interval (the stop event ends it early), so that
            # messages arriving one at a time queue in ZeroMQ and come in one batch.
            delay = next_wake - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            try:
                first = self._recv_message(sock, 0)
                batch = [first]
                # Then what is already queued, without waiting: the batch's validation and
                # sink calls share their fixed costs (locks, stats, the buffer's insert).
                nbytes = first[1]
                while len(batch) < DRAIN_MESSAGES and nbytes < DRAIN_BYTES:
                    try:
                        message = self._recv_message(sock, zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    batch.append(message)
                    nbytes += message[1]
            except zmq.Again:
                continue
            except zmq.ContextTerminated:
                break
            except zmq.ZMQError as err:  # pragma: no cover - transient socket error
                if self._stop.is_set():
                    break
                logger.error("gensim receiver: socket error %s", err)
                continue
            now = time.monotonic()
            window_messages += len(batch)
            if now - window_start >= RATE_WINDOW_S:
                rate, window_start, window_messages = window_messages / (now - window_start), now, 0
            next_wake = now + self.wait_after(rate, len(batch), nbytes)
            self._handle(batch)

    def wait_after(self, rate: float, n_messages: int, n_bytes: int) -> float:
        """Seconds from a wake-up to the next one: ``wake_interval_s`` for a slow stream, else 0.

        Parameters
        ----------
        rate : float
            Recent arrival rate, messages/s (``inf`` before the first measurement).
        n_messages, n_bytes : int
            Size of the batch this wake-up took.

        Returns
        -------
        float
            ``wake_interval_s`` if the interval brings less than a full batch at ``rate`` and this
            batch was not full; 0 otherwise: a faster stream's senders would only be held back
            (``rcvhwm`` and their queues fill in a few ms at tens of thousands of messages a second).
        """
        full = n_messages >= DRAIN_MESSAGES or n_bytes >= DRAIN_BYTES
        slow = rate * self.wake_interval_s < DRAIN_MESSAGES
        return self.wake_interval_s if slow and not full else 0.0

    def _recv_message(self, sock: zmq.Socket, flags: int) -> tuple[list[zmq.Frame] | _Oversize, int]:
        """The frames of one message and their total size; ``zmq.Again`` if none is queued
        (``flags=zmq.NOBLOCK``).

        Frame by frame: once the frames so far exceed :attr:`max_message_bytes` or
        :attr:`max_frames`, they are released and the rest of the message is received and
        discarded one frame at a time (an :class:`_Oversize` stands for the message), so the
        receiver never holds more than one over-size message's worth of frames, and that only
        up to the frame that crossed the limit.
        """
        frame = sock.recv(flags, copy=False)
        frames = [frame]
        nbytes = len(frame)
        limit, max_frames = self.max_message_bytes, self.max_frames
        # The frame's own "more" flag, not recv_multipart's getsockopt(RCVMORE) per frame; the
        # parts of a message arrive together, so these never wait.
        while frame.more:
            frame = sock.recv(copy=False)
            nbytes += len(frame)
            frames.append(frame)
            if nbytes > limit or len(frames) > max_frames:
                n_frames, too_large = len(frames), nbytes > limit
                head = frames[0].bytes[:HEAD_KEPT_BYTES]
                del frames  # release what was kept before draining the rest
                while frame.more:
                    frame = sock.recv(copy=False)
                    nbytes += len(frame)
                    n_frames += 1
                return _Oversize(nbytes, n_frames, too_large, head), nbytes
        return frames, nbytes

    def _handle(self, batch: list[tuple[list[zmq.Frame] | _Oversize, int]]) -> None:
        """Validate the messages of a batch in order and dispatch the accepted samples.

        Samples are handed to sinks in arrival order; an END first flushes the samples before
        it, so that a waiter woken by the END finds them in their sinks, and any message after
        it is validated against the registry without that simulation.
        """
        pending: list[tuple[_Sim, Sample, int]] = []
        try:
            tags = self._batch_tags(batch)
        except Exception as err:  # pragma: no cover - hashing frames does not fail; if it did,
            # _validate hashes each message itself and rejects what is wrong.
            logger.debug("gensim receiver: parallel tags failed (%s: %s)", type(err).__name__, err)
            tags = [None] * len(batch)
        for (frames, nbytes), tag in zip(batch, tags):
            if self._stop.is_set():  # stop() from a sink: the rest is dropped, as if still queued
                break
            try:
                if isinstance(frames, _Oversize):
                    raise self._oversize(frames)
                kind, sim_id, sim, sample = self._validate(frames, nbytes, tag)
            except _Rejected as rej:
                self._reject(rej.reason, rej.message, rej.sim_id, claimed=rej.claimed)
                continue
            except Exception as err:  # never let one message kill the thread
                self._reject("internal", f"{type(err).__name__}: {err}", None, exc_info=True)
                continue
            if kind == wire.KIND_END:
                self._dispatch(pending)
                pending = []
                self._finish(sim_id)
            elif kind == wire.KIND_DATA:  # a MESH message, checked, has nothing to dispatch
                pending.append((sim, sample, nbytes))
        self._dispatch(pending)

    def _batch_tags(self, batch: list[tuple[list[zmq.Frame] | _Oversize, int]]) -> list[bytes | None]:
        """The tag each message of ``batch`` should carry, hashed on :attr:`tag_threads` threads.

        Returns Nones (each message then hashed by :meth:`_validate` itself) for a small batch,
        or with a single tag thread. Messages are split into contiguous shares; the receive
        thread hashes the first one while the helpers hash the others. Every message with a
        tag frame is hashed, also one that a check before the tag will reject.
        """
        n = len(batch)
        pool = self._tag_pool
        if pool is None or n < 2 or sum(nbytes for _, nbytes in batch) < PARALLEL_TAG_BYTES:
            return [None] * n
        k = min(self.tag_threads, n)
        cuts = [n * i // k for i in range(k + 1)]
        shares = [pool.submit(self._tags_of, batch[cuts[i] : cuts[i + 1]]) for i in range(1, k)]
        tags = self._tags_of(batch[: cuts[1]])
        for share in shares:
            tags += share.result()
        return tags

    def _tags_of(self, messages: list[tuple[list[zmq.Frame] | _Oversize, int]]) -> list[bytes | None]:
        """The tag each message must end with (:meth:`MessageMac.expected`), None when it has no tag frame."""
        expected = self._mac.expected
        return [expected(frames) if type(frames) is list else None for frames, _ in messages]

    def _oversize(self, message: _Oversize) -> _Rejected:
        # What the refused message's header says (unauthenticated: its frames are gone), so
        # that the log shows the real cause, typically a field of the wrong dtype or shape.
        claimed, said = None, ""
        try:
            header = wire.decode_header(message.head)
        except WireError:
            pass
        else:
            claimed = header.sim_id
            said = (
                f"; its header claims simulation {claimed} and fields {_describe(header.fields)}, "
                f"expected {_describe(self.fields)}"
            )
        if message.too_large:
            return _Rejected(
                "too_large",
                f"message of {message.nbytes} bytes in {message.frames} frame(s) over the limit of "
                f"{self.max_message_bytes} bytes (a valid message is {self.expected_message_bytes} "
                f"bytes){said}; refused while received, its frames discarded",
                claimed=claimed,
            )
        return _Rejected(
            "malformed",
            f"message of {message.frames} frames ({message.nbytes} bytes); expected at most "
            f"{self.max_frames} (a header, {len(self.fields)} data frame(s) and a tag){said}; refused "
            "while received, its frames discarded",
            claimed=claimed,
        )

    def _finish(self, sim_id: int) -> None:
        """Record the END of ``sim_id`` and wake the waiters it completes."""
        with self._lock:
            sim = self._sims.pop(sim_id, None)
            if sim is None:  # unregistered meanwhile
                return
            self._dropped_counts[sim_id] = sim.accepted
            self._finished.add(sim_id)
            # Everything after END is refused anyway: the step record is no longer needed.
            self._steps.pop(sim_id, None)
            for remaining, done in self._finish_waiters:
                remaining.discard(sim_id)
                if not remaining:
                    done.set()

    def _dispatch(self, pending: list[tuple[_Sim, Sample, int]]) -> None:
        """Hand validated samples to their sinks in order, then count the taken ones once.

        Consecutive samples with the same sink (equal: bound methods of one object compare
        equal) go to its ``add_many`` in one call when it has one.
        """
        if not pending:
            return
        taken: list[tuple[_Sim, int]] = []
        start, n = 0, len(pending)
        while start < n:
            sink = pending[start][0].sink
            end = start + 1
            while end < n and pending[end][0].sink == sink:
                end += 1
            many = getattr(sink, "add_many", None) if end - start > 1 else None
            group = pending[start:end]
            if many is not None:
                try:
                    many([sample for _, sample, _ in group])
                    taken.extend((sim, nbytes) for sim, _, nbytes in group)
                    group = []
                except Exception as err:
                    # add_many takes all or none: find the faulty samples one by one.
                    logger.debug(
                        "gensim receiver: add_many raised %s: %s; retrying one by one", type(err).__name__, err
                    )
            for sim, sample, nbytes in group:
                try:
                    sink(sample)
                except Exception as err:
                    # Not taken: the step may come again (e.g. from a retry of the simulation).
                    with self._lock:
                        steps = self._steps.get(sample.sim_id)
                        if steps is not None:
                            steps.discard(sample.step)
                    self._reject(
                        "sink_error",
                        f"the sink raised {type(err).__name__}: {err} (step {sample.step})",
                        sample.sim_id,
                        exc_info=True,
                    )
                    continue
                taken.append((sim, nbytes))
            start = end
        with self._lock:
            self._accepted += len(taken)
            for sim, nbytes in taken:
                self._bytes_accepted += nbytes
                sim.accepted += 1

    def _validate(
        self, frames: list[zmq.Frame], nbytes: int, expected_tag: bytes | None = None
    ) -> tuple[int, int, _Sim, Sample | None]:
        """Check a message completely; return (kind, sim_id, its registration, sample or None for END and MESH).

        ``expected_tag``: the tag of ``frames`` already computed (:meth:`_batch_tags`), or None
        to compute it here.

        The registration is looked up once, here: the sink it names is called right after.

        Checks, in order (the size limit and the frame count limit were checked while the
        message was received): header (layout, magic, version, kind, descriptors); study id;
        frame count; the authentication tag; then, for an authentic message: a MESH message's
        registration and geometry (:func:`~gensim.transport.geometry.check_mesh_message`); END of a finished
        simulation; simulation finished or not registered; step range; finite time and time
        range; duplicate step; field names, the dtype and shape of every field; then for each
        field its frame size and finite values. A header whose descriptors are byte for byte
        those of the declared fields takes a fast path
        (:func:`~gensim.transport.wire.match_data_header`) that skips decoding and checking
        each descriptor, which the byte equality already guarantees.
        """
        raw = frames[0].bytes
        matched = wire.match_data_header(raw, self._descriptors)
        if matched is not None:
            study, sim_id, step, time = matched
            kind, descriptors = wire.KIND_DATA, None
        else:
            try:
                header = wire.decode_header(raw)
            except WireError as err:
                raise _Rejected(err.reason, err.message) from None
            study, sim_id, step, time = header.study, header.sim_id, header.step, header.time
            kind, descriptors = header.kind, header.fields
        # Until the tag is verified, sim_id is only a claim: rejections name no simulation.
        if study != self.study:
            raise _Rejected(
                "study",
                f"study id {study.hex()[:8]}... is not this study's {self.study.hex()[:8]}... "
                f"(a simulation of another run? it claims to be simulation {sim_id})",
                claimed=sim_id,
            )
        n_data = len(frames) - 2
        n_declared = len(self.fields) if descriptors is None else len(descriptors)
        if n_data != n_declared:
            raise _Rejected(
                "malformed",
                f"header declares {n_declared} field(s): expected {n_declared + 2} frames (header, "
                f"fields, tag), got {len(frames)}",
                claimed=sim_id,
            )
        if expected_tag is None:
            expected_tag = self._mac.expected(frames)  # None: no last frame of a tag's size
        # The frame itself: compare_digest reads its buffer (no copy of the tag into bytes).
        if expected_tag is None or not hmac.compare_digest(frames[-1], expected_tag):
            raise _Rejected(
                "auth",
                f"authentication tag does not match (claims to be simulation {sim_id}, step "
                f"{step}): not sent with this study's key",
                claimed=sim_id,
            )
        with self._lock:
            sim = self._sims.get(sim_id)
            finished = sim_id in self._finished
            steps = self._steps.get(sim_id)
        if kind == wire.KIND_MESH:
            if sim is None:
                raise _Rejected("unknown_sim", "MESH of a simulation not registered with the receiver", sim_id)
            try:
                name = geometry.check_mesh_message(descriptors, frames, self._specs)
            except WireError as err:
                raise _Rejected(err.reason, err.message, sim_id) from None
            with self._lock:
                self.meshes_verified[name] += 1
            return wire.KIND_MESH, sim_id, sim, None
        if kind == wire.KIND_END:
            if finished:
                raise _Rejected("duplicate_end", "a second END of this simulation", sim_id)
            if sim is None:
                raise _Rejected("unknown_sim", "END of a simulation not registered with the receiver", sim_id)
            return wire.KIND_END, sim_id, sim, None
        if finished:
            raise _Rejected("finished_sim", "message after this simulation's END", sim_id)
        if sim is None:
            raise _Rejected("unknown_sim", "simulation id not registered with the receiver", sim_id)
        if self.n_steps is not None and step >= self.n_steps:
            raise _Rejected("step_range", f"step {step} outside [0, {self.n_steps}) (n_steps {self.n_steps})", sim_id)
        time_range = self.time_range
        # One comparison in the common case: NaN and +-Inf fail it too, then get their own reason.
        if time_range is None or not time_range[0] <= time <= time_range[1]:
            if not math.isfinite(time):
                raise _Rejected("non_finite", f"time is {time} at step {step}", sim_id)
            if time_range is not None:
                raise _Rejected(
                    "time_range",
                    f"time {time!r} at step {step} outside the simulation's time grid "
                    f"[{time_range[0]!r}, {time_range[1]!r}]",
                    sim_id,
                )
        if step in steps:
            raise _Rejected("duplicate", f"step {step} was already accepted from this simulation", sim_id)

        if descriptors is None:
            layout, frames_in_order = self._layout, frames[1:-1]
        else:
            layout, frames_in_order = self._checked_layout(descriptors, frames, sim_id)
        fields: dict[str, np.ndarray] = {}
        for (name, dtype, shape, size, scratch), frame in zip(layout, frames_in_order):
            # The frame itself, not frame.buffer: numpy takes its buffer protocol directly,
            # without the intermediate memoryview (about 2 us a field).
            frame_bytes = len(frame)
            if frame_bytes != size:
                raise _Rejected(
                    "frame_size",
                    f"field {name!r}: expected {size} bytes for shape {shape} {dtype.name}, "
                    f"got a frame of {frame_bytes} bytes",
                    sim_id,
                )
            flat = np.frombuffer(frame, dtype=dtype)
            if not flat.flags.aligned:
                # Small frames can sit unaligned inside ZeroMQ's receive buffer: copy those.
                flat = flat.copy()
            if not _all_finite(flat, scratch):
                n_bad = int(np.count_nonzero(~np.isfinite(flat)))
                raise _Rejected(
                    "non_finite",
                    f"field {name!r} at step {step}: {n_bad} NaN/Inf value(s), expected all finite",
                    sim_id,
                )
            fields[name] = flat.reshape(shape)
        # Fields in declaration order (the layout's), whatever their order on the wire.
        if descriptors is not None:
            fields = {name: fields[name] for name in self._specs}
        # Recorded only now that the message passed every check (the sink may still refuse it:
        # _dispatch then forgets the step), so that a later copy is a duplicate even within
        # this batch. Without the lock: only this thread changes a step record (register()
        # only adds new ones), so the check above still holds and no reader can see it change.
        steps.add(step)
        return wire.KIND_DATA, sim_id, sim, Sample(sim_id, step, time, sim.params, fields)

    def _checked_layout(
        self, descriptors: tuple[wire.FieldDescriptor, ...], frames: list[zmq.Frame], sim_id: int
    ) -> tuple[list[tuple], list[zmq.Frame]]:
        """Check the names, dtypes and shapes of a header's descriptors (the slow path).

        Returns
        -------
        layout : list of tuple
            The entries of the receiver's field layout, in wire order.
        frames : list of zmq.Frame
            The data frames, in wire order (without the tag).
        """
        names = [d.name for d in descriptors]
        if len(set(names)) != len(names) or set(names) != self._specs.keys():
            raise _Rejected(
                "fields",
                f"expected fields {sorted(self._specs)}, got {names}",
                sim_id,
            )
        by_name = {entry[0]: entry for entry in self._layout}
        for desc in descriptors:
            spec = self._specs[desc.name]
            if desc.dtype != spec.dtype:
                raise _Rejected(
                    "dtype",
                    f"field {desc.name!r}: expected dtype {spec.dtype}, got {desc.dtype} (header: "
                    f"{_describe(descriptors)}; expected {_describe(self.fields)})",
                    sim_id,
                )
            if desc.shape != spec.shape:
                raise _Rejected(
                    "shape",
                    f"field {desc.name!r}: expected shape {spec.shape}, got {desc.shape} (header: "
                    f"{_describe(descriptors)}; expected {_describe(self.fields)})",
                    sim_id,
                )
        return [by_name[name] for name in names], frames[1:-1]

    def _reject(
        self,
        reason: str,
        message: str,
        sim_id: int | None,
        exc_info: bool = False,
        claimed: int | None = None,
    ) -> None:
        """Count, attribute and log one rejection.

        ``sim_id`` is authenticated (the tag was checked); ``claimed`` is what an unchecked
        header says. Either is charged in :attr:`ReceiverStats.rejected_per_sim` only when it
        names a simulation this receiver knows, so that a peer cannot grow that table at will.
        """
        who_id = sim_id if sim_id is not None else claimed
        with self._lock:
            n = self._rejected.get(reason, 0) + 1
            self._rejected[reason] = n
            if who_id is not None and (
                who_id in self._sims
                or who_id in self._steps
                or who_id in self._finished
                or who_id in self._dropped_counts
            ):
                per = self._rejected_per_sim.setdefault(who_id, {})
                per[reason] = per.get(reason, 0) + 1
                self._rejection_details.setdefault(who_id, f"[{reason}] {message}")
        if n <= LOG_FIRST or n % LOG_EVERY == 0:
            if sim_id is not None:
                who = f"simulation {sim_id}"
            elif claimed is not None:
                who = f"a sender claiming to be simulation {claimed} (unauthenticated)"
            else:
                who = "unknown sender"
            more = (
                f" (rejection #{n} for this reason; further ones are logged every {LOG_EVERY}th)"
                if n >= LOG_FIRST
                else ""
            )
            logger.warning(
                "gensim receiver rejected a message [%s] from %s: %s%s",
                reason,
                who,
                message,
                more,
                exc_info=exc_info,
            )
