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
    assert struct.unpack_from("<H", raw, 4)[0] == 3
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


def test_a_version_2_message_is_refused_with_its_fix():
    """A simulation built with an older gensim (HMAC tags) is told to update its client."""
    raw = bytearray(encode_header(TOKEN, 1, 0, 0.0, SPECS))
    struct.pack_into("<H", raw, 4, 2)
    err = _expect(bytes(raw), "version")
    assert "version 2" in err.message and "older gensim" in err.message
    assert "rebuild clients/c" in err.message and "gensim.client" in err.message
    struct.pack_into("<H", raw, 4, wire.VERSION + 1)
    assert "newer gensim" in _expect(bytes(raw), "version").message


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
    # The study id and the ZAP password are public or semi-public, the message key secret: each
    # is a different HMAC of the key, so none gives another or the key.
    study, password, message_key = wire.study_id(KEY), wire.zap_password(KEY), wire.message_key(KEY)
    assert len(study) == 16 and len(password) == 64 and len(message_key) == 32
    assert study.hex() not in password.decode() and KEY.hex() not in password.decode()
    assert message_key.hex() not in password.decode() and message_key[:16] != study and message_key != KEY
    assert wire.study_id(KEY.hex()) == study and wire.study_id(bytes(32)) != study
    assert study == hmac.new(KEY, b"gensim study id", hashlib.sha256).digest()[:16]
    assert password == hmac.new(KEY, b"gensim zap password", hashlib.sha256).hexdigest().encode()
    assert message_key == hmac.new(KEY, b"gensim message key", hashlib.sha256).digest()


def _gmac(key: bytes, nonce: bytes, pieces: list[bytes]) -> bytes:
    """GMAC through cryptography's incremental GCM (another code path than wire's one-shot call)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    ctx = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    for piece in pieces:
        ctx.authenticate_additional_data(piece)
    ctx.finalize()
    return ctx.tag


def test_gmac_is_aes_256_gcm_of_the_standard():
    # NIST's GCM specification (McGrew and Viega), test case 13: AES-256, zero key and nonce,
    # nothing to encrypt or authenticate.
    assert _gmac(bytes(32), bytes(12), []).hex() == "530f8afbc74536b9a963b4f1c4cb738b"


def test_tag_is_a_nonce_and_the_gmac_over_lengths_and_frames():
    """The tag as docs/wire-format.md defines it, computed independently."""
    header = encode_header(TOKEN, 3, 4, 0.5, SPECS)
    a = np.arange(64 * 32, dtype="<f4").reshape(64, 32)
    b = np.linspace(0, 1, 360).reshape(3, 4, 5, 6)
    nonce = bytes(range(100, 112))
    mac = wire.new_mac(KEY, nonce_source=lambda n: nonce[:n])
    message_key = hmac.new(KEY, b"gensim message key", hashlib.sha256).digest()
    pieces = [piece for frame in (header, a.tobytes(), b.tobytes()) for piece in (struct.pack("<Q", len(frame)), frame)]
    expected = nonce + _gmac(message_key, nonce, pieces)
    frames = wire.sign(mac, [header, a, b])  # arrays read in place
    assert len(frames) == 4 and len(frames[-1]) == wire.TAG_BYTES == 28 and frames[-1] == expected
    assert wire.message_tag(mac, [header, a.tobytes(), b.tobytes()]) == expected
    assert mac.expected(frames) == expected  # the receiver's side: the nonce read from the tag
    # The lengths are in the tag: moving bytes between frames changes it.
    raw = a.tobytes() + b.tobytes()
    assert wire.message_tag(mac, [header, raw[:100], raw[100:]]) != expected
    assert wire.sign(wire.new_mac(bytes(32), nonce_source=lambda n: nonce[:n]), [header, a, b])[-1] != expected
    # The nonce is in the tag: another nonce, another GMAC (and a flipped nonce bit fails).
    flipped = bytes([nonce[0] ^ 1]) + expected[1:]
    assert mac.expected([header, a, b, flipped]) != flipped
    # No tag frame of the right size: nothing to compare with.
    assert mac.expected([header, a, b, expected[:-1]]) is None and mac.expected([header]) is None


@pytest.mark.parametrize("n", [10, 200])  # 0.4 and 160 KiB: one joined buffer, or fed piece by piece
def test_small_and_large_messages_get_the_same_gmac_as_one_shot_gcm(n):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header = encode_header(TOKEN, 3, 4, 0.5, [FieldSpec("a", (n, n), "float32"), FieldSpec("b", (n,), "float64")])
    a, b = np.arange(n * n, dtype="<f4").reshape(n, n), np.linspace(0, 1, n)
    nonce = bytes(range(12))
    joined = b"".join(struct.pack("<Q", len(f)) + f for f in (header, a.tobytes(), b.tobytes()))
    expected = AESGCM(wire.message_key(KEY)).encrypt(nonce, b"", joined)
    assert wire.new_mac(KEY, nonce_source=lambda k: nonce).tag([header, a, b]) == nonce + expected


def test_every_message_draws_a_fresh_nonce():
    """The default nonce source is the OS's: two tags of the same frames differ in nonce and GMAC."""
    mac = wire.new_mac(KEY)
    header = encode_header(TOKEN, 3, 4, 0.5, SPECS[:1])
    tags = {mac.tag([header]) for _ in range(64)}
    assert len(tags) == 64 and len({t[: wire.NONCE_BYTES] for t in tags}) == 64
    assert all(mac.expected([header, t]) == t for t in tags)
    with pytest.raises(ValueError, match="nonce source returned 8 bytes"):
        wire.new_mac(KEY, nonce_source=lambda n: bytes(8)).tag([header])


def test_every_reason_is_documented():
    """The reasons of docs/wire-format.md's checks table are exactly wire.REASONS."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parents[3] / "docs" / "wire-format.md").read_text()
    table = doc[doc.index("## Checks (receiver side)") : doc.index("## Memory")]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M))
    assert documented == set(wire.REASONS)
    assert len(wire.REASONS) == len(set(wire.REASONS))
