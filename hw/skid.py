"""SkidBuffer: a registered stream stage (two entries, registered ``i.ready`` and output).

Every outgoing stream of the map buffer, the merger and the unmerger ends in one, so the
consumer's ``ready`` only enables registers and the line rate stays one beat per cycle under
any backpressure.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """A two-entry stream register whose ``i.ready`` and ``o`` come straight from flip-flops.

    ``o.valid`` and ``o.payload`` are the output register; a second (skid) register catches
    the beat that arrives in the cycle the consumer stalls, because ``i.ready`` is the skid
    register being empty, a registered signal, not ``o.ready``. So neither the producer's
    data (e.g. a block-RAM read port plus its row multiplexer) nor the consumer's ready
    reaches the other side in the same cycle, and the line rate stays one beat per cycle
    under any backpressure pattern. Latency one cycle (``i`` transfer to ``o.valid``).

    Parameters
    ----------
    shape : shape-like
        Payload shape.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    busy : Out(1)
        A beat is held (output or skid register).
    """

    def __init__(self, shape):
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        s_valid = Signal()
        s_data = Signal.like(self.i.payload)
        o_free = Signal()
        m.d.comb += [
            self.i.ready.eq(~s_valid),
            o_free.eq(~self.o.valid | self.o.ready),
            self.busy.eq(self.o.valid | s_valid),
        ]
        with m.If(o_free):
            # i.ready is low while the skid register is full, so no input moves then.
            with m.If(s_valid):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(s_data), s_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload)]
        with m.Elif(self.i.valid & ~s_valid):
            m.d.sync += [s_valid.eq(1), s_data.eq(self.i.payload)]
        return m
