"""Header encode/decode of the wire format, and its failure reasons."""

import hashlib
import hmac
import struct

import numpy as np
import pytest

from gensim.simulations.base import FieldSpec
from gensim.transport import wire
from gensim.transport.wire import WireError, decode_header, encode_header

KEY = bytes(range(32))
TOKEN = wire.study_id(KEY)  # the header carries the public study id
SPECS = (FieldSpec("temperature", (64, 32), "float32"), FieldSpec("p", (3, 4, 5, 6), "float64"))


def test_layout_sizes():
    assert wire.PREAMBLE_SIZE == 48
    assert wire.DESCRIPTOR_SIZE == 64
    assert len(encode_header(TOKEN, 1, 2, 0.5, SPECS)) == 48 + 2 * 64


def test_round_trip():
    raw = encode_header(TOKEN, -7, 123, 2.5, SPECS)
    h = decode_header(raw)
    assert h.version == wire.VERSION
    assert h.study == TOKEN
    assert (h.sim_id, h.step, h.kind, h.time) == (-7, 123, wire.KIND_DATA, 2.5)
    assert h.fields == (
        wire.FieldDescriptor("temperature", "float32", (64, 32)),
        wire.FieldDescriptor("p", "float64", (3, 4, 5, 6)),
    )
    assert h.fields[0].nbytes == 64 * 32 * 4
    assert h.size == len(raw)


def test_round_trip_end():
    raw = encode_header(TOKEN, 2**40, 9, 0.0, kind=wire.KIND_END)
    h = decode_header(memoryview(raw))
    assert (h.kind, h.fields, h.study, h.sim_id) == (wire.KIND_END, (), TOKEN, 2**40)


def test_fixed_offsets_as_c_reads_them():
    """The layout documented in docs/wire-format.md, byte for byte."""
    raw = encode_header(TOKEN, 5, 6, 1.25, SPECS[:1])
    assert raw[0:4] == b"GSIM"
    assert struct.unpack_from("<H", raw, 4)[0] == 2
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
    struct.pack_into("<H", raw, 4, 1)
    err = _expect(bytes(raw), "version")
    assert "version 1" in err.message


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


def test_parse_key():
    assert wire.parse_key(KEY.hex()) == KEY
    assert wire.parse_key(KEY) == KEY
    assert len(wire.new_key()) == 32 and wire.new_key() != wire.new_key()
    with pytest.raises(ValueError, match="32 bytes"):
        wire.parse_key(b"short")
    with pytest.raises(ValueError, match="32 bytes"):
        wire.parse_key(bytes(16).hex())  # a wire-version-1 token
    with pytest.raises(ValueError, match="hex") as info:
        wire.parse_key("zz" + KEY.hex()[2:])
    assert KEY.hex()[2:] not in str(info.value)  # a key, even a mistyped one, is never echoed
    with pytest.raises(TypeError):
        wire.parse_key(12)


def test_derived_values_are_independent_of_each_other():
    # The study id and the ZAP password are public or semi-public: each is a different HMAC
    # of the key, so neither gives the other or the key.
    study, password = wire.study_id(KEY), wire.zap_password(KEY)
    assert len(study) == 16 and len(password) == 64
    assert study.hex() not in password.decode() and KEY.hex() not in password.decode()
    assert wire.study_id(KEY.hex()) == study and wire.study_id(bytes(32)) != study
    assert study == hmac.new(KEY, b"gensim study id", hashlib.sha256).digest()[:16]
    assert password == hmac.new(KEY, b"gensim zap password", hashlib.sha256).hexdigest().encode()


def test_tag_is_hmac_over_lengths_and_frames():
    """The tag as docs/wire-format.md defines it, computed independently."""
    header = encode_header(TOKEN, 3, 4, 0.5, SPECS)
    a = np.arange(64 * 32, dtype="<f4").reshape(64, 32)
    b = np.linspace(0, 1, 360).reshape(3, 4, 5, 6)
    expected = hmac.new(KEY, digestmod=hashlib.sha256)
    for frame in (header, a.tobytes(), b.tobytes()):
        expected.update(struct.pack("<Q", len(frame)) + frame)
    frames = wire.sign(KEY, [header, a, b])  # arrays hashed in place
    assert len(frames) == 4 and frames[-1] == expected.digest()
    assert wire.message_tag(wire.new_mac(KEY), [header, a.tobytes(), b.tobytes()]) == expected.digest()
    # The lengths are in the tag: moving bytes between frames changes it.
    raw = a.tobytes() + b.tobytes()
    moved = [header, raw[:100], raw[100:]]
    assert wire.message_tag(wire.new_mac(KEY), moved) != expected.digest()
    assert wire.sign(bytes(32), [header, a, b])[-1] != expected.digest()


def test_every_reason_is_documented():
    """The reasons of docs/wire-format.md's checks table are exactly wire.REASONS."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[3] / "docs" / "wire-format.md").read_text()
    table = doc[doc.index("## Checks (receiver side)") : doc.index("## Memory")]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M))
    assert documented == set(wire.REASONS)
    assert len(wire.REASONS) == len(set(wire.REASONS))
