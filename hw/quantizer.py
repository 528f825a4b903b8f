"""Guide quantizer: int16 guide chunks in, B-bit chunks for the guide buffer out.

Bit-exact with :func:`golden.core.quantize`: ``q = clamp((g + 2**(s-1)) >> s, -qmax, qmax)``
(``q = g`` clamped for ``s = 0``), arithmetic shift, and the largest ``|g|`` of the call.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .params import OrbisParams, ParamError

__all__ = ["Quantizer"]


class Quantizer(wiring.Component):
    """Quantize a stream of int16 guide chunks to ``B`` bits, one chunk per cycle.

    Beats are ``L`` int16 elements, tokens in order, chunks in order (``D / L`` chunks per
    token). Each beat leaves as a ``(token, chunk, data)`` guide-buffer write one cycle later;
    the token and chunk numbers come from counters that ``start`` clears.

    Parameters
    ----------
    params : OrbisParams
        Uses ``L``, ``D``, ``B`` and ``N_max``.

    Members
    -------
    i : In(stream.Signature(layouts.guide_beat(params)))
        int16 guide chunks.
    o : Out(stream.Signature(layouts.guide_write(params)))
        Quantized chunks with their token and chunk numbers. Full backpressure.
    shift : In(range(17))
        Quantization shift ``s`` of the call; hold it stable while beats flow.
    start : In(1)
        One-cycle pulse at the start of a call: clears the token and chunk counters and
        ``max_abs``. A beat accepted in the same cycle is the first beat of the new call.
    max_abs : Out(17)
        Largest ``|g|`` accepted since ``start`` (``|-32768| = 32768``). It is updated
        :attr:`max_abs_latency` cycles after the beat is accepted.

    Raises
    ------
    ParamError
        ``params`` is not an :class:`OrbisParams`.
    """

    def __init__(self, params: OrbisParams):
        if not isinstance(params, OrbisParams):
            self._MustUse__silence = True     # a rejected component is not "unused"
            raise ParamError(f"params must be an OrbisParams, not {type(params).__name__}")
        self._p = params
        super().__init__({
            "i": In(stream.Signature(layouts.guide_beat(params))),
            "o": Out(stream.Signature(layouts.guide_write(params))),
            "shift": In(range(17)),
            "start": In(1),
            "max_abs": Out(17),
        })

    @property
    def params(self) -> OrbisParams:
        return self._p

    @property
    def latency(self) -> int:
        """Cycles from a beat accepted on ``i`` to its write valid on ``o``."""
        return 1

    @property
    def max_abs_latency(self) -> int:
        """Cycles from a beat accepted on ``i`` to ``max_abs`` including it."""
        return 2

    def elaborate(self, platform):
        p = self._p
        m = Module()
        lim = p.qmax

        i_fire = self.i.valid & self.i.ready
        # A stage that holds valid while ready is low: take a beat when empty or draining.
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        # Token/chunk counters; `start` acts before a beat accepted in the same cycle.
        tok = Signal(unsigned(p.idx_bits))
        chunk = Signal(range(max(2, p.chunks)))
        cur_tok = Mux(self.start, 0, tok)
        cur_chunk = Mux(self.start, 0, chunk)
        with m.If(self.start):
            m.d.sync += [tok.eq(0), chunk.eq(0)]

        # round_half_up(g / 2**s): add 2**(s-1) (0 for s = 0) then shift arithmetically.
        half = Signal(unsigned(16))
        m.d.comb += half.eq((Const(1, 17) << self.shift) >> 1)
        q = []
        absv = []
        for k in range(p.L):
            g = self.i.payload.data[k]
            r = Signal(signed(17), name=f"r{k}")
            m.d.comb += r.eq((g + half) >> self.shift)
            qk = Signal(signed(p.B), name=f"q{k}")
            m.d.comb += qk.eq(Mux(r > lim, lim, Mux(r < -lim, -lim, r)))
            q.append(qk)
            a = Signal(unsigned(17), name=f"abs{k}")
            m.d.comb += a.eq(Mux(g < 0, -g, g))
            absv.append(a)

        with m.If(i_fire):
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.payload.token.eq(cur_tok),
                self.o.payload.chunk.eq(cur_chunk),
                self.o.payload.data.eq(Cat(*q)),
            ]
            if p.chunks > 1:
                with m.If(cur_chunk == p.chunks - 1):
                    m.d.sync += [chunk.eq(0), tok.eq(cur_tok + 1)]
                with m.Else():
                    m.d.sync += chunk.eq(cur_chunk + 1)
            else:
                m.d.sync += tok.eq(cur_tok + 1)

        # max |g|: chunk maximum registered first so the comparator tree and the running
        # maximum sit in different cycles (timing); `start` drops a pending chunk maximum.
        level = absv
        while len(level) > 1:
            nxt = []
            for j in range(0, len(level) - 1, 2):
                s = Signal(unsigned(17))
                m.d.comb += s.eq(Mux(level[j] > level[j + 1], level[j], level[j + 1]))
                nxt.append(s)
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        cmax = Signal(unsigned(17))
        cmax_valid = Signal()
        m.d.sync += [cmax.eq(level[0]), cmax_valid.eq(i_fire)]
        with m.If(self.start):
            m.d.sync += self.max_abs.eq(0)
        with m.Elif(cmax_valid & (cmax > self.max_abs)):
            m.d.sync += self.max_abs.eq(cmax)
        return m
