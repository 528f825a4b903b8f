"""Histogram of distances with the golden model's bin code (DESIGN.md section 3 step 4).

The code (see :func:`golden.core.hist_code`) is, for ``v = d >> c`` and ``e = bitlen(v)``::

    code = v                                                if e <= M + 1
    code = ((e - M) << M) | ((v >> (e - M - 1)) & (2**M - 1))   otherwise

clamped to ``NB - 1``; a leading-one detector and two barrel shifters, no divider. The range
shift ``c`` of a round is ``max(0, bitlen(dmax) - E)`` with ``E = NB / 2**M + M - 1``
(:func:`hist_shift`), so the caller needs the round's largest distance before binning: the
matcher keeps a distance table and bins it in a second pass once ``dmax`` is known.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .dstinit import check_params
from .params import OrbisParams, ceil_log2

__all__ = ["bitlen", "hist_code", "hist_code_from", "hist_shift", "bin_beat", "Histogram"]


def bitlen(v, width=None):
    """Bit length of the unsigned value ``v`` (0 for 0): a leading-one detector.

    A balanced tree (halves padded to a power of two): ``log2(width)`` levels of 2:1
    multiplexers on the index of the leading one, instead of a ``width``-long priority chain.
    """
    width = len(v) if width is None else width
    if width == 0:
        return Const(0, 1)
    n = 1 << ceil_log2(width)
    bits = Cat(v[:width], Const(0, n - width)) if n > width else v[:width]

    def msb(lo, size):
        # (any bit set, index of the leading one within bits[lo : lo + size])
        if size == 1:
            return bits[lo], Const(0, 0)
        half = size // 2
        any_lo, i_lo = msb(lo, half)
        any_hi, i_hi = msb(lo + half, half)
        return any_lo | any_hi, Mux(any_hi, Cat(i_hi, Const(1, 1)), Cat(i_lo, Const(0, 1)))

    nz, idx = msb(0, n)
    return Mux(nz, idx + 1, 0)[:width.bit_length()]


def hist_shift(params: OrbisParams, dmax):
    """Range shift ``c = max(0, bitlen(dmax) - E)`` of a round (an Amaranth expression)."""
    E = params.NB // (1 << params.hist_mant) + params.hist_mant - 1
    e = bitlen(dmax)
    return Mux(e > E, e - E, 0)


def hist_code(params: OrbisParams, d, c):
    """Histogram code of distance ``d`` at range shift ``c``, ``0 .. NB-1`` (expression).

    One combinational expression; pipelines split it as :func:`hist_code_from` applied to
    registered ``v = d >> c`` and ``e = bitlen(v)`` (three cuts: shift, leading one, code).
    """
    v = d >> c
    return hist_code_from(params, v, bitlen(v, len(d)))


def hist_code_from(params: OrbisParams, v, e):
    """Histogram code from the shifted distance ``v = d >> c`` and ``e = bitlen(v)``."""
    NB, M = params.NB, params.hist_mant
    bb = ceil_log2(NB)
    big = e > M + 1
    ew = len(e)
    # Only used when big (e >= M + 2), where both differences are non-negative.
    em = (e - M)[:ew]
    mant = (v >> (e - (M + 1))[:ew])[:M]
    code_big = Mux(em >= (NB >> M), NB - 1, Cat(mant, em) if M else em)
    code_small = v[:bb]   # e <= M + 1 <= log2(NB), so v < NB already
    return Mux(big, code_big, code_small)[:bb]


def bin_beat(params: OrbisParams) -> data.StructLayout:
    """One histogram bin as it is dumped: bin index, count, last-bin flag."""
    return data.StructLayout({
        "bin": unsigned(max(1, ceil_log2(params.NB))),
        "count": unsigned(params.count_bits),
        "last": unsigned(1),
    })


class Histogram(wiring.Component):
    """Bin a stream of distances into ``NB`` counters; dump (and clear) them as a stream.

    Input accepts one distance per cycle while not dumping or clearing. Binning pipeline
    (cycle 0 = the distance's transfer), each stage ends in a register so that the longest
    path is one of the code's three parts, not their chain (the chain was the block's
    critical path: 77 MHz on ECP5, 33 MHz on the UP5K):

    ====== =====================================================================
    cycle  work
    ====== =====================================================================
    0      ``v = d >> shift`` (barrel shifter)
    1      ``e = bitlen(v)`` (leading-one detector)
    2      ``code = hist_code_from(v, e)`` (mantissa select, clamp)
    3      read the code's counter
    4      write it back plus one
    ====== =====================================================================

    The counters live in a memory with that read-modify-write tail; the read port is
    transparent for the write port, so repeated bins in consecutive cycles count correctly
    without forwarding logic.

    Parameters
    ----------
    params : OrbisParams
        ``NB``, ``hist_mant``, ``count_bits`` and ``dist_bits`` are used.

    Members
    -------
    i : In(stream.Signature(unsigned(dist_bits)))
        Distances to bin.
    shift : In(range(dist_bits + 1))
        Range shift ``c``; must be stable while distances flow (and :attr:`latency` cycles
        after the last one).
    clear : In(1)
        Pulse while idle: zero every bin (``NB`` cycles, ``busy`` high).
    dump : In(1)
        Pulse while idle: stream all bins on ``o`` (ascending, or descending with
        ``descending``), each bin zeroed once transferred.
    descending : In(1)
        Dump order, sampled with ``dump``.
    o : Out(stream.Signature(bin_beat(params)))
        Dumped bins; ``last`` marks the final one.
    busy : Out(1)
        Distances still in the pipeline, or a clear or dump in progress.
    """

    #: Cycles from a distance's transfer until its bin is updated.
    latency = 4

    def __init__(self, params: OrbisParams):
        self._p = p = check_params(self, params)
        super().__init__({
            "i": In(stream.Signature(unsigned(p.dist_bits))),
            "shift": In(range(p.dist_bits + 1)),
            "clear": In(1),
            "dump": In(1),
            "descending": In(1),
            "o": Out(stream.Signature(bin_beat(p))),
            "busy": Out(1),
        })

    @property
    def params(self) -> OrbisParams:
        return self._p

    def elaborate(self, platform):
        m = Module()
        p = self._p
        NB = p.NB
        bb = max(1, ceil_log2(NB))
        m.submodules.mem = mem = Memory(shape=unsigned(p.count_bits), depth=NB, init=[])
        wp = mem.write_port()
        rp = mem.read_port(transparent_for=(wp,))

        # Binning pipeline (see the class docstring): shifted value, leading one, code,
        # counter read, counter write. Data registers are reset-less (only valids reset).
        vs = Signal(p.dist_bits, reset_less=True)
        vv = Signal()
        ve = Signal(p.dist_bits, reset_less=True)
        ee = Signal(range(p.dist_bits + 1), reset_less=True)
        ev = Signal()
        code0 = Signal(bb, reset_less=True)
        v0 = Signal()
        code1 = Signal(bb, reset_less=True)
        v1 = Signal()
        mode = Signal(2)     # 0 bin, 1 clear, 2 dump
        ctr = Signal(bb + 1)
        desc = Signal()
        ov = Signal()
        obin = Signal(bb)
        olast = Signal()
        # The output is driven outside the mode switch: ov is only ever set while dumping
        # (and cleared on the way out), so the stream needs no decode of `mode` (it fed the
        # threshold's arithmetic through two LUT levels), and `last` is a flip-flop.
        m.d.comb += [self.o.valid.eq(ov), self.o.payload.bin.eq(obin),
                     self.o.payload.count.eq(rp.data), self.o.payload.last.eq(ov & olast)]

        i_ready = Signal(init=1)    # mode == 0, a flip-flop (set from mode_next below)
        m.d.comb += self.i.ready.eq(i_ready)
        m.d.sync += [vv.eq(self.i.valid & self.i.ready), vs.eq(self.i.payload >> self.shift),
                     ev.eq(vv), ve.eq(vs), ee.eq(bitlen(vs)),
                     v0.eq(ev), code0.eq(hist_code_from(p, ve, ee)),
                     v1.eq(v0), code1.eq(code0)]
        # busy is a flip-flop with the value of ``vv | ev | v0 | v1 | (mode != 0)``, computed
        # from the next-state values: the matcher's end-of-pass test waits on it.
        mode_next = Signal(2)
        busy = Signal()
        m.d.comb += mode_next.eq(mode)
        m.d.sync += [mode.eq(mode_next), i_ready.eq(mode_next == 0),
                     busy.eq((self.i.valid & self.i.ready) | vv | ev | v0 | (mode_next != 0))]
        m.d.comb += self.busy.eq(busy)

        with m.Switch(mode):
            with m.Case(0):
                m.d.comb += [rp.addr.eq(code0), rp.en.eq(1),
                             wp.addr.eq(code1), wp.data.eq(rp.data + 1), wp.en.eq(v1)]
                with m.If(self.clear):
                    m.d.comb += mode_next.eq(1)
                    m.d.sync += ctr.eq(0)
                with m.Elif(self.dump):
                    m.d.comb += mode_next.eq(2)
                    m.d.sync += [ctr.eq(0), desc.eq(self.descending), ov.eq(0)]
            with m.Case(1):
                m.d.comb += [wp.addr.eq(ctr), wp.data.eq(0), wp.en.eq(1)]
                m.d.sync += ctr.eq(ctr + 1)
                with m.If(ctr == NB - 1):
                    m.d.comb += mode_next.eq(0)
            with m.Case(2):
                # Stage: ctr issues the read, (ov, obin) holds the bin whose count is on rp.data.
                adv = ~ov | self.o.ready
                nxt = Mux(desc, NB - 1 - ctr[:bb], ctr[:bb])
                m.d.comb += [rp.addr.eq(nxt), rp.en.eq(adv),
                             wp.addr.eq(obin), wp.data.eq(0),
                             wp.en.eq(ov & self.o.ready)]
                with m.If(adv):
                    m.d.sync += [ov.eq(ctr != NB), obin.eq(nxt), olast.eq(ctr == NB - 1)]
                    with m.If(ctr != NB):
                        m.d.sync += ctr.eq(ctr + 1)
                    with m.Else():
                        m.d.comb += mode_next.eq(0)
        return m
