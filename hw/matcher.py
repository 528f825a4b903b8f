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

Pipelines (timing). Every table pass (kind-table clear, engine feed, binning, promotion,
selection, map) runs through one **token scanner**: a free-running issue stage reads token
``n`` of the kind and best tables, :data:`SCAN_STAGES` stages that never stall register the
read data and compute the histogram code and the pass's decision, and the result enters a
small output queue whose read side is the pass's consumer (engine ``src``, histogram input,
engine ``dst_load``, ``map``). A token is issued only while a credit is free (tokens in
flight plus queued stay below :data:`SCAN_QUEUE`), so no ready signal feeds back into a
memory address or enable and a scan still issues one token per cycle when its consumer
keeps up. Each pass enqueues (or drops a token, returning its credit) at the first stage
that has what it needs, and its tokens go no further. Stage table (cycle 0 = issue)::

    0  I  scan_n -> kind/best read address (every read port reads every cycle)
    1  A  read data out of the memories
    2  B  read data registered; engine / binning passes: enqueue a src (index / distance);
          target -> pos read address; v = dist >> c
    3  C  pos data out; map pass: enqueue (kind, target, pos); e = bitlen(v)
    4  D  code = hist_code_from(v, e)
    5  E  code compared with t (registered: >, ==, <)
    6  F  promotion / selection / kind-table clear: decision (promote, merge, keep; ``left``
          = entries of bin ``t`` still to take is a one-cycle loop), table writes,
          counters, enqueue a promoted dst or drop

