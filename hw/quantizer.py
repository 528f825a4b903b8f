"""Guide quantizer: int16 guide chunks in, B-bit chunks for the guide buffer out.

Bit-exact with :func:`golden.core.quantize`: ``q = clamp((g + 2**(s-1)) >> s, -qmax, qmax)``
(``q = g`` clamped for ``s = 0``), arithmetic shift, and the largest ``|g|`` of the call.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .params import OrbisParams, ParamError, ceil_log2

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
        """Cycles from a beat accepted on ``i`` to its write valid on ``o`` (no backpressure).

        Three stages: rounding add, arithmetic shift, clamp (each registered; the whole chain
        in one cycle limited the UP5K to 23 MHz).
        """
        return 3

    @property
    def max_abs_latency(self) -> int:
        """Cycles from a beat accepted on ``i`` to ``max_abs`` including it."""
        return 2 + ceil_log2(self._p.L)

    def elaborate(self, platform):
        p = self._p
        m = Module()
        lim = p.qmax
        L = p.L
        wl = data.StructLayout({"token": unsigned(p.idx_bits),
                                "chunk": range(max(2, p.chunks))})

        # Three stages that hold valid while ready is low; stage k advances when the next
        # one is empty or advancing (the ready chain is three gates long).
        v = [Signal(name=f"v{k}") for k in range(1, 3)]   # stages 1 and 2; 3 is `o`
        adv3 = ~self.o.valid | self.o.ready
        adv2 = ~v[1] | adv3
        adv1 = ~v[0] | adv2
        m.d.comb += self.i.ready.eq(adv1)
        i_fire = self.i.valid & self.i.ready

        # Token/chunk counters; `start` acts before a beat accepted in the same cycle.
        tok = Signal(unsigned(p.idx_bits))
        chunk = Signal(range(max(2, p.chunks)))
        cur_tok = Mux(self.start, 0, tok)
        cur_chunk = Mux(self.start, 0, chunk)
        with m.If(self.start):
            m.d.sync += [tok.eq(0), chunk.eq(0)]
        with m.If(i_fire):
            if p.chunks > 1:
                with m.If(cur_chunk == p.chunks - 1):
                    m.d.sync += [chunk.eq(0), tok.eq(cur_tok + 1)]
                with m.Else():
                    m.d.sync += chunk.eq(cur_chunk + 1)
            else:
                m.d.sync += tok.eq(cur_tok + 1)

        # Stage 1: g + 2**(s-1) (0 for s = 0); round_half_up(g / 2**s) = that >> s.
        half = Signal(unsigned(16))
        m.d.comb += half.eq((Const(1, 17) << self.shift) >> 1)
        w1 = Signal(wl)
        t1 = [Signal(signed(17), name=f"t1_{k}", reset_less=True) for k in range(L)]
        # Stage 2: arithmetic shift.
        w2 = Signal(wl)
        t2 = [Signal(signed(17), name=f"t2_{k}", reset_less=True) for k in range(L)]
        with m.If(adv1):
            m.d.sync += v[0].eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += [w1.token.eq(cur_tok), w1.chunk.eq(cur_chunk)]
                m.d.sync += [t1[k].eq(self.i.payload.data[k] + half) for k in range(L)]
        with m.If(adv2):
            m.d.sync += v[1].eq(v[0])
            with m.If(v[0]):
                m.d.sync += w2.eq(w1)
                m.d.sync += [t2[k].eq(t1[k] >> self.shift) for k in range(L)]
        # Stage 3 (the `o` register): clamp to [-qmax, qmax].
        q = [Mux(t > lim, lim, Mux(t < -lim, -lim, t))[:p.B] for t in t2]
        with m.If(adv3):
            m.d.sync += self.o.valid.eq(v[1])
            with m.If(v[1]):
                m.d.sync += [
                    self.o.payload.token.eq(w2.token),
                    self.o.payload.chunk.eq(w2.chunk),
                    self.o.payload.data.eq(Cat(*q)),
                ]

        # max |g|: |g| registered, then a comparator tree with one register per level, then
        # the running maximum (timing). `start` drops the chunk maxima still in flight, but
        # not a beat accepted in the same cycle (it belongs to the new call).
        level = []
        for k in range(L):
            g = self.i.payload.data[k]
            a = Signal(unsigned(17), name=f"abs{k}", reset_less=True)
            m.d.sync += a.eq(Mux(g < 0, -g, g))
            level.append(a)
        lv_valid = Signal(name="absv")
        m.d.sync += lv_valid.eq(i_fire)
        depth = 0
        while len(level) > 1:
            depth += 1
            nxt = []
            for j in range(0, len(level) - 1, 2):
                s = Signal(unsigned(17), name=f"max{depth}_{j // 2}", reset_less=True)
                m.d.sync += s.eq(Mux(level[j] > level[j + 1], level[j], level[j + 1]))
                nxt.append(s)
            if len(level) % 2:
                s = Signal(unsigned(17), name=f"max{depth}_odd", reset_less=True)
                m.d.sync += s.eq(level[-1])
                nxt.append(s)
            nv = Signal(name=f"maxv{depth}")
            m.d.sync += nv.eq(lv_valid & ~self.start)
            level, lv_valid = nxt, nv
        cmax = level[0]
        with m.If(self.start):
            m.d.sync += self.max_abs.eq(0)
        with m.Elif(lv_valid & (cmax > self.max_abs)):
            m.d.sync += self.max_abs.eq(cmax)
        return m
