"""Pure-Python frame layer of the board link, against independent references."""

import binascii
import random
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fpga import protocol as proto

SEED = 1234


def test_crc_check_value():
    assert proto.crc16(b"123456789") == 0x29B1


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_crc_matches_binascii(data):
    # binascii.crc_hqx is CRC-CCITT (poly 0x1021, MSB first); with init 0xFFFF it is
    # CRC-16/CCITT-FALSE.
    assert proto.crc16(data) == binascii.crc_hqx(data, 0xFFFF)


def test_frame_layout():
    f = proto.encode_frame(0x21, b"\x01\x02\x03")
    body = bytes([3, 0, 0x21, 1, 2, 3])
    assert f == bytes([0xA5]) + body + struct.pack("<H", binascii.crc_hqx(body, 0xFFFF))
    with pytest.raises(ValueError, match="cmd"):
        proto.encode_frame(256)
    with pytest.raises(ValueError, match="payload"):
        proto.encode_frame(1, bytes(65536))


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40), st.binary(max_size=5)),
                max_size=8), st.integers(0, 2**32 - 1))
@settings(max_examples=100, deadline=None)
def test_decoder_resyncs(frames, seed):
    """Frames separated by noise without sync bytes decode, in any chunking."""
    stream = b""
    for cmd, payload, noise in frames:
        stream += noise.replace(bytes([proto.SYNC]), b"") + proto.encode_frame(cmd, payload)
    dec = proto.FrameDecoder()
    rng = random.Random(seed)
    got, i = [], 0
    while i < len(stream):
        n = rng.randint(1, 17)
        got += dec.feed(stream[i:i + n])
        i += n
    assert [(f.cmd, f.payload, f.crc_ok) for f in got] == [(c, p, True) for c, p, _ in frames]


def test_decoder_flags_bad_crc_and_skips_oversize():
    good = proto.encode_frame(1, b"abc")
    bad = bytearray(good)
    bad[5] ^= 4
    dec = proto.FrameDecoder(max_payload=16)
    over = bytes([proto.SYNC, 200, 0, 1])
    frames = dec.feed(bytes(bad) + over + good)
    assert [(f.payload, f.crc_ok) for f in frames] == [(b"afc", False), (b"abc", True)]


@pytest.mark.parametrize("width,per", [(4, 3), (8, 8), (12, 5), (16, 4), (18, 1), (7, 9)])
def test_pack_matches_naive(width, per):
    rng = np.random.default_rng(SEED + width)
    v = rng.integers(-(1 << (width - 1)), 1 << (width - 1), (6, per))
    raw = proto.pack_beats(v, width, per)
    # Naive: a little-endian bit string per beat, element k at bits [k*width, (k+1)*width).
    nb = (width * per + 7) // 8
    want = b""
    for beat in v:
        bits = []
        for e in beat:
            bits += [(int(e) >> i) & 1 for i in range(width)]
        bits += [0] * (8 * nb - len(bits))
        want += bytes(sum(bits[8 * j + i] << i for i in range(8)) for j in range(nb))
    assert raw == want
    assert np.array_equal(proto.unpack_beats(raw, width, per), v)


def test_info_roundtrip():
    i = proto.Info(1, proto.CORE_ECHO, 512, 8, 256, 16, 4, 4, 8, 8, 8, 32, 2, 1, (2, 2, 2), 0,
                   12_000_000, 115200)
    assert proto.Info.decode(i.encode()) == i
    with pytest.raises(proto.ProtocolError, match="magic"):
        proto.Info.decode(b"XXXX" + i.encode()[4:])


class FakeBoard:
    """A transport that answers PING with an echo, anything else with an error reply,
    and can corrupt its next reply."""

    simulated = True

    def __init__(self):
        self.dec = proto.FrameDecoder()
        self.out = b""
        self.corrupt = False

    def write(self, data):
        for f in self.dec.feed(data):
            if f.cmd == proto.Cmd.PING:
                r = bytearray(proto.encode_frame(f.cmd | proto.REPLY, f.payload))
            else:
                r = bytearray(proto.encode_frame(proto.ERR, bytes([proto.Err.UNKNOWN, f.cmd])))
            if self.corrupt:
                r[-1] ^= 1
                self.corrupt = False
            self.out += b"\x00\x13" + bytes(r)      # line noise before the reply

    def read(self, n, timeout=None):
        r, self.out = self.out[:n], self.out[n:]
        return r


def test_link_client():
    board = FakeBoard()
    link = proto.Link(board)
    assert link.ping(b"\xa5hello") == b"\xa5hello"
    with pytest.raises(proto.LinkError, match="UNKNOWN") as e:
        link.request(0x42, b"")
    assert (e.value.code, e.value.cmd) == (proto.Err.UNKNOWN, 0x42)
    board.corrupt = True
    with pytest.raises(proto.ProtocolError, match="CRC"):
        link.ping(b"x")
    with pytest.raises(proto.ProtocolError, match="no reply"):
        link.read_frame()
    assert link.ping(b"again") == b"again"
