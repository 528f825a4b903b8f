"""Board link RTL: frame parser and encoder, command dispatcher, a pluggable core.

The link receives frames of :mod:`fpga.protocol` from a byte stream (the UART), checks them
completely (length, CRC) into a frame buffer before any side effect, executes the command
against a *core* and sends one reply frame. A malformed frame gets an ``ERR`` reply after the
line has been quiet for ``timeout`` cycles, then the link hunts for the next sync byte, so it
resynchronises after any corruption. The link is half duplex: bytes that arrive while a
command executes or a reply is sent are dropped (the host waits for every reply).

The core is any component with :func:`core_signature` (stream ports for guide, x/reduced,
y/restored and map, a register bus, ``start``) and two attributes, ``core_id`` and
``n_status``. The board runs the token-reduction unit through :class:`fpga.tru.TruCore`;
:class:`EchoCore` is a small stand-in with trivial datapaths (link tests, a quick bitstream);
:func:`make_core` is the one place that picks the core.
"""


from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.layouts import KIND_KEPT, guide_beat, map_entry, x_beat
from hw.params import OrbisParams, ParamError

from . import protocol as proto
from .uart import UARTRx, UARTTx, check_divisor

__all__ = ["reg_signature", "core_signature", "EchoCore", "Link", "LinkTop", "make_core",
           "CORE_KINDS", "beat_sizes"]

CORE_KINDS = ("echo", "tru")


def reg_signature() -> wiring.Signature:
    """Register bus, seen from the link (the master).

    A write is ``w_en`` with ``addr``/``w_data`` for one cycle. A read is ``r_en`` with
    ``addr`` for one cycle; ``r_data`` is valid the next cycle.
    """
    return wiring.Signature({
        "addr": Out(8), "w_data": Out(32), "w_en": Out(1), "r_en": Out(1), "r_data": In(32),
    })


def core_signature(p: OrbisParams) -> wiring.Signature:
    """Interface of a core the link drives, seen from the core."""
    xs = stream.Signature(x_beat(p))
    return wiring.Signature({
        "guide": In(stream.Signature(guide_beat(p))),
        "x": In(xs), "reduced": Out(xs),
        "y": In(xs), "restored": Out(xs),
        "map": Out(stream.Signature(map_entry(p))),
        "reg": In(reg_signature()),
        "start": In(1),
    })


def beat_sizes(p: OrbisParams) -> dict:
    """Bytes per beat on the wire for each stream."""
    return {
        "guide": proto.beat_bytes(Shape.cast(guide_beat(p)).width),
        "x": proto.beat_bytes(Shape.cast(x_beat(p)).width),
        "map": proto.beat_bytes(Shape.cast(map_entry(p)).width),
    }


def _crc16_byte(m, crc, byte):
    """CRC-16/CCITT-FALSE of one more byte, as an XOR network (no muxes)."""
    c = Signal(16, name="crc_x0")
    m.d.comb += c.eq(crc ^ Cat(Const(0, 8), byte))
    for i in range(8):
        # A signal per step keeps the expression tree linear in size.
        n = Signal(16, name=f"crc_x{i + 1}")
        m.d.comb += n.eq((c << 1)[:16] ^ (c[15].replicate(16) & 0x1021))
        c = n
    return c


class _Lfsr16:
    """Free-running 16-bit Galois LFSR (the stand-in core's stall pattern)."""

    def __init__(self, m, seed):
        self.state = Signal(16, init=seed)
        m.d.sync += self.state.eq(Cat(self.state[1:], 0) ^ (self.state[0].replicate(16)
                                                             & 0xB400))


