"""The gensim wire format: one authenticated ZeroMQ multipart message per simulation time step.

Frame 0 is a little-endian header with a fixed layout that a C program reads with a plain
``struct`` (every field is naturally aligned, there is no padding); frames ``1..n_fields`` are
the raw bytes of each field, C order, little-endian, in descriptor order; the last frame is a
28-byte authenticator: a random 12-byte nonce and the 16-byte GMAC (AES-256-GCM with no
plaintext) of every frame before it, keyed by the study's message key. The full specification,
with a C example, is ``docs/wire-format.md``.

Header layout (version 3)::

    preamble, 48 bytes
      offset  size  type        field
           0     4  char[4]     magic = b"GSIM"
           4     2  uint16      version = 3
           6     2  uint16      n_fields (0 for END)
           8    16  uint8[16]   study id (public, derived from the key: study_id(key))
          24     8  int64       simulation id
          32     4  uint32      step
          36     4  uint32      kind (0 = DATA, 1 = END, 2 = MESH: gensim.transport.geometry)
          40     8  float64     time
    then n_fields descriptors, 64 bytes each
           0    32  char[32]    name, UTF-8, NUL-padded (at most 31 bytes + NUL)
          32     1  uint8       dtype code (1 = float32, 2 = float64)
          33     1  uint8       ndim (1..4)
          34     2  uint8[2]    reserved, zero
          36    16  uint32[4]   shape (unused dims 0)
          52    12  uint8[12]   reserved, zero

Tag (last frame, 28 bytes)::

    nonce (12 random bytes) || GMAC(message_key, nonce, len(f_0) || f_0 || ... || len(f_n) || f_n)

GMAC is AES-256-GCM with an empty plaintext and the bytes above as additional authenticated
data: the 16-byte GCM tag. ``message_key = HMAC-SHA256(key, b"gensim message key")``. The
header ``f_0`` and the data frames ``f_1..f_n`` are each preceded by their byte length as a
little-endian uint64 (so that no byte can move from one frame to another). Every message draws
a fresh nonce from the operating system's random source.

This module imports numpy and ``cryptography`` only (no zmq, no torch), so it can be used by any
tool that reads or writes the format.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: First four bytes of every header.
MAGIC = b"GSIM"
#: Version of the wire format written by this module and the only one it accepts.
VERSION = 3
#: Message kinds.
KIND_DATA = 0
KIND_END = 1
#: A field's geometry, once per simulation process (:mod:`gensim.transport.geometry`).
KIND_MESH = 2
KINDS = (KIND_DATA, KIND_END, KIND_MESH)
#: Length of the study key in bytes (the secret shared by the trainer and its simulations;
#: ``GENSIM_TOKEN`` holds it as 64 hexadecimal characters).
KEY_BYTES = 32
#: Length of the public study id in the header (derived from the key by :func:`study_id`).
STUDY_ID_BYTES = 16
#: Length of a message's nonce: the first bytes of its last frame (random, fresh for each message).
NONCE_BYTES = 12
#: Length of the GMAC (AES-256-GCM tag) that follows the nonce.
GMAC_BYTES = 16
#: Length of the last frame of every message: nonce then GMAC.
TAG_BYTES = NONCE_BYTES + GMAC_BYTES
#: What :func:`study_id`, :func:`zap_password` and :func:`message_key` authenticate with the
#: key (HMAC-SHA256): distinct fixed ASCII strings, so that each derived value reveals nothing
#: of the others or of the key.
STUDY_ID_LABEL = b"gensim study id"
ZAP_LABEL = b"gensim zap password"
MESSAGE_KEY_LABEL = b"gensim message key"
#: ZeroMQ PLAIN user name that simulations present (the password is :func:`zap_password`).
ZAP_USERNAME = b"gensim"
#: Longest field name in UTF-8 bytes (the 32-byte slot keeps a terminating NUL).
MAX_NAME_BYTES = 31
MAX_NDIM = 4

_PREAMBLE = struct.Struct("<4sHH16sqIId")
_LENGTH = struct.Struct("<Q")
#: Messages of at most this many bytes are joined into one buffer and tagged in one call; larger
#: ones are fed piece by piece to a GCM context, whose set-up (6-10 us measured) then costs less
#: than the copy (about 40 us for 256 KiB not in cache; reports/transport/mac_cost.py).
_JOIN_MAX_BYTES = 2**16
_DESCRIPTOR = struct.Struct("<32sBB2s4I12s")
#: Size of the fixed preamble in bytes.
PREAMBLE_SIZE = _PREAMBLE.size
#: Size of one field descriptor in bytes.
DESCRIPTOR_SIZE = _DESCRIPTOR.size
assert PREAMBLE_SIZE == 48 and DESCRIPTOR_SIZE == 64

#: Wire dtype codes and the numpy dtypes they stand for (always little-endian on the wire).
DTYPE_CODES: dict[str, int] = {"float32": 1, "float64": 2}
CODE_DTYPES: dict[int, str] = {code: name for name, code in DTYPE_CODES.items()}
_NUMPY_DTYPES = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}

#: Machine tags of the reasons a message can be rejected (``WireError.reason`` and the keys of
#: ``ReceiverStats.rejected``).
REASONS = (
    "too_large",  # message over the receiver's size limit (refused while it is being received)
    "malformed",  # frame count, header size, magic, kind, descriptor layout, bad reserved bytes
    "version",  # wire-format version other than VERSION (e.g. a client of an older gensim)
    "study",  # study id is not the receiver's (a simulation of another study or run)
    "auth",  # the authentication tag is wrong: not sent by a holder of the study key
    "duplicate_end",  # a second END of a simulation
    "finished_sim",  # DATA after the simulation's END
    "unknown_sim",  # simulation id not registered
    "step_range",  # step outside [0, n_steps)
    "time_range",  # time outside the simulation's time grid
    "duplicate",  # this (simulation, step) was already accepted
    "fields",  # field names or count differ from the declared FieldSpecs
    "dtype",  # unknown dtype code, or dtype differs from the declared one
    "shape",  # shape differs from the declared one
    "frame_size",  # a data frame's byte size does not match its descriptor
    "non_finite",  # NaN or Inf in a field, or non-finite time
    "mesh",  # a MESH message that is malformed or whose geometry is not the declared one
    "sink_error",  # the sink raised while taking the sample
    "internal",  # any other exception while handling one message
)


class WireError(ValueError):
    """A message that does not follow the wire format, or that a receiver refuses.

    Parameters
    ----------
    reason : str
        Short machine tag, one of :data:`REASONS` (used as the key of rejection counts).
    message : str
        Human-readable explanation: what was expected, what came.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"[{self.reason}] {self.message}"


