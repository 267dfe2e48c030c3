"""The trainer side of the transport: a ZeroMQ PULL socket on a background thread.

The receiver binds, receives one multipart message per time step (see :mod:`gensim.transport.wire`),
validates it completely and hands each accepted time step as a :class:`~gensim.simulations.base.Sample`
to the sink registered for its simulation. Nothing that fails validation reaches a sink; every
rejection is counted by reason and logged (rate-limited) on the ``gensim.transport`` logger.

There is no Python-side queue: the receive thread calls the sink directly, so when the sink
(a replay buffer insert) is slow, ZeroMQ's high-water marks fill up and the simulations block
in ``send``, which is the intended back-pressure.

The receive thread works in batches to spread its per-message Python over many messages: each
wake-up takes what ZeroMQ has already queued (up to :data:`DRAIN_MESSAGES` messages or
:data:`DRAIN_BYTES` bytes), validates every message, and hands the accepted samples of
consecutive messages with the same sink to that sink's ``add_many`` when it has one
(:class:`BatchSink`), in arrival order.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import zmq

from gensim.simulations.base import FieldSpec, Sample
from gensim.transport import wire
from gensim.transport.wire import WireError

logger = logging.getLogger("gensim.transport")

#: Poll period of the receive thread, in milliseconds (bounds how long ``stop`` waits).
POLL_MS = 50
#: The first this many rejections of each reason are logged, then every ``LOG_EVERY``-th.
LOG_FIRST = 5
LOG_EVERY = 1000
#: Hard cap on one frame, enforced by ZeroMQ itself (``ZMQ_MAXMSGSIZE``): the larger of
#: ``HARD_FRAME_FACTOR`` times the message size limit and ``HARD_FRAME_MIN_BYTES``. ZeroMQ drops
#: (and never allocates) a larger frame and disconnects its sender, so such messages never reach
#: the receiver and are not counted; anything between the limit and the cap is counted
#: as ``"too_large"``. The cap only protects the trainer's memory against absurd frames.
HARD_FRAME_FACTOR = 16
HARD_FRAME_MIN_BYTES = 64 * 2**20

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

Sink = Callable[[Sample], None]


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
    """

    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    bytes_accepted: int = 0
    accepted_per_sim: dict[int, int] = field(default_factory=dict)
    finished: frozenset[int] = frozenset()

    @property
    def n_rejected(self) -> int:
        """Total number of rejected messages."""
        return sum(self.rejected.values())


