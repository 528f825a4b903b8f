"""Framed host protocol of the ORBIS board link: pure Python, transport-agnostic.

The same code runs against a board (a pyserial port, :mod:`fpga.host`) and against the
simulated board top (``tests/test_fpga_link.py``). Nothing here imports Amaranth.

Frame (both directions)::

    +------+--------+--------+-----+-------------------+--------+--------+
    | 0xA5 | LEN lo | LEN hi | CMD | PAYLOAD (LEN B)   | CRC lo | CRC hi |
    +------+--------+--------+-----+-------------------+--------+--------+

``CRC`` is CRC-16/CCITT-FALSE (polynomial 0x1021, init 0xFFFF, no reflection, no final xor)
over ``LEN lo, LEN hi, CMD, PAYLOAD``. A reply carries ``CMD | 0x80``; an error reply carries
``ERR`` (0xFF) with payload ``[code, offending CMD]``. See ``docs/fpga.md``.

Stream beats (guide, x, y, map) are sent as their payload's raw bits, least significant bit
first, padded to whole bytes (``beat_bytes``): an int16 vector is little-endian int16s.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

__all__ = [
    "SYNC", "REPLY", "ERR", "Cmd", "Err", "CRC_INIT", "crc16", "encode_frame", "Frame",
    "FrameDecoder", "LinkError", "ProtocolError", "Link", "Info", "INFO_MAGIC",
    "PROTOCOL_VERSION", "REG", "STATUS", "STATUS_TRU", "STATUS_BASE", "CORE_ECHO", "CORE_TRU",
    "CTRL_CALL", "CTRL_REUSE", "CTRL_MAP_READ", "CTRL_CNT_CLEAR", "FLAG_BUSY",
    "FLAG_MATCH_BUSY", "FLAG_CALL_BUSY", "FLAG_MAP_BUSY", "FLAG_MATCH_ERROR", "FLAG_FRESH",
    "FLAG_ERROR_CODE_SHIFT", "FLAG_CALL_ERROR_SHIFT",
    "pack_beats", "unpack_beats", "beat_bytes",
]

SYNC = 0xA5
REPLY = 0x80
ERR = 0xFF
CRC_INIT = 0xFFFF
PROTOCOL_VERSION = 1
INFO_MAGIC = b"ORBS"


class Cmd(enum.IntEnum):
    """Request commands (a reply carries ``cmd | 0x80``)."""

    PING = 0x01       #: echo the payload
    INFO = 0x02       #: link and core description (:class:`Info`)
    RESET = 0x03      #: reset the core
    WRITE_REG = 0x10  #: ``[addr u8, value u32 LE] * k``
    READ_REG = 0x11   #: ``[addr u8] * k`` -> ``[value u32 LE] * k``
    STATUS = 0x12     #: -> every status register ``0x80 ..`` as u32 LE
    RUN = 0x13        #: pulse the core's ``start``
    GUIDE = 0x20      #: guide beats in -> ``[accepted u16]``
    X = 0x21          #: x beats in -> ``[accepted u16] + reduced beats``
    Y = 0x22          #: y beats in -> ``[accepted u16] + restored beats``
    MAP = 0x23        #: -> ``[0 u16] + map entries``


class Err(enum.IntEnum):
    """Error codes of an ``ERR`` reply."""

    CRC = 1           #: CRC mismatch
    LENGTH = 2        #: payload length not valid for the command
    UNKNOWN = 3       #: unknown command
    OVERSIZE = 4      #: LEN larger than the link's buffer (``max_payload``)
    TIMEOUT = 5       #: the line went idle inside a frame (truncated frame)


# Configuration registers (written with WRITE_REG). The stand-in core stores 16 of them as
# plain read/write registers; the real unit's adapter maps them to its config fields.
REG = {
    "F": 0x00, "H": 0x01, "W": 0x02,
    "WINDOW": 0x03,   # sf | sh << 8 | sw << 16
    "MODE": 0x04,     # 0: target r, 1: budget tau
    "R": 0x05, "TAU": 0x06, "SHIFT": 0x07, "SEED": 0x08,
    "ROUNDS": 0x09, "QUOTA": 0x0A,
    "MERGE": 0x0B,    # 0: replace, 1: mean
    "FLAGS": 0x0C,    # bit 0: reuse the previous map (no matching)
    "CTRL": 0x0D,     # write-only pulses of the real unit (CTRL_* bits); reads 0
}
# Bits of the CTRL register (token-reduction unit): a write pulses the set bits for one cycle.
CTRL_CALL = 1 << 0        # call_start: merge x, then unmerge y, with the newest map
CTRL_REUSE = 1 << 1       # with CTRL_CALL: reuse the front map (call_reuse, matching cache)
CTRL_MAP_READ = 1 << 2    # map_read: the front map streams to MAP
CTRL_CNT_CLEAR = 1 << 3   # cnt_clear: zero the cycle counters
STATUS_BASE = 0x80
# Status registers common to every core (read with STATUS or READ_REG).
STATUS = ("CORE_ID", "RUNS", "GUIDE_BEATS", "X_BEATS", "Y_BEATS", "MAP_ENTRIES", "MAX_ABS",
          "FLAGS")
# The token-reduction unit's status registers: the common ones, then its own.
STATUS_TRU = STATUS + ("R", "N_TOKENS", "CYC_MATCH", "CYC_CALL", "CYC_OVERLAP")
# Bits of the FLAGS status register. Bit 0 is common (the core is busy); the rest are the
# token-reduction unit's (the stand-in reports only bit 0).
FLAG_BUSY = 1 << 0        # any of the following busy bits
FLAG_MATCH_BUSY = 1 << 1
FLAG_CALL_BUSY = 1 << 2
FLAG_MAP_BUSY = 1 << 3
FLAG_MATCH_ERROR = 1 << 4  # the matcher rejected the last RUN's configuration
FLAG_FRESH = 1 << 5        # a matched map waits in the back bank
FLAG_ERROR_CODE_SHIFT = 8  # bits 8..10: hw.matcher.MatcherError of the last RUN
FLAG_CALL_ERROR_SHIFT = 12  # bits 12..13: hw.top.CallError of the last call
CORE_ECHO = 0x4543484F   # "ECHO": the stand-in core of fpga.link
CORE_TRU = 0x54525531    # "TRU1": the token-reduction unit (hw.top)


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    """Return the CRC-16/CCITT-FALSE of ``data`` (``crc16(b"123456789") == 0x29B1``)."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def encode_frame(cmd: int, payload: bytes = b"") -> bytes:
    """Encode one frame (request or reply)."""
    payload = bytes(payload)
    if not 0 <= cmd <= 0xFF:
        raise ValueError(f"cmd must be a byte in [0, 255], not {cmd!r}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload must be at most 65535 bytes, not {len(payload)}")
    body = struct.pack("<HB", len(payload), cmd) + payload
    return bytes([SYNC]) + body + struct.pack("<H", crc16(body))