class _FieldLike(Protocol):
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class FieldDescriptor:
    """One field as described in a header (not yet checked against any declaration).

    Attributes
    ----------
    name : str
        Field name.
    dtype : str
        ``"float32"`` or ``"float64"``.
    shape : tuple of int
        1 to 4 positive dimensions.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Byte size of the field's data frame."""
        return int(np.prod(self.shape)) * _NUMPY_DTYPES[self.dtype].itemsize


@dataclass(frozen=True)
class Header:
    """A decoded header (frame 0 of a message).

    Attributes
    ----------
    version : int
        Wire-format version.
    study : bytes
        Study id, 16 bytes (:func:`study_id` of the sender's key).
    sim_id : int
        Simulation id.
    step : int
        Time-step index.
    kind : int
        :data:`KIND_DATA` or :data:`KIND_END`.
    time : float
        Physical time of the step (0.0 in END messages).
    fields : tuple of FieldDescriptor
        One descriptor per data frame, in frame order (empty for END).
    """

    version: int
    study: bytes
    sim_id: int
    step: int
    kind: int
    time: float
    fields: tuple[FieldDescriptor, ...]

    @property
    def size(self) -> int:
        """Size of the encoded header in bytes."""
        return header_size(len(self.fields))


def header_size(n_fields: int) -> int:
    """Byte size of a header with ``n_fields`` descriptors."""
    return PREAMBLE_SIZE + DESCRIPTOR_SIZE * n_fields


def numpy_dtype(dtype: str) -> np.dtype:
    """Little-endian numpy dtype of a wire dtype name (``"float32"`` or ``"float64"``)."""
    try:
        return _NUMPY_DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of {tuple(DTYPE_CODES)}, got {dtype!r}") from None


