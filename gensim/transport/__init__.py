"""Transport: simulations stream time steps over ZeroMQ into the trainer (no torch here).

- :mod:`gensim.transport.wire`: the versioned wire format (header encode/decode, constants,
  :class:`WireError`); specified in ``docs/wire-format.md``. numpy only.
- :mod:`gensim.transport.receiver`: :class:`Receiver`, the validating PULL side that runs on a
  background thread of the trainer. The sending side is :class:`gensim.client.Client`.

``Receiver``, ``ReceiverStats`` and ``BatchSink`` are imported lazily, so that a simulation process importing
the client (which needs only :mod:`~gensim.transport.wire`) stays light.
"""

from gensim.transport.wire import (
    KIND_DATA,
    KIND_END,
    MAGIC,
    REASONS,
    VERSION,
    FieldDescriptor,
    Header,
    WireError,
    decode_header,
    encode_header,
    new_key,
    new_token,
    parse_key,
    parse_token,
    sign,
    study_id,
)

__all__ = [
    "BatchSink",
    "KIND_DATA",
    "KIND_END",
    "MAGIC",
    "REASONS",
    "VERSION",
    "FieldDescriptor",
    "Header",
    "Receiver",
    "ReceiverStats",
    "WireError",
    "decode_header",
    "encode_header",
    "new_key",
    "new_token",
    "parse_key",
    "parse_token",
    "sign",
    "study_id",
]


def __getattr__(name: str):
    if name in ("BatchSink", "Receiver", "ReceiverStats"):
        from gensim.transport import receiver

        return getattr(receiver, name)
    raise AttributeError(f"module 'gensim.transport' has no attribute {name!r}")