Src and promoted dst reach the engine through a two-entry skid buffer whose input ready is
a register, so the engine's ready stops there. The engine's results are combined into the
best table by a second pipeline (best-table read addressed by the result, old entry
registered, combine, write and ``dmax``). The range
shift ``c`` and the threshold count ``k`` are registered once per pass. A pass costs ``N``
cycles plus the pipeline fill and drain when its consumer keeps up (selection ``N + 7``,
map ``N + 6``).
"""

from __future__ import annotations

import enum

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import layouts
from .dstinit import DstInit, check_params
from .histogram import Histogram, bitlen, hist_code_from, hist_shift
from .params import OrbisParams, ParamError, ceil_log2
from .skid import SkidBuffer
from .threshold import Threshold

__all__ = ["TokenMatcher", "matcher_config", "MatcherError"]

# Internal kind encoding is the map's: a src that is not (yet) merged is KIND_KEPT.
_DST, _SRC, _MERGED = layouts.KIND_DST, layouts.KIND_KEPT, layouts.KIND_MERGED


#: Scanner pipeline stages from the issue of a token to its decision stage (F).
SCAN_STAGES = 6
#: Depth of the scanner's output queue and number of scan credits: a token holds its credit
#: from issue until it leaves the queue (at best ``SCAN_STAGES + 3`` cycles), so this depth
#: keeps one issue per cycle when the consumer keeps up.
SCAN_QUEUE = SCAN_STAGES + 4


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
        # Every read port reads every cycle: a read has no side effect, so no enable (and no
        # stall signal) reaches the memories; the pipelines below track which data is valid.
        m.d.comb += [kind_r.en.eq(1), best_r.en.eq(1), pos_r.en.eq(1)]

        cfg = Signal(matcher_config(p))
        N = Signal(cb)
        n_dst = Signal(cb)
        n_src = Signal(cb)      # N - n_dst, kept as a counter (no subtractor in the paths)
        dst_base = Signal(cb)
        rnd = Signal(4)
        dmax = Signal(p.dist_bits)
        stay = Signal(cb)
        r_cnt = Signal(cb)
        kept = Signal(cb)
        t = Signal(max(1, ceil_log2(p.NB)))
        left = Signal(cb)       # entries of bin t still to take (need - taken)
        left_nz = Signal()      # left != 0, registered: the decision reads no comparator
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
        # Range shift of the round, registered. dmax only changes during an engine pass and
        # every binning pass starts at least two cycles after one ends (BIN_START between),
        # so c_shift is final before the first distance of a pass reaches a shifter.
        c_shift = Signal(range(p.dist_bits + 1))
        m.d.sync += c_shift.eq(hist_shift(p, dmax))
        m.d.comb += hist.shift.eq(c_shift)
        # Threshold count, registered. Threshold samples k with its start pulse, at the end
        # of the binning pass. stay's last update (budget mode: stage B of the last src)
        # precedes it by more than two cycles: that src still has to leave the queue and
        # the histogram's pipeline (hist.busy) before the pass can end.
        thr_k = Signal(cb)
        quota_eff = Mux(cfg.quota < stay, cfg.quota, stay)
        m.d.sync += thr_k.eq(Mux(final, cfg.r, quota_eff))
        m.d.comb += thr.k.eq(thr_k)
        # The histogram only streams while dumping, which the FSM starts on its way into
        # THRESH and which ends (last bin) before THRESH does, so the connection needs no
        # state decode. The threshold is always ready, so the stream goes through one
        # register: the histogram's counter read (LUT RAM and its multiplexer on ECP5) and
        # the threshold's subtract-and-compare were one path (94 MHz).
        m.d.comb += hist.o.ready.eq(1)      # Threshold.i is always ready
        m.d.sync += [thr.i.valid.eq(hist.o.valid), thr.i.payload.eq(hist.o.payload)]

        # One-hot flags of the FSM states that drive the shared datapath (flip-flops, set by
        # the FSM's transitions: see goto).
        st = {name: Signal(name=f"st_{name.lower()}") for name in
              ("LOAD", "INIT", "ENGINE", "BIN", "PROMOTE", "SELECT", "MAP")}

        # ---- Token scanner ----------------------------------------------------------------
        # A free-running issue stage and SCAN_STAGES pipeline stages that never stall, ending
        # in the output queue `sq`. Credits bound the tokens in flight plus queued to the
        # queue's depth, so a token always finds a slot and no ready signal reaches a memory
        # address or enable: only the queue's read side sees the consumer's ready. Each pass
        # enqueues (or drops, returning the credit) at the first stage that has what it needs,
        # and its tokens go no further, so later stages carry few bits:
        #
        #   I  issue: scan_n -> kind/best read address (when a credit is free)
        #   A  read data out of the memories
        #   B  read data registered. Engine and binning passes: enqueue src (index or
        #      distance) / drop the rest; budget-mode stay count. target -> pos read
        #      address; v = dist >> c
        #   C  pos data out. e = bitlen(v)
        #   M  map pass only: pos data registered; enqueue (kind, target, pos)
        #   D  code from (v, e)
        #   E  code compared with t (registered: >, ==, <)
        #   F  promotion / selection / kind-table clear: decision (promote, merge, keep; the
        #      `left` counter of bin t is a one-cycle loop), table writes, counters, enqueue
        #      a promoted dst or drop
        Q = SCAN_QUEUE
        scan_n = Signal(cb)
        scanning = Signal()
        cred = Signal(range(Q + 1), init=Q)
        # The comparisons of scan_n and cred are flip-flops updated with them (scan_end is
        # scan_n == N, cred_full cred == Q, cred_nz cred != 0), so the issue and the FSM's
        # end-of-pass test read no comparator: scan_done is one LUT from flip-flops.
        scan_end = Signal(init=1)
        cred_full = Signal(init=1)
        cred_nz = Signal(init=1)
        iss = Signal()
        m.d.comb += iss.eq(scanning & ~scan_end & cred_nz)
        with m.If(iss):
            m.d.sync += [scan_n.eq(scan_n + 1), scan_end.eq(scan_n + 1 == N)]
        # Every token has left the pipeline once its credit is back (tokens of a pass that
        # ends at stage B or D do not go further), so the pass is over.
        ov, sv = Signal(), Signal()     # engine skid buffer: output and skid entry valid
        scan_done = scan_end & cred_full & ~ov
        consuming = Signal()     # engine pass: best_r serves the result consumer
        m.d.comb += [kind_r.addr.eq(scan_n),
                     best_r.addr.eq(Mux(consuming, eng.o.payload.src, scan_n))]

        def stage_regs(suffix, **shapes):
            return {k: Signal(v, name=f"{k}_{suffix}", reset_less=(k != "v"))
                    for k, v in shapes.items()}

        # Tokens pass every stage in issue order, one stage per cycle, so the index of the
        # token in stage B (and F) is a count of the valid tokens seen there since the scan
        # started: two counters instead of an index register in every stage.
        A = stage_regs("a", v=1)
        m.d.sync += A["v"].eq(iss)
        B = stage_regs("b", v=1, kind=2, dist=p.dist_bits, near=ib)
        B["n"] = Signal(ib, name="n_b")
        m.d.sync += [B["v"].eq(A["v"]), B["kind"].eq(kind_r.data),
                     B["dist"].eq(best_r.data.dist), B["near"].eq(best_r.data.near)]
        with m.If(B["v"]):
            m.d.sync += B["n"].eq(B["n"] + 1)
        b_src = B["kind"] == _SRC
        b_le_tau = B["dist"] <= cfg.tau
        b_pass = st["ENGINE"] | st["BIN"]        # passes that end at stage B
        target_b = Mux(B["kind"] == _MERGED, B["near"], B["n"])
        m.d.comb += pos_r.addr.eq(target_b)
        C = stage_regs("c", v=1, kind=2, target=ib, src=1, le_tau=1, vsh=p.dist_bits)
        m.d.sync += [C["v"].eq(B["v"] & ~b_pass), C["kind"].eq(B["kind"]),
                     C["target"].eq(target_b), C["src"].eq(b_src), C["le_tau"].eq(b_le_tau),
                     C["vsh"].eq(B["dist"] >> c_shift)]
        # Map pass: stage C registered once more, so the position table's read data (a block
        # RAM's clock-to-out) reaches the queue's storage from a register, not across the chip.
        M = stage_regs("m", v=1, kind=2, target=ib, pos=ib)
        m.d.sync += [M["v"].eq(C["v"] & st["MAP"]), M["kind"].eq(C["kind"]),
                     M["target"].eq(C["target"]), M["pos"].eq(pos_r.data)]
        D = stage_regs("d", v=1, src=1, le_tau=1, vsh=p.dist_bits, e=range(p.dist_bits + 1))
        m.d.sync += [D["v"].eq(C["v"] & ~st["MAP"])] + [
            D[k].eq(C[k]) for k in ("src", "le_tau", "vsh")] + [D["e"].eq(bitlen(C["vsh"]))]
        E = stage_regs("e", v=1, src=1, le_tau=1, code=range(p.NB))
        m.d.sync += [E[k].eq(D[k]) for k in ("v", "src", "le_tau")] + [
            E["code"].eq(hist_code_from(p, D["vsh"], D["e"]))]
        F = stage_regs("f", v=1, src=1, le_tau=1, gt=1, eq=1, lt=1)
        F["n"] = Signal(ib, name="n_f")
        m.d.sync += [F[k].eq(E[k]) for k in ("v", "src", "le_tau")] + [
            F["gt"].eq(E["code"] > t), F["eq"].eq(E["code"] == t),
            F["lt"].eq(E["code"] < t)]
        with m.If(F["v"]):
            m.d.sync += F["n"].eq(F["n"] + 1)

        # Stage F decisions (only meaningful in their pass; the FSM gates their use).
        f_src = F["v"] & F["src"]
        prom = f_src & (F["gt"] | (F["eq"] & left_nz))
        merge = f_src & Mux(cfg.budget, F["le_tau"], F["lt"] | (F["eq"] & left_nz))
        keep = F["v"] & ~merge
        take_t = Signal()       # an entry of bin t was taken: left -= 1
        with m.If(take_t):
            m.d.sync += [left.eq(left - 1), left_nz.eq(left != 1)]

        # Output queue of the scanner: src index (engine pass), distance (binning), promoted
        # dst (promotion) or map entry (map pass).
        # The map entry's pos has a field of its own, written by pos_r.data alone.
        q_layout = data.StructLayout({
            "u": data.UnionLayout({"tok": unsigned(ib), "dist": unsigned(p.dist_bits),
                                   "kt": data.StructLayout({"kind": unsigned(2),
                                                            "target": unsigned(ib)})}),
            "pos": unsigned(ib)})
        m.submodules.sq = sq = SyncFIFOBuffered(width=q_layout.size, depth=Q)
        q_in = data.View(q_layout, sq.w_data)
        q_out = data.View(q_layout, sq.r_data)
        enq_b = b_pass & B["v"] & b_src
        enq_c = st["MAP"] & M["v"]
        enq_f = st["PROMOTE"] & prom
        drop = Signal()
        m.d.comb += [sq.w_en.eq(enq_b | enq_c | enq_f),
                     drop.eq((b_pass & B["v"] & ~b_src) | (F["v"] & ~enq_f))]
        pop = sq.r_en & sq.r_rdy
        cred_next = Signal.like(cred)
        m.d.comb += cred_next.eq(cred - iss + pop + drop)
        m.d.sync += [cred.eq(cred_next), cred_full.eq(cred_next == Q),
                     cred_nz.eq(cred_next != 0)]
        # The queue entry's union fields overlap from bit 0; one field per pass.
        m.d.comb += q_in.pos.eq(M["pos"])
        with m.If(st["ENGINE"]):
            m.d.comb += q_in.u.tok.eq(B["n"])
        with m.Elif(st["BIN"]):
            m.d.comb += q_in.u.dist.eq(B["dist"])
        with m.Elif(st["MAP"]):
            m.d.comb += [q_in.u.kt.kind.eq(M["kind"]), q_in.u.kt.target.eq(M["target"])]
        with m.Else():
            m.d.comb += q_in.u.tok.eq(F["n"])

        # Skid buffer between the queue and the engine's src / dst_load ports: its input
        # ready is a register, so the engine's ready (a deep function of the engine's state)
        # stops at these few registers instead of reaching the queue and the credit counter.
        # The engine's src.ready is a function of its issue state; a second, standard skid
        # buffer in front of eng.src makes the ready this buffer sees a flip-flop too (the
        # src path limited the UP5K placement: engine issue state -> src.ready -> od).
        # dst_load.ready is a register in the engine already.
        m.submodules.src_skid = src_skid = SkidBuffer(unsigned(ib))
        wiring.connect(m, src_skid.o, eng.src)
        e_pass = st["ENGINE"] | st["PROMOTE"]
        e_ready = Mux(st["ENGINE"], src_skid.i.ready, eng.dst_load.ready)
        od = Signal(ib, reset_less=True)
        sd = Signal(ib, reset_less=True)
        e_in = e_pass & sq.r_rdy & ~sv          # a src / promoted dst enters the skid
        with m.If(ov & e_ready):
            with m.If(sv):
                m.d.sync += [od.eq(sd), sv.eq(0)]
            with m.Elif(e_in):
                m.d.sync += od.eq(q_out.u.tok)
            with m.Else():
                m.d.sync += ov.eq(0)
        with m.Elif(e_in):
            with m.If(ov):
                m.d.sync += [sd.eq(q_out.u.tok), sv.eq(1)]
            with m.Else():
                m.d.sync += [od.eq(q_out.u.tok), ov.eq(1)]

        # ---- Engine result consumer -------------------------------------------------------
        #   X0  result transfer: its src is the best_r address (eng.o's payload is a
        #       register), result registered (r1)
        #   X1  old best out of the memory, registered (o2)
        #   X2  combine (lexicographic minimum, or the new result in round 0), registered
        #   X3  best table write; dmax update
        # No read-after-write hazard: src reach the engine in ascending token order, each at
        # most once per pass, and results come back in src order, so an entry is read (X0)
        # and written (X3) once per pass, and no later read of the pass targets it. The
        # binning pass that reads the table next starts after this pipeline drains.
        v1, v2, v3 = Signal(), Signal(), Signal()
        r1 = Signal(layouts.engine_result(p), reset_less=True)
        r2 = Signal(layouts.engine_result(p), reset_less=True)
        o2 = Signal(best_layout, reset_less=True)
        w3 = Signal(best_layout, reset_less=True)
        w3_src = Signal(ib, reset_less=True)
        first_rnd = Signal()
        m.d.sync += first_rnd.eq(rnd == 0)
        m.d.comb += eng.o.ready.eq(consuming)
        m.d.sync += [v1.eq(eng.o.valid & eng.o.ready), r1.eq(eng.o.payload),
                     v2.eq(v1), r2.eq(r1), o2.eq(best_r.data)]
        better = (r2.dist < o2.dist) | ((r2.dist == o2.dist) & (r2.dst < o2.near))
        take_new = first_rnd | better
        m.d.sync += [v3.eq(v2), w3_src.eq(r2.src),
                     w3.dist.eq(Mux(take_new, r2.dist, o2.dist)),
                     w3.near.eq(Mux(take_new, r2.dst, o2.near))]
        m.d.comb += [best_w.addr.eq(w3_src), best_w.data.eq(w3), best_w.en.eq(v3)]
        with m.If(v3 & (w3.dist > dmax)):
            m.d.sync += dmax.eq(w3.dist)
        with m.If(eng.o.valid & eng.o.ready):
            m.d.sync += recv.eq(recv + 1)
        results_done = (recv == pushed) & ~v1 & ~v2 & ~v3

        # DstInit's output goes through a skid buffer, so its ready is a flip-flop: the
        # engine's dst_load.ready no longer reaches DstInit's window registers (UP5K path).
        # It only produces during INIT (started in INIT0), so the connection needs no gate.
        m.submodules.dinit_skid = dskid = SkidBuffer(unsigned(ib))
        wiring.connect(m, dinit.o, dskid.i)
        # DstInit's start as a flip-flop of its own, high in INIT0 (see INIT0).
        init_start = Signal()
        m.d.comb += dinit.start.eq(init_start)

        # ---- Guide load gating and counting. ----
        loading = Signal()
        m.d.comb += [loading.eq(st["LOAD"]), consuming.eq(st["ENGINE"]),
                     scanning.eq(st["LOAD"] | st["ENGINE"] | st["BIN"] | st["PROMOTE"] |
                                 st["SELECT"] | st["MAP"])]
        # in_tok == N and out_tok == N as flip-flops updated with the counters (the counters
        # count from 0 to N): the guide's valid/ready and the load's end read no comparator.
        in_end = Signal()
        out_end = Signal()
        in_more = loading & ~in_end
        m.d.comb += [qz.i.payload.eq(self.guide.payload),
                     qz.i.valid.eq(self.guide.valid & in_more),
                     self.guide.ready.eq(qz.i.ready & in_more)]
        with m.If(self.guide.valid & self.guide.ready):
            m.d.sync += in_chunk.eq(Mux(in_chunk == p.chunks - 1, 0, in_chunk + 1))
            with m.If(in_chunk == p.chunks - 1):
                m.d.sync += [in_tok.eq(in_tok + 1), in_end.eq(in_tok + 1 == N)]
        with m.If(qz.o.valid & qz.o.ready):
            m.d.sync += out_chunk.eq(Mux(out_chunk == p.chunks - 1, 0, out_chunk + 1))
            with m.If(out_chunk == p.chunks - 1):
                m.d.sync += [out_tok.eq(out_tok + 1), out_end.eq(out_tok + 1 == N)]

        # ---- Per-pass wiring of the table writes and of the queue's consumer. ----
        m.d.comb += [
            # Table writes from stage F (LOAD clears to src, PROMOTE marks dst, SELECT
            # merges); INIT writes the dst straight from DstInit.
            kind_w.addr.eq(Mux(st["INIT"], dskid.o.payload, F["n"])),
            kind_w.data.eq(Mux(st["LOAD"], _SRC, Mux(st["SELECT"], _MERGED, _DST))),
            kind_w.en.eq((st["LOAD"] & F["v"]) | (st["PROMOTE"] & prom) |
                         (st["SELECT"] & merge) |
                         (st["INIT"] & dskid.o.valid & dskid.o.ready)),
            pos_w.addr.eq(F["n"]), pos_w.data.eq(kept), pos_w.en.eq(st["SELECT"] & keep),
            take_t.eq(F["eq"] & ((st["PROMOTE"] & prom) | (st["SELECT"] & merge))),
            sq.r_en.eq((e_pass & ~sv) | (st["BIN"] & hist.i.ready) |
                       (st["MAP"] & self.map.ready)),
            src_skid.i.valid.eq(st["ENGINE"] & ov), src_skid.i.payload.eq(od),
            hist.i.valid.eq(st["BIN"] & sq.r_rdy), hist.i.payload.eq(q_out.u.dist),
            self.map.valid.eq(st["MAP"] & sq.r_rdy),
            self.map.payload.kind.eq(q_out.u.kt.kind),
            self.map.payload.target.eq(q_out.u.kt.target),
            self.map.payload.pos.eq(q_out.pos),
            eng.dst_load.valid.eq(Mux(st["INIT"], dskid.o.valid, st["PROMOTE"] & ov)),
            eng.dst_load.payload.eq(Mux(st["INIT"], dskid.o.payload, od)),
            dskid.o.ready.eq(st["INIT"] & eng.dst_load.ready),
        ]
        with m.If(st["SELECT"]):
            with m.If(merge):
                m.d.sync += r_cnt.eq(r_cnt + 1)
            with m.If(keep):
                m.d.sync += kept.eq(kept + 1)
        with m.If(st["BIN"] & B["v"] & b_src & cfg.budget & ~b_le_tau):
            m.d.sync += stay.eq(stay + 1)
        # Src and promoted dst are counted as they enter the skid buffer (all of them have
        # left it when the pass ends), dst from DstInit as the engine takes them.
        with m.If(st["ENGINE"] & e_in):
            m.d.sync += pushed.eq(pushed + 1)
        with m.If((st["PROMOTE"] & e_in) |
                  (st["INIT"] & eng.dst_load.valid & eng.dst_load.ready)):
            m.d.sync += [n_dst.eq(n_dst + 1), n_src.eq(n_src - 1)]

        # ROUND's test "new dst to compare and src left", registered: n_dst, n_src and
        # dst_base settle at least a cycle before ROUND (the last dst transfer of INIT or
        # PROMOTE precedes the state's exit test by a cycle), so the flip-flop is current.
        new_work = Signal()
        m.d.sync += new_work.eq((n_dst != dst_base) & (n_src != 0))

        def start_scan():
            m.d.sync += [scan_n.eq(0), scan_end.eq(N == 0), B["n"].eq(0), F["n"].eq(0)]

        def count(ctr):
            m.d.sync += ctr.eq(ctr + 1)

        # Config check: one multiplier for both grid products, registered on both sides
        # (prod = mul_a * mul_b of two cycles before); F*H is saturated at N_max + 1 (a larger
        # F*H is a grid error whatever W is), so both products fit one small multiplier.
        mul_a = Signal(cb + 1)
        mul_b = Signal(cb)
        mul_p = Signal(2 * cb + 1)
        m.d.sync += mul_p.eq(mul_a * mul_b)
        sf_max, sh_max, sw_max = p.window
        bad_grid = (cfg.F == 0) | (cfg.H == 0) | (cfg.W == 0) | (mul_p > p.N_max)
        bad_win = ((cfg.sf == 0) | (cfg.sh == 0) | (cfg.sw == 0) |
                   (cfg.sf > sf_max) | (cfg.sh > sh_max) | (cfg.sw > sw_max) |
                   (cfg.sf > cfg.F) | (cfg.sh > cfg.H) | (cfg.sw > cfg.W))
        err = Signal(3)

        # The FSM's one-hot state flags `st` are flip-flops set by every transition (goto),
        # not decodes of the state register: they steer the scanner, the tables and the
        # engine's ports, and a decode added two LUT levels to each of those paths.
        st_of = {"LOAD": "LOAD", "INIT0": "INIT", "INIT": "INIT", "ENGINE": "ENGINE",
                 "BIN": "BIN", "PROMOTE": "PROMOTE", "SELECT": "SELECT", "MAP": "MAP"}

        def goto(state):
            m.next = state
            m.d.sync += [flag.eq(k == st_of.get(state)) for k, flag in st.items()]

        busy = Signal()
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [cfg.eq(self.cfg), self.done.eq(0), self.error.eq(0), busy.eq(1),
                                 self.error_code.eq(0), r_cnt.eq(0), kept.eq(0),
                                 self.cyc_total.eq(0), self.cyc_load.eq(0),
                                 self.cyc_init.eq(0), self.cyc_datm.eq(0),
                                 self.cyc_select.eq(0), self.cyc_map.eq(0),
                                 self.cyc_engine.eq(0)]
                    goto("CHECK1")
            # Two products on the shared multiplier, each a load state then a wait state
            # (the product is registered on both sides): F*H, then min(F*H, N_max+1)*W.
            products = [(cfg.F, cfg.H), (Mux(mul_p > p.N_max, p.N_max + 1, mul_p), cfg.W)]
            for k, (a, b) in enumerate(products):
                with m.State(f"CHECK{2 * k + 1}"):
                    count(self.cyc_total)
                    m.d.sync += [mul_a.eq(a), mul_b.eq(b)]
                    goto(f"CHECK{2 * k + 2}")
                with m.State(f"CHECK{2 * k + 2}"):
                    count(self.cyc_total)
                    goto(f"CHECK{2 * k + 3}")
            with m.State("CHECK5"):
                count(self.cyc_total)
                m.d.sync += N.eq(mul_p)
                with m.If(bad_grid):
                    m.d.sync += err.eq(MatcherError.GRID)
                with m.Elif(bad_win):
                    m.d.sync += err.eq(MatcherError.WINDOW)
                with m.Elif(cfg.rounds > p.R):
                    m.d.sync += err.eq(MatcherError.ROUNDS)
                with m.Elif(cfg.seed == 0):
                    m.d.sync += err.eq(MatcherError.SEED)
                with m.Elif(cfg.shift > 16):
                    m.d.sync += err.eq(MatcherError.SHIFT)
                with m.Else():
                    m.d.sync += err.eq(MatcherError.NONE)
                goto("CHECK6")
            with m.State("CHECK6"):
                count(self.cyc_total)
                with m.If(err != 0):
                    m.d.sync += [self.error.eq(1), self.error_code.eq(err)]
                    goto("DONE")
                with m.Else():
                    m.d.comb += [qz.start.eq(1), eng.dst_clear.eq(1), hist.clear.eq(1)]
                    m.d.sync += [in_tok.eq(0), in_chunk.eq(0), out_tok.eq(0),
                                 out_chunk.eq(0), n_dst.eq(0), n_src.eq(N), dst_base.eq(0),
                                 rnd.eq(0), dmax.eq(0), in_end.eq(N == 0),
                                 out_end.eq(N == 0)]
                    start_scan()
                    goto("LOAD")
            with m.State("LOAD"):
                # Guide load; the scanner clears the kind table meanwhile.
                count(self.cyc_total)
                count(self.cyc_load)
                with m.If(out_end & scan_done & ~hist.busy):
                    m.d.sync += init_start.eq(1)
                    goto("INIT0")
            with m.State("INIT0"):
                # DstInit's start is a flip-flop of its own (init_start) set on the way in,
                # not a decode of the state register: start fans out to
                # most of DstInit's registers (that path limited the UP5K placement to
                # 30 MHz).
                count(self.cyc_total)
                count(self.cyc_init)
                m.d.sync += init_start.eq(0)
                goto("INIT")
            with m.State("INIT"):
                count(self.cyc_total)
                count(self.cyc_init)
                with m.If(~dinit.busy & ~dskid.busy):
                    with m.If(~cfg.budget & (cfg.r > n_src)):
                        m.d.sync += [self.error.eq(1), self.error_code.eq(MatcherError.R)]
                        goto("DONE")
                    with m.Else():
                        goto("ROUND")
            with m.State("ROUND"):
                count(self.cyc_total)
                count(self.cyc_datm)
                with m.If(new_work):
                    m.d.sync += [pushed.eq(0), recv.eq(0), dmax.eq(0)]
                    start_scan()
                    goto("ENGINE")
                with m.Else():
                    goto("BIN_START")
            with m.State("ENGINE"):
                count(self.cyc_total)
                # One incrementer per round's counter (no multiplexer on rnd in the adder).
                for k in range(p.R + 1):
                    with m.If(rnd == k):
                        count(self.cyc_engine[k])
                with m.If(scan_done & results_done):
                    goto("BIN_START")
            with m.State("BIN_START"):
                count(self.cyc_total)
                count(self.cyc_datm)
                m.d.sync += stay.eq(Mux(cfg.budget, 0, n_src - cfg.r))
                start_scan()
                with m.If(final & cfg.budget):
                    goto("SELECT")
                with m.Else():
                    goto("BIN")
            with m.State("BIN"):
                count(self.cyc_total)
                count(self.cyc_datm)
                with m.If(scan_done & ~hist.busy):
                    m.d.comb += [hist.dump.eq(1), hist.descending.eq(~final),
                                 thr.start.eq(1)]
                    goto("THRESH")
            with m.State("THRESH"):
                count(self.cyc_total)
                count(self.cyc_datm)
                with m.If(thr.done):
                    m.d.sync += [t.eq(thr.t), left.eq(thr.need), left_nz.eq(thr.need != 0),
                                 dst_base.eq(n_dst)]
                    start_scan()
                    with m.If(final):
                        goto("SELECT")
                    with m.Else():
                        goto("PROMOTE")
            with m.State("PROMOTE"):
                count(self.cyc_total)
                count(self.cyc_datm)
                with m.If(scan_done):
                    m.d.sync += rnd.eq(rnd + 1)
                    goto("ROUND")
            with m.State("SELECT"):
                count(self.cyc_total)
                count(self.cyc_select)
                with m.If(scan_done):
                    start_scan()
                    goto("MAP")
            with m.State("MAP"):
                count(self.cyc_total)
                count(self.cyc_map)
                with m.If(scan_done):
                    goto("DONE")
            with m.State("DONE"):
                m.d.sync += [self.done.eq(1), busy.eq(0)]
                goto("IDLE")
        # busy is a flip-flop (set on start, cleared on DONE -> IDLE), equal to "not IDLE":
        # decoded from the state register it fed the top's start logic and came back to the
        # state register's enable in one cycle (the UP5K's critical path at 31 MHz).
        m.d.comb += self.busy.eq(busy)
        return m
