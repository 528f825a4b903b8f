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

from amaranth.hdl import Cat, Const, Module, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import layouts
from .divider import PipelinedDivider
from .skid import SkidBuffer
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

    Map entries go through a :class:`~hw.skid.SkidBuffer` (``map.ready`` is a register)
    into the held entry.

    ``replace``
        A streaming filter: beats of kept tokens pass through a one-register stage, beats of
        merged tokens are dropped. One ``x`` beat per cycle; the output runs at the kept share
        of that.
    ``mean``
        Two passes. Accumulate: every ``x`` beat is added element-wise into a sum memory at
        ``pos * Dx/Lx + beat`` (``Wx + count_bits`` bits per element) and each token adds one
        to ``count[pos]``; a four-stage read-modify-write pipeline (read, read data, register
        + forward + add, write) at one beat per cycle, the read ports transparent to the
        write ports and the two writes a read cannot see forwarded, so back-to-back updates
        of one address are exact. Output: the sums are read back in position order into
        registers, ``floor((2*S + c) / (2*c))`` is computed by ``Lx`` exact pipelined
        restoring dividers sharing the divisor, one beat per cycle, through an output
        :class:`~hw.skid.SkidBuffer` whose empty flag is the whole pipeline's enable. The
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
        # issue, read-port data, data register, divider input, Wx stages, output register
        return 1 + 1 + 1 + self._p.Wx + 1

    def elaborate(self, platform):
        m = Module()
        p, xb = self._p, self._xb
        depth = p.N_max * xb
        beat_w = max(1, ceil_log2(xb))

        start = Signal()
        running = Signal()
        ready_to_start = Signal(init=1)     # mean mode: low until the clear pass is over
        kept = Signal(p.count_bits)
        m.d.comb += [
            self.n_kept.eq(kept),
            self.busy.eq(running | ~ready_to_start),
            start.eq(self.start & ~self.busy),
        ]

        # Map: skid buffer (map.ready is a register) -> the held entry. The next entry is
        # taken in the cycle the held entry's last beat moves, so tokens run back to back.
        entry = data.StructLayout({"keep": 1, "pos": p.idx_bits, "base": range(depth + 1)})

        def fill(pl, e):
            return [pl.keep.eq(e.kind != layouts.KIND_MERGED), pl.pos.eq(e.pos),
                    pl.base.eq(e.pos * xb)]
        mq, take, map_idle = _map_input(m, self.map, p, start, self.n_tokens, fill, entry)
        with m.If(self.map.valid & self.map.ready):
            m.d.sync += kept.eq(kept + (self.map.payload.kind != layouts.KIND_MERGED))

        have = Signal()
        keep = Signal()
        pos = Signal(p.idx_bits)
        addr = Signal(range(depth + 1))     # pos * Dx/Lx + beat (mean: sum address)
        beat = Signal(beat_w)
        x_take = Signal()                   # x.ready
        x_fire = Signal()
        last = Signal()
        m.d.comb += [
            self.x.ready.eq(x_take),
            x_fire.eq(self.x.valid & x_take),
            last.eq(beat == xb - 1),
            take.eq(~have | (x_fire & last)),
        ]
        with m.If(take):
            m.d.sync += [have.eq(mq.valid), keep.eq(mq.payload.keep), pos.eq(mq.payload.pos),
                         addr.eq(mq.payload.base), beat.eq(0)]
        with m.Elif(x_fire):
            m.d.sync += [addr.eq(addr + 1), beat.eq(beat + 1)]

        m.d.sync += self.done.eq(0)
        with m.If(start):
            m.d.sync += [running.eq(1), kept.eq(0)]

        if not self._mean:
            finish = self._elaborate_replace(m, have, keep, x_take, x_fire, map_idle)
        else:
            finish = self._elaborate_mean(m, have, pos, addr, beat, kept, x_take, x_fire,
                                          map_idle, start, running, ready_to_start)
        with m.If(running & finish):
            m.d.sync += [running.eq(0), self.done.eq(1)]
        return m

    def _elaborate_replace(self, m, have, keep, x_take, x_fire, map_idle):
        o = self.o
        o_free = Signal()
        m.d.comb += [
            o_free.eq(~o.valid | o.ready),
            # A dropped beat never waits for the output register.
            x_take.eq(have & (~keep | o_free)),
        ]
        with m.If(o_free):
            m.d.sync += [o.valid.eq(x_fire & keep), o.payload.eq(self.x.payload)]
        return map_idle & ~have & ~o.valid

    def _elaborate_mean(self, m, have, pos, addr, beat, kept, x_take, x_fire, map_idle, start,
                        running, ready_to_start):
        p, xb = self._p, self._xb
        lx, wx, cb = p.Lx, p.Wx, p.count_bits
        sw = self.sum_width
        depth = p.N_max * xb
        sums_shape = data.ArrayLayout(signed(sw), lx)

        # Read ports transparent to the write ports: synthesis emulates that more cheaply
        # than read-before-write, and the accumulate pass then forwards two writes, not three.
        sums = _LaneMemory(m, "sums", signed(sw), lx, depth, transparent=True)
        s_wp = _Port(sums.waddr, sums.wdata, sums.we)
        s_rp = _Port(sums.raddr, sums.rdata, sums.re)
        m.submodules.counts = counts = Memory(shape=unsigned(cb), depth=p.N_max, init=[])
        c_wp = counts.write_port()
        c_rp = counts.read_port(transparent_for=(c_wp,))

        phase_out = Signal()                # 0: accumulate, 1: output pass

        # ---- accumulate: a read-modify-write pipeline that never stalls.
        #   S0  x transfer: read sums[addr], counts[pos]
        #   S1  read-port data; forwarding flags computed
        #   S2  read data registered (q2) -> newest value (forwarding mux) -> + x -> d3
        #   S3  write d3
        # A read in cycle t sees the writes of cycles <= t (transparent port); the writes of
        # cycles t+1 and t+2 (held in d4 and d3 when the beat reaches S2) are forwarded,
        # newest first.
        m.d.comb += x_take.eq(have & ~phase_out)
        v1, v2 = Signal(), Signal()
        a1, a2 = Signal(range(depth)), Signal(range(depth))
        p1, p2 = Signal(p.idx_bits), Signal(p.idx_bits)
        f1, f2 = Signal(), Signal()
        d1, d2 = Signal(layouts.x_beat(p)), Signal(layouts.x_beat(p))
        q2 = Signal(sums_shape)
        qc2 = Signal(cb)
        m.d.sync += [v1.eq(x_fire), a1.eq(addr), p1.eq(pos), f1.eq(~beat.any()),
                     d1.eq(self.x.payload),
                     v2.eq(v1), a2.eq(a1), p2.eq(p1), f2.eq(f1), d2.eq(d1),
                     q2.eq(s_rp.data), qc2.eq(c_rp.data)]
        s_old, s_we3, s_a3, s_d3 = _forward(m, "sum", sums_shape, range(depth),
                                            a1, a2, v2, q2)
        c_old, c_we3, c_a3, c_d3 = _forward(m, "count", unsigned(cb), unsigned(p.idx_bits),
                                            p1, p2, v2 & f2, qc2)
        m.d.sync += c_d3.eq(c_old + 1)
        for k in range(lx):
            m.d.sync += s_d3[k].eq(s_old[k] + d2.data[k])

        # ---- output pass: issue (A), read-port data (B), registered data (C), divider,
        # output skid buffer. Every stage advances on `adv`, the divider's enable, which
        # comes from flip-flops (the skid buffer's empty flag), not from `o.ready`.
        m.submodules.div = div = PipelinedDivider(lanes=lx, den_width=cb + 1, quo_width=wx)
        m.submodules.out = out = SkidBuffer(layouts.x_beat(p))
        ra = Signal(range(depth + 1))       # next sum address to read
        rp = Signal(range(p.N_max + 1))     # position of the next read
        rb = Signal(max(1, ceil_log2(xb)))
        more = Signal()                     # rp != kept, as a register
        vB, vC = Signal(), Signal()
        aB = Signal(range(depth))
        pB = Signal(p.idx_bits)
        firstB = Signal()
        qs = Signal(sums_shape)
        qk = Signal(cb + 1 + wx)            # c * (2**Wx + 1)
        qd = Signal(cb + 1)                 # 2 * c
        adv = Signal()
        issue = Signal()
        m.d.comb += [
            adv.eq(div.i.ready),
            issue.eq(phase_out & more & adv),
        ]
        with m.If(adv):
            m.d.sync += [vB.eq(issue), aB.eq(ra), pB.eq(rp), firstB.eq(~rb.any()),
                         vC.eq(vB), qs.eq(s_rp.data), qd.eq(c_rp.data << 1)]
            c = c_rp.data
            if wx >= cb:                    # no overlap: a concatenation, not an adder
                m.d.sync += qk.eq(Cat(c, Const(0, wx - cb), c))
            else:
                m.d.sync += qk.eq(c + (c << wx))
        with m.If(issue):
            m.d.sync += ra.eq(ra + 1)
            if xb == 1:
                m.d.sync += [rp.eq(rp + 1), more.eq(rp + 1 != kept)]
            else:
                with m.If(rb == xb - 1):
                    m.d.sync += [rb.eq(0), rp.eq(rp + 1), more.eq(rp + 1 != kept)]
                with m.Else():
                    m.d.sync += rb.eq(rb + 1)

        # Clear pass after reset: the memories' contents survive a reset, the zero invariant
        # (every address not yet touched by this call holds zero) might not.
        clr = Signal(range(depth))
        clearing = Signal(init=1)           # a register, so `busy` is one gate from flops
        m.d.comb += ready_to_start.eq(~clearing)
        with m.If(clearing):
            m.d.sync += [clr.eq(clr + 1), clearing.eq(clr != depth - 1)]
            m.d.comb += [
                s_wp.addr.eq(clr), s_wp.en.eq(1),
                c_wp.addr.eq(clr), c_wp.en.eq(clr < p.N_max), c_wp.data.eq(0),
            ]
            for k in range(lx):
                m.d.comb += s_wp.data[k].eq(0)
        with m.Elif(~phase_out):
            m.d.comb += [
                s_rp.addr.eq(addr), s_rp.en.eq(1),
                c_rp.addr.eq(pos), c_rp.en.eq(1),
                s_wp.addr.eq(s_a3), s_wp.en.eq(s_we3), s_wp.data.eq(s_d3),
                c_wp.addr.eq(c_a3), c_wp.en.eq(c_we3), c_wp.data.eq(c_d3),
            ]
        with m.Else():
            # The count of a position is read with its first beat and held by the read
            # port (enable low) for the others. Zero is written behind every read.
            m.d.comb += [
                s_rp.addr.eq(ra), s_rp.en.eq(adv),
                c_rp.addr.eq(rp), c_rp.en.eq(issue & ~rb.any()),
                s_wp.addr.eq(aB), s_wp.en.eq(vB & adv),
                c_wp.addr.eq(pB), c_wp.en.eq(vB & adv & firstB),
                c_wp.data.eq(0),
            ]
            for k in range(lx):
                m.d.comb += s_wp.data[k].eq(0)

        # Divider input: U = 2*S + c*(2**Wx + 1) = 2*S + c + c*2**Wx over d = 2*c; U is in
        # [c, d*2**Wx) for S in [c*min, c*max], and U // d = mean_rounded + 2**(Wx-1).
        m.d.comb += [div.i.valid.eq(vC), div.i.payload.den.eq(qd)]
        for k in range(lx):
            u = (qs[k] << 1) + qk
            m.d.comb += div.i.payload.num[k].eq(u[:cb + 1 + wx])
        m.d.comb += [out.i.valid.eq(div.o.valid), div.o.ready.eq(out.i.ready)]
        for k in range(lx):
            q = div.o.payload.quo[k]
            m.d.comb += out.i.payload.data[k].eq((q ^ (1 << (wx - 1))).as_signed())
        wiring.connect(m, out.o, wiring.flipped(self.o))

        # ---- sequencing
        with m.If(start):
            m.d.sync += [phase_out.eq(0), ra.eq(0), rp.eq(0), rb.eq(0)]
        with m.If(running & ~phase_out & map_idle & ~have & ~v1 & ~v2 & ~s_we3):
            m.d.sync += [phase_out.eq(1), more.eq(kept != 0)]
        return phase_out & ~more & ~vB & ~vC & ~div.busy & ~out.busy


