"""TokenMatcher: the DATM pipeline around the quantizer and the similarity engine.

One call, given ``N = F*H*W`` guide tokens, writes and streams the map of
:class:`golden.MatchResult` (kind, target, pos per token), bit-exact with :func:`golden.match`
(``select="hist"``). Phases (each has a cycle counter):

``load``
    Guide beats -> :class:`~hw.quantizer.Quantizer` -> engine guide buffer. In parallel the
    kind table is cleared (``N`` cycles) and the histogram zeroed (``NB`` cycles).
``init``
    :class:`~hw.dstinit.DstInit` streams one dst per window into the kind table and the
    engine's dst list (the engine copies a guide vector per dst: ``D/L + 1`` cycles each).
``engine[k]``, ``k = 0 .. R``
    The src tokens of round ``k`` (kind table scan) go to the engine; its results come back in
    order and are combined into the best table (distance, nearest dst). Round 0 searches the
    initial dst; round ``k > 0`` searches *only the dst promoted in round k-1*
    (``dst_base``), and each src keeps the lexicographic minimum of (distance, token) of its
    stored best and the new result. The nearest over a union of dst sets is the minimum of
    the nearest over each part, ties to the smallest token both times, so this equals the
    golden model's full recomputation. A round with no new dst (quota 0 or nothing left to
    promote) skips the engine: nothing changed. The largest combined distance ``dmax`` is
    tracked on the fly.
``datm``
    With ``dmax`` known, the range shift ``c`` is fixed; a second pass over the best table
    bins every src (:class:`~hw.histogram.Histogram`), the histogram is dumped into the
    prefix-sum :class:`~hw.threshold.Threshold` (descending for promotion, ascending for
    selection) and, in rounds ``k < R``, a promotion pass marks the worst-covered src as dst
    (code above ``t``, then code ``t`` in ascending token index until ``quota_eff``) and
    appends them to the engine's dst list. ``quota_eff = min(quota, stay)`` with ``stay =
    n_src - r`` (target mode) or the count of src with ``d > tau`` (budget mode, counted in
    the binning pass).
``select``
    One pass in token order: target mode merges src with code ``< t`` and, in ascending
    token index, ``need`` src with code ``t``; budget mode merges src with ``d <= tau``.
    Kept tokens get consecutive positions (pos table).
``map``
    One pass in token order streams ``(kind, target, pos)``; a merged token's pos is read
    from its dst's entry. Full backpressure.

Bad runtime config is detected at ``start`` (and ``r`` after init, when the window count is
known): ``error`` rises with an ``error_code``, the call ends without streaming a map, and a
config error found at ``start`` consumes no guide beats (an ``r`` error consumes them: the
window count is only known after the guide is loaded).
"""

from __future__ import annotations

import enum

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import layouts
from .dstinit import DstInit, check_params
from .histogram import Histogram, hist_code, hist_shift
from .params import OrbisParams, ParamError, ceil_log2
from .threshold import Threshold

__all__ = ["TokenMatcher", "matcher_config", "MatcherError"]

# Internal kind encoding is the map's: a src that is not (yet) merged is KIND_KEPT.
_DST, _SRC, _MERGED = layouts.KIND_DST, layouts.KIND_KEPT, layouts.KIND_MERGED


class MatcherError(enum.IntEnum):
    """Values of ``TokenMatcher.error_code``."""
    NONE = 0
    GRID = 1      # F, H or W is 0, or F*H*W > N_max
    WINDOW = 2    # a stride is 0, above params.window, or above its grid dimension
    ROUNDS = 3    # rounds > params.R
    SEED = 4      # seed == 0 (the LFSR would stay 0)
    SHIFT = 5     # shift > 16
    R = 6         # target mode with r > number of initial src


def matcher_config(p: OrbisParams) -> data.StructLayout:
    """Per-call configuration, sampled on ``start``.

    ``F, H, W`` grid; ``sf, sh, sw`` window strides; ``budget`` 0 = target mode (exactly
    ``r`` merges), 1 = budget mode (merge ``d <= tau``); ``rounds`` coverage rounds ``R``;
    ``quota`` promotions per round; ``seed`` LFSR seed (non-zero); ``shift`` quantizer shift.
    """
    cb = p.count_bits
    return data.StructLayout({
        "F": unsigned(cb), "H": unsigned(cb), "W": unsigned(cb),
        "sf": unsigned(5), "sh": unsigned(5), "sw": unsigned(5),
        "budget": unsigned(1),
        "r": unsigned(cb),
        "tau": unsigned(p.dist_bits),
        "rounds": unsigned(4),
        "quota": unsigned(cb),
        "seed": unsigned(16),
        "shift": unsigned(5),
    })


