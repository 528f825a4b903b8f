"""Initial dst selection: one LFSR-chosen token per window (DESIGN.md section 3 step 2).

The grid ``F x H x W`` is tiled from the origin by windows of stride ``(sf, sh, sw)``; windows
at the far edges are partial (``df = min(sf, F - of)`` and so on). Windows are visited in
raster order (f, then h, then w). For every window the 16-bit Galois LFSR (mask ``0xB400``)
is stepped first, then ``offset = (state * size) >> 16`` indexes the window's tokens in raster
order, exactly as :func:`golden.core.initial_dst`.

No divider: the offset's raster coordinates come from three short multiplies by the window
extents, using ``floor(floor(x) / n) == floor(x / n)``::

    lf = (state * df) >> 16,  rem1 = (state * df)  mod 2**16
    lh = (rem1  * dh) >> 16,  rem2 = (rem1  * dh)  mod 2**16
    lw = (rem2  * dw) >> 16

which equals ``offset // (dh*dw)``, ``(offset // dw) % dh`` and ``offset % dw``. The window
origins walk with counters, so token indices need only additions (and three products fixed at
start: ``H*W``, ``sh*W``, ``sf*H*W``).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .params import OrbisParams

__all__ = ["DstInit", "LFSR_TAPS", "lfsr_next"]

LFSR_TAPS = 0xB400
#: Cycles per window (step, three multiply stages, sum, emit) when ``ready`` is high.
CYCLES_PER_WINDOW = 6


def lfsr_next(state):
    """Return the next state of the 16-bit Galois LFSR (an Amaranth expression)."""
    return (state >> 1) ^ Mux(state[0], LFSR_TAPS, 0)


def check_params(component, params):
    """Return ``params`` if it is an :class:`OrbisParams`; raise ``TypeError`` otherwise.

    The half-built component is marked used first, so a rejected construction does not also
    warn about an unused elaboratable.
    """
    if not isinstance(params, OrbisParams):
        component._MustUse__silence = True
        raise TypeError(f"params must be an OrbisParams, not {type(params).__name__}")
    return params


class DstInit(wiring.Component):
    """Stream the initial dst token of every window, in window raster order.

    The order is window raster order, which is *not* ascending token order when ``sf > 1``
    and a window row has more than one window (a later window may pick an earlier frame);
    consumers that need ascending order mark a kind table and scan it.

    Parameters
    ----------
    params : OrbisParams
        Generator parameters (``N_max`` fixes the widths, ``window`` the largest strides).

    Members
    -------
    start : In(1)
        Pulse while idle: latch nothing, start from ``seed`` (the config inputs must stay
        stable until ``busy`` falls).
    F, H, W : In(count_bits)
        Grid shape, each ``>= 1`` with ``F*H*W <= N_max``.
    sf, sh, sw : In(range(17))
        Window strides, ``1 <= s <= dimension`` (not checked here: the matcher checks).
    seed : In(16)
        LFSR state before the first window, non-zero.
    o : Out(stream.Signature(unsigned(idx_bits)))
        Dst token indices, one per window.
    busy : Out(1)
        High from ``start`` until the last window's token has been transferred.
    count : Out(count_bits)
        Number of windows emitted so far (the window count once ``busy`` falls).
    """

    def __init__(self, params: OrbisParams):
        self._p = p = check_params(self, params)
        cb = p.count_bits
        super().__init__({
            "start": In(1),
            "F": In(cb), "H": In(cb), "W": In(cb),
            "sf": In(range(17)), "sh": In(range(17)), "sw": In(range(17)),
            "seed": In(16),
            "o": Out(stream.Signature(unsigned(p.idx_bits))),
            "busy": Out(1),
            "count": Out(cb),
        })

    @property
    def params(self) -> OrbisParams:
        return self._p

    def elaborate(self, platform):
        m = Module()
        p = self._p
        cb = p.count_bits
        wide = cb + 5   # products of a count and a stride; only in-range values are used

        state = Signal(16)
        HW = Signal(wide)
        shW = Signal(wide)
        sfHW = Signal(wide)
        rf = Signal(cb)     # tokens left along f from the window origin (F - of), etc.
        rh = Signal(cb)
        rw = Signal(cb)
        base_f = Signal(wide)   # token index of (of, 0, 0)
        base_h = Signal(wide)   # token index of (of, oh, 0)
        base = Signal(wide)     # token index of (of, oh, ow)
        df = Signal(5)
        dh = Signal(5)
        dw = Signal(5)
        lf = Signal(5)
        lh = Signal(5)
        lw = Signal(5)
        rem = Signal(16)
        tok = Signal(p.idx_bits)

        m.d.comb += self.o.payload.eq(tok)

        # One multiplier shared by every product, one per cycle (each FSM state drives its
        # operands), so the block costs a single DSP on iCE40/ECP5 instead of eight.
        mul_a = Signal(max(16, cb))
        mul_b = Signal(wide)
        prod = Signal(len(mul_a) + len(mul_b))
        m.d.comb += prod.eq(mul_a * mul_b)
        acc = Signal(wide)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [mul_a.eq(self.H), mul_b.eq(self.W)]
                with m.If(self.start):
                    m.d.sync += [
                        state.eq(self.seed),
                        rf.eq(self.F), rh.eq(self.H), rw.eq(self.W),
                        base_f.eq(0), base_h.eq(0), base.eq(0),
                        self.count.eq(0),
                        HW.eq(prod),
                    ]
                    m.next = "SETUP1"
            with m.State("SETUP1"):
                m.d.comb += [self.busy.eq(1), mul_a.eq(self.sh), mul_b.eq(self.W)]
                m.d.sync += shW.eq(prod)
                m.next = "SETUP2"
            with m.State("SETUP2"):
                m.d.comb += [self.busy.eq(1), mul_a.eq(self.sf), mul_b.eq(HW)]
                m.d.sync += sfHW.eq(prod)
                m.next = "STEP"
            with m.State("STEP"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [
                    state.eq(lfsr_next(state)),
                    df.eq(Mux(rf < self.sf, rf, self.sf)),
                    dh.eq(Mux(rh < self.sh, rh, self.sh)),
                    dw.eq(Mux(rw < self.sw, rw, self.sw)),
                ]
                m.next = "MF"
            with m.State("MF"):
                m.d.comb += [self.busy.eq(1), mul_a.eq(state), mul_b.eq(df)]
                m.d.sync += [lf.eq(prod[16:21]), rem.eq(prod[:16])]
                m.next = "MH"
            with m.State("MH"):
                m.d.comb += [self.busy.eq(1), mul_a.eq(rem), mul_b.eq(dh)]
                m.d.sync += [lh.eq(prod[16:21]), rem.eq(prod[:16])]
                m.next = "MW"
            with m.State("MW"):
                m.d.comb += [self.busy.eq(1), mul_a.eq(rem), mul_b.eq(dw)]
                m.d.sync += lw.eq(prod[16:21])
                m.next = "SUM1"
            with m.State("SUM1"):
                m.d.comb += [self.busy.eq(1), mul_a.eq(lf), mul_b.eq(HW)]
                m.d.sync += acc.eq(base + prod + lw)
                m.next = "SUM2"
            with m.State("SUM2"):
                m.d.comb += [self.busy.eq(1), mul_a.eq(lh), mul_b.eq(self.W)]
                m.d.sync += tok.eq(acc + prod)
                m.next = "EMIT"
            with m.State("EMIT"):
                m.d.comb += [self.busy.eq(1), self.o.valid.eq(1)]
                with m.If(self.o.ready):
                    m.d.sync += self.count.eq(self.count + 1)
                    m.next = "STEP"
                    with m.If(rw > self.sw):
                        m.d.sync += [rw.eq(rw - self.sw), base.eq(base + self.sw)]
                    with m.Else():
                        m.d.sync += rw.eq(self.W)
                        with m.If(rh > self.sh):
                            m.d.sync += [rh.eq(rh - self.sh), base_h.eq(base_h + shW),
                                         base.eq(base_h + shW)]
                        with m.Else():
                            m.d.sync += rh.eq(self.H)
                            with m.If(rf > self.sf):
                                m.d.sync += [rf.eq(rf - self.sf), base_f.eq(base_f + sfHW),
                                             base_h.eq(base_f + sfHW),
                                             base.eq(base_f + sfHW)]
                            with m.Else():
                                m.next = "IDLE"
        return m