def _forward(m, name, shape, addr_shape, a1, a2, we2, q2):
    """Write-back and forwarding of a read-modify-write pipeline (see ``Merger``, mean).

    ``a1``: address of the beat in S1; ``a2``, ``we2``, ``q2``: address, write enable and
    registered read data of the beat in S2. Returns ``(old, we3, a3, d3)``: the newest value
    of ``a2`` (combinational, from registers only), and the S3 write registers; the caller
    assigns ``d3`` (from ``old``) in the sync domain. The read port must be transparent to
    the write port (a read sees the write of its own cycle).
    """
    we3, a3, d3 = Signal(name=f"{name}_we3"), Signal(addr_shape, name=f"{name}_a3"), \
        Signal(shape, name=f"{name}_d3")
    d4 = Signal(shape, name=f"{name}_d4")
    # Flags for the beat entering S2: which of the writes of the next two cycles (d3 then,
    # d4 then) hit its address. Compared one stage early so S2 is a mux + adder.
    f3, f4 = Signal(name=f"{name}_fw3"), Signal(name=f"{name}_fw4")
    m.d.sync += [
        we3.eq(we2), a3.eq(a2), d4.eq(d3),
        f3.eq(we2 & (a2 == a1)), f4.eq(we3 & (a3 == a1)),
    ]
    old = Signal(shape, name=f"{name}_old")
    with m.If(f3):
        m.d.comb += old.eq(d3)
    with m.Elif(f4):
        m.d.comb += old.eq(d4)
    with m.Else():
        m.d.comb += old.eq(q2)
    return old, we3, a3, d3