class TokenMatcher(wiring.Component):
    """DATM token matcher: guide stream in, map stream out (see the module docstring).

    Parameters
    ----------
    params : OrbisParams
        Generator parameters.
    quantizer, engine : class or None
        Component classes constructed as ``cls(params)`` with the contracts of
        :class:`hw.quantizer.Quantizer` and :class:`hw.similarity.SimilarityEngine`
        (default: those).

    Members
    -------
    cfg : In(matcher_config(params))
        Call configuration, sampled when ``start`` is taken.
    start : In(1)
        Pulse while ``busy`` is low: start a call.
    guide : In(stream.Signature(layouts.guide_beat(params)))
        The call's ``N * D/L`` guide beats, tokens in order, chunks in order.
    map : Out(stream.Signature(layouts.map_entry(params)))
        ``N`` map entries in token order.
    busy : Out(1)
        A call is running.
    done : Out(1)
        The last call finished (level, cleared by ``start``).
    error, error_code : Out(1), Out(3)
        The last call was rejected; :class:`MatcherError` gives the cause.
    r : Out(count_bits)
        Merges of the last call (the achieved ``r``; budget mode's output).
    n_dst : Out(count_bits)
        Dst of the last call after the coverage rounds.
    max_abs : Out(17)
        Largest ``|g|`` of the call's guide (from the quantizer).
    cyc_total, cyc_load, cyc_init, cyc_datm, cyc_select, cyc_map : Out(32)
        Cycles of the last call: all, guide load, dst init, histogram/threshold/promotion
        passes (all rounds), selection pass, map streaming.
    cyc_engine : Out(data.ArrayLayout(32, R + 1))
        Cycles of each engine pass (0 for a skipped pass).
    """

    def __init__(self, params: OrbisParams, *, quantizer=None, engine=None):
        self._p = p = check_params(self, params)
        if quantizer is None:
            from .quantizer import Quantizer as quantizer
        if engine is None:
            from .similarity import SimilarityEngine as engine
        self._qcls, self._ecls = quantizer, engine
        cb = p.count_bits
        super().__init__({
            "cfg": In(matcher_config(p)),
            "start": In(1),
            "guide": In(stream.Signature(layouts.guide_beat(p))),
            "map": Out(stream.Signature(layouts.map_entry(p))),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "error_code": Out(3),
            "r": Out(cb),
            "n_dst": Out(cb),
            "max_abs": Out(17),
            "cyc_total": Out(32),
            "cyc_load": Out(32),
            "cyc_init": Out(32),
            "cyc_engine": Out(data.ArrayLayout(32, p.R + 1)),
            "cyc_datm": Out(32),
            "cyc_select": Out(32),
            "cyc_map": Out(32),
        })

    @property
    def params(self) -> OrbisParams:
        return self._p

    def elaborate(self, platform):
        m = Module()
        p = self._p
        cb, ib = p.count_bits, p.idx_bits
        m.submodules.qz = qz = self._qcls(p)
        m.submodules.eng = eng = self._ecls(p)
        m.submodules.dinit = dinit = DstInit(p)
        m.submodules.hist = hist = Histogram(p)
        m.submodules.thr = thr = Threshold(p)
        wiring.connect(m, qz.o, eng.guide_w)

        best_layout = data.StructLayout({"dist": unsigned(p.dist_bits), "near": unsigned(ib)})
        m.submodules.kind_mem = kind_mem = Memory(shape=unsigned(2), depth=p.N_max, init=[])
        m.submodules.best_mem = best_mem = Memory(shape=best_layout, depth=p.N_max, init=[])
        m.submodules.pos_mem = pos_mem = Memory(shape=unsigned(ib), depth=p.N_max, init=[])
        kind_w, kind_r = kind_mem.write_port(), kind_mem.read_port()
        best_w, best_r = best_mem.write_port(), best_mem.read_port()
        pos_w, pos_r = pos_mem.write_port(), pos_mem.read_port()

        cfg = Signal(matcher_config(p))
        N = Signal(cb)
        # F*H saturated at N_max + 1 (a larger F*H is a grid error whatever W is), so both
        # grid products fit one small multiplier, shared by CHECK1 and CHECK2.
        FH = Signal(cb + 1)
        mul_a = Signal(cb + 1)
        mul_b = Signal(cb)
        mul_p = Signal(2 * cb + 1)
        m.d.comb += mul_p.eq(mul_a * mul_b)
        n_dst = Signal(cb)
        dst_base = Signal(cb)
        rnd = Signal(4)
        dmax = Signal(p.dist_bits)
        stay = Signal(cb)
        r_cnt = Signal(cb)
        kept = Signal(cb)
        taken = Signal(cb)
        t = Signal(max(1, ceil_log2(p.NB)))
        need = Signal(cb)
        pushed = Signal(cb)
        recv = Signal(cb)
        in_chunk = Signal(range(p.chunks))
        in_tok = Signal(cb)
        out_chunk = Signal(range(p.chunks))
        out_tok = Signal(cb)

        m.d.comb += [
            self.r.eq(r_cnt), self.n_dst.eq(n_dst), self.max_abs.eq(qz.max_abs),
            qz.shift.eq(cfg.shift), eng.dst_base.eq(dst_base),
            dinit.F.eq(cfg.F), dinit.H.eq(cfg.H), dinit.W.eq(cfg.W),
            dinit.sf.eq(cfg.sf), dinit.sh.eq(cfg.sh), dinit.sw.eq(cfg.sw),
            dinit.seed.eq(cfg.seed),
        ]
        final = rnd == cfg.rounds
        n_src = N - n_dst
        c_shift = Signal(range(p.dist_bits + 1))
        m.d.comb += [c_shift.eq(hist_shift(p, dmax)), hist.shift.eq(c_shift)]
        quota_eff = Mux(cfg.quota < stay, cfg.quota, stay)
        m.d.comb += thr.k.eq(Mux(final, cfg.r, quota_eff))

        # ---- Token scanner: stage 0 counter, stage 1 kind/best data, stage 2 pos data. ----
        scan_n = Signal(cb)
        scanning = Signal()
        adv = Signal()
        v1, n1 = Signal(), Signal(ib)
        v2, kind2, target2 = Signal(), Signal(2), Signal(ib)
        v0 = scanning & (scan_n < N)
        kind1 = kind_r.data
        dist1 = best_r.data.dist
        near1 = best_r.data.near
        code1 = Signal(range(p.NB))
        m.d.comb += code1.eq(hist_code(p, dist1, c_shift))
        target1 = Mux(kind1 == _MERGED, near1, n1)
        m.d.comb += [kind_r.addr.eq(scan_n), kind_r.en.eq(adv),
                     pos_r.addr.eq(target1), pos_r.en.eq(adv)]
        with m.If(adv):
            m.d.sync += [v1.eq(v0), n1.eq(scan_n), v2.eq(v1), kind2.eq(kind1),
                         target2.eq(target1)]
            with m.If(v0):
                m.d.sync += scan_n.eq(scan_n + 1)
        scan_done = (scan_n == N) & ~v1 & ~v2
        is_src1 = v1 & (kind1 == _SRC)
        at_t = taken < need

        # ---- Engine result consumer: read old best (stage c0), combine and write (c1). ----
        cv = Signal()
        c_res = Signal(layouts.engine_result(p))
        consuming = Signal()
        m.d.comb += eng.o.ready.eq(consuming)
        with m.If(consuming):
            m.d.comb += [best_r.addr.eq(eng.o.payload.src), best_r.en.eq(1)]
        with m.Else():
            m.d.comb += [best_r.addr.eq(scan_n), best_r.en.eq(adv)]
        m.d.sync += [cv.eq(eng.o.valid & eng.o.ready), c_res.eq(eng.o.payload)]
        old = best_r.data
        better = (c_res.dist < old.dist) | ((c_res.dist == old.dist) & (c_res.dst < old.near))
        take_new = (rnd == 0) | better
        new_dist = Mux(take_new, c_res.dist, old.dist)
        m.d.comb += [best_w.addr.eq(c_res.src), best_w.en.eq(cv),
                     best_w.data.dist.eq(new_dist),
                     best_w.data.near.eq(Mux(take_new, c_res.dst, old.near))]
        with m.If(cv):
            m.d.sync += recv.eq(recv + 1)
            with m.If(new_dist > dmax):
                m.d.sync += dmax.eq(new_dist)

        # ---- Guide load gating and counting. ----
        loading = Signal()
        in_more = loading & (in_tok < N)
        m.d.comb += [qz.i.payload.eq(self.guide.payload),
                     qz.i.valid.eq(self.guide.valid & in_more),
                     self.guide.ready.eq(qz.i.ready & in_more)]
        with m.If(self.guide.valid & self.guide.ready):
            m.d.sync += in_chunk.eq(Mux(in_chunk == p.chunks - 1, 0, in_chunk + 1))
            with m.If(in_chunk == p.chunks - 1):
                m.d.sync += in_tok.eq(in_tok + 1)
        with m.If(qz.o.valid & qz.o.ready):
            m.d.sync += out_chunk.eq(Mux(out_chunk == p.chunks - 1, 0, out_chunk + 1))
            with m.If(out_chunk == p.chunks - 1):
                m.d.sync += out_tok.eq(out_tok + 1)

        def start_scan():
            m.d.sync += scan_n.eq(0)

        def count(ctr):
            m.d.sync += ctr.eq(ctr + 1)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += adv.eq(1)
                with m.If(self.start):
                    m.d.sync += [cfg.eq(self.cfg), self.done.eq(0), self.error.eq(0),
                                 self.error_code.eq(0), r_cnt.eq(0),
                                 self.cyc_total.eq(0), self.cyc_load.eq(0),
                                 self.cyc_init.eq(0), self.cyc_datm.eq(0),
                                 self.cyc_select.eq(0), self.cyc_map.eq(0),
                                 self.cyc_engine.eq(0)]
                    m.next = "CHECK1"
            with m.State("CHECK1"):
                m.d.comb += adv.eq(1)
                count(self.cyc_total)
                m.d.comb += [mul_a.eq(cfg.F), mul_b.eq(cfg.H)]
                m.d.sync += FH.eq(Mux(mul_p > p.N_max, p.N_max + 1, mul_p))
                m.next = "CHECK2"
            with m.State("CHECK2"):
                m.d.comb += adv.eq(1)
                count(self.cyc_total)
                m.d.comb += [mul_a.eq(FH), mul_b.eq(cfg.W)]
                NN = mul_p
                m.d.sync += N.eq(NN)
                err = Signal(3)
                sf_max, sh_max, sw_max = p.window
                with m.If((cfg.F == 0) | (cfg.H == 0) | (cfg.W == 0) | (NN > p.N_max)):
                    m.d.comb += err.eq(MatcherError.GRID)
                with m.Elif((cfg.sf == 0) | (cfg.sh == 0) | (cfg.sw == 0) |
                            (cfg.sf > sf_max) | (cfg.sh > sh_max) | (cfg.sw > sw_max) |
                            (cfg.sf > cfg.F) | (cfg.sh > cfg.H) | (cfg.sw > cfg.W)):
                    m.d.comb += err.eq(MatcherError.WINDOW)
                with m.Elif(cfg.rounds > p.R):
                    m.d.comb += err.eq(MatcherError.ROUNDS)
                with m.Elif(cfg.seed == 0):
                    m.d.comb += err.eq(MatcherError.SEED)
                with m.Elif(cfg.shift > 16):
                    m.d.comb += err.eq(MatcherError.SHIFT)
                with m.If(err != 0):
                    m.d.sync += [self.error.eq(1), self.error_code.eq(err)]
                    m.next = "DONE"
                with m.Else():
                    m.d.comb += [qz.start.eq(1), eng.dst_clear.eq(1), hist.clear.eq(1)]
                    m.d.sync += [in_tok.eq(0), in_chunk.eq(0), out_tok.eq(0),
                                 out_chunk.eq(0), n_dst.eq(0), dst_base.eq(0), rnd.eq(0),
                                 dmax.eq(0)]
                    start_scan()
                    m.next = "LOAD"
            with m.State("LOAD"):
                # Guide load; the scanner clears the kind table meanwhile.
                count(self.cyc_total)
                count(self.cyc_load)
                m.d.comb += [loading.eq(1), scanning.eq(1), adv.eq(1),
                             kind_w.addr.eq(n1), kind_w.data.eq(_SRC), kind_w.en.eq(v1)]
                with m.If((out_tok == N) & scan_done & ~hist.busy):
                    m.d.comb += dinit.start.eq(1)
                    m.next = "INIT"
            with m.State("INIT"):
                count(self.cyc_total)
                count(self.cyc_init)
                m.d.comb += [adv.eq(1),
                             eng.dst_load.valid.eq(dinit.o.valid),
                             eng.dst_load.payload.eq(dinit.o.payload),
                             dinit.o.ready.eq(eng.dst_load.ready),
                             kind_w.addr.eq(dinit.o.payload), kind_w.data.eq(_DST),
                             kind_w.en.eq(dinit.o.valid & dinit.o.ready)]
                with m.If(dinit.o.valid & dinit.o.ready):
                    count(n_dst)
                with m.If(~dinit.busy):
                    with m.If(~cfg.budget & (cfg.r > n_src)):
                        m.d.sync += [self.error.eq(1), self.error_code.eq(MatcherError.R)]
                        m.next = "DONE"
                    with m.Else():
                        m.next = "ROUND"
            with m.State("ROUND"):
                count(self.cyc_total)
                count(self.cyc_datm)
                m.d.comb += adv.eq(1)
                with m.If((n_dst != dst_base) & (n_src != 0)):
                    m.d.sync += [pushed.eq(0), recv.eq(0), dmax.eq(0)]
                    start_scan()
                    m.next = "ENGINE"
                with m.Else():
                    m.next = "BIN_START"
            with m.State("ENGINE"):
                count(self.cyc_total)
                m.d.sync += self.cyc_engine[rnd].eq(self.cyc_engine[rnd] + 1)
                m.d.comb += [scanning.eq(1), consuming.eq(1),
                             eng.src.valid.eq(is_src1), eng.src.payload.eq(n1),
                             adv.eq(~is_src1 | eng.src.ready)]
                with m.If(eng.src.valid & eng.src.ready):
                    count(pushed)
                with m.If(scan_done & (recv == pushed) & ~cv):
                    m.next = "BIN_START"
            with m.State("BIN_START"):
                count(self.cyc_total)
                count(self.cyc_datm)
                m.d.comb += adv.eq(1)
                m.d.sync += [stay.eq(Mux(cfg.budget, 0, n_src - cfg.r)), taken.eq(0)]
                with m.If(final & cfg.budget):
                    m.next = "SELECT"
                    start_scan()
                with m.Else():
                    start_scan()
                    m.next = "BIN"
            with m.State("BIN"):
                count(self.cyc_total)
                count(self.cyc_datm)
                m.d.comb += [scanning.eq(1), hist.i.valid.eq(is_src1),
                             hist.i.payload.eq(dist1), adv.eq(~is_src1 | hist.i.ready)]
                with m.If(is_src1 & adv & cfg.budget & (dist1 > cfg.tau)):
                    count(stay)
                with m.If(scan_done & ~hist.busy):
                    m.d.comb += [hist.dump.eq(1), hist.descending.eq(~final),
                                 thr.start.eq(1)]
                    m.next = "THRESH"
            with m.State("THRESH"):
                count(self.cyc_total)
                count(self.cyc_datm)
                m.d.comb += adv.eq(1)
                wiring.connect(m, hist.o, thr.i)
                with m.If(thr.done):
                    m.d.sync += [t.eq(thr.t), need.eq(thr.need), dst_base.eq(n_dst)]
                    start_scan()
                    with m.If(final):
                        m.next = "SELECT"
                    with m.Else():
                        m.next = "PROMOTE"
            with m.State("PROMOTE"):
                count(self.cyc_total)
                count(self.cyc_datm)
                prom = is_src1 & ((code1 > t) | ((code1 == t) & at_t))
                m.d.comb += [scanning.eq(1),
                             eng.dst_load.valid.eq(prom), eng.dst_load.payload.eq(n1),
                             adv.eq(~prom | eng.dst_load.ready),
                             kind_w.addr.eq(n1), kind_w.data.eq(_DST),
                             kind_w.en.eq(prom & adv)]
                with m.If(prom & adv):
                    count(n_dst)
                    with m.If(code1 == t):
                        count(taken)
                with m.If(scan_done):
                    m.d.sync += rnd.eq(rnd + 1)
                    m.next = "ROUND"
            with m.State("SELECT"):
                count(self.cyc_total)
                count(self.cyc_select)
                merge = is_src1 & Mux(cfg.budget, dist1 <= cfg.tau,
                                      (code1 < t) | ((code1 == t) & at_t))
                keep = v1 & ~merge
                m.d.comb += [scanning.eq(1), adv.eq(1),
                             kind_w.addr.eq(n1), kind_w.data.eq(_MERGED), kind_w.en.eq(merge),
                             pos_w.addr.eq(n1), pos_w.data.eq(kept), pos_w.en.eq(keep)]
                with m.If(merge):
                    count(r_cnt)
                    with m.If(code1 == t):
                        count(taken)
                with m.If(keep):
                    count(kept)
                with m.If(scan_done):
                    start_scan()
                    m.next = "MAP"
            with m.State("MAP"):
                count(self.cyc_total)
                count(self.cyc_map)
                m.d.comb += [scanning.eq(1), adv.eq(~v2 | self.map.ready),
                             self.map.valid.eq(v2),
                             self.map.payload.kind.eq(kind2),
                             self.map.payload.target.eq(target2),
                             self.map.payload.pos.eq(pos_r.data)]
                with m.If(scan_done):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += adv.eq(1)
                m.d.sync += self.done.eq(1)
                m.next = "IDLE"
            m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        # The kept counter restarts every call.
        with m.If(fsm.ongoing("IDLE") & self.start):
            m.d.sync += kept.eq(0)
        return m
