"""Double-buffered map table: the matcher fills one bank while the other streams out.

Its read port ends in a :class:`~hw.skid.SkidBuffer`.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import map_entry
from .params import OrbisParams
from .skid import SkidBuffer

__all__ = ["MapBuffer"]


class MapBuffer(wiring.Component):
    """Two banks of ``N_max`` map entries.

    The *back* bank is written in token order from ``w`` (the matcher's map stream); the *front*
    bank is read in token order to ``r`` (for the merger, the unmerger or the host). ``swap``
    exchanges them, so matching for the next call overlaps the current call's streams.

    Read pipeline (timing): ``rd_start`` (cycle 0) -> read address issued (1) -> read-port
    data (2) -> per-bank capture registers (3) -> :class:`SkidBuffer` output register =
    ``r`` valid (4). ``r.ready`` only loads the skid buffer; the earlier stages advance on
    the skid register being empty, so the bank read data goes straight into flip-flops, the
    bank multiplexer sits between two registers, and the stream keeps one entry per cycle
    under any backpressure.

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
        One entry per cycle while ``r.ready`` is high. ``r.valid`` and ``r.payload`` are
        registers; ``r.ready`` only enables registers (see the read pipeline below).
    rd_busy : Out(1)
        A read pass is in progress (entries left to issue, in the pipeline or waiting on
        ``r``).
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
        w_full = Signal()       # waddr == N_max, a flip-flop updated with waddr: w.ready
        m.d.comb += [self.w_count.eq(waddr), self.w.ready.eq(~w_full)]
        for i, (wp, _) in enumerate(banks):
            m.d.comb += [
                wp.addr.eq(waddr),
                wp.data.eq(self.w.payload),
                wp.en.eq(self.w.valid & self.w.ready & (front != i)),
            ]
        with m.If(self.w.valid & self.w.ready):
            m.d.sync += [waddr.eq(waddr + 1), w_full.eq(waddr + 1 == p.N_max)]
        with m.If(self.w_start):
            m.d.sync += [waddr.eq(0), w_full.eq(0)]

        # Read side, four registered stages: issue (raddr), the read ports (their data holds
        # while the enable is low), one capture register per bank (read data straight into
        # flip-flops: the ECP5 block RAM's clock-to-output alone is about 6 ns), then the
        # skid buffer that drives `r`. The bank is chosen between the capture registers and
        # the skid buffer, by `front`, which is constant during a pass (a swap waits for
        # `rd_busy` to fall). No path runs from a read port to `r` or from `r.ready` to a
        # read port.
        m.submodules.out = out = SkidBuffer(layout)
        raddr = Signal(p.count_bits)
        left = Signal(p.count_bits)
        more = Signal()                     # left != 0, as a register
        v_rd = Signal()                     # the read ports hold an entry
        v_cap = Signal()                    # the capture registers hold an entry for `out`
        caps = [Signal(layout, name=f"cap{i}") for i in range(2)]
        adv_cap = Signal()
        adv = Signal()
        issue = Signal()
        m.d.comb += [
            adv_cap.eq(~v_cap | out.i.ready),
            adv.eq(~v_rd | adv_cap),
            issue.eq(more & adv),
        ]
        for i, (_, rp) in enumerate(banks):
            m.d.comb += [rp.addr.eq(raddr), rp.en.eq(adv & (front == i))]
        with m.If(adv_cap):
            m.d.sync += v_cap.eq(v_rd)
            m.d.sync += [caps[i].eq(rp.data) for i, (_, rp) in enumerate(banks)]
        m.d.comb += [
            out.i.valid.eq(v_cap),
            out.i.payload.eq(caps[0]),
            self.rd_busy.eq(more | v_rd | v_cap | out.busy),
        ]
        with m.If(front == 1):
            m.d.comb += out.i.payload.eq(caps[1])
        wiring.connect(m, out.o, wiring.flipped(self.r))
        with m.If(adv):
            m.d.sync += v_rd.eq(issue)
        with m.If(issue):
            m.d.sync += [raddr.eq(raddr + 1), left.eq(left - 1), more.eq(left != 1)]
        with m.If(self.rd_start & ~self.rd_busy):
            m.d.sync += [raddr.eq(0), left.eq(self.rd_count), more.eq(self.rd_count != 0)]
        return m
