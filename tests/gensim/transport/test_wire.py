"""Header encode/decode of the wire format, and its failure reasons."""

import struct

import numpy as np
import pytest

from gensim.simulations.base import FieldSpec
from gensim.transport import wire
from gensim.transport.wire import WireError, decode_header, encode_header

TOKEN = bytes(range(16))
SPECS = (FieldSpec("temperature", (64, 32), "float32"), FieldSpec("p", (3, 4, 5, 6), "float64"))


def test_layout_sizes():
    assert wire.PREAMBLE_SIZE == 48
    assert wire.DESCRIPTOR_SIZE == 64
    assert len(encode_header(TOKEN, 1, 2, 0.5, SPECS)) == 48 + 2 * 64


def test_round_trip():
    raw = encode_header(TOKEN, -7, 123, 2.5, SPECS)
    h = decode_header(raw)
    assert h.version == wire.VERSION
    assert h.token == TOKEN
    assert (h.sim_id, h.step, h.kind, h.time) == (-7, 123, wire.KIND_DATA, 2.5)
    assert h.fields == (
        wire.FieldDescriptor("temperature", "float32", (64, 32)),
        wire.FieldDescriptor("p", "float64", (3, 4, 5, 6)),
    )
    assert h.fields[0].nbytes == 64 * 32 * 4
    assert h.size == len(raw)


def test_round_trip_end_and_hex_token():
    raw = encode_header(TOKEN.hex(), 2**40, 9, 0.0, kind=wire.KIND_END)
    h = decode_header(memoryview(raw))
    assert (h.kind, h.fields, h.token, h.sim_id) == (wire.KIND_END, (), TOKEN, 2**40)


def test_fixed_offsets_as_c_reads_them():
    """The layout documented in docs/wire-format.md, byte for byte."""
    raw = encode_header(TOKEN, 5, 6, 1.25, SPECS[:1])
    assert raw[0:4] == b"GSIM"
    assert struct.unpack_from("<H", raw, 4)[0] == 1
    assert struct.unpack_from("<H", raw, 6)[0] == 1
    assert raw[8:24] == TOKEN
    assert struct.unpack_from("<q", raw, 24)[0] == 5
    assert struct.unpack_from("<I", raw, 32)[0] == 6
    assert struct.unpack_from("<I", raw, 36)[0] == 0
    assert struct.unpack_from("<d", raw, 40)[0] == 1.25
    d = raw[48:]
    assert d[:32] == b"temperature".ljust(32, b"\0")
    assert (d[32], d[33]) == (1, 2)
    assert d[34:36] == b"\0\0"
    assert struct.unpack_from("<4I", d, 36) == (64, 32, 0, 0)
    assert d[52:64] == b"\0" * 12


def _expect(raw, reason):
    with pytest.raises(WireError) as info:
        decode_header(raw)
    assert info.value.reason == reason, str(info.value)
    assert reason in str(info.value)
    return info.value


@pytest.mark.parametrize("n", [0, 1, 20, 47])
def test_truncated_preamble(n):
    _expect(encode_header(TOKEN, 1, 0, 0.0, SPECS)[:n], "malformed")


def test_truncated_descriptors():
    raw = encode_header(TOKEN, 1, 0, 0.0, SPECS)
    _expect(raw[:-1], "malformed")
    _expect(raw + b"\0", "malformed")


def test_garbage():
    rng = np.random.default_rng(0)
    _expect(rng.bytes(200), "malformed")
    _expect(b"hello world" * 10, "malformed")


def test_wrong_magic():
    raw = bytearray(encode_header(TOKEN, 1, 0, 0.0, SPECS))
    raw[0:4] = b"GSIX"
    err = _expect(bytes(raw), "malformed")
    assert "magic" in err.message


def test_wrong_version():
    raw = bytearray(encode_header(TOKEN, 1, 0, 0.0, SPECS))
    struct.pack_into("<H", raw, 4, 2)
    err = _expect(bytes(raw), "version")
    assert "2" in err.message


def test_bad_kind_and_end_with_fields():
    raw = bytearray(encode_header(TOKEN, 1, 0, 0.0, SPECS))
    struct.pack_into("<I", raw, 36, 7)
    _expect(bytes(raw), "malformed")
    struct.pack_into("<I", raw, 36, wire.KIND_END)
    _expect(bytes(raw), "malformed")


@pytest.mark.parametrize(
    "offset, value, reason",
    [
        (32, b"\x09", "dtype"),  # unknown dtype code
        (33, b"\x00", "malformed"),  # ndim 0
        (33, b"\x05", "malformed"),  # ndim 5
        (34, b"\x01", "malformed"),  # reserved byte
        (60, b"\x01", "malformed"),  # trailing reserved bytes
        (44, b"\x01", "malformed"),  # unused dim (ndim 2) not zero
        (36, b"\x00\x00\x00\x00", "malformed"),  # zero dimension
        (0, b"\x00", "malformed"),  # empty name
        (20, b"x", "malformed"),  # junk after the name's NUL
        (0, b"\xff", "malformed"),  # not UTF-8
    ],
)
def test_bad_descriptor(offset, value, reason):
    raw = bytearray(encode_header(TOKEN, 1, 0, 0.0, SPECS[:1]))
    raw[48 + offset : 48 + offset + len(value)] = value
    _expect(bytes(raw), reason)


def test_encode_rejects_what_cannot_travel():
    class F:
        def __init__(self, name, shape, dtype):
            self.name, self.shape, self.dtype = name, shape, dtype

    with pytest.raises(ValueError, match="name"):
        encode_header(TOKEN, 1, 0, 0.0, [F("x" * 32, (2,), "float32")])
    with pytest.raises(ValueError, match="dtype"):
        encode_header(TOKEN, 1, 0, 0.0, [F("x", (2,), "int32")])
    with pytest.raises(ValueError, match="dimensions"):
        encode_header(TOKEN, 1, 0, 0.0, [F("x", (1, 1, 1, 1, 1), "float32")])
    with pytest.raises(ValueError, match="step"):
        encode_header(TOKEN, 1, -1, 0.0, SPECS)
    with pytest.raises(ValueError, match="END"):
        encode_header(TOKEN, 1, 0, 0.0, SPECS, kind=wire.KIND_END)


def test_parse_token():
    assert wire.parse_token(TOKEN.hex()) == TOKEN
    assert wire.parse_token(TOKEN) == TOKEN
    assert len(wire.new_token()) == 16
    with pytest.raises(ValueError, match="16 bytes"):
        wire.parse_token(b"short")
    with pytest.raises(ValueError, match="hex"):
        wire.parse_token("not hex at all")