@dataclass(frozen=True)
class Frame:
    cmd: int
    payload: bytes
    crc_ok: bool = True


class FrameDecoder:
    """Incremental frame decoder (host side): feed bytes, collect :class:`Frame` objects.

    Bytes before a sync byte are skipped. A frame whose CRC does not match is returned with
    ``crc_ok=False``; a LEN above ``max_payload`` drops the sync byte and hunts again.
    """

    def __init__(self, max_payload: int = 0xFFFF):
        self.max_payload = max_payload
        self.buf = bytearray()
        self.skipped = 0

    def feed(self, data: bytes) -> list:
        self.buf += data
        frames = []
        while True:
            i = self.buf.find(SYNC)
            if i < 0:
                self.skipped += len(self.buf)
                self.buf.clear()
                return frames
            if i:
                self.skipped += i
                del self.buf[:i]
            if len(self.buf) < 4:
                return frames
            n, cmd = struct.unpack_from("<HB", self.buf, 1)
            if n > self.max_payload:
                self.skipped += 1
                del self.buf[:1]
                continue
            if len(self.buf) < 6 + n:
                return frames
            body = bytes(self.buf[1:4 + n])
            crc, = struct.unpack_from("<H", self.buf, 4 + n)
            frames.append(Frame(cmd, body[3:], crc16(body) == crc))
            del self.buf[:6 + n]

    def pending(self) -> int:
        return len(self.buf)


class ProtocolError(RuntimeError):
    """The reply was missing, corrupted or not the reply of the request."""


class LinkError(RuntimeError):
    """The board answered with an error reply."""

    def __init__(self, code: int, cmd: int):
        self.code, self.cmd = code, cmd
        try:
            name = Err(code).name
        except ValueError:
            name = f"code {code}"
        super().__init__(f"board rejected command 0x{cmd:02x}: {name}")


# ---------------------------------------------------------------------------------------------
# Beat packing

def beat_bytes(bits: int) -> int:
    return (bits + 7) // 8


