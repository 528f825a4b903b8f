"""Merge and unmerge datapath (DESIGN.md section 3 steps 7-9, golden ``merge``/``unmerge``).

:class:`Merger` reduces the activation stream ``x`` (token order) to the kept tokens (ascending
token index); :class:`Unmerger` restores the ``N`` tokens from the reduced outputs ``y``. Both
read the map (one :func:`hw.layouts.map_entry` per token, token order) and move one
:func:`hw.layouts.x_beat` per cycle in steady state, with full backpressure.

Call protocol (both blocks)
    While ``busy`` is low, a cycle with ``start`` high latches the size inputs and raises
    ``busy`` from the next cycle. ``start`` is ignored while ``busy``. The block then takes
    exactly ``n_tokens`` map entries and the matching data beats, ignoring (``ready`` low)
    anything beyond the call, so data of the next call may already wait on the streams.
    After the last output beat has been transferred, ``busy`` falls and ``done`` is high for
    that one cycle (the first idle cycle); a new ``start`` is accepted in that cycle.
    A map that is not a valid matching of ``n_tokens`` tokens (a ``pos`` outside
    ``[0, n_kept)``, a merged token pointing at a position no kept token has) gives
    unspecified output values; see docs/merge.md for what it does to the streams.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import layouts
from .divider import PipelinedDivider
from .params import OrbisParams, ParamError, bits_for, ceil_log2

__all__ = ["Merger", "Unmerger"]


def _check_params(component, params):
    if not isinstance(params, OrbisParams):
        component._MustUse__silence = True      # a rejected component is not "unused"
        raise ParamError(f"params must be an OrbisParams, not {type(params).__name__}")
    return params


class Merger(wiring.Component):
    """Reduce the activation stream to the kept tokens (``replace`` or ``mean``).

    The mode is ``params.merge_mode``, fixed at elaboration.

    ``replace``
        A streaming filter: beats of kept tokens pass through a one-register stage, beats of
        merged tokens are dropped. One ``x`` beat per cycle; the output runs at the kept share
        of that.
    ``mean``
        Two passes. Accumulate: every ``x`` beat is added element-wise into a sum memory at
        ``pos * Dx/Lx + beat`` (``Wx + count_bits`` bits per element) and each token adds one
        to ``count[pos]``; a read-modify-write per cycle, the read ports transparent to the
        write ports so back-to-back updates of one address are exact. Output: the sums are
        read back in position order, ``floor((2*S + c) / (2*c))`` is computed by ``Lx``
        exact pipelined restoring dividers sharing the divisor, one beat per cycle. The
        output pass writes zero behind its reads, so the memories are clear for the next
        call without a clearing pass. After reset (and at power-up) the block clears both
        memories once (``Dx/Lx * N_max`` cycles with ``busy`` high), so a reset in the middle
        of a call cannot leave stale sums.

    Parameters
    ----------
    params : OrbisParams
        Uses ``N_max``, ``Dx``, ``Lx``, ``Wx`` and ``merge_mode``.

    Members
    -------
    map : In(stream.Signature(layouts.map_entry(params)))
        One entry per token, token order; ``kind`` and ``pos`` are used.
    x : In(stream.Signature(layouts.x_beat(params)))
        ``Dx/Lx`` beats per token, token order.
    o : Out(stream.Signature(layouts.x_beat(params)))
        The reduced sequence, kept tokens in ascending token index.
    start : In(1)
        Start a call (sampled while ``busy`` is low).
    n_tokens : In(count_bits)
        Tokens of the call, ``0 .. N_max``, latched at ``start``.
    busy : Out(1)
        A call is running (``mean``: or the memories are being cleared after reset).
    done : Out(1)
        One-cycle pulse after the call's last output beat.
    n_kept : Out(count_bits)
        Kept tokens (map entries with ``kind != KIND_MERGED``) seen in the current or last
        call; final when ``done`` pulses.
    """

    def __init__(self, params: OrbisParams):
        p = self._p = _check_params(self, params)
        self._xb = p.x_beats
        self._mean = p.merge_mode == "mean"
        super().__init__({
            "map": In(stream.Signature(layouts.map_entry(p))),
            "x": In(stream.Signature(layouts.x_beat(p))),
            "o": Out(stream.Signature(layouts.x_beat(p))),
            "start": In(1),
            "n_tokens": In(p.count_bits),
            "busy": Out(1),
            "done": Out(1),
            "n_kept": Out(p.count_bits),
        })

    @property
    def params(self) -> OrbisParams:
        return self._p

    @property
    def mode(self) -> str:
        return self._p.merge_mode

    @property
    def sum_width(self) -> int:
        """Bits of a per-element sum in ``mean`` mode: ``Wx + count_bits``."""
        return self._p.Wx + self._p.count_bits

    @property
    def latency(self) -> int:
        """Pipeline latency in cycles (no stalls).

        ``replace``: from an ``x`` transfer to that beat valid at ``o``. ``mean``: from the
        first cycle of the output pass (one cycle after the last accumulate write) to the
        first output beat valid at ``o``.
        """
        if not self._mean:
            return 1
        return 1 + 1 + self._p.Wx          # memory read, divider input, Wx stages

    def elaborate(self, platform):
        m = Module()
        p, xb = self._p, self._xb
        beat_w = max(1, ceil_log2(xb))

        # Map and x handshake, shared by both modes: one held map entry; the next entry is
        # taken in the cycle the held entry's last beat moves, so tokens run back to back.
        m_left = Signal(p.count_bits)       # map entries still to take in this call
        have = Signal()
        keep = Signal()
        pos = Signal(p.idx_bits)
        base = Signal(range(p.N_max * xb + 1))
        beat = Signal(beat_w)
        kept = Signal(p.count_bits)
        running = Signal()
        ready_to_start = Signal(init=1)     # mean mode: low until the clear pass is over
        m.d.comb += [self.n_kept.eq(kept), self.busy.eq(running | ~ready_to_start)]

        x_take = Signal()                   # x.ready
        x_fire = Signal()
        last = Signal()
        m.d.comb += [
            self.x.ready.eq(x_take),
            x_fire.eq(self.x.valid & x_take),
            last.eq(beat == xb - 1),
            self.map.ready.eq(running & m_left.any() & (~have | (x_fire & last))),
        ]
        with m.If(x_fire):
            m.d.sync += beat.eq(0 if xb == 1 else (beat + 1) % xb)
            with m.If(last):
                m.d.sync += have.eq(0)
        with m.If(self.map.valid & self.map.ready):
            m.d.sync += [
                have.eq(1),
                keep.eq(self.map.payload.kind != layouts.KIND_MERGED),
                pos.eq(self.map.payload.pos),
                base.eq(self.map.payload.pos * xb),
                m_left.eq(m_left - 1),
                kept.eq(kept + (self.map.payload.kind != layouts.KIND_MERGED)),
            ]

        start = Signal()
        m.d.comb += start.eq(self.start & ~self.busy)
        m.d.sync += self.done.eq(0)
        with m.If(start):
            m.d.sync += [running.eq(1), m_left.eq(self.n_tokens), kept.eq(0), have.eq(0),
                         beat.eq(0)]

        if not self._mean:
            finish = self._elaborate_replace(m, have, keep, x_take, x_fire, m_left)
        else:
            finish = self._elaborate_mean(m, have, pos, base, beat, kept, x_take, x_fire,
                                          m_left, start, running, ready_to_start)
        with m.If(running & finish):
            m.d.sync += [running.eq(0), self.done.eq(1)]
        return m

    def _elaborate_replace(self, m, have, keep, x_take, x_fire, m_left):
        o = self.o
        o_free = Signal()
        m.d.comb += [
            o_free.eq(~o.valid | o.ready),
            # A dropped beat never waits for the output register.
            x_take.eq(have & (~keep | o_free)),
        ]
        with m.If(o_free):
            m.d.sync += [o.valid.eq(x_fire & keep), o.payload.eq(self.x.payload)]
        return ~m_left.any() & ~have & ~o.valid

    def _elaborate_mean(self, m, have, pos, base, beat, kept, x_take, x_fire, m_left, start,
                        running, ready_to_start):
        p, xb = self._p, self._xb
        lx, wx, cb = p.Lx, p.Wx, p.count_bits
        sw = self.sum_width
        depth = p.N_max * xb

        m.submodules.sums = sums = Memory(shape=data.ArrayLayout(signed(sw), lx),
                                          depth=depth, init=[])
        m.submodules.counts = counts = Memory(shape=unsigned(cb), depth=p.N_max, init=[])
        s_wp = sums.write_port()
        s_rp = sums.read_port(transparent_for=(s_wp,))
        c_wp = counts.write_port()
        c_rp = counts.read_port(transparent_for=(c_wp,))

        phase_out = Signal()                # 0: accumulate, 1: output pass

        # ---- accumulate: stage 0 reads, stage 1 adds and writes back.
        m.d.comb += x_take.eq(have & ~phase_out)
        v1 = Signal()
        a1 = Signal(range(depth))
        p1 = Signal(p.idx_bits)
        first1 = Signal()
        d1 = Signal(layouts.x_beat(p))
        m.d.sync += [v1.eq(x_fire), a1.eq(base + beat), p1.eq(pos), first1.eq(~beat.any()),
                     d1.eq(self.x.payload)]

        # ---- output pass: issue (A), memory data (B), divider.
        m.submodules.div = div = PipelinedDivider(lanes=lx, den_width=cb + 1, quo_width=wx)
        ra = Signal(range(depth + 1))       # next sum address to read
        rp = Signal(range(p.N_max + 1))     # position of the next read
        rb = Signal(max(1, ceil_log2(xb)))
        vB = Signal()
        aB = Signal(range(depth))
        pB = Signal(p.idx_bits)
        firstB = Signal()
        advA = Signal()
        issue = Signal()
        m.d.comb += [
            advA.eq(~vB | div.i.ready),
            issue.eq(phase_out & (rp != kept) & advA),
        ]
        with m.If(advA):
            m.d.sync += [vB.eq(issue), aB.eq(ra), pB.eq(rp), firstB.eq(~rb.any())]
        with m.If(issue):
            m.d.sync += ra.eq(ra + 1)
            if xb == 1:
                m.d.sync += rp.eq(rp + 1)
            else:
                with m.If(rb == xb - 1):
                    m.d.sync += [rb.eq(0), rp.eq(rp + 1)]
                with m.Else():
                    m.d.sync += rb.eq(rb + 1)

        # Clear pass after reset: the memories' contents survive a reset, the zero invariant
        # (every address not yet touched by this call holds zero) might not.
        clr = Signal(range(depth + 1))
        m.d.comb += ready_to_start.eq(clr == depth)
        with m.If(~ready_to_start):
            m.d.sync += clr.eq(clr + 1)
            m.d.comb += [
                s_wp.addr.eq(clr), s_wp.en.eq(1),
                c_wp.addr.eq(clr), c_wp.en.eq(clr < p.N_max), c_wp.data.eq(0),
            ]
            for k in range(lx):
                m.d.comb += s_wp.data[k].eq(0)
        with m.Elif(~phase_out):
            m.d.comb += [
                s_rp.addr.eq(base + beat), s_rp.en.eq(1),
                c_rp.addr.eq(pos), c_rp.en.eq(1),
                s_wp.addr.eq(a1), s_wp.en.eq(v1),
                c_wp.addr.eq(p1), c_wp.en.eq(v1 & first1),
                c_wp.data.eq(c_rp.data + 1),
            ]
            for k in range(lx):
                m.d.comb += s_wp.data[k].eq(s_rp.data[k] + d1.data[k])
        with m.Else():
            # The count of a position is read with its first beat and held by the read
            # port (enable low) for the others. Zero is written behind every read.
            m.d.comb += [
                s_rp.addr.eq(ra), s_rp.en.eq(advA),
                c_rp.addr.eq(rp), c_rp.en.eq(issue & ~rb.any()),
                s_wp.addr.eq(aB), s_wp.en.eq(vB & advA),
                c_wp.addr.eq(pB), c_wp.en.eq(vB & advA & firstB),
                c_wp.data.eq(0),
            ]
            for k in range(lx):
                m.d.comb += s_wp.data[k].eq(0)

        # Divider input: U = 2*S + c*(2**Wx + 1) = 2*S + c + c*2**Wx over d = 2*c; U is in
        # [c, d*2**Wx) for S in [c*min, c*max], and U // d = mean_rounded + 2**(Wx-1).
        c = c_rp.data
        m.d.comb += [div.i.valid.eq(vB), div.i.payload.den.eq(c << 1)]
        for k in range(lx):
            u = (s_rp.data[k] << 1) + c + (c << wx)
            m.d.comb += div.i.payload.num[k].eq(u[:cb + 1 + wx])
        m.d.comb += [self.o.valid.eq(div.o.valid), div.o.ready.eq(self.o.ready)]
        for k in range(lx):
            q = div.o.payload.quo[k]
            m.d.comb += self.o.payload.data[k].eq((q ^ (1 << (wx - 1))).as_signed())

        # ---- sequencing
        with m.If(start):
            m.d.sync += [phase_out.eq(0), ra.eq(0), rp.eq(0), rb.eq(0)]
        with m.If(running & ~phase_out & ~m_left.any() & ~have & ~v1):
            m.d.sync += phase_out.eq(1)
        return phase_out & (rp == kept) & ~vB & ~div.busy


class Unmerger(wiring.Component):
    """Restore ``N`` tokens in token order from the reduced outputs: ``o[n] = y[pos[n]]``.

    ``y`` beats are written to a memory in arrival (kept) order; token ``n``'s beat ``b`` is
    read from ``pos[n] * Dx/Lx + b`` as soon as that beat has been written, so the output
    streams while ``y`` still arrives: it only waits when a merged token's dst comes later
    in ``y`` than the merged token's turn in the output. One output beat per cycle in steady
    state.

    Parameters
    ----------
    params : OrbisParams
        Uses ``N_max``, ``Dx``, ``Lx`` and ``Wx``.

    Members
    -------
    map : In(stream.Signature(layouts.map_entry(params)))
        One entry per token, token order; ``pos`` is used.
    y : In(stream.Signature(layouts.x_beat(params)))
        ``n_kept`` reduced tokens of ``Dx/Lx`` beats each, kept order.
    o : Out(stream.Signature(layouts.x_beat(params)))
        ``n_tokens`` restored tokens, token order.
    start : In(1)
        Start a call (sampled while ``busy`` is low).
    n_tokens : In(count_bits)
        Tokens of the call (map entries and restored tokens), latched at ``start``.
    n_kept : In(count_bits)
        Reduced tokens of the call (``y`` tokens taken), latched at ``start``.
    busy : Out(1)
        A call is running.
    done : Out(1)
        One-cycle pulse after the call's last output beat.
    """

    def __init__(self, params: OrbisParams):
        p = self._p = _check_params(self, params)
        self._xb = p.x_beats
        super().__init__({
            "map": In(stream.Signature(layouts.map_entry(p))),
            "y": In(stream.Signature(layouts.x_beat(p))),
            "o": Out(stream.Signature(layouts.x_beat(p))),
            "start": In(1),
            "n_tokens": In(p.count_bits),
            "n_kept": In(p.count_bits),
            "busy": Out(1),
            "done": Out(1),
        })

    @property
    def params(self) -> OrbisParams:
        return self._p

    @property
    def latency(self) -> int:
        """Cycles from a ``y`` transfer to the earliest output beat that copies it."""
        return 2

    def elaborate(self, platform):
        m = Module()
        p, xb = self._p, self._xb
        depth = p.N_max * xb
        beat_w = max(1, ceil_log2(xb))

        m.submodules.ymem = ymem = Memory(shape=layouts.x_beat(p), depth=depth, init=[])
        wp = ymem.write_port()
        rp = ymem.read_port()

        start = Signal()
        m.d.comb += start.eq(self.start & ~self.busy)

        # y side: written in arrival order; `w` beats are in memory (readable next cycle).
        w = Signal(range(depth + 1))
        y_total = Signal(range(depth + 1))
        y_fire = Signal()
        m.d.comb += [
            self.y.ready.eq(self.busy & (w != y_total)),
            y_fire.eq(self.y.valid & self.y.ready),
            wp.addr.eq(w), wp.data.eq(self.y.payload), wp.en.eq(y_fire),
        ]
        with m.If(y_fire):
            m.d.sync += w.eq(w + 1)

        # Map side: one held entry; a beat is issued once its source beat is in memory.
        m_left = Signal(p.count_bits)
        have = Signal()
        base = Signal(range(depth + 1))
        beat = Signal(beat_w)
        addr = Signal(range(depth + 1))
        vB = Signal()
        adv = Signal()
        issue = Signal()
        last = Signal()
        m.d.comb += [
            addr.eq(base + beat),
            last.eq(beat == xb - 1),
            adv.eq(~vB | self.o.ready),
            issue.eq(have & (addr < w) & adv),
            self.map.ready.eq(self.busy & m_left.any() & (~have | (issue & last))),
            rp.addr.eq(addr), rp.en.eq(adv),
            self.o.valid.eq(vB), self.o.payload.eq(rp.data),
        ]
        with m.If(adv):
            m.d.sync += vB.eq(issue)
        with m.If(issue):
            m.d.sync += beat.eq(0 if xb == 1 else (beat + 1) % xb)
            with m.If(last):
                m.d.sync += have.eq(0)
        with m.If(self.map.valid & self.map.ready):
            m.d.sync += [have.eq(1), base.eq(self.map.payload.pos * xb), m_left.eq(m_left - 1)]

        m.d.sync += self.done.eq(0)
        with m.If(start):
            m.d.sync += [self.busy.eq(1), m_left.eq(self.n_tokens), have.eq(0), beat.eq(0),
                         w.eq(0), y_total.eq(self.n_kept * xb)]
        with m.If(self.busy & ~m_left.any() & ~have & ~vB):
            m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        return m
