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

All products share one multiplier with registered operands and a registered product (a DSP
with flip-flops on both sides; the FSM-driven operand multiplexer in front of a combinational
product was the block's critical path). A product issued in cycle ``c`` is read in cycle
``c + 2``, so independent products interleave with the dependent chain. Per window
(cycles after ``STEP``; ``A x B`` = operands loaded for the product two cycles later)::

    0 STEP   next LFSR state, window extents df/dh/dw, "more windows along w/h/f" flags
    1 MF     A x B = state x df;            the next origins (base + sw, ...)
    2 MH0    (product in flight)
    3 MH     lf, rem1 from the product;     A x B = rem1 x dh
    4 MA     A x B = lf x HW
    5 MW     lh, rem2 from the product;     A x B = rem2 x dw
    6 SUM1   acc = base + lf*HW;            A x B = lh x W
    7 SUM2   acc += lw (from the product)
    8 SUM3   token = acc + lh*W into the output register; advance the window origin

so a window costs :data:`CYCLES_PER_WINDOW` cycles and computing the next window overlaps the
wait for ``ready`` (the engine copies a dst in ``D/L + 1`` cycles, 9 for ecp5-default).
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .params import OrbisParams

__all__ = ["DstInit", "LFSR_TAPS", "lfsr_next"]

LFSR_TAPS = 0xB400
#: Cycles per window when ``ready`` keeps up (see the module docstring).
CYCLES_PER_WINDOW = 9
#: Cycles from ``start`` until the first window's ``STEP`` (the three setup products).
SETUP_CYCLES = 5


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
        The first token is valid ``SETUP_CYCLES + CYCLES_PER_WINDOW`` cycles after
        ``start``, the next ones every :data:`CYCLES_PER_WINDOW` cycles (computing a window
        overlaps waiting for the previous token to be taken).
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
        # The current window's extents and whether another window follows along w, h, f
        # (registered at STEP, so the origin update at SUM3 needs no comparator).
        df, dh, dw = Signal(5), Signal(5), Signal(5)
        more_w, more_h, more_f = Signal(), Signal(), Signal()
        # The next origin for each way the walk can advance, summed early (at MF) so that
        # the update at SUM3 only selects registers.
        nxt_w, nxt_h, nxt_f = Signal(wide), Signal(wide), Signal(wide)
        lf = Signal(5)
        lh = Signal(5)
        acc = Signal(wide)
        tok = Signal(p.idx_bits)
        ov = Signal()

        m.d.comb += [self.o.payload.eq(tok), self.o.valid.eq(ov)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [ov.eq(0), self.count.eq(self.count + 1)]

        # One multiplier shared by every product (a single DSP on iCE40/ECP5 instead of
        # eight), registered on both sides: prod = mul_a * mul_b of two cycles before.
        mul_a = Signal(max(16, cb))
        mul_b = Signal(wide)
        prod = Signal(len(mul_a) + len(mul_b))
        m.d.sync += prod.eq(mul_a * mul_b)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        state.eq(self.seed),
                        rf.eq(self.F), rh.eq(self.H), rw.eq(self.W),
                        base_f.eq(0), base_h.eq(0), base.eq(0),
                        self.count.eq(0),
                        mul_a.eq(self.H), mul_b.eq(self.W),
                    ]
                    m.next = "SETUP1"
            with m.State("SETUP1"):
                m.d.sync += [mul_a.eq(self.sh), mul_b.eq(self.W)]
                m.next = "SETUP2"
            with m.State("SETUP2"):
                m.d.sync += [HW.eq(prod), mul_a.eq(self.sf), mul_b.eq(prod)]
                m.next = "SETUP3"
            with m.State("SETUP3"):
                m.d.sync += shW.eq(prod)
                m.next = "SETUP4"
            with m.State("SETUP4"):
                m.d.sync += sfHW.eq(prod)
                m.next = "STEP"
            with m.State("STEP"):
                m.d.sync += [
                    state.eq(lfsr_next(state)),
                    df.eq(Mux(rf > self.sf, self.sf, rf)),
                    dh.eq(Mux(rh > self.sh, self.sh, rh)),
                    dw.eq(Mux(rw > self.sw, self.sw, rw)),
                    more_f.eq(rf > self.sf), more_h.eq(rh > self.sh), more_w.eq(rw > self.sw),
                ]
                m.next = "MF"
            with m.State("MF"):
                m.d.sync += [mul_a.eq(state), mul_b.eq(df), nxt_w.eq(base + self.sw),
                             nxt_h.eq(base_h + shW), nxt_f.eq(base_f + sfHW)]
                m.next = "MH0"
            with m.State("MH0"):
                m.next = "MH"
            with m.State("MH"):
                m.d.sync += [lf.eq(prod[16:21]), mul_a.eq(prod[:16]), mul_b.eq(dh)]
                m.next = "MA"
            with m.State("MA"):
                m.d.sync += [mul_a.eq(lf), mul_b.eq(HW)]
                m.next = "MW"
            with m.State("MW"):
                m.d.sync += [lh.eq(prod[16:21]), mul_a.eq(prod[:16]), mul_b.eq(dw)]
                m.next = "SUM1"
            with m.State("SUM1"):
                m.d.sync += [acc.eq(base + prod), mul_a.eq(lh), mul_b.eq(self.W)]
                m.next = "SUM2"
            with m.State("SUM2"):
                m.d.sync += acc.eq(acc + prod[16:21])
                m.next = "SUM3"
            with m.State("SUM3"):
                # The output register is free, or frees this cycle: load it, advance.
                with m.If(~ov | self.o.ready):
                    m.d.sync += [tok.eq(acc + prod), ov.eq(1)]
                    m.next = "STEP"
                    with m.If(more_w):
                        m.d.sync += [rw.eq(rw - self.sw), base.eq(nxt_w)]
                    with m.Else():
                        m.d.sync += rw.eq(self.W)
                        with m.If(more_h):
                            m.d.sync += [rh.eq(rh - self.sh), base_h.eq(nxt_h),
                                         base.eq(nxt_h)]
                        with m.Else():
                            m.d.sync += rh.eq(self.H)
                            with m.If(more_f):
                                m.d.sync += [rf.eq(rf - self.sf), base_f.eq(nxt_f),
                                             base_h.eq(nxt_f), base.eq(nxt_f)]
                            with m.Else():
                                m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | ov)
        return m