class EchoCore(wiring.Component):
    """Stand-in core with the command semantics of the real unit, and trivial datapaths.

    - Configuration registers ``0x00 .. 0x0F``: 32-bit, read/write.
    - Status registers ``0x80 ..`` (:data:`fpga.protocol.STATUS`): ``CORE_ID`` = ``ECHO``,
      ``RUNS`` (accepted starts), ``GUIDE_BEATS``, ``X_BEATS``, ``Y_BEATS``, ``MAP_ENTRIES``,
      ``MAX_ABS`` (largest ``|g|`` of every guide element since reset), ``FLAGS`` (bit 0:
      map in progress). Other addresses read 0.
    - ``reduced`` echoes ``x`` and ``restored`` echoes ``y``, beat for beat.
    - ``start`` (ignored while a map is in progress) emits a map of ``min(F*H*W, N_max)``
      entries ``(KEPT, n, n)``, ``F, H, W`` from registers 0, 1, 2.

    Parameters
    ----------
    params : OrbisParams
    stall_seed : int or None
        When given, the core refuses input and delays output on a pseudo-random pattern
        (seeded LFSR), so tests exercise backpressure and the link's resend path.
    """

    core_id = proto.CORE_ECHO
    n_status = len(proto.STATUS)
    N_CONFIG = 16

    def __init__(self, params: OrbisParams, *, stall_seed: int | None = None):
        if not isinstance(params, OrbisParams):
            raise TypeError(f"params must be OrbisParams, not {type(params).__name__}")
        if stall_seed is not None and not 1 <= stall_seed <= 0xFFFF:
            raise ValueError(f"stall_seed must be in [1, 65535] or None, not {stall_seed!r}")
        self._p = params
        self._stall_seed = stall_seed
        super().__init__(core_signature(params))

    @property
    def params(self) -> OrbisParams:
        return self._p

    def elaborate(self, platform):
        m = Module()
        p = self._p
        if self._stall_seed is None:
            go_g = go_x = go_y = go_m = Const(1)
        else:
            lfsr = _Lfsr16(m, self._stall_seed).state
            go_g, go_x, go_y, go_m = (lfsr[0] | lfsr[5], lfsr[1] | lfsr[7], lfsr[2] | lfsr[9],
                                      lfsr[3] | lfsr[11])

        cfg = Array(Signal(32, name=f"cfg{i}") for i in range(self.N_CONFIG))
        runs, g_beats, x_beats, y_beats, m_entries, max_abs = (
            Signal(32, name=n) for n in ("runs", "g_beats", "x_beats", "y_beats",
                                         "m_entries", "max_abs"))
        busy = Signal()
        status = [Const(self.core_id, 32), runs, g_beats, x_beats, y_beats, m_entries, max_abs,
                  busy]

        reg = self.reg
        with m.If(reg.w_en & (reg.addr < self.N_CONFIG)):
            m.d.sync += cfg[reg.addr[:4]].eq(reg.w_data)
        with m.If(reg.r_en):
            with m.Switch(reg.addr):
                for i in range(self.N_CONFIG):
                    with m.Case(i):
                        m.d.sync += reg.r_data.eq(cfg[i])
                for i, s in enumerate(status):
                    with m.Case(proto.STATUS_BASE + i):
                        m.d.sync += reg.r_data.eq(s)
                with m.Default():
                    m.d.sync += reg.r_data.eq(0)

        # Guide: count beats, track the largest magnitude (as the real quantizer reports).
        # Two registered stages (element magnitudes, then a max tree) keep the path short.
        m.d.comb += self.guide.ready.eq(go_g)
        mags = [Signal(17, name=f"mag{k}") for k in range(p.L)]
        mags_v = Signal()
        m.d.sync += mags_v.eq(self.guide.valid & self.guide.ready)
        with m.If(self.guide.valid & self.guide.ready):
            m.d.sync += g_beats.eq(g_beats + 1)
            m.d.sync += [mg.eq(abs(self.guide.payload.data[k])) for k, mg in enumerate(mags)]
        level = [max_abs[:17]] + mags
        while len(level) > 1:
            nxt = []
            for a, b2 in zip(level[::2], level[1::2]):
                mx = Signal(17)
                m.d.comb += mx.eq(Mux(a > b2, a, b2))
                nxt.append(mx)
            level = nxt + ([level[-1]] if len(level) % 2 else [])
        with m.If(mags_v):
            m.d.sync += max_abs.eq(level[0])

        # x -> reduced and y -> restored: one registered stage each.
        for nm, i, o, cnt, go in (("x", self.x, self.reduced, x_beats, go_x),
                                  ("y", self.y, self.restored, y_beats, go_y)):
            v = Signal(name=f"{nm}_v")
            pl = Signal.like(i.payload)
            m.d.comb += [o.valid.eq(v), o.payload.eq(pl),
                         i.ready.eq((~v | o.ready) & go)]
            with m.If(o.valid & o.ready):
                m.d.sync += v.eq(0)
            with m.If(i.valid & i.ready):
                m.d.sync += [v.eq(1), pl.eq(i.payload), cnt.eq(cnt + 1)]

        # Map: identity entries after start.
        cb = p.count_bits
        n_total = Signal(cb + 1)
        # Registered products: the configuration is written long before start.
        prod1 = Signal(2 * cb)
        prod = Signal(3 * cb)
        m.d.sync += [prod1.eq(cfg[0][:cb] * cfg[1][:cb]), prod.eq(prod1 * cfg[2][:cb])]
        idx = Signal(cb + 1)
        mv = Signal()
        m.d.comb += [self.map.valid.eq(mv),
                     self.map.payload.kind.eq(KIND_KEPT),
                     self.map.payload.target.eq(idx),
                     self.map.payload.pos.eq(idx)]
        with m.If(self.start & ~busy):
            m.d.sync += [n_total.eq(Mux(prod > p.N_max, p.N_max, prod)), idx.eq(0), busy.eq(1),
                         runs.eq(runs + 1)]
        with m.Elif(busy):
            with m.If(mv):
                with m.If(self.map.ready):
                    m.d.sync += [mv.eq(0), idx.eq(idx + 1), m_entries.eq(m_entries + 1)]
            with m.Elif(idx == n_total):
                m.d.sync += busy.eq(0)
            with m.Elif(go_m):
                m.d.sync += mv.eq(1)
        return m