def parse_key(key: bytes | str) -> bytes:
    """Return the 32 raw bytes of a study key given as bytes or as 64 hexadecimal characters.

    Raises
    ------
    ValueError
        If the key is neither 32 bytes nor 64 hex characters.
    TypeError
        If the key is neither bytes nor str.
    """
    if isinstance(key, str):
        try:
            raw = bytes.fromhex(key.strip())
        except ValueError:
            # The key itself is never echoed: only its length.
            raise ValueError(
                f"study key must be {KEY_BYTES} bytes or {2 * KEY_BYTES} hex characters, got a "
                f"string of {len(key)} characters that is not hexadecimal"
            ) from None
    elif isinstance(key, (bytes, bytearray, memoryview)):
        raw = bytes(key)
    else:
        raise TypeError(f"study key must be bytes or a hex string, got {type(key).__name__}")
    if len(raw) != KEY_BYTES:
        raise ValueError(
            f"study key must be {KEY_BYTES} bytes ({2 * KEY_BYTES} hex characters), got "
            f"{len(raw)} bytes (wire version 1 used 16-byte tokens): use the launcher and the "
            "client of the same gensim version"
        )
    return raw


def new_key() -> bytes:
    """A fresh random study key (32 bytes); ``new_key().hex()`` is its environment form."""
    return secrets.token_bytes(KEY_BYTES)


#: Former names (the study "token" became a key in wire version 2).
parse_token = parse_key
new_token = new_key
TOKEN_BYTES = KEY_BYTES


def study_id(key: bytes | str) -> bytes:
    """The public 16-byte study id of a key: ``HMAC-SHA256(key, b"gensim study id")[:16]``.

    It lets a receiver tell a simulation of another study (a stale run that still knows the
    port) from a forgery, and reveals nothing of the key.
    """
    return hmac.new(parse_key(key), STUDY_ID_LABEL, hashlib.sha256).digest()[:STUDY_ID_BYTES]


def zap_password(key: bytes | str) -> bytes:
    """ZeroMQ PLAIN password of a study: the 64 hex characters of
    ``HMAC-SHA256(key, b"gensim zap password")`` (ASCII bytes).

    Receivers refuse, at connection time, any peer that does not present it (user name
    :data:`ZAP_USERNAME`), so that a process without the key cannot make ZeroMQ buffer anything.
    It is derived from the key and reveals nothing of it.
    """
    return hmac.new(parse_key(key), ZAP_LABEL, hashlib.sha256).hexdigest().encode("ascii")


def message_key(key: bytes | str) -> bytes:
    """The AES-256 key of the message tags: ``HMAC-SHA256(key, b"gensim message key")`` (32 bytes).

    The study key itself is used only through HMAC-SHA256 with fixed labels; the block cipher
    gets a key of its own.
    """
    return hmac.new(parse_key(key), MESSAGE_KEY_LABEL, hashlib.sha256).digest()


#: A source of nonces: ``source(n)`` returns ``n`` fresh bytes. The default is the operating
#: system's random source (``os.urandom``), never a seeded generator: simulations started with
#: equal seeds, or the restarts of one simulation, would repeat each other's nonces.
NonceSource = Callable[[int], bytes]


