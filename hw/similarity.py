"""Quantized similarity engine: nearest dst of every src by exact squared distance.

Architecture (details in ``docs/similarity.md``): src-stationary, dst-streamed. The engine
holds the quantized guide buffer (``N_max * D/L`` words of ``L*B`` bits, written from
``guide_w``) and ``P`` dst banks; bank ``j`` holds the guide vectors of dst-list entries
``j, j+P, j+2P, ...``, copied from the guide buffer on ``dst_load``. For each src, for each
group of ``P`` dst, for each chunk, the ``P`` lanes compute ``L`` squared differences, an
adder tree sums them, an accumulator sums the ``D/L`` chunks (one :class:`SimilarityLane`
submodule per lane, so synthesis sees one repeated unit), a pipelined argmin tree picks
the best lane by ``(dist, token)`` and a running minimum folds the groups. Results land in an
output FIFO; a src only starts when a FIFO slot is reserved for its result, so the compute
pipeline never stalls and backpressure on ``o`` never loses a result.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import layouts
from .params import OrbisParams, ParamError, ceil_log2
from .quantizer import Quantizer

__all__ = ["SimilarityEngine", "SimilarityLane", "QuantSimilarity", "div_const"]


def div_const(P: int, n_bits: int):
    """Return ``(M, k)`` such that ``x // P == (x * M) >> k`` for every ``0 <= x < 2**n_bits``.

    ``k = n_bits + ceil_log2(P)`` and ``M = ceil(2**k / P)``: the error ``M*P - 2**k < P <=
    2**(k - n_bits)`` keeps the quotient exact (Granlund-Montgomery), so no divider is built.
    """
    k = n_bits + ceil_log2(P)
    M = -(-(1 << k) // P)
    return M, k


def _check_tps(tree_per_stage):
    if isinstance(tree_per_stage, bool) or not isinstance(tree_per_stage, int) \
            or not 1 <= tree_per_stage <= 8:
        raise ParamError(f"tree_per_stage must be an integer in [1, 8], not {tree_per_stage!r}")


class SimilarityLane(wiring.Component):
    """One dst lane: ``L`` squared differences, adder tree and chunk accumulator.

    A separate component so that the engine's ``P`` lanes are ``P`` instances of one module:
    synthesis (``tools/synth.py``) elaborates and maps one lane and scales it.

    Parameters
    ----------
    params : OrbisParams
        Uses ``L``, ``B`` and ``D`` (the accumulator holds ``dist_bits``).
    sq_table : bool
        Squarer as a constant table on the ``B+1``-bit difference (``True``) or the split
        squarer (two ``B/2``-bit tables and a ``B/2 x B/2`` shift-add product).
    tree_per_stage : int
        Adder-tree levels between pipeline registers.

    Members
    -------
    a : In(data.ArrayLayout(signed(B), L))
        Src chunk, registered (engine stage ``s_a``).
    b : In(data.ArrayLayout(signed(B), L))
        Dst chunk straight from the bank read port, two stages before ``a``; the lane
        registers it twice (the first register has no other load, so the placer puts it next
        to the block RAM: the bank's clock-to-out plus the routing to a far register was the
        engine's critical path on ECP5).
    acc_en, acc_first : In(1)
        At the cycle the chunk's sum is ready (:attr:`sum_stages` after ``a``): accumulate it,
        starting a new distance when ``acc_first``.
    dist : Out(unsigned(dist_bits))
        Partial squared distance, one cycle after ``acc_en``.
    """

    def __init__(self, params: OrbisParams, *, sq_table: bool = False,
                 tree_per_stage: int = 2):
        self._p = params
        self._sq_table = bool(sq_table)
        self._tps = tree_per_stage
        word = data.ArrayLayout(signed(params.B), params.L)
        super().__init__({
            "a": In(word),
            "b": In(word),
            "acc_en": In(1),
            "acc_first": In(1),
            "dist": Out(unsigned(params.dist_bits)),
        })

    @property
    def sq_stages(self) -> int:
        """Registers of the squarer: 1 for the table; 3 for the split squarer (``|d|``,
        partial products, sum). The split squarer replaced a ``d * d`` multiplier that
        synthesis put in a DSP block: Yosys' ECP5 mapping leaves the MULT18X18D's own
        registers unused, and the routing to and from 64 DSP blocks limited the placed unit
        to 70-90 MHz on ECP5."""
        return 1 if self._sq_table else 3

    @property
    def sum_stages(self) -> int:
        """Registers from ``a`` to the chunk sum (difference, square, adder tree)."""
        return 1 + self.sq_stages + -(-ceil_log2(self._p.L) // self._tps)

    def elaborate(self, platform):
        m = Module()
        B, L = self._p.B, self._p.L
        # Datapath registers are reset-less: a reset on every data flop costs LUT
        # inputs/routing (iCE40 SB_DFFSR) and nothing depends on their value after reset.
        b_r0 = Signal(data.ArrayLayout(signed(B), L), reset_less=True)
        b_r = Signal(data.ArrayLayout(signed(B), L), reset_less=True)
        m.d.sync += [b_r0.eq(self.b), b_r.eq(b_r0)]
        sq_bits = 2 * B
        sq = []
        for e in range(L):
            d = Signal(signed(B + 1), name=f"diff{e}", reset_less=True)
            m.d.sync += d.eq(self.a[e] - b_r[e])
            s = Signal(unsigned(sq_bits), name=f"sq{e}", reset_less=True)
            if self._sq_table:
                # Table on the raw (B+1)-bit two's-complement difference.
                tab = Array(Const(((v ^ (1 << B)) - (1 << B)) ** 2, sq_bits)
                            for v in range(1 << (B + 1)))
                m.d.sync += s.eq(tab[d.as_unsigned()])
            else:
                # Split squarer, no multiplier: |d| = h * 2**k + l with k = B // 2, then
                # |d|**2 = h**2 << 2k  |  l**2  +  h*l << (k + 1). h**2 and l**2 are tables on
                # k-bit (4-bit at B = 8) inputs, one LUT4 per bit; h*l is four shifted and
                # gated copies of h summed. Three registers: |d|; the three partial
                # products; the sum.
                k = B // 2
                ad = Signal(unsigned(B), name=f"absd{e}", reset_less=True)
                m.d.sync += ad.eq(Mux(d < 0, -d, d))
                h, lo = ad[k:], ad[:k]
                hh = Signal(unsigned(2 * (B - k)), name=f"hh{e}", reset_less=True)
                ll = Signal(unsigned(2 * k), name=f"ll{e}", reset_less=True)
                hl = Signal(unsigned(B), name=f"hl{e}", reset_less=True)
                sq_h = Array(Const(v * v, 2 * (B - k)) for v in range(1 << (B - k)))
                sq_l = Array(Const(v * v, 2 * k) for v in range(1 << k))
                pp = [Mux(lo[i], h << i, 0) for i in range(k)]
                m.d.sync += [hh.eq(sq_h[h]), ll.eq(sq_l[lo]), hl.eq(sum(pp))]
                m.d.sync += s.eq(Cat(ll, hh) + (hl << (k + 1)))
            sq.append(s)
        level, depth = sq, 0
        while len(level) > 1:
            nxt = []
            depth += 1
            reg = depth % self._tps == 0
            for t in range(0, len(level) - 1, 2):
                w = Signal(unsigned(len(level[t]) + 1), name=f"add{depth}_{t // 2}",
                           reset_less=True)
                if reg:
                    m.d.sync += w.eq(level[t] + level[t + 1])
                else:
                    m.d.comb += w.eq(level[t] + level[t + 1])
                nxt.append(w)
            if len(level) % 2:
                if reg:
                    w = Signal(unsigned(len(level[-1])), name=f"add{depth}_odd",
                               reset_less=True)
                    m.d.sync += w.eq(level[-1])
                    nxt.append(w)
                else:
                    nxt.append(level[-1])
            level = nxt
        if depth % self._tps:
            w = Signal(unsigned(len(level[0])), name="sum", reset_less=True)
            m.d.sync += w.eq(level[0])
            level = [w]
        acc = Signal(unsigned(self._p.dist_bits), reset_less=True)
        with m.If(self.acc_en):
            m.d.sync += acc.eq(Mux(self.acc_first, level[0], acc + level[0]))
        m.d.comb += self.dist.eq(acc)
        return m


class SimilarityEngine(wiring.Component):
    """Nearest dst of each src over a dst list, ``P`` lanes x ``L`` elements per cycle.

    Parameters
    ----------
    params : OrbisParams
        Uses ``N_max``, ``D``, ``L``, ``B`` and ``P``.
    sq_table : bool or None
        Squarer implementation: a constant table on the ``B+1``-bit difference (``True``) or
        the split squarer of :class:`SimilarityLane` (``False``, no multiplier, so no DSP
        block). Default: table for ``B = 4``, split squarer for ``B = 8``.
    tree_per_stage : int
        Adder-tree levels between pipeline registers (default 2).
    fifo_depth : int or None
        Output FIFO depth; default ``stages + 4``, enough that a src never waits for a slot
        without backpressure.
    guide_split : int
        Words per guide-buffer memory (a power of two, default 1024): the buffer is split by
        address into :attr:`guide_parts` memories, each read into its own register before
        the part multiplexer (block-RAM output register; timing).

    Members
    -------
    guide_w : In(stream.Signature(layouts.guide_write(params)))
        Guide-buffer writes (connect ``Quantizer.o``); always ready.
    dst_clear : In(1)
        One-cycle pulse while idle: the dst list becomes empty.
    dst_load : In(stream.Signature(unsigned(idx_bits)))
        Append this token to the dst list; the engine copies its guide vector (one dst
        every ``D/L + 1`` cycles; the entry counts in ``n_dst`` ``D/L + 1`` cycles after
        the transfer). Not ready while a src is in flight (ready is registered: it also
        drops for a cycle after ``src.valid``).
    dst_base : In(unsigned(count_bits))
        Search only dst-list entries ``[dst_base, n_dst)``. Hold it stable while src are in
        flight; a src starts 5 cycles after a change at the soonest (the value written in
        the cycle of a src transfer applies to that src).
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
        Bad ``params``, ``tree_per_stage``, ``fifo_depth`` or ``guide_split``.
    """

    def __init__(self, params: OrbisParams, *, sq_table=None, tree_per_stage: int = 2,
                 fifo_depth=None, guide_split: int = 1024):
        # A rejected component is not "unused": silence Amaranth's unused-elaboratable check.
        if not isinstance(params, OrbisParams):
            self._MustUse__silence = True
            raise ParamError(f"params must be an OrbisParams, not {type(params).__name__}")
        if isinstance(tree_per_stage, bool) or not isinstance(tree_per_stage, int) \
                or not 1 <= tree_per_stage <= 8:
            self._MustUse__silence = True
            raise ParamError(f"tree_per_stage must be an integer in [1, 8], "
                             f"not {tree_per_stage!r}")
        if isinstance(guide_split, bool) or not isinstance(guide_split, int) \
                or guide_split < 16 or guide_split & (guide_split - 1):
            self._MustUse__silence = True
            raise ParamError(f"guide_split must be a power of two >= 16, not {guide_split!r}")
        self._p = params
        self._sq_table = (params.B == 4) if sq_table is None else bool(sq_table)
        self._tps = tree_per_stage
        self._split = guide_split
        # Stage numbering, issue cycle = 0 (see docs/similarity.md).
        self._s_mem = 1                          # read-port data (guide and token memories)
        self._s_memr = 2                         # guide part registered; bank read-port data
        self._s_a = 3                            # guide data muxed and registered; bank data
        lv = ceil_log2(params.L)                 # registered in the lane
        sq_stages = 1 if self._sq_table else 3   # SimilarityLane.sq_stages
        self._s_sum = self._s_a + 1 + sq_stages + -(-lv // tree_per_stage)  # diff, sq, tree
        self._s_acc = self._s_sum + 1
        self._s_min = self._s_acc + ceil_log2(params.P)       # argmin tree, one level/stage
        self._s_fold = self._s_min + (params.chunks >= 2)     # running min: compare, select
        self._stages = self._s_fold + 1                        # + FIFO write register
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

    @property
    def guide_parts(self) -> int:
        """Guide-buffer memories (``ceil(N_max * D/L / guide_split)``), read in parallel."""
        return -(-self._p.N_max * self._p.chunks // self._split)

    def elaborate(self, platform):
        p = self._p
        m = Module()
        P, L, C, B = p.P, p.L, p.chunks, p.B
        rows = -(-p.N_max // P)
        word = data.ArrayLayout(signed(B), L)
        cb = p.count_bits
        dist_shape = unsigned(p.dist_bits)

        # --- memories ----------------------------------------------------------------------
        # The guide buffer is split by address into parts of `guide_split` words, each read
        # into its own register before the part multiplexer: the block RAM clock-to-out then
        # drives one flip-flop next to it instead of a mux across the RAM columns (the
        # critical path on ECP5 before the split). Bank reads are issued one cycle after the
        # guide read so that both arrive registered at stage s_a.
        depth = p.N_max * C
        K = self.guide_parts
        pdepth = min(self._split, depth)
        pbits = ceil_log2(pdepth)
        g_wr, g_rd = [], []
        for k in range(K):
            mem = Memory(shape=word, depth=pdepth, init=[])
            m.submodules[f"guide{k}" if K > 1 else "guide"] = mem
            g_wr.append(mem.write_port())
            g_rd.append(mem.read_port())
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
        g_waddr = Signal(range(depth + 1))
        m.d.comb += [
            self.guide_w.ready.eq(1),
            g_waddr.eq(self.guide_w.payload.token * C + self.guide_w.payload.chunk),
        ]
        for k in range(K):
            m.d.comb += [
                g_wr[k].addr.eq(g_waddr[:pbits]),
                g_wr[k].data.eq(self.guide_w.payload.data),
                g_wr[k].en.eq(self.guide_w.valid & ((g_waddr >> pbits) == k if K > 1 else 1)),
            ]

        # --- dst list and the copy of dst vectors into the banks ---------------------------
        n_dst = Signal(unsigned(cb))
        wr_bank = Signal(range(max(2, P)))
        wr_row = Signal(range(rows + 1))
        wr_rowaddr = Signal(range(rows * C + 1))
        copying = Signal()
        copy_tok = Signal(unsigned(p.idx_bits))
        # The one guide read address, of the dst copy while copying and of the src search
        # while active (never both): a register straight into the read port, so that the
        # read/write collision logic Yosys adds around an iCE40 block RAM starts at a
        # flip-flop (a copy/search multiplexer in front of it was the UP5K critical path).
        gaddr = Signal(range(p.N_max * C + 1))
        copy_chunk = Signal(range(C + 1))
        # A copied chunk travels with its guide read data: wb[s] is at stage s; it is written
        # into its bank at stage s_memr from the part registers through the part mux (one
        # LUT level into the block RAM's data input), a cycle before the src path's a_r.
        wb_layout = data.StructLayout({"valid": 1, "chunk": range(C + 1), "last": 1,
                                       "tok": unsigned(p.idx_bits)})
        wb = [Signal(wb_layout, name=f"wb{s}") for s in range(self._s_memr + 1)]
        wb_busy = Signal()       # a copied chunk still on its way to its bank
        m.d.comb += [self.n_dst.eq(n_dst), wb_busy.eq(Cat(*(w.valid for w in wb)).any())]
        # The entry counts (and a src may start) once its last chunk is one stage before its
        # bank write: a src reads the banks from the cycle after it starts, after that write.
        wb_count = wb[self._s_memr - 1]

        src_busy = Signal()                       # any src accepted whose result is not out
        # dst_load.ready is a flip-flop: the next-state value of `~copying & ~src_busy`
        # (src_busy's part conservatively: nothing in flight and no src offered, so none is
        # taken). As a gate of src_busy's terms it fed dst_load's fire and the copy
        # registers through six LUT levels on the UP5K.
        load_blk = Signal()                       # ~dst_load.ready
        copy_fire = Signal()
        copying_n = Signal()
        m.d.comb += [
            self.dst_load.ready.eq(~load_blk),
            copy_fire.eq(self.dst_load.valid & ~load_blk),
            copying_n.eq(copy_fire | (copying & (copy_chunk != C - 1))),
        ]
        with m.If(copy_fire):
            m.d.sync += [
                copying.eq(1),
                copy_tok.eq(self.dst_load.payload),
                gaddr.eq(self.dst_load.payload * C),
                copy_chunk.eq(0),
            ]
        m.d.comb += [
            wb[0].valid.eq(copying),
            wb[0].chunk.eq(copy_chunk),
            wb[0].last.eq(copy_chunk == C - 1),
            wb[0].tok.eq(copy_tok),
        ]
        for s in range(1, self._s_memr + 1):
            m.d.sync += wb[s].eq(wb[s - 1])
        wbw = wb[-1]
        with m.If(copying):
            m.d.sync += [
                gaddr.eq(gaddr + 1),
                copy_chunk.eq(copy_chunk + 1),
            ]
            with m.If(copy_chunk == C - 1):
                m.d.sync += copying.eq(0)
        # Guide data: one register per part (stage s_memr), the part mux (g_mux), and
        # registered at stage s_a for the lanes.
        g_mux = Signal(word)
        a_r = Signal(word, reset_less=True)
        # Bank write address, registered one stage early (the adder in front of the block
        # RAM's address and collision logic is off the path). wr_rowaddr only changes after
        # an entry's last chunk, and the next entry's first chunk is at least a cycle behind.
        b_waddr = Signal(range(rows * C + 1))
        m.d.sync += b_waddr.eq(wr_rowaddr + wb[self._s_memr - 1].chunk)
        for j in range(P):
            m.d.comb += [
                b_wr[j].addr.eq(b_waddr),
                b_wr[j].data.eq(g_mux),
                b_wr[j].en.eq(wbw.valid & (wr_bank == j)),
                t_wr[j].addr.eq(wr_row),
                t_wr[j].data.eq(wbw.tok),
                t_wr[j].en.eq(wbw.valid & wbw.last & (wr_bank == j)),
            ]
        with m.If(wb_count.valid & wb_count.last):
            m.d.sync += n_dst.eq(n_dst + 1)
        with m.If(wbw.valid & wbw.last):
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
        # `base_same`: dst_base unchanged in the previous cycle (registered compare, off the
        # start path); base_stable counts consecutive such cycles (saturating at 3).
        base_same = Signal()
        m.d.sync += base_same.eq(self.dst_base == base_r)
        with m.If(~base_same):
            m.d.sync += base_stable.eq(0)
        with m.Elif(base_stable != 3):
            m.d.sync += base_stable.eq(base_stable + 1)
        # A src may start at t when base_same(t) and go(t) (registered from base_same and
        # base_stable >= 2 at t-1): dst_base then held over [t-5, t-1], so base_r, base_row,
        # base_ent and rem0 below all derive from it. base_same(t) is in `start` itself so
        # that a dst_base written in the cycle of a src transfer holds that src back.
        base_ok_n = base_same & (base_stable >= 2)

        # Entries from the first group's lane 0 to the end of the list, registered (the
        # subtractor is off the start path). Valid at t when n_dst and base_ent held since
        # t-1: go(t) checks both (quiet_n and base_ok_n at t-1).
        rem0 = Signal(unsigned(cb + 1))
        m.d.sync += rem0.eq(n_dst - base_ent)
        # No dst copy may change n_dst or still be on its way to its bank: registered from
        # the previous cycle's state, which also covers a copy or clear starting then.
        quiet_n = ~copying & ~Cat(*(w.valid for w in wb[1:self._s_memr])).any() \
            & ~copy_fire & ~self.dst_clear

        # --- src prefetch register and result-slot reservation -----------------------------
        nxt_valid = Signal()
        nxt_tok = Signal(unsigned(p.idx_bits))
        nxt_gaddr = Signal(range(p.N_max * C + 1))
        reserved = Signal(range(self._fifo_depth + 1))

        active = Signal()
        cur_tok = Signal(unsigned(p.idx_bits))
        cur_gbase = Signal(range(p.N_max * C + 1))
        baddr = Signal(range(rows * C + 1))
        row = Signal(range(rows + 1))
        first_grp = Signal()

        # The issue control is pipelined so that `start` is a few LUT inputs, all flip-flops
        # (it drives src.ready and every register of the address generator; the compare ->
        # start -> ready chain limited the UP5K to 39 MHz and ECP5 to 105 MHz):
        #   go          registered: dst_base stable, no dst copy, a FIFO slot is free
        #   last_chunk  the sign bit of `cl`, a chunk down-counter from C-2 to -1
        #   last_grp    the sign bit of `rem_u = rem - P - 1`, where rem counts the entries
        #               from lane 0 of the current group to the end of the list
        # so the last-chunk and last-group tests are no compares at all.
        cl = Signal(signed(max(2, ceil_log2(max(2, C)) + 1)))
        rem_u = Signal(signed(cb + 3))
        last_chunk = Signal()
        last_grp = Signal()
        go = Signal()
        src_done = Signal()
        start = Signal()
        m.d.comb += [
            last_chunk.eq(cl[-1]),
            last_grp.eq(rem_u[-1]),
            src_done.eq(active & last_chunk & last_grp),
            start.eq(nxt_valid & (~active | src_done) & go & base_same),
        ]
        # go is registered from the previous cycle's state. Its slot check assumes a start
        # in that cycle and ignores a result leaving (one slot conservative; the default
        # FIFO depth has room for it).
        m.d.sync += go.eq(base_ok_n & quiet_n & (reserved < self._fifo_depth - 1))
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
                m.d.sync += [cl.eq(C - 2), gaddr.eq(cur_gbase)]
                with m.If(~last_grp):
                    m.d.sync += [rem_u.eq(rem_u - P), row.eq(row + 1), first_grp.eq(0),
                                 baddr.eq(baddr + 1)]
            with m.Else():
                m.d.sync += [cl.eq(cl - 1), gaddr.eq(gaddr + 1), baddr.eq(baddr + 1)]
        with m.If(src_done):
            m.d.sync += active.eq(0)
        with m.If(start):
            m.d.sync += [
                active.eq(1), cur_tok.eq(nxt_tok), cur_gbase.eq(nxt_gaddr),
                gaddr.eq(nxt_gaddr), baddr.eq(base_addr), row.eq(base_row),
                rem_u.eq(rem0 - (P + 1)), cl.eq(C - 2), first_grp.eq(1),
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
            sb[0].first_chunk.eq(cl == C - 2),
            sb[0].last_chunk.eq(last_chunk),
            sb[0].first_grp.eq(first_grp),
            sb[0].last_grp.eq(last_grp),
            sb[0].lo.eq(Mux(first_grp, base_off, 0)),
            sb[0].hi.eq(Mux(last_grp, rem_u + (P + 1), P)),
        ]
        for s in range(1, self._stages + 1):
            sb.append(Signal(sb_layout, name=f"sb{s}"))
            m.d.sync += sb[s].eq(sb[s - 1])

        # Shared guide read port: dst copy while loading, src chunks while searching.
        g_raddr = gaddr
        part = [Signal(range(max(2, K)), name=f"gpart{s}", reset_less=True) for s in (1, 2)]
        m.d.sync += [part[0].eq(g_raddr >> pbits), part[1].eq(part[0])]
        g_part_r = []
        for k in range(K):
            m.d.comb += g_rd[k].addr.eq(g_raddr[:pbits])
            r = Signal(word, name=f"g_part_r{k}", reset_less=True)
            m.d.sync += r.eq(g_rd[k].data)
            g_part_r.append(r)
        m.d.comb += g_mux.eq(Array(g_part_r)[part[1]] if K > 1 else g_part_r[0])
        m.d.sync += a_r.eq(g_mux)
        # Bank data reaches stage s_a through the lane's two registers, in step with the
        # guide data (part register, then the registered part mux).
        for j in range(P):
            m.d.comb += b_rd[j].addr.eq(baddr)

        # --- lanes -------------------------------------------------------------------------
        sbs = sb[self._s_sum]
        accs = []
        for j in range(P):
            lane = SimilarityLane(p, sq_table=self._sq_table, tree_per_stage=self._tps)
            m.submodules[f"lane{j}"] = lane
            m.d.comb += [
                lane.a.eq(a_r),
                lane.b.eq(b_rd[j].data),
                lane.acc_en.eq(sbs.valid),
                lane.acc_first.eq(sbs.first_chunk),
            ]
            accs.append(lane.dist)

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
            # a wins over b: valid beats invalid, then (dist, tok) lexicographically, as one
            # unsigned compare of Cat(tok, dist) (one carry chain; the separate <, == and <
            # were the iCE40 critical path through the running minimum).
            return a.valid & (~b.valid | (Cat(a.tok, a.dist) < Cat(b.tok, b.dist)))

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

        # Running minimum over groups and the FIFO write. With C >= 2 a group's winner
        # arrives at most every other cycle, so the fold takes two: the compare against the
        # running minimum is registered (`take_new`, stage s_min) and the selection is made a
        # cycle later (stage s_fold), before the next group's compare reads `best`. The
        # one-cycle loop (compare carry chain -> mux -> best) limited the UP5K to 45 MHz.
        # With C = 1 (a group every cycle) the fold stays a one-cycle loop.
        best = Signal(cand_layout)
        fold = Signal(cand_layout)
        if self._s_fold > self._s_min:
            new = Signal(cand_layout, name="grp_best_r")
            take_new = Signal()
            m.d.sync += [new.eq(grp_best),
                         take_new.eq(sbm.first_grp | better(grp_best, best))]
            m.d.comb += fold.eq(Mux(take_new, new, best))
        else:
            m.d.comb += fold.eq(Mux(sbm.first_grp | better(grp_best, best), grp_best, best))
        sbf = sb[self._s_fold]
        res_layout = layouts.engine_result(p)
        res = Signal(res_layout)
        res_valid = Signal()
        m.d.sync += res_valid.eq(0)
        with m.If(sbf.valid & sbf.last_chunk):
            m.d.sync += best.eq(fold)
            with m.If(sbf.last_grp):
                m.d.sync += [res_valid.eq(1), res.src.eq(sbf.src), res.dst.eq(fold.tok),
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
            self.idle.eq(~src_busy & ~copying & ~wb_busy),
        ]
        m.d.sync += load_blk.eq(copying_n | nxt_valid | active | (reserved != 0)
                                | self.src.valid)
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