class _Port:
    """``addr``/``data``/``en`` view of a :class:`_LaneMemory` port (as a memory port)."""

    def __init__(self, addr, data, en):
        self.addr, self.data, self.en = addr, data, en


class Unmerger(wiring.Component):
    """Restore ``N`` tokens in token order from the reduced outputs: ``o[n] = y[pos[n]]``.

    ``y`` beats are written to a memory in arrival (kept) order; token ``n``'s beat ``b`` is
    read from ``pos[n] * Dx/Lx + b`` as soon as that beat has been written, so the output
    streams while ``y`` still arrives: it only waits when a merged token's dst comes later
    in ``y`` than the merged token's turn in the output. One output beat per cycle in steady
    state.

    Pipeline (timing): map entries go through a :class:`~hw.skid.SkidBuffer` (``map.ready``
    is a register) into the held entry, whose ``addr`` register is the read address; the
    read data goes into a capture register (no logic in between: on ECP5 the block RAM's
    clock-to-output alone is about 6 ns) and through a second skid buffer to ``o``. So
    ``o`` comes from registers and ``o.ready`` only enables registers; ``y.ready`` is a
    register too. ``ymem`` is split into lane groups of at least 16 bits (one memory each),
    so deep memories map to deep-and-narrow block RAMs without a row multiplexer.

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
        """Cycles from a ``y`` transfer to the earliest output beat that copies it.

        Transfer (written at the end of cycle 0), read issued (1), read-port data (2),
        capture register (3), output register of the skid buffer, ``o.valid`` (4).
        """
        return 4

    def elaborate(self, platform):
        m = Module()
        p, xb = self._p, self._xb
        depth = p.N_max * xb
        beat_w = max(1, ceil_log2(xb))

        # Lane groups of >= 16 bits in separate memories: synthesis then maps the deep
        # memory as deep-and-narrow block RAMs whose outputs need no row multiplexer, so the
        # read data reaches its capture register through at most one gate. The read port
        # is transparent: reads (addr < w) never meet the write (w), and synthesis emulates
        # a transparent port more cheaply than a read-before-write one.
        ym = _LaneMemory(m, "ymem", signed(p.Wx), p.Lx, depth, transparent=True)

        start = Signal()
        m.d.comb += start.eq(self.start & ~self.busy)

        # y side: written in arrival order; `w` beats are in memory (readable next cycle).
        # `y_open` (beats left to take) is a register, so `y.ready` and the write enable are
        # one gate from flip-flops.
        w = Signal(range(depth + 1))
        y_left = Signal(range(depth + 1))
        y_open = Signal()
        y_fire = Signal()
        m.d.comb += [
            self.y.ready.eq(y_open),
            y_fire.eq(self.y.valid & y_open),
            ym.waddr.eq(w), ym.wdata.eq(self.y.payload.data), ym.we.eq(y_fire),
        ]
        with m.If(y_fire):
            m.d.sync += [w.eq(w + 1), y_left.eq(y_left - 1), y_open.eq(y_left != 1)]

        # Map side: map skid buffer -> held entry (`addr` = next beat's source address) ->
        # read port -> output skid buffer. A beat is issued once its source beat is in memory.
        mq, take_map, map_idle = _map_input(m, self.map, p, start, self.n_tokens,
                                            lambda pl, e: [pl.eq(e.pos * xb)],
                                            range(depth + 1))
        m.submodules.out = out = SkidBuffer(layouts.x_beat(p))
        have = Signal()
        addr = Signal(range(depth + 1))
        beat = Signal(beat_w)
        last = Signal()
        v_rd = Signal()                     # the read ports hold a beat
        v_cap = Signal()                    # the capture register holds a beat for `out`
        cap = Signal(layouts.x_beat(p))
        adv_cap = Signal()
        adv = Signal()
        issue = Signal()
        m.d.comb += [
            last.eq(beat == xb - 1),
            adv_cap.eq(~v_cap | out.i.ready),
            adv.eq(~v_rd | adv_cap),
            issue.eq(have & (addr < w) & adv),
            take_map.eq(~have | (issue & last)),
            ym.raddr.eq(addr), ym.re.eq(adv),
            out.i.valid.eq(v_cap), out.i.payload.eq(cap),
        ]
        wiring.connect(m, out.o, wiring.flipped(self.o))
        with m.If(adv):
            m.d.sync += v_rd.eq(issue)
        with m.If(adv_cap):
            # Read data straight into flip-flops (their enable), no logic in between.
            m.d.sync += [v_cap.eq(v_rd), cap.data.eq(ym.rdata)]
        with m.If(take_map):
            m.d.sync += [have.eq(mq.valid), addr.eq(mq.payload), beat.eq(0)]
        with m.Elif(issue):
            m.d.sync += [addr.eq(addr + 1), beat.eq(beat + 1)]

        m.d.sync += self.done.eq(0)
        with m.If(start):
            m.d.sync += [self.busy.eq(1), w.eq(0), y_left.eq(self.n_kept * xb),
                         y_open.eq(self.n_kept != 0)]
        with m.If(self.busy & map_idle & ~have & ~v_rd & ~v_cap & ~out.busy):
            m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        return m


class _LaneMemory:
    """A memory of ``lanes`` elements per word, built as one memory per lane group.

    Each group is at least ``min_bits`` wide (``ceil(min_bits / width)`` lanes), so synthesis
    maps a deep memory to deep-and-narrow block RAMs (ECP5: 8192 x 2 per DP16KD) whose
    outputs need no row multiplexer; one wide memory would be split into rows of shallower
    blocks with a multiplexer behind them, in front of the read data's first register.

    Attributes ``waddr``, ``wdata``, ``we`` (one write port) and ``raddr``, ``re``, ``rdata``
    (one read port, synchronous, data held while ``re`` is low) are driven/read by the caller.
    """

    def __init__(self, m, name, elem, lanes, depth, *, transparent, min_bits=16):
        width = Shape.cast(elem).width
        per = max(1, -(-min_bits // width))
        self.waddr = Signal(range(depth), name=f"{name}_waddr")
        self.raddr = Signal(range(depth), name=f"{name}_raddr")
        self.we = Signal(name=f"{name}_we")
        self.re = Signal(name=f"{name}_re")
        self.wdata = Signal(data.ArrayLayout(elem, lanes), name=f"{name}_wdata")
        self.rdata = Signal(data.ArrayLayout(elem, lanes), name=f"{name}_rdata")
        for g, lo in enumerate(range(0, lanes, per)):
            n = min(per, lanes - lo)
            mem = Memory(shape=data.ArrayLayout(elem, n), depth=depth, init=[])
            m.submodules[f"{name}{g}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(transparent_for=(wp,) if transparent else ())
            m.d.comb += [wp.addr.eq(self.waddr), wp.en.eq(self.we),
                         rp.addr.eq(self.raddr), rp.en.eq(self.re)]
            for k in range(n):
                m.d.comb += [wp.data[k].eq(self.wdata[lo + k]),
                             self.rdata[lo + k].eq(rp.data[k])]


def _map_input(m, map_in, p, start, n_tokens, fill, shape):
    """The map input of a call: exactly ``n_tokens`` entries through a :class:`SkidBuffer`.

    ``map.ready`` is a register (``m_open``) and the skid buffer's empty flag, so the block's
    issue logic does not reach the map producer (the map buffer, through the top's route
    multiplexer). ``fill(payload, entry)`` returns the statements that store a map entry
    in the skid buffer's ``payload`` (of ``shape``).

    Returns ``(o, take, idle)``: the skid buffer's output stream (``o.valid``, ``o.payload``),
    the signal the caller drives high to take it (``o.ready``), and "every entry of the call
    has been taken".
    """
    m.submodules.map_in = mq = SkidBuffer(shape)
    m_left = Signal(p.count_bits)       # map entries still to accept in this call
    m_open = Signal()                   # m_left != 0, as a register
    take = Signal()
    idle = Signal()
    m.d.comb += [
        mq.i.valid.eq(map_in.valid & m_open),
        map_in.ready.eq(mq.i.ready & m_open),
        mq.o.ready.eq(take),
        idle.eq(~m_open & ~mq.busy),
    ]
    m.d.comb += fill(mq.i.payload, map_in.payload)
    with m.If(map_in.valid & map_in.ready):
        m.d.sync += [m_left.eq(m_left - 1), m_open.eq(m_left != 1)]
    with m.If(start):
        m.d.sync += [m_left.eq(n_tokens), m_open.eq(n_tokens != 0)]
    return mq.o, take, idle