class Link(wiring.Component):
    """Frame parser, command dispatcher and reply encoder.

    Parameters
    ----------
    params : OrbisParams
        Generator parameters of the core (beat widths).
    core_id, n_status : int
        Reported by INFO; ``n_status`` registers from ``0x80`` are read by STATUS.
    max_payload : int
        Frame buffer size in bytes (largest LEN of a request or reply), ``[32, 65535]``.
    timeout : int
        Idle cycles inside a frame after which it is rejected as truncated; after an error
        the link also waits for this much silence before replying.
    grace : int
        Cycles without progress after which a stream command replies.
    clk_hz, baud : int
        Reported by INFO only.

    Members
    -------
    rx : In(stream.Signature(8))
        Received bytes (always ready).
    tx : Out(stream.Signature(8))
        Bytes to send.
    core : Out(flipped core_signature(params))
        Drives the core.
    core_reset : Out(1)
        One-cycle reset of the core (RESET command).
    busy : Out(1)
        Inside a frame, executing or replying.
    error : Out(1)
        One-cycle pulse per error reply.
    """

    def __init__(self, params: OrbisParams, *, core_id: int = 0, n_status: int = 8,
                 max_payload: int = 512, timeout: int = 1000, grace: int = 64,
                 clk_hz: int = 0, baud: int = 0):
        if not isinstance(params, OrbisParams):
            raise TypeError(f"params must be OrbisParams, not {type(params).__name__}")
        self._p = params
        self._sizes = beat_sizes(params)
        s = self._sizes
        if not 1 <= n_status <= 32:
            raise ValueError(f"n_status must be in [1, 32], not {n_status!r}")
        self._info = proto.Info(
            proto.PROTOCOL_VERSION, core_id, max_payload, n_status, params.N_max, params.D,
            params.B, params.L, params.Dx, params.Wx, params.Lx, params.NB, params.hist_mant,
            params.R,
            params.window, 0 if params.merge_mode == "replace" else 1, clk_hz, baud).encode()
        need = max(32, s["guide"], s["x"] + 2, s["map"] + 2, 4 * n_status, len(self._info))
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) \
                or not need <= max_payload <= 0xFFFF:
            raise ValueError(f"max_payload must be an integer in [{need}, 65535], "
                             f"not {max_payload!r}")
        for name, v in (("timeout", timeout), ("grace", grace)):
            if isinstance(v, bool) or not isinstance(v, int) or not 16 <= v <= 1 << 24:
                raise ValueError(f"{name} must be an integer in [16, 2**24] cycles, not {v!r}")
        self._core_id, self._n_status = core_id, n_status
        self._max_payload, self._timeout, self._grace = max_payload, timeout, grace
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "core": Out(core_signature(params).flip()),
            "core_reset": Out(1),
            "busy": Out(1),
            "error": Out(1),
        })

    @property
    def max_payload(self) -> int:
        return self._max_payload

    @property
    def info_bytes(self) -> bytes:
        return self._info

    def elaborate(self, platform):
        m = Module()
        p, sz, C = self._p, self._sizes, proto.Cmd
        maxp = self._max_payload
        core = self.core

        m.submodules.rx_buf = rx_buf = Memory(shape=8, depth=maxp, init=[])
        m.submodules.tx_buf = tx_buf = Memory(shape=8, depth=maxp, init=[])
        m.submodules.info_rom = info_rom = Memory(shape=8, depth=len(self._info),
                                                  init=list(self._info))
        rx_w, rx_r = rx_buf.write_port(), rx_buf.read_port()
        tx_w, tx_r = tx_buf.write_port(), tx_buf.read_port()
        info_r = info_rom.read_port()

        b = self.rx.payload
        got = self.rx.valid
        m.d.comb += self.rx.ready.eq(1)

        length = Signal(16)
        cmd = Signal(8)
        crc = Signal(16)
        crc_in = Signal(8)
        crc_lo = Signal(8)
        m.d.comb += crc_in.eq(b)
        crc_step = _crc16_byte(m, crc, crc_in)
        wptr = Signal(range(maxp + 1))
        unit_max = max(5, sz["guide"], sz["x"])
        modc = Signal(range(unit_max))
        idle = Signal(range(max(self._timeout, self._grace) + 1))
        err = Signal(8)
        reply_cmd = Signal(8)
        reply_len = Signal(16)
        tptr = Signal(range(maxp + 1))

        # Read pointers drive their port's address with the *next* value, so the port's data
        # is always the byte at the current pointer.
        rptr = Signal(range(maxp + 1))
        rptr_next = Signal(range(maxp + 1))
        m.d.comb += rptr_next.eq(rptr)
        m.d.sync += rptr.eq(rptr_next)
        m.d.comb += [rx_r.addr.eq(rptr_next), info_r.addr.eq(rptr_next)]
        sptr = Signal(range(maxp + 1))
        sptr_next = Signal(range(maxp + 1))
        m.d.sync += sptr.eq(sptr_next)
        m.d.comb += tx_r.addr.eq(sptr_next)

        # Bytes per input beat (and the length modulus) and per output beat, by command.
        unit = Signal(range(unit_max + 1))
        inb = Signal(range(unit_max + 1))
        outb = Signal(range(max(sz["x"], sz["map"]) + 1))
        with m.Switch(cmd):
            with m.Case(C.WRITE_REG):
                m.d.comb += unit.eq(5)
            with m.Case(C.GUIDE):
                m.d.comb += [unit.eq(sz["guide"]), inb.eq(sz["guide"])]
            with m.Case(C.X, C.Y):
                m.d.comb += [unit.eq(sz["x"]), inb.eq(sz["x"]), outb.eq(sz["x"])]
            with m.Case(C.MAP):
                m.d.comb += [unit.eq(1), outb.eq(sz["map"])]
            with m.Default():
                m.d.comb += unit.eq(1)

        # Stream holding registers: a beat counts as accepted once it is here; they keep
        # presenting it across commands until the core takes it (stream rules).
        ins = {"guide": (C.GUIDE, core.guide), "x": (C.X, core.x), "y": (C.Y, core.y)}
        in_w = max(sz["guide"], sz["x"]) * 8
        in_sr = Signal(in_w)
        asm_full = Signal()
        bidx = Signal(range(unit_max + 1))
        hold_clear = Signal()
        hold_free = Signal()
        acc = Signal(16)
        for name, (code, port) in ins.items():
            with m.If(port.valid & port.ready):
                m.d.sync += port.valid.eq(0)
            with m.If(hold_clear):
                m.d.sync += port.valid.eq(0)
            with m.If(cmd == code):
                m.d.comb += hold_free.eq(~port.valid)
        load = Signal()
        for name, (code, port) in ins.items():
            with m.If(load & (cmd == code)):
                m.d.sync += [port.valid.eq(1),
                             port.payload.eq(in_sr[:Shape.cast(port.payload.shape()).width])]

        outs = {C.X: core.reduced, C.Y: core.restored, C.MAP: core.map}
        out_valid = Signal()
        out_ready = Signal()
        out_w = max(sz["x"], sz["map"]) * 8
        out_pl = Signal(out_w)
        for code, port in outs.items():
            with m.If(cmd == code):
                m.d.comb += [out_valid.eq(port.valid), out_pl.eq(port.payload.as_value()),
                             port.ready.eq(out_ready)]
        osr = Signal(out_w)
        ocnt = Signal(range(out_w // 8 + 1))

        # Register reads and writes.
        wsr = Signal(40)
        wk = Signal(range(5))
        rsr = Signal(32)
        is_stat = Signal()

        timeout, grace = self._timeout, self._grace
        m.d.comb += self.busy.eq(1)

        def error(code, drain):
            m.d.sync += [err.eq(code), idle.eq(0)]
            m.next = "DRAIN" if drain else "ERR0"

        def frame_byte(nxt):
            """In a parse state: on a byte go on; on a quiet line reject as truncated."""
            with m.If(got):
                m.d.sync += idle.eq(0)
                m.next = nxt
            with m.Elif(idle == timeout):
                error(proto.Err.TIMEOUT, drain=False)
            with m.Else():
                m.d.sync += idle.eq(idle + 1)

        with m.FSM(name="link"):
            with m.State("HUNT"):
                m.d.comb += self.busy.eq(0)
                with m.If(got & (b == proto.SYNC)):
                    m.d.sync += [crc.eq(proto.CRC_INIT), idle.eq(0), cmd.eq(0)]
                    m.next = "LEN0"
            with m.State("LEN0"):
                frame_byte("LEN1")
                with m.If(got):
                    m.d.sync += [length[:8].eq(b), crc.eq(crc_step)]
            with m.State("LEN1"):
                frame_byte("CMD")
                with m.If(got):
                    m.d.sync += [length[8:].eq(b), crc.eq(crc_step)]
            with m.State("CMD"):
                frame_byte("CMD")
                with m.If(got):
                    m.d.sync += [cmd.eq(b), crc.eq(crc_step), wptr.eq(0), modc.eq(0)]
                    with m.If(length > maxp):
                        m.d.sync += cmd.eq(b)
                        error(proto.Err.OVERSIZE, drain=True)
                    with m.Elif(length == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                frame_byte("PAYLOAD")
                with m.If(got):
                    m.d.comb += [rx_w.addr.eq(wptr), rx_w.data.eq(b), rx_w.en.eq(1)]
                    m.d.sync += [crc.eq(crc_step), wptr.eq(wptr + 1),
                                 modc.eq(Mux(modc + 1 >= unit, 0, modc + 1))]
                    with m.If(wptr == length - 1):
                        m.next = "CRC0"
            with m.State("CRC0"):
                frame_byte("CRC1")
                with m.If(got):
                    m.d.sync += crc_lo.eq(b)
            with m.State("CRC1"):
                frame_byte("DISPATCH")
                with m.If(got & (Cat(crc_lo, b) != crc)):
                    error(proto.Err.CRC, drain=True)
            with m.State("DRAIN"):
                # Wait for the line to go quiet, so the rest of a bad frame is not mistaken
                # for the start of the next one.
                with m.If(got):
                    m.d.sync += idle.eq(0)
                with m.Elif(idle == timeout):
                    m.next = "ERR0"
                with m.Else():
                    m.d.sync += idle.eq(idle + 1)
            with m.State("ERR0"):
                m.d.comb += [tx_w.addr.eq(0), tx_w.data.eq(err), tx_w.en.eq(1)]
                m.next = "ERR1"
            with m.State("ERR1"):
                m.d.comb += [tx_w.addr.eq(1), tx_w.data.eq(cmd), tx_w.en.eq(1),
                             self.error.eq(1)]
                m.d.sync += [reply_cmd.eq(proto.ERR), reply_len.eq(2)]
                m.next = "SEND_SYNC"

            with m.State("DISPATCH"):
                m.d.sync += [reply_cmd.eq(cmd | proto.REPLY), reply_len.eq(0), tptr.eq(0),
                             idle.eq(0)]
                m.d.comb += rptr_next.eq(0)
                zero = length == 0
                with m.Switch(cmd):
                    with m.Case(C.PING):
                        m.next = "COPY_RX"
                    with m.Case(C.INFO):
                        with m.If(zero):
                            m.next = "COPY_INFO"
                        with m.Else():
                            error(proto.Err.LENGTH, drain=False)
                    with m.Case(C.RESET, C.RUN):
                        with m.If(zero):
                            m.d.comb += [self.core_reset.eq(cmd == C.RESET),
                                         hold_clear.eq(cmd == C.RESET),
                                         core.start.eq(cmd == C.RUN)]
                            m.next = "SEND_SYNC"
                        with m.Else():
                            error(proto.Err.LENGTH, drain=False)
                    with m.Case(C.WRITE_REG):
                        with m.If(modc == 0):
                            m.d.sync += wk.eq(0)
                            m.next = "WREG"
                        with m.Else():
                            error(proto.Err.LENGTH, drain=False)
                    with m.Case(C.READ_REG, C.STATUS):
                        with m.If((cmd == C.READ_REG) & (length <= maxp // 4)
                                  | (cmd == C.STATUS) & zero):
                            m.d.sync += is_stat.eq(cmd == C.STATUS)
                            m.next = "RREG"
                        with m.Else():
                            error(proto.Err.LENGTH, drain=False)
                    with m.Case(C.GUIDE, C.X, C.Y, C.MAP):
                        with m.If((modc == 0) & ((cmd != C.MAP) | zero)):
                            m.d.sync += [tptr.eq(2), acc.eq(0), asm_full.eq(0), bidx.eq(0),
                                         ocnt.eq(0)]
                            m.next = "XCHG"
                        with m.Else():
                            error(proto.Err.LENGTH, drain=False)
                    with m.Default():
                        error(proto.Err.UNKNOWN, drain=False)

            for state, src, n in (("COPY_RX", rx_r.data, length),
                                  ("COPY_INFO", info_r.data, len(self._info))):
                with m.State(state):
                    with m.If(rptr == n):
                        m.d.sync += reply_len.eq(n)
                        m.next = "SEND_SYNC"
                    with m.Else():
                        m.d.comb += [tx_w.addr.eq(rptr), tx_w.data.eq(src), tx_w.en.eq(1),
                                     rptr_next.eq(rptr + 1)]

            with m.State("WREG"):
                with m.If(rptr == length):
                    m.next = "SEND_SYNC"
                with m.Else():
                    m.d.sync += [wsr.word_select(wk, 8).eq(rx_r.data), wk.eq(wk + 1)]
                    m.d.comb += rptr_next.eq(rptr + 1)
                    with m.If(wk == 4):
                        m.d.sync += wk.eq(0)
                        m.next = "WREG_DO"
            with m.State("WREG_DO"):
                m.d.comb += [core.reg.addr.eq(wsr[:8]), core.reg.w_data.eq(wsr[8:]),
                             core.reg.w_en.eq(1)]
                m.next = "WREG"

            with m.State("RREG"):
                with m.If(rptr == Mux(is_stat, self._n_status, length)):
                    m.d.sync += reply_len.eq(tptr)
                    m.next = "SEND_SYNC"
                with m.Else():
                    m.d.comb += [core.reg.r_en.eq(1),
                                 core.reg.addr.eq(Mux(is_stat,
                                                          proto.STATUS_BASE + rptr[:8],
                                                          rx_r.data)),
                                 rptr_next.eq(rptr + 1)]
                    m.d.sync += wk.eq(0)
                    m.next = "RREG_CAP"
            with m.State("RREG_CAP"):
                m.d.sync += rsr.eq(core.reg.r_data)
                m.next = "RREG_W"
            with m.State("RREG_W"):
                m.d.comb += [tx_w.addr.eq(tptr), tx_w.data.eq(rsr.word_select(wk, 8)),
                             tx_w.en.eq(1)]
                m.d.sync += [tptr.eq(tptr + 1), wk.eq(wk + 1)]
                with m.If(wk == 3):
                    m.next = "RREG"

            with m.State("XCHG"):
                progress = Signal()
                full = Signal()
                in_done = (rptr == length) & ~asm_full
                m.d.comb += full.eq(out_valid & (ocnt == 0) & (tptr + outb > maxp))
                xdone = full | (idle == grace) | (in_done & (outb == 0))
                with m.If(xdone):
                    m.next = "XFIN0"
                with m.Else():
                    # Input: assemble a beat from the frame buffer, then hand it over.
                    with m.If(~asm_full & (rptr != length)):
                        m.d.sync += [in_sr.word_select(bidx, 8).eq(rx_r.data),
                                     bidx.eq(bidx + 1)]
                        m.d.comb += [rptr_next.eq(rptr + 1), progress.eq(1)]
                        with m.If(bidx == inb - 1):
                            m.d.sync += [asm_full.eq(1), bidx.eq(0)]
                    with m.If(asm_full & hold_free):
                        m.d.comb += [load.eq(1), progress.eq(1)]
                        m.d.sync += [asm_full.eq(0), acc.eq(acc + 1)]
                    # Output: take a beat when it fits, write it out byte by byte.
                    with m.If(ocnt == 0):
                        with m.If(out_valid & (tptr + outb <= maxp)):
                            m.d.comb += [out_ready.eq(1), progress.eq(1)]
                            m.d.sync += [osr.eq(out_pl), ocnt.eq(outb)]
                    with m.Else():
                        m.d.comb += [tx_w.addr.eq(tptr), tx_w.data.eq(osr[:8]),
                                     tx_w.en.eq(1), progress.eq(1)]
                        m.d.sync += [osr.eq(osr >> 8), ocnt.eq(ocnt - 1), tptr.eq(tptr + 1)]
                    m.d.sync += idle.eq(Mux(progress, 0, idle + 1))
            with m.State("XFIN0"):
                m.d.comb += [tx_w.addr.eq(0), tx_w.data.eq(acc[:8]), tx_w.en.eq(1)]
                m.next = "XFIN1"
            with m.State("XFIN1"):
                m.d.comb += [tx_w.addr.eq(1), tx_w.data.eq(acc[8:]), tx_w.en.eq(1)]
                m.d.sync += reply_len.eq(tptr)
                m.next = "SEND_SYNC"

            # Reply encoder.
            tx = self.tx
            with m.State("SEND_SYNC"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(proto.SYNC)]
                with m.If(tx.ready):
                    m.d.sync += crc.eq(proto.CRC_INIT)
                    m.next = "SEND_LEN0"
            for state, byte, nxt in (("SEND_LEN0", reply_len[:8], "SEND_LEN1"),
                                     ("SEND_LEN1", reply_len[8:], "SEND_CMD"),
                                     ("SEND_CMD", reply_cmd, None)):
                with m.State(state):
                    m.d.comb += [tx.valid.eq(1), tx.payload.eq(byte), crc_in.eq(byte)]
                    with m.If(tx.ready):
                        m.d.sync += crc.eq(crc_step)
                        if nxt:
                            m.next = nxt
                        else:
                            with m.If(reply_len == 0):
                                m.next = "SEND_CRC0"
                            with m.Else():
                                m.next = "SEND_PAY"
            with m.State("SEND_PAY"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(tx_r.data), crc_in.eq(tx_r.data)]
                with m.If(tx.ready):
                    m.d.sync += crc.eq(crc_step)
                    m.d.comb += sptr_next.eq(sptr + 1)
                    with m.If(sptr == reply_len - 1):
                        m.next = "SEND_CRC0"
                with m.Else():
                    m.d.comb += sptr_next.eq(sptr)
            with m.State("SEND_CRC0"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(crc[:8])]
                with m.If(tx.ready):
                    m.next = "SEND_CRC1"
            with m.State("SEND_CRC1"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(crc[8:])]
                with m.If(tx.ready):
                    m.next = "HUNT"
        return m






class LinkTop(wiring.Component):
    """Board-independent top: UART, link and core. The board tops wrap this.

    Parameters
    ----------
    params : OrbisParams
    core : wiring.Component or None
        A core with :func:`core_signature` and ``core_id``/``n_status`` attributes; ``None``
        builds ``make_core(params, "echo")`` (the stand-in).
    divisor : int
        Clock cycles per UART bit.
    max_payload, timeout, grace, clk_hz, baud
        See :class:`Link`.

    Members
    -------
    rx : In(1)
        UART line from the host.
    tx : Out(1)
        UART line to the host.
    busy, error : Out(1)
        For LEDs (``error`` is stretched to be visible).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    error: Out(1)

    def __init__(self, params: OrbisParams, *, core=None, divisor: int = 104,
                 max_payload: int = 512, timeout: int | None = None, grace: int | None = None,
                 clk_hz: int = 0, baud: int = 0, error_stretch: int = 1 << 20):
        self._p = params
        self._divisor = check_divisor(divisor)
        self._core = core if core is not None else make_core(params, "echo")
        # Defaults: a truncated frame is detected after ~40 idle bit times, a stream command
        # replies after ~20 bit times without progress.
        self._timeout = timeout if timeout is not None else 40 * divisor
        self._grace = grace if grace is not None else max(64, 20 * divisor)
        if self._timeout < 12 * divisor:
            raise ValueError(f"timeout ({self._timeout}) must be at least 12 bit times "
                             f"({12 * divisor} cycles), or every frame would time out")
        self._link_kw = dict(core_id=self._core.core_id, n_status=self._core.n_status,
                             max_payload=max_payload, timeout=self._timeout, grace=self._grace,
                             clk_hz=clk_hz, baud=baud)
        self._stretch = error_stretch
        # Validate now, not at elaboration.
        self._link = Link(params, **self._link_kw)
        super().__init__()

    @property
    def core(self):
        return self._core

    @property
    def link(self) -> Link:
        return self._link

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(self._divisor)
        m.submodules.uart_tx = utx = UARTTx(self._divisor)
        m.submodules.link = link = self._link
        core = self._core
        wiring.connect(m, urx.o, link.rx)
        wiring.connect(m, link.tx, utx.i)
        wiring.connect(m, link.core, core)
        m.submodules.core = ResetInserter({"sync": link.core_reset})(core)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), self.busy.eq(link.busy)]
        stretch = Signal(range(self._stretch + 1))
        with m.If(link.error):
            m.d.sync += stretch.eq(self._stretch)
        with m.Elif(stretch != 0):
            m.d.sync += stretch.eq(stretch - 1)
        m.d.comb += self.error.eq(stretch != 0)
        return m


def make_core(params: OrbisParams, kind: str = "echo", **kwargs):
    """Build the core the board runs: the one integration point for the real unit.

    ``"echo"`` is :class:`EchoCore` (the stand-in); ``"tru"`` is :class:`fpga.tru.TruCore`,
    the token-reduction unit (``hw.top.TokenReductionUnit``) behind the link's register map.
    ``kwargs`` go to the core's constructor.
    """
    if kind == "echo":
        return EchoCore(params, **kwargs)
    if kind == "tru":
        from .tru import TruCore
        return TruCore(params, **kwargs)
    raise ParamError(f"core must be one of {CORE_KINDS}, not {kind!r}")
