"""The board top's logic (UART, link, core) in the Amaranth simulator, driven by the host's
own protocol code (:class:`fpga.protocol.Link`) through a simulated serial line.

The stand-in core's semantics are checked against a naive model written here; every error
case must produce its error reply and leave the link working.
"""

import os
import random

import numpy as np
import pytest

from fpga import protocol as proto
from fpga.link import EchoCore, LinkTop
from fpga.simline import SimLine
from hw.layouts import KIND_KEPT
from hw.params import preset

SEED = int(os.environ.get("ORBIS_SEED", "20250607"))
DIVISOR = 4          # clocks per UART bit
MAX_PAYLOAD = 64     # small frames, so streams need several frames and the resend path


# D = 8 halves the guide bytes (simulation time); the link logic does not depend on D.
PARAMS = preset("ice40-small", D=8)


@pytest.fixture(scope="module")
def board():
    print(f"seed {SEED}")
    top = LinkTop(PARAMS, core=EchoCore(PARAMS, stall_seed=0x1D2C), divisor=DIVISOR,
                  max_payload=MAX_PAYLOAD, clk_hz=1_000_000, baud=1_000_000 // DIVISOR)
    line = SimLine(top, divisor=DIVISOR, seed=SEED)
    link = proto.Link(line, retries=50)
    link.get_info()
    yield top, line, link
    print(f"simulated {line.cycles} cycles")
    line.close()


def test_info(board):
    top, line, link = board
    i = link.info
    assert (i.version, i.core_id, i.max_payload, i.n_status) == (
        proto.PROTOCOL_VERSION, proto.CORE_ECHO, MAX_PAYLOAD, len(proto.STATUS))
    assert (i.N_max, i.D, i.B, i.L, i.Dx, i.Wx, i.Lx, i.NB, i.R, i.window) == (
        PARAMS.N_max, PARAMS.D, PARAMS.B, PARAMS.L, PARAMS.Dx, PARAMS.Wx, PARAMS.Lx,
        PARAMS.NB, PARAMS.R, PARAMS.window)
    assert (i.clk_hz, i.baud) == (1_000_000, 250_000)


def test_ping(board):
    top, line, link = board
    rng = np.random.default_rng(SEED)
    for n in (0, 1, 2, MAX_PAYLOAD - 1, MAX_PAYLOAD, int(rng.integers(3, MAX_PAYLOAD))):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        # Sync bytes inside the payload must not confuse anything.
        data = data[:n // 2] + bytes([proto.SYNC]) * min(n, 1) + data[n // 2 + 1:] if n else data
        assert link.ping(data) == data
    assert line.framing_errors == 0


def test_registers(board):
    top, line, link = board
    rng = random.Random(SEED + 1)
    model = {}
    for _ in range(2):
        vals = {a: rng.getrandbits(32) for a in rng.sample(range(16), 16)}
        vals[rng.randrange(16)] = 0xFFFFFFFF
        link.write_regs(vals)
        model.update(vals)
    # Writes outside the configuration file are ignored.
    link.write_regs({0x10: 123, 0x80: 456, 0xFF: 789})
    addrs = list(range(16)) + [0x10, 0x7F, 0xFF, proto.STATUS_BASE]
    rng.shuffle(addrs)
    got = link.read_regs(addrs)
    want = [model.get(a, proto.CORE_ECHO if a == proto.STATUS_BASE else 0) for a in addrs]
    assert got == want


def _status(link):
    return link.status()


def test_guide_status(board):
    top, line, link = board
    link.reset()
    st0 = _status(link)
    assert st0["GUIDE_BEATS"] == 0 and st0["MAX_ABS"] == 0 and st0["CORE_ID"] == proto.CORE_ECHO
    rng = np.random.default_rng(SEED + 2)
    g = rng.integers(-3000, 3000, (6, PARAMS.D)).astype(np.int16)
    link.load_guide(g)
    st = _status(link)
    assert st["GUIDE_BEATS"] == g.size // PARAMS.L
    assert st["MAX_ABS"] == int(np.abs(g.astype(np.int64)).max())
    g2 = np.zeros((2, PARAMS.D), dtype=np.int16)
    g2[1, 3] = -32768                       # |g| = 32768 needs 17 bits
    link.load_guide(g2)
    st = _status(link)
    assert st["GUIDE_BEATS"] == (g.size + g2.size) // PARAMS.L
    assert st["MAX_ABS"] == 32768


def test_run_map(board):
    top, line, link = board
    link.reset()
    for F, H, W in ((1, 3, 5), (2, 2, 2), (1, 1, 1)):
        link.write_regs({"F": F, "H": H, "W": W})
        link.run()
        kind, target, pos = link.read_map(F * H * W)
        n = np.arange(F * H * W)
        assert (kind == KIND_KEPT).all() and (target == n).all() and (pos == n).all()
        # Nothing more comes out.
        assert link.exchange(proto.Cmd.MAP, b"", 0, link.info.map_beat_bytes) == b""
    st = _status(link)
    assert st["RUNS"] == 3 and st["MAP_ENTRIES"] == 15 + 8 + 1 and st["FLAGS"] == 0


def test_stream_echo(board):
    top, line, link = board
    link.reset()
    rng = np.random.default_rng(SEED + 3)
    lim = 1 << (PARAMS.Wx - 1)
    x = rng.integers(-lim, lim, (23, PARAMS.Dx))
    x[0] = -lim
    x[1] = lim - 1
    before = dict(link.stats)
    red = link.stream_x(x, len(x))
    assert np.array_equal(red, x)
    y = rng.integers(-lim, lim, (9, PARAMS.Dx))
    assert np.array_equal(link.stream_y(y, len(y)), y)
    st = _status(link)
    beats = PARAMS.Dx // PARAMS.Lx
    assert st["X_BEATS"] == len(x) * beats and st["Y_BEATS"] == len(y) * beats
    # The reply buffer holds fewer beats than a full request, so replies lag the input and
    # the host collects the rest with more frames.
    print(f"frames {link.stats['frames'] - before['frames']}, "
          f"resends {link.stats['resends'] - before['resends']}")


def _expect_error(link, line, raw, code, cmd=None, quiet=0):
    link.send_raw(raw)
    if quiet:
        line.quiet(quiet)
    f = link.read_frame()
    assert f.cmd == proto.ERR, f
    assert f.payload[0] == code, (proto.Err(f.payload[0]), code)
    if cmd is not None:
        assert f.payload[1] == cmd
    # The next command succeeds.
    assert link.ping(b"after") == b"after"


def test_errors_resync(board):
    top, line, link = board
    link.reset()
    C, E = proto.Cmd, proto.Err
    good = proto.encode_frame(C.PING, b"hello, board")
    # Corrupted payload bit, corrupted CRC, corrupted length byte.
    bad = bytearray(good)
    bad[6] ^= 0x10
    _expect_error(link, line, bytes(bad), E.CRC, C.PING)
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    _expect_error(link, line, bytes(bad), E.CRC, C.PING)
    # A corrupted frame that carries stream data has no side effect.
    x = np.arange(PARAMS.Dx).reshape(1, -1)
    xf = bytearray(proto.encode_frame(C.X, proto.pack_beats(x, PARAMS.Wx, PARAMS.Lx)))
    xf[5] ^= 1
    _expect_error(link, line, bytes(xf), E.CRC, C.X)
    assert _status(link)["X_BEATS"] == 0
    # Truncated frames: cut in the payload, in the header, right after the sync byte.
    for cut in (len(good) - 3, 3, 1):
        _expect_error(link, line, good[:cut], E.TIMEOUT)
    # Oversized: LEN above the buffer, with the bytes that follow it.
    over = proto.encode_frame(C.PING, bytes(range(256))[:MAX_PAYLOAD + 1])
    _expect_error(link, line, over, E.OVERSIZE, C.PING)
    over = proto.encode_frame(C.GUIDE, bytes([proto.SYNC]) * (MAX_PAYLOAD + 24))
    _expect_error(link, line, over, E.OVERSIZE, C.GUIDE)
    # Unknown command, payload length not valid for the command.
    _expect_error(link, line, proto.encode_frame(0x55, b"abc"), E.UNKNOWN, 0x55)
    _expect_error(link, line, proto.encode_frame(C.WRITE_REG, b"\x00\x01\x02\x03"),
                  E.LENGTH, C.WRITE_REG)
    _expect_error(link, line, proto.encode_frame(C.INFO, b"\x00"), E.LENGTH, C.INFO)
    _expect_error(link, line, proto.encode_frame(C.RUN, b"\x00"), E.LENGTH, C.RUN)
    _expect_error(link, line, proto.encode_frame(C.STATUS, b"\x00"), E.LENGTH, C.STATUS)
    _expect_error(link, line, proto.encode_frame(C.MAP, b"\x00"), E.LENGTH, C.MAP)
    _expect_error(link, line, proto.encode_frame(C.GUIDE, b"\x00" * 7), E.LENGTH, C.GUIDE)
    _expect_error(link, line, proto.encode_frame(C.READ_REG, bytes(MAX_PAYLOAD // 4 + 1)),
                  E.LENGTH, C.READ_REG)
    # Line noise without a sync byte before a frame is skipped silently.
    link.send_raw(bytes([0x00, 0x13, 0xFF, 0x5A]))
    assert link.ping(b"noise") == b"noise"
    st = _status(link)
    assert st["X_BEATS"] == 0 and st["RUNS"] == 0 and st["GUIDE_BEATS"] == 0
    assert line.framing_errors == 0


def test_host_driver_run(board):
    """The CLI's reduction routine on real-video tokens, with the stand-in's expected results."""
    from fpga import host
    top, line, link = board
    summary = host.run_reduction(link, grid=(1, 2, 4), seed=SEED, source="video",
                                 log=lambda *a: None)
    print(summary)
    assert summary["ok"], summary
    assert summary["checked"] == ["map", "reduced", "restored", "status"]