class MessageMac:
    """GMAC keyed by a study's message key, ready to tag messages and to check their tags.

    A tag (a message's last frame, :data:`TAG_BYTES` bytes) is a nonce followed by the 16-byte
    tag of AES-256-GCM over an empty plaintext, with the message's frames, each preceded by its
    length as a little-endian uint64, as the additional authenticated data (NIST SP 800-38D's
    GMAC). GCM requires that a nonce never repeats under one key: each message draws 12 random
    bytes (``os.urandom``), and a study's key is new for each study; with random nonces, NIST
    SP 800-38D allows 2**32 messages per key (a study sends far fewer), which keeps the chance
    of any repeat under 2**-32.

    Cost (OpenSSL's AES-NI and carry-less multiplication; ``reports/transport/mac_cost.py``):
    a small message is joined into one buffer and authenticated in one call, a large one fed
    piece by piece without a copy (:data:`_JOIN_MAX_BYTES`). docs/wire-format.md gives the
    measured times, against the HMAC-SHA256 of wire version 2.

    Parameters
    ----------
    key : bytes or str
        The study key (see :func:`parse_key`); the message key is derived from it.
    nonce_source : callable, optional
        ``nonce_source(n)`` returns ``n`` fresh bytes; default ``os.urandom``. Tests pass a
        deterministic one to compare byte streams; anything else must be a cryptographic
        random source.
    """

    __slots__ = ("_aead", "_aes", "_nonces")

    def __init__(self, key: bytes | str, nonce_source: NonceSource | None = None) -> None:
        secret = message_key(key)
        self._aead = AESGCM(secret)
        self._aes = algorithms.AES(secret)
        self._nonces = os.urandom if nonce_source is None else nonce_source

    def _gmac(self, nonce: bytes, frames: Iterable) -> bytes:
        """The 16-byte GMAC of ``frames`` (lengths and bytes) under ``nonce``."""
        pieces, total = [], 0
        for frame in frames:
            view = memoryview(frame)
            if view.ndim != 1 or view.format != "B":
                view = view.cast("B")  # a C-contiguous array's bytes
            pieces.append(_LENGTH.pack(view.nbytes))
            pieces.append(view)
            total += view.nbytes
        if total <= _JOIN_MAX_BYTES:
            return self._aead.encrypt(nonce, b"", b"".join(pieces))  # the GCM tag of no plaintext
        gcm = Cipher(self._aes, modes.GCM(nonce)).encryptor()
        for piece in pieces:
            gcm.authenticate_additional_data(piece)
        gcm.finalize()
        return gcm.tag

    def tag(self, frames: Iterable) -> bytes:
        """The last frame of a message: a fresh nonce, then the GMAC of the frames.

        Parameters
        ----------
        frames : iterable of bytes-like
            The header and the data frames, in order, without the tag (C-contiguous buffers:
            bytes, numpy arrays, ZeroMQ frames).

        Returns
        -------
        bytes
            :data:`TAG_BYTES` bytes: the nonce, then the 16-byte GMAC.
        """
        nonce = bytes(self._nonces(NONCE_BYTES))
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"the nonce source returned {len(nonce)} bytes, expected {NONCE_BYTES}")
        return nonce + self._gmac(nonce, frames)

    def expected(self, frames: Sequence) -> bytes | None:
        """The tag that a received message must end with, for the nonce its last frame carries.

        Parameters
        ----------
        frames : sequence of bytes-like
            A whole message: header, data frames, and its last frame (the tag to check).

        Returns
        -------
        bytes or None
            :data:`TAG_BYTES` bytes to compare with the last frame in constant time
            (``hmac.compare_digest``); None when the message has no last frame of the size of a
            tag (it is not authentic).
        """
        if len(frames) < 2:
            return None
        last = memoryview(frames[-1]).cast("B")
        if last.nbytes != TAG_BYTES:
            return None
        nonce = bytes(last[:NONCE_BYTES])
        return nonce + self._gmac(nonce, frames[:-1])


def new_mac(key: bytes | str, nonce_source: NonceSource | None = None) -> MessageMac:
    """The keyed GMAC of a study (:class:`MessageMac`): keep it and tag every message with it."""
    return MessageMac(key, nonce_source)


def message_tag(mac: MessageMac, frames: Iterable) -> bytes:
    """The authentication tag of a message: ``mac.tag(frames)`` (see :meth:`MessageMac.tag`).

    Parameters
    ----------
    mac : MessageMac
        From :func:`new_mac`.
    frames : iterable of bytes-like
        The header and the data frames, in order, without the tag.

    Returns
    -------
    bytes
        :data:`TAG_BYTES` bytes: the message's last frame.
    """
    return mac.tag(frames)


def sign(key: bytes | str | MessageMac, frames: Sequence) -> list:
    """``frames`` plus their tag: a complete message to send (tests and simple tools).

    Parameters
    ----------
    key : bytes, str or MessageMac
        Study key, or its keyed MAC from :func:`new_mac`.
    frames : sequence of bytes-like
        Header and data frames.
    """
    mac = key if isinstance(key, MessageMac) else MessageMac(key)
    return [*frames, mac.tag(frames)]


