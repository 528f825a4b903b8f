"""Threshold bin by prefix sum over a dumped histogram (DESIGN.md section 3 steps 5 and 6).

One unit serves both directions; only the order in which the histogram is dumped differs:

- **Bottom** (selection, target mode), bins ascending: ``t`` is the smallest bin with
  ``count(code <= t) >= k``; everything with ``code < t`` is taken, then ``need = k -
  count(code < t)`` entries of bin ``t`` in ascending token index (:func:`golden.select_bottom`).
- **Top** (promotion), bins descending: ``t`` is the largest bin with ``count(code >= t) >= k``;
  everything with ``code > t`` is taken, then ``need = k - count(code > t)`` entries of bin
  ``t`` (:func:`golden.promote_top`).

``k = 0`` gives the first bin in dump order with ``need = 0``: nothing is taken, as golden.
``k`` must not exceed the histogram total (the matcher guarantees it); otherwise ``found``
stays low. Budget mode (``d <= tau``) needs no threshold: the selection pass compares the
distance itself and counts ``r``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .dstinit import check_params
from .histogram import bin_beat
from .params import OrbisParams, ceil_log2

__all__ = ["Threshold"]


class Threshold(wiring.Component):
    """Find the threshold bin ``t`` and the count ``need`` to take from it.

    Parameters
    ----------
    params : OrbisParams
        ``NB`` and ``count_bits`` are used.

    Members
    -------
    i : In(stream.Signature(bin_beat(params)))
        Histogram bins in dump order (always ready); ``last`` ends the scan.
    start : In(1)
        Pulse before a scan: clears the prefix sum and ``done``.
    k : In(count_bits)
        Number of entries to take; stable during the scan.
    t : Out(range(NB))
        Threshold bin.
    need : Out(count_bits)
        Entries of bin ``t`` to take, in ascending token index.
    found : Out(1)
        A bin reached ``k`` (always, when ``k`` is at most the histogram total).
    done : Out(1)
        The last bin has been consumed; ``t``, ``need`` and ``found`` are final.
    """

    def __init__(self, params: OrbisParams):
        self._p = p = check_params(self, params)
        super().__init__({
            "i": In(stream.Signature(bin_beat(p))),
            "start": In(1),
            "k": In(p.count_bits),
            "t": Out(max(1, ceil_log2(p.NB))),
            "need": Out(p.count_bits),
            "found": Out(1),
            "done": Out(1),
        })

    @property
    def params(self) -> OrbisParams:
        return self._p

    def elaborate(self, platform):
        m = Module()
        cum = Signal(self._p.count_bits + 1)
        m.d.comb += self.i.ready.eq(1)
        with m.If(self.start):
            m.d.sync += [cum.eq(0), self.found.eq(0), self.done.eq(0)]
        with m.Elif(self.i.valid):
            nxt = cum + self.i.payload.count
            m.d.sync += cum.eq(nxt)
            with m.If(~self.found & (nxt >= self.k)):
                m.d.sync += [self.found.eq(1), self.t.eq(self.i.payload.bin),
                             self.need.eq(self.k - cum)]
            with m.If(self.i.payload.last):
                m.d.sync += self.done.eq(1)
        return m
