"""The token-reduction unit (:class:`hw.top.TokenReductionUnit`) behind the board link.

:class:`TruCore` adapts the unit to :func:`fpga.link.core_signature`: the link's register bus
becomes the unit's matcher configuration, its control pulses and its status; the link's
``start`` (command RUN) is the unit's ``match_start``; the five streams connect straight
through (same payload layouts).

Register map (addresses of :data:`fpga.protocol.REG`; writes are truncated to the field
width, reads return the stored field)::

    0x00 F, 0x01 H, 0x02 W         grid (count_bits each)
    0x03 WINDOW                    sf | sh << 8 | sw << 16 (5 bits each)
    0x04 MODE                      0 target r, 1 budget tau
    0x05 R, 0x06 TAU               target merges / budget distance
    0x07 SHIFT, 0x08 SEED          quantizer shift (5 bits), LFSR seed (16 bits, non-zero)
    0x09 ROUNDS, 0x0A QUOTA        coverage rounds (4 bits), promotions per round
    0x0B MERGE                     read-only: the elaborated merge mode (0 replace, 1 mean)
    0x0C FLAGS                     bit 0: calls reuse the front map (ORed with CTRL_REUSE)
    0x0D CTRL                      write-only pulses: CTRL_CALL, CTRL_REUSE, CTRL_MAP_READ,
                                   CTRL_CNT_CLEAR (fpga.protocol)

Status (``0x80 ..``, :data:`fpga.protocol.STATUS_TRU`): ``CORE_ID`` (``TRU1``), ``RUNS``
(accepted RUNs, i.e. matches started), ``GUIDE_BEATS``, ``X_BEATS``, ``Y_BEATS``,
``MAP_ENTRIES`` (beats transferred on each stream since reset), ``MAX_ABS`` (largest
``|g|`` of the last match), ``FLAGS`` (``fpga.protocol.FLAG_*``: busy bits, match error and
its code, fresh map, call error), ``R`` and ``N_TOKENS`` of the front map, and the unit's
cycle counters ``CYC_MATCH``, ``CYC_CALL``, ``CYC_OVERLAP``.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Signal, Value
from amaranth.lib import wiring

from hw.params import OrbisParams, ParamError

from . import protocol as proto
from .link import core_signature

__all__ = ["TruCore"]


class TruCore(wiring.Component):
    """:class:`hw.top.TokenReductionUnit` with the link's core interface.

    Parameters
    ----------
    params : OrbisParams
    count_bits : int
        Width of the beat counters ``RUNS`` .. ``MAP_ENTRIES`` (they wrap); 16 keeps the
        adapter small on the iCE40, the host only needs them modulo ``2**16``.

    Members
    -------
    tru : TokenReductionUnit
        The unit (reachable for simulation).
    """

    core_id = proto.CORE_TRU
    n_status = len(proto.STATUS_TRU)

    def __init__(self, params: OrbisParams, *, count_bits: int = 16):
        if not isinstance(params, OrbisParams):
            self._MustUse__silence = True      # a rejected component is not "unused"
            raise ParamError(f"params must be an OrbisParams, not {type(params).__name__}")
        if isinstance(count_bits, bool) or not isinstance(count_bits, int) \
                or not 1 <= count_bits <= 32:
            self._MustUse__silence = True
            raise ParamError(f"count_bits must be an integer in [1, 32], not {count_bits!r}")
        from hw.top import TokenReductionUnit
        self._p = params
        self._cnt_bits = count_bits
        self.tru = TokenReductionUnit(params)
        super().__init__(core_signature(params))

    @property
    def params(self) -> OrbisParams:
        return self._p

    def elaborate(self, platform):
        m = Module()
        p = self._p
        m.submodules.tru = tru = self.tru
        R, C = proto.REG, proto

        # Streams: same layouts on both sides.
        wiring.connect(m, wiring.flipped(self.guide), tru.guide)
        wiring.connect(m, wiring.flipped(self.x), tru.x)
        wiring.connect(m, tru.reduced, wiring.flipped(self.reduced))
        wiring.connect(m, wiring.flipped(self.y), tru.y)
        wiring.connect(m, tru.restored, wiring.flipped(self.restored))
        wiring.connect(m, tru.map, wiring.flipped(self.map))

        # Configuration: the unit's cfg struct is the register file itself (no copy), so a
        # field costs only its own width in flip-flops. The matcher samples it on start.
        cfg = Signal.like(tru.cfg)
        m.d.comb += tru.cfg.eq(cfg)
        reuse_flag = Signal()
        fields = {  # addr -> list of (field, bit offset in the 32-bit register)
            R["F"]: [(cfg.F, 0)], R["H"]: [(cfg.H, 0)], R["W"]: [(cfg.W, 0)],
            R["WINDOW"]: [(cfg.sf, 0), (cfg.sh, 8), (cfg.sw, 16)],
            R["MODE"]: [(cfg.budget, 0)], R["R"]: [(cfg.r, 0)], R["TAU"]: [(cfg.tau, 0)],
            R["SHIFT"]: [(cfg.shift, 0)], R["SEED"]: [(cfg.seed, 0)],
            R["ROUNDS"]: [(cfg.rounds, 0)], R["QUOTA"]: [(cfg.quota, 0)],
            R["FLAGS"]: [(reuse_flag, 0)],
        }
        reg = self.reg
        wd = reg.w_data
        with m.If(reg.w_en):
            with m.Switch(reg.addr):
                for addr, fl in fields.items():
                    with m.Case(addr):
                        for f, off in fl:
                            w = len(Value.cast(f))
                            m.d.sync += f.eq(wd[off:off + w])
        # CTRL: pulses for the cycle of the write.
        ctrl = reg.w_en & (reg.addr == R["CTRL"])
        m.d.comb += [
            tru.call_start.eq(ctrl & wd.bit_select(C.CTRL_CALL.bit_length() - 1, 1)),
            tru.call_reuse.eq(wd.bit_select(C.CTRL_REUSE.bit_length() - 1, 1) | reuse_flag),
            tru.map_read.eq(ctrl & wd.bit_select(C.CTRL_MAP_READ.bit_length() - 1, 1)),
            tru.cnt_clear.eq(ctrl & wd.bit_select(C.CTRL_CNT_CLEAR.bit_length() - 1, 1)),
            tru.match_start.eq(self.start),
        ]

        # Beat counters (wrap at 2**count_bits).
        cb = self._cnt_bits
        runs, g_beats, x_beats, y_beats, m_entries = (
            Signal(cb, name=n) for n in ("runs", "g_beats", "x_beats", "y_beats", "m_entries"))
        with m.If(self.start & ~tru.match_busy):
            m.d.sync += runs.eq(runs + 1)
        for cnt, port in ((g_beats, self.guide), (x_beats, self.x), (y_beats, self.y),
                          (m_entries, self.map)):
            with m.If(port.valid & port.ready):
                m.d.sync += cnt.eq(cnt + 1)

        flags = Signal(16)
        m.d.comb += [
            flags[0].eq(tru.match_busy | tru.call_busy | tru.map_busy),
            flags[1].eq(tru.match_busy), flags[2].eq(tru.call_busy),
            flags[3].eq(tru.map_busy), flags[4].eq(tru.match_error), flags[5].eq(tru.fresh),
            flags[C.FLAG_ERROR_CODE_SHIFT:C.FLAG_ERROR_CODE_SHIFT + 3].eq(tru.match_error_code),
            flags[C.FLAG_CALL_ERROR_SHIFT:C.FLAG_CALL_ERROR_SHIFT + 2].eq(tru.call_error),
        ]
        status = {
            "CORE_ID": Const(self.core_id, 32), "RUNS": runs, "GUIDE_BEATS": g_beats,
            "X_BEATS": x_beats, "Y_BEATS": y_beats, "MAP_ENTRIES": m_entries,
            "MAX_ABS": tru.max_abs, "FLAGS": flags, "R": tru.r, "N_TOKENS": tru.n_tokens,
            "CYC_MATCH": tru.cyc_match, "CYC_CALL": tru.cyc_call,
            "CYC_OVERLAP": tru.cyc_overlap,
        }
        assert list(status) == list(proto.STATUS_TRU)
        readable = {addr: fl for addr, fl in fields.items()}
        with m.If(reg.r_en):
            with m.Switch(reg.addr):
                for addr, fl in readable.items():
                    with m.Case(addr):
                        word = Signal(32, name=f"rd_{addr:02x}")
                        for f, off in fl:
                            m.d.comb += word[off:off + len(Value.cast(f))].eq(f)
                        m.d.sync += reg.r_data.eq(word)
                with m.Case(R["MERGE"]):
                    m.d.sync += reg.r_data.eq(0 if p.merge_mode == "replace" else 1)
                for i, s in enumerate(status.values()):
                    with m.Case(proto.STATUS_BASE + i):
                        m.d.sync += reg.r_data.eq(s)
                with m.Default():
                    m.d.sync += reg.r_data.eq(0)
        return m