def encode_descriptors(fields: Sequence[_FieldLike]) -> bytes:
    """Encode field descriptors (objects with ``name``, ``shape``, ``dtype``, e.g. FieldSpec).

    Raises
    ------
    ValueError
        If a name, shape or dtype cannot be represented on the wire.
    """
    out = []
    for f in fields:
        name = f.name.encode("utf-8")
        if not 1 <= len(name) <= MAX_NAME_BYTES or b"\0" in name:
            raise ValueError(f"field name must be 1 to {MAX_NAME_BYTES} UTF-8 bytes without NUL, got {f.name!r}")
        shape = tuple(int(s) for s in f.shape)
        if not 1 <= len(shape) <= MAX_NDIM or any(not 0 < s < 2**32 for s in shape):
            raise ValueError(f"field {f.name!r}: expected 1 to {MAX_NDIM} dimensions in 1..2**32-1, got shape {shape}")
        dtype = np.dtype(f.dtype).name
        if dtype not in DTYPE_CODES:
            raise ValueError(f"field {f.name!r}: dtype must be one of {tuple(DTYPE_CODES)}, got {f.dtype!r}")
        padded = shape + (0,) * (MAX_NDIM - len(shape))
        out.append(_DESCRIPTOR.pack(name, DTYPE_CODES[dtype], len(shape), b"\0\0", *padded, b"\0" * 12))
    return b"".join(out)


def encode_preamble(study: bytes, sim_id: int, step: int, time: float, n_fields: int, kind: int = KIND_DATA) -> bytes:
    """Encode the 48-byte preamble; ``study`` is the 16-byte study id (:func:`study_id`)."""
    if len(study) != STUDY_ID_BYTES:
        raise ValueError(f"study id must be {STUDY_ID_BYTES} bytes (wire.study_id(key)), got {len(study)}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind}")
    if not 0 <= step < 2**32:
        raise ValueError(f"step must be in 0..2**32-1, got {step}")
    if not -(2**63) <= sim_id < 2**63:
        raise ValueError(f"simulation id must fit in an int64, got {sim_id}")
    if not 0 <= n_fields < 2**16:
        raise ValueError(f"n_fields must be in 0..65535, got {n_fields}")
    return _PREAMBLE.pack(MAGIC, VERSION, n_fields, study, sim_id, step, kind, float(time))


def encode_header(
    study: bytes,
    sim_id: int,
    step: int,
    time: float,
    fields: Sequence[_FieldLike] = (),
    kind: int = KIND_DATA,
) -> bytes:
    """Encode a header (frame 0).

    Parameters
    ----------
    study : bytes
        Study id, 16 bytes (:func:`study_id` of the key).
    sim_id : int
        Simulation id (int64).
    step : int
        Time-step index (uint32).
    time : float
        Physical time.
    fields : sequence of FieldSpec-like
        Objects with ``name``, ``shape`` and ``dtype``, in the order of the data frames.
        Must be empty for :data:`KIND_END`.
    kind : int
        :data:`KIND_DATA` (default) or :data:`KIND_END`.

    Returns
    -------
    bytes
        ``48 + 64 * len(fields)`` bytes.
    """
    if kind == KIND_END and len(fields):
        raise ValueError("an END message carries no fields")
    return encode_preamble(bytes(study), sim_id, step, time, len(fields), kind) + (encode_descriptors(fields))


def match_data_header(buf: bytes, descriptors: bytes) -> tuple[bytes, int, int, float] | None:
    """Decode a DATA header whose descriptors are byte for byte ``descriptors``, or return None.

    The receiver's fast path: a header equal to a known valid encoding (same length, same
    descriptor bytes, right magic, version, field count and kind) passes every check of
    :func:`decode_header` with the same fields, so only the preamble needs unpacking. Any
    other header (an END, another field order, a malformed one) returns None: decode it with
    :func:`decode_header`, which says what is wrong.

    Parameters
    ----------
    buf : bytes
        The whole frame 0.
    descriptors : bytes
        Valid descriptors, as :func:`encode_descriptors` writes them.

    Returns
    -------
    tuple or None
        ``(study, sim_id, step, time)`` of a matching header.
    """
    n_fields, rest = divmod(len(descriptors), DESCRIPTOR_SIZE)
    if rest or len(buf) != PREAMBLE_SIZE + len(descriptors) or not buf.endswith(descriptors):
        return None
    magic, version, n, study, sim_id, step, kind, time = _PREAMBLE.unpack_from(buf, 0)
    if magic != MAGIC or version != VERSION or n != n_fields or kind != KIND_DATA:
        return None
    return study, sim_id, step, time


