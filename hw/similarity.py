"""Quantized similarity engine: nearest dst of every src by exact squared distance.

Architecture (details in ``docs/similarity.md``): src-stationary, dst-streamed. The engine
holds the quantized guide buffer (``N_max * D/L`` words of ``L*B`` bits, written from
``guide_w``) and ``P`` dst banks; bank ``j`` holds the guide vectors of dst-list entries
``j, j+P, j+2P, ...``, copied from the guide buffer on ``dst_load``. For each src, for each
group of ``P`` dst, for each chunk, the ``P`` lanes compute ``L`` squared differences, an
adder tree sums them, an accumulator sums the ``D/L`` chunks, a pipelined argmin tree picks
the best lane by ``(dist, token)`` and a running minimum folds the groups. Results land in an
output FIFO; a src only starts when a FIFO slot is reserved for its result, so the compute
pipeline never stalls and backpressure on ``o`` never loses a result.
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import layouts
from .params import OrbisParams, ParamError, ceil_log2
from .quantizer import Quantizer

__all__ = ["SimilarityEngine", "QuantSimilarity", "div_const"]


def div_const(P: int, n_bits: int):
    """Return ``(M, k)`` such that ``x // P == (x * M) >> k`` for every ``0 <= x < 2**n_bits``.

    ``k = n_bits + ceil_log2(P)`` and ``M = ceil(2**k / P)``: the error ``M*P - 2**k < P <=
    2**(k - n_bits)`` keeps the quotient exact (Granlund-Montgomery), so no divider is built.
    """
    k = n_bits + ceil_log2(P)
    M = -(-(1 << k) // P)
    return M, k


class SimilarityEngine(wiring.Component):
    """Nearest dst of each src over a dst list, ``P`` lanes x ``L`` elements per cycle.

    Parameters
    ----------
    params : OrbisParams
        Uses ``N_max``, ``D``, ``L``, ``B`` and ``P``.
    sq_table : bool or None
        Squarer implementation: a constant table on the ``B+1``-bit difference (``True``) or
        a multiplier ``diff * diff`` that synthesis maps to DSPs (``False``). Default:
        table for ``B = 4``, multiplier for ``B = 8``.
    tree_per_stage : int
        Adder-tree levels between pipeline registers (default 2).
    fifo_depth : int or None
        Output FIFO depth; default ``stages + 4``, enough that a src never waits for a slot
        without backpressure.

    Members
    -------
    guide_w : In(stream.Signature(layouts.guide_write(params)))
        Guide-buffer writes (connect ``Quantizer.o``); always ready.
    dst_clear : In(1)
        One-cycle pulse while idle: the dst list becomes empty.
    dst_load : In(stream.Signature(unsigned(idx_bits)))
        Append this token to the dst list; the engine copies its guide vector (one dst
        every ``D/L + 1`` cycles). Not ready while a src is in flight.
    dst_base : In(unsigned(count_bits))
        Search only dst-list entries ``[dst_base, n_dst)``. Hold it stable while src are in
        flight; after a change the engine waits 3 cycles before it starts the next src.
    src : In(stream.Signature(unsigned(idx_bits)))
        Src tokens to evaluate, any order.
    o : Out(stream.Signature(layouts.engine_result(params)))
        One result per src, in src order: the nearest dst token and the distance, ties to
        the smallest token index.
    n_dst : Out(unsigned(count_bits))
        Entries in the dst list.
    idle : Out(1)
        No dst copy or src in flight and every result taken from ``o``.
    busy_cycles : Out(32)
        Free-running count of cycles with a src in flight or a result waiting (wraps).
    issue_cycles : Out(32)
        Free-running count of cycles the lanes were issued work (wraps). The ratio of the
        two over a batch is the lane utilisation seen by the engine.

    Raises
    ------
    ParamError
        Bad ``params``, ``tree_per_stage`` or ``fifo_depth``.
    """

    def __init__(self, params: OrbisParams, *, sq_table=None, tree_per_stage: int = 2,
                 fifo_depth=None):
        # A rejected component is not "unused": silence Amaranth's unused-elaboratable check.
        if not isinstance(params, OrbisParams):
            self._MustUse__silence = True
            raise ParamError(f"params must be an OrbisParams, not {type(params).__name__}")
        if isinstance(tree_per_stage, bool) or not isinstance(tree_per_stage, int) \
                or not 1 <= tree_per_stage <= 8:
            self._MustUse__silence = True
            raise ParamError(f"tree_per_stage must be an integer in [1, 8], "
                             f"not {tree_per_stage!r}")
        self._p = params
        self._sq_table = (params.B == 4) if sq_table is None else bool(sq_table)
        self._tps = tree_per_stage
        # Stage numbering, issue cycle = 0 (see docs/similarity.md).
        self._s_mem = 1                          # read-port data
        self._s_memr = 2                         # registered memory data
        self._s_diff = 3
        self._s_sq = 4
        lv = ceil_log2(params.L)
        self._s_sum = self._s_sq + -(-lv // tree_per_stage)   # adder tree output registered
        self._s_acc = self._s_sum + 1
        self._s_min = self._s_acc + ceil_log2(params.P)       # argmin tree, one level/stage
        self._stages = self._s_min + 1                         # + running min -> FIFO write
        if fifo_depth is None:
            fifo_depth = self._stages + 4
        if isinstance(fifo_depth, bool) or not isinstance(fifo_depth, int) \
                or not 2 <= fifo_depth <= 1024:
            self._MustUse__silence = True
            raise ParamError(f"fifo_depth must be an integer in [2, 1024], not {fifo_depth!r}")
        self._fifo_depth = fifo_depth
        p = params
        super().__init__({
            "guide_w": In(stream.Signature(layouts.guide_write(p))),
            "dst_clear": In(1),
            "dst_load": In(stream.Signature(unsigned(p.idx_bits))),
            "dst_base": In(unsigned(p.count_bits)),
            "src": In(stream.Signature(unsigned(p.idx_bits))),
            "o": Out(stream.Signature(layouts.engine_result(p))),
            "n_dst": Out(unsigned(p.count_bits)),
            "idle": Out(1),
            "busy_cycles": Out(32),
            "issue_cycles": Out(32),
        })

    @property
    def params(self) -> OrbisParams:
        return self._p

    @property
    def stages(self) -> int:
        """Pipeline registers from the issue of a src's last chunk to its FIFO write."""
        return self._stages

    @property
    def latency(self) -> int:
        """Cycles from a src's last issued chunk to its result valid on ``o`` (no backpressure).

        A src that starts at cycle ``t`` and searches ``G`` groups has its result valid at
        ``t + G * D/L - 1 + latency``.
        """
        return self._stages + 1

    @property
    def fifo_depth(self) -> int:
        return self._fifo_depth

    def elaborate(self, platform):
        p = self._p
        m = Module()
        P, L, C, B = p.P, p.L, p.chunks, p.B
        rows = -(-p.N_max // P)
        word = data.ArrayLayout(signed(B), L)
        cb = p.count_bits
        dist_shape = unsigned(p.dist_bits)

        # --- memories ----------------------------------------------------------------------
        m.submodules.guide = guide = Memory(shape=word, depth=p.N_max * C, init=[])
        g_wr = guide.write_port()
        g_rd = guide.read_port()
        banks, b_wr, b_rd, t_wr, t_rd = [], [], [], [], []
        for j in range(P):
            bank = Memory(shape=word, depth=rows * C, init=[])
            toks = Memory(shape=unsigned(p.idx_bits), depth=rows, init=[])
            m.submodules[f"bank{j}"] = bank
            m.submodules[f"btok{j}"] = toks
            b_wr.append(bank.write_port())
            b_rd.append(bank.read_port())
            t_wr.append(toks.write_port())
            t_rd.append(toks.read_port())

        # Guide writes: always ready.
        m.d.comb += [
            self.guide_w.ready.eq(1),
            g_wr.addr.eq(self.guide_w.payload.token * C + self.guide_w.payload.chunk),
            g_wr.data.eq(self.guide_w.payload.data),
            g_wr.en.eq(self.guide_w.valid),
        ]

        # --- dst list and the copy of dst vectors into the banks ---------------------------
        n_dst = Signal(unsigned(cb))
        wr_bank = Signal(range(max(2, P)))
        wr_row = Signal(range(rows + 1))
        wr_rowaddr = Signal(range(rows * C + 1))
        copying = Signal()
        copy_tok = Signal(unsigned(p.idx_bits))
        copy_addr = Signal(range(p.N_max * C + 1))
        copy_chunk = Signal(range(C + 1))
        wb_valid = Signal()                       # a copied chunk arrives on the read port
        wb_chunk = Signal(range(C + 1))
        wb_last = Signal()
        m.d.comb += self.n_dst.eq(n_dst)

        src_busy = Signal()                       # any src accepted whose result is not out
        m.d.comb += self.dst_load.ready.eq(~copying & ~src_busy)
        with m.If(self.dst_load.valid & self.dst_load.ready):
            m.d.sync += [
                copying.eq(1),
                copy_tok.eq(self.dst_load.payload),
                copy_addr.eq(self.dst_load.payload * C),
                copy_chunk.eq(0),
            ]
        m.d.sync += wb_valid.eq(0)
        with m.If(copying):
            m.d.sync += [
                copy_addr.eq(copy_addr + 1),
                copy_chunk.eq(copy_chunk + 1),
                wb_valid.eq(1),
                wb_chunk.eq(copy_chunk),
                wb_last.eq(copy_chunk == C - 1),
            ]
            with m.If(copy_chunk == C - 1):
                m.d.sync += copying.eq(0)
        for j in range(P):
            m.d.comb += [
                b_wr[j].addr.eq(wr_rowaddr + wb_chunk),
                b_wr[j].data.eq(g_rd.data),
                b_wr[j].en.eq(wb_valid & (wr_bank == j)),
                t_wr[j].addr.eq(wr_row),
                t_wr[j].data.eq(copy_tok),
                t_wr[j].en.eq(wb_valid & wb_last & (wr_bank == j)),
            ]
        with m.If(wb_valid & wb_last):
            m.d.sync += n_dst.eq(n_dst + 1)
            with m.If(wr_bank == P - 1):
                m.d.sync += [wr_bank.eq(0), wr_row.eq(wr_row + 1),
                             wr_rowaddr.eq(wr_rowaddr + C)]
            with m.Else():
                m.d.sync += wr_bank.eq(wr_bank + 1)
        with m.If(self.dst_clear):
            m.d.sync += [n_dst.eq(0), wr_bank.eq(0), wr_row.eq(0), wr_rowaddr.eq(0)]

        # --- dst_base: first group, its address and lane offset, without a divider ---------
        base_r = Signal(unsigned(cb))
        base_row = Signal(range(rows + 1))
        base_addr = Signal(range(rows * C + 1))
        base_ent = Signal(unsigned(cb + 1))
        base_off = Signal(range(max(2, P)))
        base_stable = Signal(range(4))
        M, k = div_const(P, cb)
        m.d.sync += [
            base_r.eq(self.dst_base),
            base_row.eq((base_r * M) >> k),
            base_addr.eq(base_row * C),
            base_ent.eq(base_row * P),
        ]
        m.d.comb += base_off.eq(base_r - base_ent)
        with m.If(self.dst_base != base_r):
            m.d.sync += base_stable.eq(0)
        with m.Elif(base_stable != 3):
            m.d.sync += base_stable.eq(base_stable + 1)
        base_ok = base_stable == 3

        # --- src prefetch register and result-slot reservation -----------------------------
        nxt_valid = Signal()
        nxt_tok = Signal(unsigned(p.idx_bits))
        nxt_gaddr = Signal(range(p.N_max * C + 1))
        reserved = Signal(range(self._fifo_depth + 1))

        active = Signal()
        cur_tok = Signal(unsigned(p.idx_bits))
        cur_gbase = Signal(range(p.N_max * C + 1))
        gaddr = Signal(range(p.N_max * C + 1))
        baddr = Signal(range(rows * C + 1))
        row = Signal(range(rows + 1))
        chunk = Signal(range(max(2, C)))
        first_grp = Signal()

        # Entries from lane 0 of the current group to the end of the list, kept as a
        # down-counter so the last-group test is a constant compare (timing: it feeds
        # src.ready and the whole generator).
        rem = Signal(unsigned(cb + 1))
        last_chunk = chunk == C - 1
        last_grp = rem <= P
        src_done = active & last_chunk & last_grp
        start = Signal()
        # A src starts only with a reserved FIFO slot and after the dst copy has finished.
        m.d.comb += start.eq(nxt_valid & (~active | src_done) & base_ok & ~copying & ~wb_valid
                             & (reserved < self._fifo_depth))
        take = Signal()
        m.d.comb += [
            self.src.ready.eq(~nxt_valid | start),
            take.eq(self.src.valid & self.src.ready),
        ]
        with m.If(take):
            m.d.sync += [nxt_valid.eq(1), nxt_tok.eq(self.src.payload),
                         nxt_gaddr.eq(self.src.payload * C)]
        with m.Elif(start):
            m.d.sync += nxt_valid.eq(0)

        # --- address generator (issue stage 0) --------------------------------------------
        with m.If(active):
            with m.If(last_chunk):
                m.d.sync += [chunk.eq(0), gaddr.eq(cur_gbase)]
                with m.If(~last_grp):
                    m.d.sync += [rem.eq(rem - P), row.eq(row + 1), first_grp.eq(0),
                                 baddr.eq(baddr + 1)]
            with m.Else():
                m.d.sync += [chunk.eq(chunk + 1), gaddr.eq(gaddr + 1), baddr.eq(baddr + 1)]
        with m.If(src_done):
            m.d.sync += active.eq(0)
        with m.If(start):
            m.d.sync += [
                active.eq(1), cur_tok.eq(nxt_tok), cur_gbase.eq(nxt_gaddr),
                gaddr.eq(nxt_gaddr), baddr.eq(base_addr), row.eq(base_row),
                rem.eq(n_dst - base_ent), chunk.eq(0), first_grp.eq(1),
            ]

        # Sideband travelling with the data; the pipeline never stalls.
        sb_layout = data.StructLayout({
            "valid": 1, "src": unsigned(p.idx_bits), "row": range(rows + 1),
            "first_chunk": 1, "last_chunk": 1, "first_grp": 1, "last_grp": 1,
            "lo": range(P + 1), "hi": range(P + 1),
        })
        sb = [Signal(sb_layout, name="sb0")]
        m.d.comb += [
            sb[0].valid.eq(active),
            sb[0].src.eq(cur_tok),
            sb[0].row.eq(row),
            sb[0].first_chunk.eq(chunk == 0),
            sb[0].last_chunk.eq(last_chunk),
            sb[0].first_grp.eq(first_grp),
            sb[0].last_grp.eq(last_grp),
            sb[0].lo.eq(Mux(first_grp, base_off, 0)),
            sb[0].hi.eq(Mux(last_grp, rem, P)),
        ]
        for s in range(1, self._stages + 1):
            sb.append(Signal(sb_layout, name=f"sb{s}"))
            m.d.sync += sb[s].eq(sb[s - 1])

        # Shared guide read port: dst copy while loading, src chunks while searching.
        m.d.comb += g_rd.addr.eq(Mux(copying, copy_addr, gaddr))
        for j in range(P):
            m.d.comb += b_rd[j].addr.eq(baddr)

        # --- lanes -------------------------------------------------------------------------
        # Datapath registers are reset-less: only the sideband's valid bits need a reset, and
        # a reset on every data flop costs LUT inputs/routing (iCE40 SB_DFFSR).
        a_r = Signal(word, reset_less=True)
        m.d.sync += a_r.eq(g_rd.data)
        b_r = [Signal(word, name=f"b_r{j}", reset_less=True) for j in range(P)]
        for j in range(P):
            m.d.sync += b_r[j].eq(b_rd[j].data)
        sq_bits = 2 * B
        sums = []
        for j in range(P):
            sq = []
            for e in range(L):
                d = Signal(signed(B + 1), name=f"diff{j}_{e}", reset_less=True)
                m.d.sync += d.eq(a_r[e] - b_r[j][e])
                s = Signal(unsigned(sq_bits), name=f"sq{j}_{e}", reset_less=True)
                if self._sq_table:
                    # Table on the raw (B+1)-bit two's-complement difference.
                    tab = Array(Const(((v ^ (1 << B)) - (1 << B)) ** 2, sq_bits)
                                for v in range(1 << (B + 1)))
                    m.d.sync += s.eq(tab[d.as_unsigned()])
                else:
                    m.d.sync += s.eq(d * d)
                sq.append(s)
            level, depth = sq, 0
            while len(level) > 1:
                nxt = []
                depth += 1
                reg = depth % self._tps == 0
                for t in range(0, len(level) - 1, 2):
                    w = Signal(unsigned(len(level[t]) + 1), name=f"add{j}_{depth}_{t // 2}",
                               reset_less=True)
                    if reg:
                        m.d.sync += w.eq(level[t] + level[t + 1])
                    else:
                        m.d.comb += w.eq(level[t] + level[t + 1])
                    nxt.append(w)
                if len(level) % 2:
                    if reg:
                        w = Signal(unsigned(len(level[-1])), name=f"add{j}_{depth}_odd",
                                   reset_less=True)
                        m.d.sync += w.eq(level[-1])
                        nxt.append(w)
                    else:
                        nxt.append(level[-1])
                level = nxt
            if depth % self._tps:
                w = Signal(unsigned(len(level[0])), name=f"sum{j}", reset_less=True)
                m.d.sync += w.eq(level[0])
                level = [w]
            sums.append(level[0])

        # Accumulate the D/L chunks (stage s_acc holds the partial distance).
        sbs = sb[self._s_sum]
        accs = []
        for j in range(P):
            acc = Signal(dist_shape, name=f"acc{j}", reset_less=True)
            with m.If(sbs.valid):
                m.d.sync += acc.eq(Mux(sbs.first_chunk, sums[j], acc + sums[j]))
            accs.append(acc)

        # Lane tokens: read from the bank token memories two stages early and registered, so
        # they arrive at s_acc without a block-RAM clock-to-out in the argmin's first level.
        tok_r = [Signal(unsigned(p.idx_bits), name=f"tok_r{j}", reset_less=True)
                 for j in range(P)]
        for j in range(P):
            m.d.comb += t_rd[j].addr.eq(sb[self._s_acc - 2].row)
            m.d.sync += tok_r[j].eq(t_rd[j].data)
        sba = sb[self._s_acc]
        cand_layout = data.StructLayout({"valid": 1, "dist": dist_shape,
                                         "tok": unsigned(p.idx_bits)})
        level = []
        for j in range(P):
            c = Signal(cand_layout, name=f"cand0_{j}")
            m.d.comb += [
                c.valid.eq((sba.lo <= j) & (j < sba.hi)),
                c.dist.eq(accs[j]),
                c.tok.eq(tok_r[j]),
            ]
            level.append(c)

        def better(a, b):
            # a wins over b: valid beats invalid, then (dist, tok) lexicographically.
            return a.valid & (~b.valid | (a.dist < b.dist)
                              | ((a.dist == b.dist) & (a.tok < b.tok)))

        depth = 0
        while len(level) > 1:
            depth += 1
            nxt = []
            for t in range(0, len(level) - 1, 2):
                w = Signal(cand_layout, name=f"cand{depth}_{t // 2}")
                m.d.sync += w.eq(Mux(better(level[t + 1], level[t]), level[t + 1], level[t]))
                nxt.append(w)
            if len(level) % 2:
                w = Signal(cand_layout, name=f"cand{depth}_odd")
                m.d.sync += w.eq(level[-1])
                nxt.append(w)
            level = nxt
        grp_best = level[0]
        sbm = sb[self._s_min]

        # Running minimum over groups and the FIFO write.
        best = Signal(cand_layout)
        fold = Signal(cand_layout)
        m.d.comb += fold.eq(Mux(sbm.first_grp | better(grp_best, best), grp_best, best))
        res_layout = layouts.engine_result(p)
        res = Signal(res_layout)
        res_valid = Signal()
        m.d.sync += res_valid.eq(0)
        with m.If(sbm.valid & sbm.last_chunk):
            m.d.sync += best.eq(fold)
            with m.If(sbm.last_grp):
                m.d.sync += [res_valid.eq(1), res.src.eq(sbm.src), res.dst.eq(fold.tok),
                             res.dist.eq(fold.dist)]

        m.submodules.fifo = fifo = SyncFIFOBuffered(width=res_layout.size,
                                                    depth=self._fifo_depth)
        m.d.comb += [
            fifo.w_data.eq(res.as_value()),
            fifo.w_en.eq(res_valid),
            self.o.valid.eq(fifo.r_rdy),
            self.o.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.o.ready),
        ]
        o_fire = self.o.valid & self.o.ready
        with m.If(start & ~o_fire):
            m.d.sync += reserved.eq(reserved + 1)
        with m.Elif(~start & o_fire):
            m.d.sync += reserved.eq(reserved - 1)

        m.d.comb += [
            src_busy.eq(nxt_valid | active | (reserved != 0)),
            self.idle.eq(~src_busy & ~copying & ~wb_valid),
        ]
        with m.If(src_busy):
            m.d.sync += self.busy_cycles.eq(self.busy_cycles + 1)
        with m.If(active):
            m.d.sync += self.issue_cycles.eq(self.issue_cycles + 1)
        return m