def pack_beats(values, width: int, per_beat: int) -> bytes:
    """Pack integer elements (``width`` bits, two's complement) into beats of ``per_beat``.

    ``values`` is flattened; its length must be a multiple of ``per_beat``. Each beat is the
    little-endian byte string of its elements' bits, element 0 in the low bits.
    """
    v = np.asarray(values, dtype=np.int64).ravel()
    if v.size % per_beat:
        raise ValueError(f"{v.size} elements do not fill beats of {per_beat}")
    nb = beat_bytes(width * per_beat)
    if width % 8 == 0:
        # Fast path: whole bytes per element.
        u = (v & ((1 << width) - 1)).astype("<u8")
        b = u.view(np.uint8).reshape(-1, 8)[:, :width // 8]
        return b.reshape(-1, nb).tobytes()
    out = bytearray()
    mask = (1 << width) - 1
    for beat in v.reshape(-1, per_beat):
        acc = 0
        for k, e in enumerate(beat):
            acc |= (int(e) & mask) << (k * width)
        out += acc.to_bytes(nb, "little")
    return bytes(out)


def unpack_beats(data: bytes, width: int, per_beat: int, signed: bool = True) -> np.ndarray:
    """Inverse of :func:`pack_beats`: ``(beats, per_beat)`` int64 array."""
    nb = beat_bytes(width * per_beat)
    if len(data) % nb:
        raise ProtocolError(f"{len(data)} bytes are not whole beats of {nb} bytes")
    out = np.zeros((len(data) // nb, per_beat), dtype=np.int64)
    mask = (1 << width) - 1
    for i in range(len(data) // nb):
        acc = int.from_bytes(data[i * nb:(i + 1) * nb], "little")
        for k in range(per_beat):
            e = (acc >> (k * width)) & mask
            if signed and e >> (width - 1):
                e -= 1 << width
            out[i, k] = e
    return out


# ---------------------------------------------------------------------------------------------
# INFO reply

@dataclass(frozen=True)
class Info:
    """The INFO reply: what the host needs to talk to this board."""

    version: int
    core_id: int
    max_payload: int
    n_status: int
    N_max: int
    D: int
    B: int
    L: int
    Dx: int
    Wx: int
    Lx: int
    NB: int
    hist_mant: int
    R: int
    window: tuple
    merge_mode: int
    clk_hz: int
    baud: int

    FORMAT = "<4sBIHBIHBBHBBHBB3BBII"

    @classmethod
    def decode(cls, data: bytes) -> "Info":
        size = struct.calcsize(cls.FORMAT)
        if len(data) != size:
            raise ProtocolError(f"INFO reply has {len(data)} bytes, expected {size}")
        (magic, version, core_id, max_payload, n_status, N_max, D, B, L, Dx, Wx, Lx, NB, hist_mant,
         R, sf, sh, sw, merge_mode, clk_hz, baud) = struct.unpack(cls.FORMAT, data)
        if magic != INFO_MAGIC:
            raise ProtocolError(f"INFO magic is {magic!r}, expected {INFO_MAGIC!r}")
        return cls(version, core_id, max_payload, n_status, N_max, D, B, L, Dx, Wx, Lx, NB,
                   hist_mant, R, (sf, sh, sw), merge_mode, clk_hz, baud)

    def encode(self) -> bytes:
        return struct.pack(self.FORMAT, INFO_MAGIC, self.version, self.core_id,
                           self.max_payload, self.n_status, self.N_max, self.D, self.B, self.L,
                           self.Dx, self.Wx, self.Lx, self.NB, self.hist_mant, self.R,
                           *self.window,
                           self.merge_mode, self.clk_hz, self.baud)

    @property
    def idx_bits(self) -> int:
        return max(1, (self.N_max - 1).bit_length())

    @property
    def guide_beat_bytes(self) -> int:
        return beat_bytes(16 * self.L)

    @property
    def x_beat_bytes(self) -> int:
        return beat_bytes(self.Wx * self.Lx)

    @property
    def map_bits(self) -> int:
        return 2 + 2 * self.idx_bits

    @property
    def map_beat_bytes(self) -> int:
        return beat_bytes(self.map_bits)

    @property
    def core_name(self) -> str:
        return {CORE_ECHO: "echo (stand-in)", CORE_TRU: "token-reduction unit"}.get(
            self.core_id, f"0x{self.core_id:08x}")


# ---------------------------------------------------------------------------------------------
# Client

class Link:
    """Request/response client of the board link over any byte transport.

    Parameters
    ----------
    transport
        Object with ``write(data: bytes)`` and ``read(n: int, timeout: float) -> bytes``
        (returns fewer bytes on timeout): a pyserial port wrapper or a simulated line.
    timeout : float
        Seconds to wait for a reply (the transport may interpret it in simulated time).
    """

    def __init__(self, transport, *, timeout: float = 2.0, retries: int = 1000):
        self.t = transport
        self.timeout = timeout
        self.retries = retries
        self.info: Info | None = None
        self.stats = {"frames": 0, "bytes_out": 0, "bytes_in": 0, "resends": 0}

    # Frame layer ------------------------------------------------------------------------

    def send_raw(self, data: bytes):
        """Write raw bytes (tests use this for corrupted frames)."""
        self.stats["bytes_out"] += len(data)
        self.t.write(bytes(data))

    def read_frame(self, timeout: float | None = None) -> Frame:
        """Read one reply frame; raise :class:`ProtocolError` on a timeout or a bad CRC."""
        timeout = self.timeout if timeout is None else timeout
        skipped = 0
        while True:
            b = self.t.read(1, timeout)
            if not b:
                raise ProtocolError(f"no reply within {timeout} s")
            if b[0] == SYNC:
                break
            skipped += 1
            if skipped > 1 << 16:
                raise ProtocolError("no sync byte in 64 KiB of line noise")
        head = self.t.read(3, timeout)
        if len(head) < 3:
            raise ProtocolError("truncated reply header")
        n, cmd = struct.unpack("<HB", head)
        rest = self.t.read(n + 2, timeout)
        if len(rest) < n + 2:
            raise ProtocolError(f"truncated reply: {len(rest)} of {n + 2} bytes")
        self.stats["bytes_in"] += 6 + n
        payload, (crc,) = rest[:n], struct.unpack("<H", rest[n:])
        if crc16(head + payload) != crc:
            raise ProtocolError("reply CRC mismatch")
        return Frame(cmd, payload)

    def request(self, cmd: int, payload: bytes = b"") -> bytes:
        """Send one request and return the reply payload; raise :class:`LinkError` on ERR."""
        self.send_raw(encode_frame(cmd, payload))
        self.stats["frames"] += 1
        f = self.read_frame()
        if f.cmd == ERR:
            if len(f.payload) != 2:
                raise ProtocolError(f"malformed error reply {f.payload.hex()}")
            raise LinkError(f.payload[0], f.payload[1])
        if f.cmd != (cmd | REPLY):
            raise ProtocolError(f"reply 0x{f.cmd:02x} to command 0x{cmd:02x}")
        return f.payload

    # Commands -----------------------------------------------------------------------------

    def ping(self, payload: bytes = b"") -> bytes:
        return self.request(Cmd.PING, payload)

    def get_info(self) -> Info:
        self.info = Info.decode(self.request(Cmd.INFO))
        if self.info.version != PROTOCOL_VERSION:
            raise ProtocolError(f"board speaks protocol {self.info.version}, "
                                f"host {PROTOCOL_VERSION}")
        return self.info

    def reset(self):
        self.request(Cmd.RESET)

    def run(self):
        self.request(Cmd.RUN)

    def _need_info(self) -> Info:
        return self.info or self.get_info()

    def write_regs(self, regs: dict):
        """Write configuration registers ``{addr or name: value}``."""
        items = [(REG[a] if isinstance(a, str) else a, v) for a, v in regs.items()]
        per = self._need_info().max_payload // 5
        for i in range(0, len(items), per):
            self.request(Cmd.WRITE_REG, b"".join(struct.pack("<BI", a, v & 0xFFFFFFFF)
                                                 for a, v in items[i:i + per]))

    def control(self, bits: int):
        """Write the CTRL register: pulse the unit's ``CTRL_*`` inputs for one cycle."""
        self.write_regs({"CTRL": bits})

    def read_regs(self, addrs) -> list:
        addrs = [REG[a] if isinstance(a, str) else a for a in addrs]
        per = self._need_info().max_payload // 4
        out = []
        for i in range(0, len(addrs), per):
            chunk = addrs[i:i + per]
            r = self.request(Cmd.READ_REG, bytes(chunk))
            if len(r) != 4 * len(chunk):
                raise ProtocolError(f"READ_REG reply has {len(r)} bytes for {len(chunk)} regs")
            out += list(struct.unpack(f"<{len(chunk)}I", r))
        return out

    def status(self) -> dict:
        r = self.request(Cmd.STATUS)
        n = len(r) // 4
        vals = struct.unpack(f"<{n}I", r[:4 * n])
        known = STATUS_TRU if self.info is not None and self.info.core_id == CORE_TRU else STATUS
        names = list(known) + [f"S{STATUS_BASE + i:02X}" for i in range(len(known), n)]
        return dict(zip(names, vals))

    def exchange(self, cmd: int, data: bytes, in_bytes: int, out_bytes: int,
                 want_out: int | None = None) -> bytes:
        """Push ``data`` (whole beats of ``in_bytes``) through a stream command.

        Frames carry as many beats as fit; beats the board did not accept are sent again.
        Output beats are collected until ``want_out`` beats arrived (when given) and all input
        was accepted. Raises :class:`ProtocolError` when the board makes no progress for
        ``retries`` frames in a row.
        """
        info = self._need_info()
        if in_bytes and len(data) % in_bytes:
            raise ValueError(f"{len(data)} bytes are not whole beats of {in_bytes} bytes")
        out = bytearray()
        sent = 0
        idle = 0
        per = (info.max_payload // in_bytes) * in_bytes if in_bytes else 0
        while True:
            got = len(out) // out_bytes if out_bytes else 0
            if sent >= len(data) and (want_out is None or got >= want_out):
                return bytes(out)
            chunk = data[sent:sent + per] if in_bytes else b""
            r = self.request(cmd, chunk)
            if len(r) < 2:
                raise ProtocolError(f"stream reply of {len(r)} bytes")
            acc, = struct.unpack_from("<H", r)
            if in_bytes and acc * in_bytes > len(chunk):
                raise ProtocolError(f"board accepted {acc} beats of {len(chunk) // in_bytes}")
            if out_bytes and (len(r) - 2) % out_bytes:
                raise ProtocolError(f"stream reply has a partial beat ({len(r) - 2} bytes)")
            sent += acc * in_bytes
            out += r[2:]
            if in_bytes and acc * in_bytes < len(chunk):
                self.stats["resends"] += 1
            progress = acc or len(r) > 2
            idle = 0 if progress else idle + 1
            if idle >= self.retries:
                raise ProtocolError(f"no progress on command 0x{cmd:02x} after {idle} frames "
                                    f"({sent}/{len(data)} bytes in, {got} beats out)")
            if not in_bytes and want_out is None and not progress:
                return bytes(out)

    def load_guide(self, g) -> None:
        """Load guide features ``g`` (``(N, D)`` int16) in token order, chunk order."""
        info = self._need_info()
        g = np.asarray(g)
        if g.ndim != 2 or g.shape[1] != info.D:
            raise ValueError(f"guide must have shape (N, D={info.D}), got {g.shape}")
        self.exchange(Cmd.GUIDE, pack_beats(g, 16, info.L), info.guide_beat_bytes, 0)

    def _xy(self, cmd, v, n_out) -> np.ndarray:
        info = self._need_info()
        v = np.asarray(v)
        if v.ndim != 2 or v.shape[1] != info.Dx:
            raise ValueError(f"activations must have shape (tokens, Dx={info.Dx}), got {v.shape}")
        per_tok = info.Dx // info.Lx
        raw = self.exchange(cmd, pack_beats(v, info.Wx, info.Lx), info.x_beat_bytes,
                            info.x_beat_bytes, n_out * per_tok)
        return unpack_beats(raw, info.Wx, info.Lx).reshape(-1, info.Dx)

    def stream_x(self, x, n_out: int) -> np.ndarray:
        """Stream ``x`` (``(N, Dx)``) in; return the ``n_out`` reduced tokens."""
        return self._xy(Cmd.X, x, n_out)

    def stream_y(self, y, n_out: int) -> np.ndarray:
        """Stream ``y`` (``(N - r, Dx)``) in; return the ``n_out`` restored tokens."""
        return self._xy(Cmd.Y, y, n_out)

    def read_map(self, n: int):
        """Read ``n`` map entries; return ``(kind, target, pos)`` arrays."""
        info = self._need_info()
        raw = self.exchange(Cmd.MAP, b"", 0, info.map_beat_bytes, n)
        e = unpack_beats(raw, info.map_bits, 1, signed=False)[:, 0]
        ib = info.idx_bits
        return e & 3, (e >> 2) & ((1 << ib) - 1), (e >> (2 + ib)) & ((1 << ib) - 1)