def version_mismatch(version: int) -> str:
    """What a receiver says of a message of another wire-format version: which side is old, and the fix."""
    if version < VERSION:
        return (
            f"wire-format version {version}, this receiver speaks version {VERSION} (version 3 replaced "
            "version 2's HMAC-SHA256 tags with a nonce and GMAC): the simulation uses a client of an "
            "older gensim; update it to this gensim (Python: gensim.client; C and Fortran: rebuild "
            "clients/c and clients/fortran from this gensim, and rebuild the solver against them)"
        )
    return (
        f"wire-format version {version}, this receiver speaks version {VERSION}: the simulation uses a "
        "client of a newer gensim than the trainer; run both from the same gensim version"
    )


def decode_header(buf: bytes | bytearray | memoryview) -> Header:
    """Decode and check a header (frame 0).

    Checks, in order: length of the preamble, magic, version, length matching ``n_fields``,
    kind, and each descriptor (name, dtype code, ndim, shape, reserved bytes zero).

    Parameters
    ----------
    buf : bytes-like
        The whole frame 0.

    Returns
    -------
    Header

    Raises
    ------
    WireError
        ``reason`` is ``"malformed"`` (truncated, wrong magic, wrong length, bad kind or
        descriptor, non-zero reserved bytes), ``"version"`` or ``"dtype"`` (unknown dtype code).
    """
    view = memoryview(buf).cast("B")
    n = view.nbytes
    if n < PREAMBLE_SIZE:
        raise WireError(
            "malformed",
            f"header is {n} bytes, shorter than the {PREAMBLE_SIZE}-byte preamble",
        )
    magic, version, n_fields, study, sim_id, step, kind, time = _PREAMBLE.unpack_from(view, 0)
    if magic != MAGIC:
        raise WireError("malformed", f"magic is {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise WireError("version", version_mismatch(version))
    expected = header_size(n_fields)
    if n != expected:
        raise WireError(
            "malformed",
            f"header is {n} bytes, expected {expected} for {n_fields} field(s)",
        )
    if kind not in KINDS:
        raise WireError(
            "malformed", f"kind {kind}, expected {KIND_DATA} (DATA), {KIND_END} (END) or {KIND_MESH} (MESH)"
        )
    if kind == KIND_END and n_fields:
        raise WireError("malformed", f"an END message must have 0 fields, got {n_fields}")
    fields = []
    for i in range(n_fields):
        raw_name, code, ndim, res1, d0, d1, d2, d3, res2 = _DESCRIPTOR.unpack_from(
            view, PREAMBLE_SIZE + i * DESCRIPTOR_SIZE
        )
        name_bytes, _, pad = raw_name.partition(b"\0")
        if not name_bytes or pad.strip(b"\0"):
            raise WireError(
                "malformed", f"descriptor {i}: name must be 1 to 31 bytes then NUL padding, got {raw_name!r}"
            )
        try:
            name = name_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise WireError("malformed", f"descriptor {i}: name {name_bytes!r} is not UTF-8") from None
        if res1.strip(b"\0") or res2.strip(b"\0"):
            raise WireError(
                "malformed",
                f"field {name!r}: reserved descriptor bytes must be zero "
                "(check the C struct layout: no padding, little-endian)",
            )
        if code not in CODE_DTYPES:
            raise WireError("dtype", f"field {name!r}: dtype code {code}, expected one of {CODE_DTYPES}")
        if not 1 <= ndim <= MAX_NDIM:
            raise WireError("malformed", f"field {name!r}: ndim {ndim}, expected 1 to {MAX_NDIM}")
        dims = (d0, d1, d2, d3)
        shape, unused = dims[:ndim], dims[ndim:]
        if any(s == 0 for s in shape) or any(unused):
            raise WireError(
                "malformed",
                f"field {name!r}: shape {dims} with ndim {ndim}; expected {ndim} positive dimensions followed by zeros",
            )
        fields.append(FieldDescriptor(name, CODE_DTYPES[code], tuple(shape)))
    return Header(
        version=version,
        study=bytes(study),
        sim_id=sim_id,
        step=step,
        kind=kind,
        time=time,
        fields=tuple(fields),
    )
