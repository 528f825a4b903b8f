"""Pipelined restoring divider: ``lanes`` unsigned numerators over one shared divisor.

The mean merge (:class:`hw.merge.Merger`) divides ``Lx`` sums per beat by the same count, so
the divisor and its pipeline are shared by every lane and only the remainders are per lane.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import ParamError

__all__ = ["PipelinedDivider"]


class PipelinedDivider(wiring.Component):
    """Exact unsigned division ``quo[k] = num[k] // den``, one beat per cycle.

    A restoring divider unrolled into one pipeline stage per quotient bit (MSB first). The
    caller guarantees ``num[k] < den << quo_width`` and ``den >= 1``; then every quotient fits
    ``quo_width`` bits and the result is exact (no approximation, no correction step).

    The stage that computes quotient bit ``i`` compares only ``den_width + 1`` bits (the
    remainder entering it is ``< den << (i+1)``), so each stage is a narrow subtractor whatever
    the numerator width.

    All stages advance together when the output is empty or taken (a pipeline with one shared
    enable), so a stalled consumer freezes the whole pipeline and nothing is lost.

    Parameters
    ----------
    lanes : int
        Numerators per beat, ``>= 1``.
    den_width : int
        Bits of the divisor, ``>= 1``.
    quo_width : int
        Bits of each quotient, ``>= 1``; numerators are ``den_width + quo_width`` bits.

    Members
    -------
    i : In(stream.Signature(StructLayout({"num": ArrayLayout(unsigned(den_width+quo_width), lanes), "den": unsigned(den_width)})))
        Dividends and the shared divisor.
    o : Out(stream.Signature(StructLayout({"quo": ArrayLayout(unsigned(quo_width), lanes)})))
        Quotients, in input order.
    busy : Out(1)
        Some beat is inside the pipeline (including the output register).
    """

    def __init__(self, *, lanes: int, den_width: int, quo_width: int):
        for name, v in (("lanes", lanes), ("den_width", den_width), ("quo_width", quo_width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParamError(f"{name} must be an integer >= 1, not {v!r}")
        self._lanes = lanes
        self._dw = den_width
        self._qw = quo_width
        in_layout = data.StructLayout({
            "num": data.ArrayLayout(unsigned(den_width + quo_width), lanes),
            "den": unsigned(den_width),
        })
        out_layout = data.StructLayout({"quo": data.ArrayLayout(unsigned(quo_width), lanes)})
        super().__init__({
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(out_layout)),
            "busy": Out(1),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def latency(self) -> int:
        """Cycles from an input transfer to its result being valid at ``o`` (no stalls)."""
        return self._qw + 1

    def elaborate(self, platform):
        m = Module()
        dw, qw, lanes = self._dw, self._qw, self._lanes
        en = Signal()
        m.d.comb += [en.eq(~self.o.valid | self.o.ready), self.i.ready.eq(en)]

        # Input register: keeps the caller's combinational path (memory out -> adder) apart
        # from the first subtractor.
        v = Signal(name="v_in")
        den = Signal(dw, name="den_in")
        rem = [Signal(dw + qw, name=f"rem_in_{k}") for k in range(lanes)]
        with m.If(en):
            m.d.sync += [v.eq(self.i.valid), den.eq(self.i.payload.den)]
            m.d.sync += [rem[k].eq(self.i.payload.num[k]) for k in range(lanes)]
        valids = [v]
        quo = [None] * lanes                 # no quotient bits before the first stage

        for i in reversed(range(qw)):
            # Remainder entering this stage is < den << (i+1): dw+i+1 bits suffice.
            nv = Signal(name=f"v_{i}")
            nden = Signal(dw, name=f"den_{i}")
            nrem = [Signal(dw + i, name=f"rem_{i}_{k}") for k in range(lanes)]
            nquo = [Signal(qw - i, name=f"quo_{i}_{k}") for k in range(lanes)]
            with m.If(en):
                m.d.sync += [nv.eq(v), nden.eq(den)]
            for k in range(lanes):
                hi = rem[k][i:]                      # dw+1 bits, < 2*den
                diff = Signal(dw + 2, name=f"diff_{i}_{k}")
                m.d.comb += diff.eq(hi - den)
                take = ~diff[-1]                     # hi >= den
                with m.If(en):
                    if i:
                        low = rem[k][:i]
                        with m.If(take):
                            m.d.sync += nrem[k].eq((diff[:dw] << i) | low)
                        with m.Else():
                            m.d.sync += nrem[k].eq(rem[k][:dw + i])
                    m.d.sync += nquo[k].eq(take if quo[k] is None else (quo[k] << 1) | take)
            v, den, rem, quo = nv, nden, nrem, nquo
            valids.append(v)

        m.d.comb += self.o.valid.eq(v)
        for k in range(lanes):
            m.d.comb += self.o.payload.quo[k].eq(quo[k])
        busy = 0
        for s in valids:
            busy = busy | s
        m.d.comb += self.busy.eq(busy)
        return m
