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
stays low (and ``t``, ``need`` are meaningless). Budget mode (``d <= tau``) needs no
threshold: the selection pass compares the distance itself and counts ``r``.
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
        Pulse before a scan: samples ``k``, clears ``found`` and ``done``.
    k : In(count_bits)
        Number of entries to take; sampled with ``start``.
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
        # Instead of the prefix sum ``cum`` and the test ``cum + count >= k`` (an adder then
        # a comparator in series), keep what is still missing, ``rem = k - cum``: the test
        # is ``count >= rem`` and the update ``rem - count``, side by side. Until a bin is
        # found ``cum < k`` (or ``k = 0``), so ``rem`` never goes negative while it matters.
        # ``t`` and ``need`` follow every bin until one is found, so the comparator drives
        # only ``found``, not the enables of ``t`` and ``need``.
        rem = Signal(self._p.count_bits)
        m.d.comb += self.i.ready.eq(1)
        with m.If(self.start):
            m.d.sync += [rem.eq(self.k), self.found.eq(0), self.done.eq(0)]
        with m.Elif(self.i.valid):
            m.d.sync += rem.eq(rem - self.i.payload.count)
            with m.If(~self.found):
                m.d.sync += [self.found.eq(self.i.payload.count >= rem),
                             self.t.eq(self.i.payload.bin), self.need.eq(rem)]
            with m.If(self.i.payload.last):
                m.d.sync += self.done.eq(1)
        return m