class _Rejected(Exception):
    """Internal: a validation failure with the sim id when known."""

    def __init__(self, reason: str, message: str, sim_id: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.sim_id = sim_id


@dataclass
class _Sim:
    params: np.ndarray
    sink: Sink
    accepted: int = 0


class Receiver:
    """Receive, validate and dispatch the time steps streamed by simulations.

    Parameters
    ----------
    fields : sequence of FieldSpec
        The fields every simulation of the study sends (names, shapes, dtypes). Messages are
        matched by field name; the descriptor order in a message is free.
    token : bytes or str
        Study token (16 bytes, or 32 hex characters). Messages carrying another token are
        rejected with reason ``"study"``.
    address : str
        ZeroMQ endpoint to bind. Default ``"tcp://127.0.0.1:*"``: loopback, ephemeral port.
        ``"ipc:///private/dir/name"`` works too. Read the actual endpoint from :attr:`address`
        after :meth:`start`.
    max_message_bytes : int, optional
        Largest accepted message (header plus data frames) in bytes. Default: twice the size of
        a valid message. Larger messages are rejected with reason ``"too_large"``; a single frame
        over :attr:`hard_frame_bytes` (16 times this limit, at least 64 MiB) is dropped by
        ZeroMQ before allocation and is not counted.
    rcvhwm : int
        ZeroMQ receive high-water mark, in messages (bounds memory held by the socket).

    Examples
    --------
    >>> with Receiver(fields, token) as rx:                      # doctest: +SKIP
    ...     rx.register(0, params, buffer.add)
    ...     launch_simulation(address=rx.address, token=token.hex(), sim_id=0)
    ...     rx.wait_finished([0], timeout=60)
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec],
        token: bytes | str,
        address: str = "tcp://127.0.0.1:*",
        max_message_bytes: int | None = None,
        rcvhwm: int = 64,
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
            (f.name, self._np_dtypes[f.name], f.shape, f.size * self._np_dtypes[f.name].itemsize,
             np.zeros(f.size, self._np_dtypes[f.name]) if f.size <= FINITE_DOT_MAX
             else np.empty(f.size, dtype=bool))
            for f in self.fields
        )
        self.token = wire.parse_token(token)
        self._bind_address = address
        self.expected_message_bytes = wire.header_size(len(self.fields)) + sum(
            f.size * self._np_dtypes[f.name].itemsize for f in self.fields
        )
        if max_message_bytes is None:
            max_message_bytes = 2 * self.expected_message_bytes
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        self.max_message_bytes = int(max_message_bytes)
        if rcvhwm < 1:
            raise ValueError(f"rcvhwm must be >= 1, got {rcvhwm}")
        self.rcvhwm = int(rcvhwm)
        #: Largest single frame ZeroMQ lets through (see :data:`HARD_FRAME_FACTOR`).
        self.hard_frame_bytes = max(HARD_FRAME_FACTOR * self.max_message_bytes, HARD_FRAME_MIN_BYTES)

        self._lock = threading.Lock()
        # wait_finished callers: the ids each still waits for, and the event set when none is left.
        self._finish_waiters: list[tuple[set[int], threading.Event]] = []
        self._sims: dict[int, _Sim] = {}
        self._finished: set[int] = set()
        self._dropped_counts: dict[int, int] = {}  # accepted counts of sims no longer registered
        self._accepted = 0
        self._bytes_accepted = 0
        self._rejected: dict[str, int] = {}

        self._context: zmq.Context | None = None
        self._thread: threading.Thread | None = None
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
        self._thread = threading.Thread(
            target=self._run, name="gensim-receiver", daemon=True
        )
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

        Raises
        ------
        ValueError
            If ``sim_id`` is already registered, or has already finished.
        """
        sim_id = int(sim_id)
        p = np.array(params, dtype=np.float64, copy=True).reshape(-1)
        p.setflags(write=False)
        if not callable(sink):
            raise TypeError(f"sink must be callable, got {type(sink).__name__}")
        with self._lock:
            if sim_id in self._sims or sim_id in self._finished:
                raise ValueError(
                    f"simulation id {sim_id} is already registered; give each simulation "
                    "(and each restart) a new id"
                )
            self._sims[sim_id] = _Sim(p, sink)

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
            )

    # ------------------------------------------------------------------ receive thread
    def _run(self) -> None:
        assert self._context is not None
        try:
            sock = self._context.socket(zmq.PULL)
            sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
            sock.setsockopt(zmq.MAXMSGSIZE, self.hard_frame_bytes)
            sock.setsockopt(zmq.LINGER, 0)
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

    def _receive(self, sock: zmq.Socket) -> None:
        """Receive and handle batches of messages until :meth:`stop`."""
        # A receive timeout instead of poll-then-receive: one call per message, not two.
        sock.setsockopt(zmq.RCVTIMEO, POLL_MS)
        while not self._stop.is_set():
            try:
                batch = [self._recv_message(sock, 0)]
                # Then what is already queued, without waiting: the batch's validation and
                # sink calls share their fixed costs (locks, stats, the buffer's insert).
                nbytes = sum(map(len, batch[0]))
                while len(batch) < DRAIN_MESSAGES and nbytes < DRAIN_BYTES:
                    try:
                        frames = self._recv_message(sock, zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    batch.append(frames)
                    nbytes += sum(map(len, frames))
            except zmq.Again:
                continue
            except zmq.ContextTerminated:
                break
            except zmq.ZMQError as err:  # pragma: no cover - transient socket error
                if self._stop.is_set():
                    break
                logger.error("gensim receiver: socket error %s", err)
                continue
            self._handle(batch)

    @staticmethod
    def _recv_message(sock: zmq.Socket, flags: int) -> list[zmq.Frame]:
        """The frames of one message; ``zmq.Again`` if none is queued (``flags=zmq.NOBLOCK``)."""
        frames = [sock.recv(flags, copy=False)]
        # The frame's own "more" flag, not recv_multipart's getsockopt(RCVMORE) per frame; the
        # parts of a message arrive together, so these never wait.
        while frames[-1].more:
            frames.append(sock.recv(copy=False))
        return frames

    def _handle(self, batch: list[list[zmq.Frame]]) -> None:
        """Validate the messages of a batch in order and dispatch the accepted samples.

        Samples are handed to sinks in arrival order; an END first flushes the samples before
        it, so that a waiter woken by the END finds them in their sinks, and any message after
        it is validated against the registry without that simulation.
        """
        pending: list[tuple[_Sim, Sample, int]] = []
        for frames in batch:
            if self._stop.is_set():  # stop() from a sink: the rest is dropped, as if still queued
                break
            nbytes = 0
            try:
                nbytes = sum(map(len, frames))
                kind, sim_id, sim, sample = self._validate(frames, nbytes)
            except _Rejected as rej:
                self._reject(rej.reason, rej.message, rej.sim_id)
                continue
            except Exception as err:  # never let one message kill the thread
                self._reject("internal", f"{type(err).__name__}: {err}", None, exc_info=True)
                continue
            if kind == wire.KIND_END:
                self._dispatch(pending)
                pending = []
                self._finish(sim_id)
            else:
                pending.append((sim, sample, nbytes))
        self._dispatch(pending)

    def _finish(self, sim_id: int) -> None:
        """Record the END of ``sim_id`` and wake the waiters it completes."""
        with self._lock:
            sim = self._sims.pop(sim_id, None)
            if sim is None:  # unregistered meanwhile
                return
            self._dropped_counts[sim_id] = sim.accepted
            self._finished.add(sim_id)
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
                    logger.debug("gensim receiver: add_many raised %s: %s; retrying one by one",
                                 type(err).__name__, err)
            for sim, sample, nbytes in group:
                try:
                    sink(sample)
                except Exception as err:
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
        self, frames: list[zmq.Frame], nbytes: int
    ) -> tuple[int, int, _Sim, Sample | None]:
        """Check a message completely; return (kind, sim_id, its registration, sample or None for END).

        The registration is looked up once, here: the sink it names is called right after.

        Checks, in order: size limit; header (layout, magic, version, kind, descriptors); study
        token; simulation registered and not finished; frame count; finite time; field names;
        the dtype and shape of every field; then for each field its frame size and finite
        values. A header whose
        descriptors are byte for byte those of the declared fields takes a fast path
        (:func:`~gensim.transport.wire.match_data_header`) that skips decoding and checking
        each descriptor, which the byte equality already guarantees.
        """
        if nbytes > self.max_message_bytes:
            raise _Rejected(
                "too_large",
                f"message of {nbytes} bytes over the limit of {self.max_message_bytes} bytes "
                f"(a valid message is {self.expected_message_bytes} bytes)",
            )
        raw = frames[0].bytes
        matched = wire.match_data_header(raw, self._descriptors)
        if matched is not None:
            token, sim_id, step, time = matched
            kind, descriptors = wire.KIND_DATA, None
        else:
            try:
                header = wire.decode_header(raw)
            except WireError as err:
                raise _Rejected(err.reason, err.message) from None
            token, sim_id, step, time = header.token, header.sim_id, header.step, header.time
            kind, descriptors = header.kind, header.fields
        if not hmac.compare_digest(token, self.token):
            raise _Rejected(
                "study",
                f"study token {token.hex()[:8]}... does not match this study's "
                f"{self.token.hex()[:8]}... (a simulation of another run?)",
                sim_id,
            )
        with self._lock:
            sim = self._sims.get(sim_id)
            finished = sim_id in self._finished
        if finished:
            raise _Rejected("finished_sim", "message after this simulation's END", sim_id)
        if sim is None:
            raise _Rejected("unknown_sim", "simulation id not registered with the receiver", sim_id)
        n_data = len(frames) - 1
        n_declared = len(self.fields) if descriptors is None else len(descriptors)
        if n_data != n_declared:
            raise _Rejected(
                "malformed",
                f"header declares {n_declared} field(s) but {n_data} data frame(s) came",
                sim_id,
            )
        if kind == wire.KIND_END:
            return wire.KIND_END, sim_id, sim, None
        if not math.isfinite(time):
            raise _Rejected("non_finite", f"time is {time} at step {step}", sim_id)

        if descriptors is None:
            layout, frames_in_order = self._layout, frames[1:]
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
            The data frames, in wire order.
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
                    f"field {desc.name!r}: expected dtype {spec.dtype}, got {desc.dtype}",
                    sim_id,
                )
            if desc.shape != spec.shape:
                raise _Rejected(
                    "shape",
                    f"field {desc.name!r}: expected shape {spec.shape}, got {desc.shape}",
                    sim_id,
                )
        return [by_name[name] for name in names], frames[1:]

    def _reject(
        self, reason: str, message: str, sim_id: int | None, exc_info: bool = False
    ) -> None:
        with self._lock:
            n = self._rejected.get(reason, 0) + 1
            self._rejected[reason] = n
        if n <= LOG_FIRST or n % LOG_EVERY == 0:
            who = f"simulation {sim_id}" if sim_id is not None else "unknown sender"
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
