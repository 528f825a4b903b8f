"""TokenReductionUnit: the top level of the ORBIS token-reduction hardware.

Order of a call (DESIGN.md sections 1 and 4)::

    step t-1 block output --guide--> [match]  -> map (back bank)
    call_start:  back bank becomes front (unless reusing the previous map)
    x  --> [merge]   --> reduced  --> attention (outside) --> y
    y  --> [unmerge] --> restored

Matching for call ``k+1`` (its guide is the output of step ``t``, ready one step early) runs in
the matcher while call ``k``'s merge and unmerge stream from the other map bank: the map is
double-buffered (:class:`~hw.mapbuf.MapBuffer`), which is how the matcher's latency hides.
A call may reuse the previous map without matching (``call_reuse``: the matching cache).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .mapbuf import MapBuffer
from .matcher import TokenMatcher, matcher_config
from .merge import Merger, Unmerger
from .params import OrbisParams, ParamError

__all__ = ["TokenReductionUnit", "CallError"]


class CallError:
    """Bits of ``TokenReductionUnit.call_error``."""
    NO_MAP = 1      # call_start without a fresh map, none being matched, and no reuse


class TokenReductionUnit(wiring.Component):
    """Guide in, x in / reduced out, y in / restored out, map out; config and status.

    Parameters
    ----------
    params : OrbisParams

    Members
    -------
    cfg : In(matcher_config(params))
        Matching configuration (grid, window, target ``r`` or budget ``tau``, rounds, quota,
        seed, shift), sampled at ``match_start``.
    match_start : In(1)
        Pulse: match the next call on ``guide``; the map goes to the back bank. Ignored while
        the matcher is busy.
    guide : In(stream(guide_beat))
        The call's guide tokens (``N * D/L`` beats).
    call_start, call_reuse : In(1), In(1)
        Pulse ``call_start`` while ``call_busy`` and ``map_busy`` are low (it is ignored
        otherwise): run a call's merge then unmerge. With
        ``call_reuse`` low the call uses the newest matched map (waiting for a match in
        progress if there is no fresh one); high, it reuses the front map.
    x : In(stream(x_beat))
        Activations of the call, ``N * Dx/Lx`` beats in token order.
    reduced : Out(stream(x_beat))
        The reduced sequence, ``(N - r) * Dx/Lx`` beats, kept tokens in token order.
    y : In(stream(x_beat))
        Attention outputs of the reduced sequence, ``(N - r) * Dx/Lx`` beats.
    restored : Out(stream(x_beat))
        ``N * Dx/Lx`` beats in token order.
    map_read : In(1)
        Pulse while idle: stream the front map to ``map``.
    map : Out(stream(map_entry))
    match_busy, call_busy, map_busy : Out(1)
    match_error, match_error_code : Out(1), Out(3)
        The matcher rejected the last configuration (see :class:`hw.matcher.MatcherError`).
    call_error : Out(2)
        Sticky until the next ``call_start``; see :class:`CallError`.
    fresh : Out(1)
        A matched map is waiting in the back bank.
    n_tokens, r : Out(count_bits)
        Token count and merges of the front map.
    max_abs : Out(17)
        Largest ``|g|`` the matcher saw in its last call (for the next call's shift).
    cyc_match, cyc_call, cyc_overlap : Out(32)
        Since reset or ``cnt_clear``: cycles the matcher was busy, cycles a call was running,
        and cycles the matcher was busy while a merge/unmerge stream transferred. A cycle is
        counted one cycle after it (the conditions are registered), so read the counters
        at least one cycle after the busy flag of interest fell.
    cnt_clear : In(1)
    matcher : TokenMatcher
        The matcher submodule, whose per-phase counters are reachable for simulation.
    """

    def __init__(self, params: OrbisParams):
        if not isinstance(params, OrbisParams):
            raise ParamError(f"params must be an OrbisParams, not {type(params).__name__}")
        self._p = params
        p = params
        cb = p.count_bits
        xb = layouts.x_beat(p)
        self.matcher = TokenMatcher(p)
        self.mapbuf = MapBuffer(p)
        self.merger = Merger(p)
        self.unmerger = Unmerger(p)
        super().__init__({
            "cfg": In(matcher_config(p)),
            "match_start": In(1),
            "guide": In(stream.Signature(layouts.guide_beat(p))),
            "call_start": In(1),
            "call_reuse": In(1),
            "x": In(stream.Signature(xb)),
            "reduced": Out(stream.Signature(xb)),
            "y": In(stream.Signature(xb)),
            "restored": Out(stream.Signature(xb)),
            "map_read": In(1),
            "map": Out(stream.Signature(layouts.map_entry(p))),
            "match_busy": Out(1),
            "call_busy": Out(1),
            "map_busy": Out(1),
            "match_error": Out(1),
            "match_error_code": Out(3),
            "call_error": Out(2),
            "fresh": Out(1),
            "n_tokens": Out(cb),
            "r": Out(cb),
            "max_abs": Out(17),
            "cyc_match": Out(32),
            "cyc_call": Out(32),
            "cyc_overlap": Out(32),
            "cnt_clear": In(1),
        })

    @property
    def params(self) -> OrbisParams:
        return self._p

    def elaborate(self, platform):
        p = self._p
        m = Module()
        m.submodules.matcher = mt = self.matcher
        m.submodules.mapbuf = mb = self.mapbuf
        m.submodules.merger = mg = self.merger
        m.submodules.unmerger = um = self.unmerger
        cb = p.count_bits

        # ---- matching into the back bank ---------------------------------------------------
        wiring.connect(m, wiring.flipped(self.guide), mt.guide)
        wiring.connect(m, mt.map, mb.w)
        running = Signal()            # a match this unit started has not finished yet
        fresh = Signal()
        back_n = Signal(cb)
        back_r = Signal(cb)
        go_match = self.match_start & ~mt.busy & ~running
        m.d.comb += [
            mt.cfg.eq(self.cfg),
            mt.start.eq(go_match),
            mb.w_start.eq(go_match),
            self.match_busy.eq(mt.busy | running),
            self.match_error.eq(mt.error),
            self.match_error_code.eq(mt.error_code),
            self.max_abs.eq(mt.max_abs),
            self.fresh.eq(fresh),
        ]
        # `done` is a level the matcher clears when it takes `start`, so from the cycle after
        # `go_match` on, done & ~busy means this match has finished (error or not).
        with m.If(go_match):
            m.d.sync += [running.eq(1), fresh.eq(0)]
        with m.Elif(running & mt.done & ~mt.busy):
            m.d.sync += running.eq(0)
            with m.If(~mt.error):
                m.d.sync += [fresh.eq(1), back_n.eq(mb.w_count), back_r.eq(mt.r)]

        # ---- calls: merge then unmerge from the front bank --------------------------------
        front_n = Signal(cb)
        front_r = Signal(cb)
        n_kept = Signal(cb)           # front_n - front_r, registered with them (timing)
        have_map = Signal()
        m.d.comb += [self.n_tokens.eq(front_n), self.r.eq(front_r)]

        # Map reader routing: 0 merger, 1 unmerger, 2 host.
        route = Signal(2)
        m.d.comb += [
            mg.map.payload.eq(mb.r.payload),
            um.map.payload.eq(mb.r.payload),
            self.map.payload.eq(mb.r.payload),
        ]
        with m.Switch(route):
            with m.Case(0):
                m.d.comb += [mg.map.valid.eq(mb.r.valid), mb.r.ready.eq(mg.map.ready)]
            with m.Case(1):
                m.d.comb += [um.map.valid.eq(mb.r.valid), mb.r.ready.eq(um.map.ready)]
            with m.Case(2):
                m.d.comb += [self.map.valid.eq(mb.r.valid), mb.r.ready.eq(self.map.ready)]

        wiring.connect(m, wiring.flipped(self.x), mg.x)
        wiring.connect(m, mg.o, wiring.flipped(self.reduced))
        wiring.connect(m, wiring.flipped(self.y), um.y)
        wiring.connect(m, um.o, wiring.flipped(self.restored))
        m.d.comb += [
            mg.n_tokens.eq(front_n),
            um.n_tokens.eq(front_n),
            um.n_kept.eq(n_kept),
            mb.rd_count.eq(front_n),
        ]

        call_error = Signal(2)
        m.d.comb += self.call_error.eq(call_error)
        # The map reader's start, registered: rd_go (from this FSM's state, the call inputs
        # and the blocks' busy) reaches the map buffer's read-side registers a cycle later,
        # not in the same cycle (the UP5K's critical path at 35 MHz).
        rd_go = Signal()
        rd_start = Signal()
        m.d.sync += rd_start.eq(rd_go)
        m.d.comb += mb.rd_start.eq(rd_start)
        # The map readout's end waits on the map buffer's rd_busy registered (rd_busy is a
        # function of the buffer's output skid buffer: it reached this FSM's state register
        # through six LUT levels). rd_busy rises the cycle after rd_start, its register a
        # cycle later: rd_start and rd_start_d cover those two cycles.
        block_go = [Signal(name="merger_go"), Signal(name="unmerger_go")]
        for go, block in zip(block_go, (mg, um)):
            block_start = Signal(name=f"{go.name}_r")
            m.d.sync += block_start.eq(go)
            m.d.comb += block.start.eq(block_start)
        rd_busy_r = Signal()
        rd_start_d = Signal()
        m.d.sync += [rd_busy_r.eq(mb.rd_busy), rd_start_d.eq(rd_start)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.call_start):
                    m.d.sync += call_error.eq(0)
                    with m.If(self.call_reuse & have_map):
                        m.next = "MERGE_START"
                    with m.Elif(~self.call_reuse):
                        m.next = "WAIT_MAP"
                    with m.Else():
                        m.d.sync += call_error.eq(CallError.NO_MAP)
                with m.Elif(self.map_read & have_map):
                    m.d.comb += rd_go.eq(1)
                    m.d.sync += route.eq(2)
                    m.next = "MAP_OUT"
            with m.State("WAIT_MAP"):
                m.d.comb += self.call_busy.eq(1)
                with m.If(fresh & ~running):
                    m.d.comb += mb.swap.eq(1)
                    m.d.sync += [fresh.eq(0), have_map.eq(1),
                                 front_n.eq(back_n), front_r.eq(back_r),
                                 n_kept.eq(back_n - back_r)]
                    m.next = "MERGE_START"
                with m.Elif(~running & ~self.match_start):
                    m.d.sync += call_error.eq(CallError.NO_MAP)
                    m.next = "IDLE"
            # A pass: start the block (once it is idle: the merger clears its memories after
            # a reset), stream the front map to it, wait for its done, go on.
            # The block's start is registered like the map reader's (block_go one cycle
            # before): both arrive together, a cycle after this state. The block's busy
            # cannot rise in between (only start raises it) and its done is a one-cycle
            # pulse at the end of the pass.
            passes = [("MERGE", mg, 0, "UNMERGE_START"), ("UNMERGE", um, 1, "IDLE")]
            for state, block, route_idx, after in passes:
                with m.State(f"{state}_START"):
                    m.d.comb += self.call_busy.eq(1)
                    with m.If(~block.busy):
                        m.d.comb += [block_go[route_idx].eq(1), rd_go.eq(1)]
                        m.d.sync += route.eq(route_idx)
                        m.next = state
                with m.State(state):
                    m.d.comb += self.call_busy.eq(1)
                    with m.If(block.done):
                        m.next = after
            with m.State("MAP_OUT"):
                m.d.comb += self.map_busy.eq(1)
                with m.If(~rd_busy_r & ~rd_start & ~rd_start_d):
                    m.next = "IDLE"

        # ---- counters -----------------------------------------------------------------------
        # The conditions are registered first, so the stream handshakes (ready comes from
        # outside through the merger) and the matcher's busy do not reach the 32-bit
        # incrementers in the same cycle: a counter counts a cycle one cycle later.
        xfer = ((self.x.valid & self.x.ready) | (self.reduced.valid & self.reduced.ready) |
                (self.y.valid & self.y.ready) | (self.restored.valid & self.restored.ready))
        counters = [
            (self.cyc_match, self.match_busy),
            (self.cyc_call, self.call_busy),
            (self.cyc_overlap, self.match_busy & xfer),
        ]
        for cnt, cond in counters:
            cond_r = Signal(name=f"{cnt.name}_inc")
            m.d.sync += cond_r.eq(cond)
            with m.If(self.cnt_clear):
                m.d.sync += cnt.eq(0)
            with m.Elif(cond_r):
                m.d.sync += cnt.eq(cnt + 1)
        return m