class QuantSimilarity(wiring.Component):
    """Quantizer feeding a similarity engine: the unit the testbenches drive.

    Members are those of :class:`Quantizer` (``i``, ``shift``, ``start``, ``max_abs``) and of
    :class:`SimilarityEngine` except ``guide_w`` (``dst_clear``, ``dst_load``, ``dst_base``,
    ``src``, ``o``, ``n_dst``, ``idle``, ``busy_cycles``, ``issue_cycles``).
    """

    def __init__(self, params: OrbisParams, **engine_kwargs):
        self._q = Quantizer(params)
        self._e = SimilarityEngine(params, **engine_kwargs)
        members = dict(self._q.signature.members)
        members.update((k, v) for k, v in self._e.signature.members.items() if k != "guide_w")
        super().__init__(members)

    @property
    def engine(self) -> SimilarityEngine:
        return self._e

    @property
    def quantizer(self) -> Quantizer:
        return self._q

    def elaborate(self, platform):
        m = Module()
        m.submodules.quantizer = q = self._q
        m.submodules.engine = e = self._e
        wiring.connect(m, q.o, e.guide_w)
        wiring.connect(m, wiring.flipped(self.i), q.i)
        wiring.connect(m, e.dst_load, wiring.flipped(self.dst_load))
        wiring.connect(m, e.src, wiring.flipped(self.src))
        wiring.connect(m, e.o, wiring.flipped(self.o))
        m.d.comb += [
            q.shift.eq(self.shift), q.start.eq(self.start), self.max_abs.eq(q.max_abs),
            e.dst_clear.eq(self.dst_clear), e.dst_base.eq(self.dst_base),
            self.n_dst.eq(e.n_dst), self.idle.eq(e.idle),
            self.busy_cycles.eq(e.busy_cycles), self.issue_cycles.eq(e.issue_cycles),
        ]
        return m
