"""Which trainer rank each simulation streams to, and its registration with that rank's receiver.

With data-parallel training every rank runs its own :class:`~gensim.transport.Receiver` and
replay buffer (Melissa's layout), and each simulation streams all its time steps to one rank.
The launcher runs on rank 0 only; before it starts a simulation it calls
:meth:`RankRouter.assign`, which

1. picks the rank by a :class:`RoutingRule` (held-out simulations always go to rank 0, which
   keeps the held-out set; training simulations round-robin over the ranks by default),
2. registers the simulation with that rank's receiver: directly on rank 0, through the rank's
   :class:`Registrar` (a ZeroMQ REP socket beside its receiver) on the others, and waits for
   the acknowledgement, so that no time step can arrive before its simulation is known,
3. returns the address the simulation's worker streams to.

The registration requests are signed with the study key (an HMAC-SHA256 tag; the key itself
never travels, since these requests cross the network between nodes) and refused without a
valid tag. This module never imports torch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import zmq

from gensim.transport.receiver import Receiver, Sink

log = logging.getLogger("gensim.transport")

#: Purposes a simulation can have, and so the sinks a rank must provide for them.
PURPOSES = ("train", "validation")
#: What a registration tag authenticates besides the request body (keeps it apart from the
#: wire format's tags, which start with a frame length).
REGISTRATION_LABEL = b"gensim registration\0"


def sign_request(key: bytes, request: Mapping[str, Any]) -> str:
    """A registration request as sent: ``{"body": <JSON text>, "mac": <hex HMAC-SHA256>}``."""
    body = json.dumps(request, sort_keys=True)
    mac = hmac.new(key, REGISTRATION_LABEL + body.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"body": body, "mac": mac})


def verify_request(key: bytes, raw: bytes) -> dict[str, Any]:
    """The request inside a signed registration; PermissionError if its tag is not the key's."""
    outer = json.loads(raw)
    if not isinstance(outer, dict) or not isinstance(outer.get("body"), str):
        raise ValueError("expected a JSON object {body, mac}")
    expected = hmac.new(key, REGISTRATION_LABEL + outer["body"].encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(str(outer.get("mac", "")).encode(), expected.encode()):
        raise PermissionError("the registration is not signed with this study's key")
    request = json.loads(outer["body"])
    if not isinstance(request, dict):
        raise ValueError("expected a JSON object {sim_id, params, purpose}")
    return request


class _Record(Protocol):
    """What routing reads and writes of a launcher's simulation record."""

    sim_id: int
    params: list[float]
    purpose: str
    rank: int | None


@dataclass(frozen=True)
class Endpoint:
    """Where one trainer rank listens.

    Attributes
    ----------
    rank : int
        Global rank of the trainer process.
    data : str
        ZeroMQ address of its receiver, as simulations must connect to it.
    control : str or None
        Address of its :class:`Registrar`; None for the rank that runs the launcher.
    """

    rank: int
    data: str
    control: str | None = None


def control_address(bind: str) -> str:
    """Where a :class:`Registrar` binds, beside a receiver bound to ``bind``: the same TCP
    interface with an ephemeral port, or the same ipc:// path with a ``.registrar`` suffix."""
    if bind.startswith("tcp://"):
        return bind.rsplit(":", 1)[0] + ":*"
    if bind.startswith("ipc://"):
        return bind + ".registrar"
    raise ValueError(f"transport.address must be tcp:// or ipc:// to serve several ranks, got {bind!r}")


def advertised(address: str, host: str | None = None) -> str:
    """The address a simulation on another node should connect to for a bound ``address``.

    A receiver bound to every interface (``tcp://*:*``) reports ``tcp://0.0.0.0:<port>``, which
    no client can reach; the wildcard is replaced by ``host``, or by this machine's fully
    qualified name when ``host`` is None. Other addresses are returned unchanged.

    Parameters
    ----------
    address : str
        A bound endpoint, e.g. ``"tcp://0.0.0.0:53817"``.
    host : str, optional
        Host name or IP address that simulations use to reach this node.
    """
    for wildcard in ("tcp://0.0.0.0:", "tcp://[::]:"):
        if address.startswith(wildcard):
            return f"tcp://{host or socket.getfqdn()}:{address[len(wildcard) :]}"
    return address


class RoutingRule:
    """Round-robin over ranks by training simulation: the k-th training simulation streams to
    rank ``ranks[k % len(ranks)]``; held-out simulations always stream to rank 0.

    Parameters
    ----------
    ranks : sequence of int, optional
        Ranks that receive training simulations, in turn; default all of them. Restricting it
        starves the other ranks of new data (they then train on what their buffer holds); it
        exists to test that a rank without new data neither hangs nor stalls the others.
    """

    def __init__(self, ranks: Sequence[int] | None = None) -> None:
        self.ranks = None if ranks is None else [int(r) for r in ranks]
        if self.ranks is not None and not self.ranks:
            raise ValueError("data.routing.ranks must name at least one rank, or be null for all ranks")
        self._n_train = 0

    def choose(self, purpose: str, world_size: int) -> int:
        """The rank for the next simulation of this ``purpose``."""
        if purpose != "train":
            return 0
        ranks = self.ranks if self.ranks is not None else range(world_size)
        if self.ranks is not None and not all(0 <= r < world_size for r in self.ranks):
            raise ValueError(f"data.routing.ranks={self.ranks} names a rank outside 0..{world_size - 1}")
        rank = ranks[self._n_train % len(ranks)]
        self._n_train += 1
        return rank

    def state_dict(self) -> dict[str, Any]:
        return {"n_train": self._n_train}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._n_train = int(state["n_train"])


class RankRouter:
    """Routes each simulation to one trainer rank and registers it there (see the module doc).

    Used by the launcher's dispatch thread only (ZeroMQ sockets are not thread-safe).

    Parameters
    ----------
    receiver : Receiver
        The started receiver of the rank that runs the launcher (rank 0).
    sinks : mapping of str to callable
        That rank's sink for each purpose (``"train"``, ``"validation"``).
    endpoints : sequence of Endpoint
        Every rank's endpoints, indexed by rank (``endpoints[0]`` is this rank's).
    token : bytes
        Study key: signs every registration request (it is never sent).
    rule : RoutingRule, optional
        Default round-robin over all ranks.
    timeout_s : float
        Longest wait for a rank to acknowledge a registration.
    """

    def __init__(
        self,
        receiver: Receiver,
        sinks: Mapping[str, Sink],
        endpoints: Sequence[Endpoint],
        token: bytes,
        rule: RoutingRule | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        missing = set(PURPOSES) - set(sinks)
        if missing:
            raise ValueError(f"the router needs a sink for each purpose {PURPOSES}; missing {sorted(missing)}")
        self.receiver, self.sinks, self.endpoints = receiver, dict(sinks), list(endpoints)
        self.token, self.rule, self.timeout_s = bytes(token), rule or RoutingRule(), float(timeout_s)
        self._context: zmq.Context | None = None
        self._sockets: dict[int, zmq.Socket] = {}

    @property
    def world_size(self) -> int:
        return len(self.endpoints)

    def assign(self, record: _Record) -> str:
        """Bind ``record``'s simulation to a rank, register it there, and return its stream address.

        Sets ``record.rank``. Called once per simulation: its later attempts stream to the same
        address under the same registration (see :meth:`Receiver.register`).

        Raises
        ------
        RuntimeError
            If a rank refused or did not acknowledge the registration within ``timeout_s``.
        """
        rank = self.rule.choose(record.purpose, self.world_size)
        endpoint = self.endpoints[rank]
        if endpoint.control is None:
            self.receiver.register(record.sim_id, np.asarray(record.params), self.sinks[record.purpose])
        else:
            self._register_remote(endpoint, record)
        record.rank = rank
        return endpoint.data

    def _register_remote(self, endpoint: Endpoint, record: _Record) -> None:
        request = {"sim_id": int(record.sim_id), "params": [float(v) for v in record.params], "purpose": record.purpose}
        sock = self._socket(endpoint)
        sock.send_string(sign_request(self.token, request))
        if not sock.poll(int(self.timeout_s * 1000), zmq.POLLIN):
            # A REQ socket that missed its reply cannot send again: drop it, a new one is made.
            self._sockets.pop(endpoint.rank).close(linger=0)
            raise RuntimeError(
                f"rank {endpoint.rank} did not acknowledge the registration of simulation "
                f"{record.sim_id} within {self.timeout_s} s ({endpoint.control}); is that "
                "trainer process alive?"
            )
        reply = json.loads(sock.recv_string())
        if reply.get("ok") is not True:
            raise RuntimeError(f"rank {endpoint.rank} refused simulation {record.sim_id}: {reply.get('error')}")

    def _socket(self, endpoint: Endpoint) -> zmq.Socket:
        sock = self._sockets.get(endpoint.rank)
        if sock is None:
            if self._context is None:
                self._context = zmq.Context()
            sock = self._context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint.control)
            self._sockets[endpoint.rank] = sock
        return sock

    def close(self) -> None:
        """Close the sockets to the other ranks. Idempotent; call once the launcher has stopped."""
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
        if self._context is not None:
            self._context.term()
            self._context = None


class Registrar:
    """Registers, on this rank's receiver, the simulations that rank 0's launcher routes here.

    A background thread answers signed requests (:func:`sign_request` of ``{"sim_id", "params",
    "purpose"}``) on a REP socket with ``{"ok": true}`` or ``{"ok": false, "error": ...}``.
    Requests without a valid tag of the study key, or with a malformed body, are refused and
    logged; none can stop the thread.

    Parameters
    ----------
    receiver : Receiver
        This rank's started receiver.
    sinks : mapping of str to callable
        This rank's sink for each purpose it accepts (``"train"`` on ranks other than 0).
    token : bytes
        Study key.
    address : str
        Endpoint to bind, normally the receiver's interface with an ephemeral port.
    """

    def __init__(
        self, receiver: Receiver, sinks: Mapping[str, Sink], token: bytes, address: str = "tcp://127.0.0.1:*"
    ) -> None:
        self.receiver, self.sinks, self.token = receiver, dict(sinks), bytes(token)
        self._context = zmq.Context()
        self._sock = self._context.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)  # a registration is a few hundred bytes
        self._sock.bind(address)
        self.address: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="gensim-registrar", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._sock.poll(50, zmq.POLLIN):
                    continue
                raw = self._sock.recv()
                try:
                    self._register(raw)
                    reply: dict[str, Any] = {"ok": True}
                except Exception as err:  # a bad request must not stop the thread
                    log.warning("registrar refused a request: %s", err)
                    reply = {"ok": False, "error": str(err)}
                self._sock.send_string(json.dumps(reply))
        finally:
            self._sock.close(linger=0)

    def _register(self, raw: bytes) -> None:
        request = verify_request(self.token, raw)
        purpose = request.get("purpose")
        if purpose not in self.sinks:
            raise ValueError(f"purpose {purpose!r} is not served by this rank (it serves {sorted(self.sinks)})")
        self.receiver.register(int(request["sim_id"]), np.asarray(request["params"], dtype=float), self.sinks[purpose])

    def stop(self) -> None:
        """Stop the thread and close the socket. Idempotent."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        if not self._context.closed:
            self._context.term()
