"""Double-buffered map table: the matcher fills one bank while the other streams out."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import map_entry
from .params import OrbisParams

__all__ = ["MapBuffer"]


class MapBuffer(wiring.Component):
    """Two banks of ``N_max`` map entries.

    The *back* bank is written in token order from ``w`` (the matcher's map stream); the *front*
    bank is read in token order to ``r`` (for the merger, the unmerger or the host). ``swap``
    exchanges them, so matching for the next call overlaps the current call's streams.

    Parameters
    ----------
    params : OrbisParams

    Members
    -------
    w : In(stream(map_entry))
        Entries of the back bank, token 0 first.
    w_start : In(1)
        Pulse: the next ``w`` transfer writes entry 0.
    w_count : Out(count_bits)
        Entries written to the back bank since ``w_start``.
    swap : In(1)
        Pulse: the back bank becomes the front bank. Ignored while a read pass is in progress
        (``rd_busy``), so a stream never changes bank in the middle.
    rd_start : In(1)
        Pulse: stream front entries ``0 .. rd_count-1`` to ``r``. Ignored while ``rd_busy``.
    rd_count : In(count_bits)
        Number of entries a read pass streams (sampled at ``rd_start``).
    r : Out(stream(map_entry))
    rd_busy : Out(1)
        A read pass is in progress (entries left to issue or an entry waiting on ``r``).
    front : Out(1)
        Index of the front bank.
    """

    def __init__(self, params: OrbisParams):
        if not isinstance(params, OrbisParams):
            raise TypeError(f"params must be an OrbisParams, not {type(params).__name__}")
        self._p = params
        layout = map_entry(params)
        cb = params.count_bits
        super().__init__({
            "w": In(stream.Signature(layout)),
            "w_start": In(1),
            "w_count": Out(cb),
            "swap": In(1),
            "rd_start": In(1),
            "rd_count": In(cb),
            "r": Out(stream.Signature(layout)),
            "rd_busy": Out(1),
            "front": Out(1),
        })

    @property
    def params(self):
        return self._p

    def elaborate(self, platform):
        p = self._p
        m = Module()
        layout = map_entry(p)
        banks = []
        for i in range(2):
            mem = Memory(shape=layout, depth=p.N_max, init=[])
            m.submodules[f"bank{i}"] = mem
            banks.append((mem.write_port(), mem.read_port(transparent_for=())))

        front = Signal()
        m.d.comb += self.front.eq(front)
        with m.If(self.swap & ~self.rd_busy):
            m.d.sync += front.eq(~front)

        # Write side: back bank, token order.
        waddr = Signal(p.count_bits)
        m.d.comb += [self.w_count.eq(waddr), self.w.ready.eq(waddr < p.N_max)]
        for i, (wp, _) in enumerate(banks):
            m.d.comb += [
                wp.addr.eq(waddr),
                wp.data.eq(self.w.payload),
                wp.en.eq(self.w.valid & self.w.ready & (front != i)),
            ]
        with m.If(self.w.valid & self.w.ready):
            m.d.sync += waddr.eq(waddr + 1)
        with m.If(self.w_start):
            m.d.sync += waddr.eq(0)

        # Read side: a synchronous read port feeding a stream. The port's enable is low while
        # the output holds an untaken entry, so its data (the payload) holds too.
        raddr = Signal(p.count_bits)
        left = Signal(p.count_bits)
        r_valid = Signal()
        issue = Signal()
        m.d.comb += issue.eq((left != 0) & (~r_valid | self.r.ready))
        for i, (_, rp) in enumerate(banks):
            m.d.comb += [rp.addr.eq(raddr), rp.en.eq(issue & (front == i))]
        m.d.comb += [
            self.r.valid.eq(r_valid),
            self.r.payload.eq(banks[0][1].data),
            self.rd_busy.eq((left != 0) | r_valid),
        ]
        with m.If(front == 1):
            m.d.comb += self.r.payload.eq(banks[1][1].data)
        with m.If(issue):
            m.d.sync += [raddr.eq(raddr + 1), left.eq(left - 1), r_valid.eq(1)]
        with m.Elif(self.r.ready):
            m.d.sync += r_valid.eq(0)
        with m.If(self.rd_start & ~self.rd_busy):
            m.d.sync += [raddr.eq(0), left.eq(self.rd_count)]
        return m
