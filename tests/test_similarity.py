"""Similarity engine (fed by the quantizer) in the Amaranth simulator against the golden model.

Every result that crosses ``o.valid & o.ready`` is compared with golden.nearest_dst over the
searched dst entries sorted ascending (so golden's first minimum is the smallest token).
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden import core as golden
from hw.params import OrbisParams, ParamError, preset
from hw.similarity import QuantSimilarity, SimilarityEngine, div_const


def run_engine(p, g, shift, rounds, seed, idle=0.3, bp=0.3, engine_kwargs=None):
    """Quantize ``g`` into the engine, then run ``rounds``.

    ``rounds`` is a list of ``(clear, dst_append, dst_base, src)``. Returns, per round, the
    list of result transfers ``(src, dst, dist)``, plus a dict of measurements.
    """
    rng = random.Random(seed)
    dut = QuantSimilarity(p, **(engine_kwargs or {}))
    got = [[] for _ in rounds]
    meas = {"max_abs": None, "n_dst": [], "cycles": [], "idle_after": []}
    st = {"round": 0, "done": False, "cycle": 0, "first_src": None, "last_res": None}

    async def put(ctx, s, payload):
        while rng.random() < idle:
            await ctx.tick()
        ctx.set(s.payload, payload)
        ctx.set(s.valid, 1)
        await ctx.tick().until(s.ready)
        ctx.set(s.valid, 0)

    async def driver(ctx):
        ctx.set(dut.shift, shift)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for n in range(g.shape[0]):
            for c in range(p.chunks):
                await put(ctx, dut.i, {"data": [int(v) for v in g[n, c * p.L:(c + 1) * p.L]]})
        await ctx.tick().repeat(dut.quantizer.max_abs_latency + 1)
        meas["max_abs"] = ctx.get(dut.max_abs)
        for ri, (clear, dst_add, base, src) in enumerate(rounds):
            st["round"] = ri
            if clear:
                await ctx.tick().until(dut.idle)
                ctx.set(dut.dst_clear, 1)
                await ctx.tick()
                ctx.set(dut.dst_clear, 0)
            for t in dst_add:
                await put(ctx, dut.dst_load, int(t))
            ctx.set(dut.dst_base, base)
            st["first_src"] = None
            for t in src:
                await put(ctx, dut.src, int(t))
                if st["first_src"] is None:
                    st["first_src"] = st["cycle"]
            while len(got[ri]) < len(src):
                await ctx.tick()
            meas["cycles"].append(st["last_res"] - st["first_src"] + 1)
            await ctx.tick()
            meas["idle_after"].append(ctx.get(dut.idle))
            meas["n_dst"].append(ctx.get(dut.n_dst))
        await ctx.tick().repeat(5)
        st["done"] = True

    async def monitor(ctx):
        while True:
            ctx.set(dut.o.ready, rng.random() >= bp)
            _, _, valid, ready, pl = await ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload)
            st["cycle"] += 1
            if valid and ready:
                got[st["round"]].append((pl.src, pl.dst, pl.dist))
                st["last_res"] = st["cycle"]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(monitor, background=True)
    sim.run()
    return got, meas


def expected_round(q, dst_list, base, src):
    cand = np.array(sorted(dst_list[base:]), dtype=np.int64)
    arg, dist = golden.nearest_dst(q, np.asarray(src, dtype=np.int64), cand)
    return [(int(s), int(cand[a]), int(d)) for s, a, d in zip(src, arg, dist)]


def check(p, g, shift, rounds, seed, **kw):
    print(f"seed={seed} params={p}")
    got, meas = run_engine(p, g, shift, rounds, seed, **kw)
    q, mx = golden.quantize(g, shift, p.B)
    assert meas["max_abs"] == mx
    dst_list = []
    for ri, (clear, dst_add, base, src) in enumerate(rounds):
        if clear:
            dst_list = []
        dst_list = dst_list + list(dst_add)
        assert got[ri] == expected_round(q, dst_list, base, src), f"round {ri}"
        assert meas["n_dst"][ri] == len(dst_list)
        assert meas["idle_after"][ri] == 1
    return got, meas


def random_case(p, rs, N, n_dst, n_src=None, vrange=None, shift=None):
    """Random guide data, a random dst list (random order) and the other tokens as src."""
    hi = vrange or 32768
    g = rs.integers(-hi, hi, size=(N, p.D))
    shift = golden.shift_for(g, p.B) if shift is None else shift
    perm = rs.permutation(N)
    dst = perm[:n_dst]
    src = perm[n_dst:] if n_src is None else perm[n_dst:n_dst + n_src]
    return g, shift, list(dst), list(src)


SMALL = [
    OrbisParams(N_max=32, D=8, B=8, P=2, L=4),
    OrbisParams(N_max=32, D=8, B=4, P=4, L=2),
    OrbisParams(N_max=40, D=12, B=4, P=3, L=3),            # odd sizes
    OrbisParams(N_max=24, D=6, B=8, P=1, L=6),             # P = 1, L = D
    OrbisParams(N_max=24, D=4, B=4, P=5, L=4),             # one chunk, P not a power of 2
    OrbisParams(N_max=20, D=3, B=8, P=2, L=1),             # L = 1
]


@pytest.mark.parametrize("p", SMALL, ids=lambda p: f"D{p.D}L{p.L}B{p.B}P{p.P}")
def test_engine_random(p):
    seed = random.randrange(1 << 30)
    rs = np.random.default_rng(seed)
    N = p.N_max
    g, shift, dst, src = random_case(p, rs, N, n_dst=N // 3 + 1)
    # Round 1: full search. Round 2: promote some src, search only the new entries
    # (dst_base > 0, not a multiple of P in general). Round 3: clear and reload.
    prom, rest = src[:5], src[5:]
    dst2 = dst[:N // 4 + 2]
    rounds = [
        (True, dst, 0, src),
        (False, prom, len(dst), rest),
        (True, dst2, 0, [t for t in range(N) if t not in dst2]),
    ]
    check(p, g, shift, rounds, seed)


@pytest.mark.parametrize("split", [16, 32])
def test_engine_guide_split(split):
    """Guide buffer split into several memories (each read into its own register)."""
    p = OrbisParams(N_max=40, D=8, B=8, P=3, L=2)             # 160 words: 10 or 5 parts
    seed = random.randrange(1 << 30)
    rs = np.random.default_rng(seed)
    g, shift, dst, src = random_case(p, rs, 40, n_dst=9)
    prom, rest = src[:4], src[4:]
    rounds = [(True, dst, 0, src), (False, prom, len(dst), rest)]
    eng = SimilarityEngine(p, guide_split=split)
    eng._MustUse__silence = True              # only its property is read
    assert eng.guide_parts == -(-160 // split)
    check(p, g, shift, rounds, seed, engine_kwargs={"guide_split": split})


@pytest.mark.parametrize("idle,bp", [(0.0, 0.0), (0.0, 0.7), (0.5, 0.0), (0.4, 0.9)])
def test_engine_idle_backpressure(idle, bp):
    p = OrbisParams(N_max=32, D=8, B=8, P=3, L=4)
    seed = random.randrange(1 << 30)
    rs = np.random.default_rng(seed)
    g, shift, dst, src = random_case(p, rs, 32, n_dst=7)
    check(p, g, shift, [(True, dst, 0, src)], seed, idle=idle, bp=bp)


def test_engine_ties_and_equal_tokens():
    """All-equal tokens (every distance 0, ties to the smallest token) and many ties."""
    p = OrbisParams(N_max=32, D=8, B=4, P=3, L=4)
    seed = random.randrange(1 << 30)
    rs = np.random.default_rng(seed)
    g = np.full((32, p.D), 1234)
    dst = list(rs.permutation(32)[:10])
    src = [t for t in range(32) if t not in dst]
    rounds = [(True, dst, 0, src), (False, [], 4, src[:6])]
    check(p, g, 8, rounds, seed)
    # Few distinct vectors: many exact distance ties between different dst.
    g = rs.integers(-2, 3, size=(32, p.D)) * 4096
    rounds = [(True, dst, 0, src), (False, [], 5, src)]
    check(p, g, golden.shift_for(g, p.B), rounds, seed)


def test_engine_repeated_src_and_dst_in_src():
    """Src in any order, repeated, and tokens that are dst themselves (distance 0)."""
    p = OrbisParams(N_max=16, D=4, B=8, P=2, L=2)
    seed = random.randrange(1 << 30)
    rs = np.random.default_rng(seed)
    g, shift, dst, _ = random_case(p, rs, 16, n_dst=5)
    src = [int(t) for t in rs.integers(0, 16, size=30)]
    check(p, g, shift, [(True, dst, 0, src), (False, [], 3, src[::-1])], seed)


def test_engine_extremes():
    """Largest distances: +qmax against -qmax in every element (dist_bits fully used)."""
    for B in (4, 8):
        p = OrbisParams(N_max=8, D=8, B=B, P=2, L=4)
        g = np.zeros((8, p.D), dtype=np.int64)
        g[0::2] = 32767
        g[1::2] = -32768
        rounds = [(True, [1, 3], 0, [0, 2, 4, 6, 5])]
        got, _ = check(p, g, 0, rounds, seed=0)    # shift 0: every element clamps
        assert got[0][0][2] == p.dist_max


def test_engine_utilization_small():
    """No idle, no backpressure: at least 95% of the ideal cycles at 64 x 64."""
    p = OrbisParams(N_max=128, D=8, B=4, P=4, L=4)
    seed = random.randrange(1 << 30)
    rs = np.random.default_rng(seed)
    g, shift, dst, src = random_case(p, rs, 128, n_dst=64)
    _, meas = check(p, g, shift, [(True, dst, 0, src)], seed, idle=0.0, bp=0.0)
    ideal = len(src) * len(dst) * p.D / (p.P * p.L)
    util = ideal / meas["cycles"][0]
    print(f"utilization {util:.4f}")
    assert util >= 0.95


def test_div_const_exact():
    for P in (1, 2, 3, 5, 7, 8, 12, 31, 100, 255, 256):
        for nb in (2, 5, 11):
            M, k = div_const(P, nb)
            x = np.arange(1 << nb, dtype=np.int64)
            assert np.array_equal((x * M) >> k, x // P), (P, nb)


def test_engine_bad_params():
    p = preset("ice40-small")
    with pytest.raises(ParamError, match="params"):
        SimilarityEngine("ecp5-default")
    with pytest.raises(ParamError, match="tree_per_stage"):
        SimilarityEngine(p, tree_per_stage=0)
    with pytest.raises(ParamError, match="fifo_depth"):
        SimilarityEngine(p, fifo_depth=1)
    with pytest.raises(ParamError, match="guide_split"):
        SimilarityEngine(p, guide_split=100)
    with pytest.raises(ParamError, match="L must divide D"):
        OrbisParams(D=12, L=5)
    with pytest.raises(ParamError, match="P must be"):
        OrbisParams(P=0)


@pytest.mark.parametrize("B", [4, 8])
def test_engine_real_video(B):
    """Big Buck Bunny patch tokens, LFSR initial dst, then one promotion round (dst_base)."""
    video = pytest.importorskip("golden.video")
    try:
        vt = video.video_tokens(F=2, H=4, W=8, p=4, D=16, start=20)
    except FileNotFoundError as e:
        pytest.skip(f"video clip not installed: {e}")
    p = OrbisParams(N_max=64, D=16, B=B, P=3, L=4)
    seed = random.randrange(1 << 30)
    g = vt.guide.astype(np.int64)
    dst = [int(t) for t in golden.initial_dst(vt.grid, seed % 65535 + 1)]
    src = [t for t in range(vt.grid.N) if t not in dst]
    prom = src[::7]
    rest = [t for t in src if t not in prom]
    rounds = [(True, dst, 0, src), (False, prom, len(dst), rest)]
    check(p, g, golden.shift_for(g, B), rounds, seed)


@pytest.mark.parametrize("B,sq_table", [(8, False), (4, False), (4, True)])
def test_lane_squares_every_difference(B, sq_table):
    """One lane, every B-bit signed pair difference class: each chunk sum equals the sum of
    the squared differences (the split squarer's tables, shift-add product and final add)."""
    from hw.similarity import SimilarityLane
    p = OrbisParams(N_max=16, D=2, B=B, P=1, L=2)
    lane = SimilarityLane(p, sq_table=sq_table)
    lo, hi = -(1 << (B - 1)), (1 << (B - 1)) - 1
    # Element 0 sweeps a over the whole range against the extremes and 0 (so |d| takes every
    # value 0 .. 2**B - 1); element 1 is random.
    rng = random.Random(B)
    pairs = [((a, rng.randint(lo, hi)), (b, rng.randint(lo, hi)))
             for b in (lo, 0, hi) for a in range(lo, hi + 1)]
    lat = lane.sum_stages
    got = []

    async def bench(ctx):
        n = len(pairs)
        for t in range(n + lat + 4):
            if t + 2 < n:
                ctx.set(lane.b, [pairs[t + 2][1][0], pairs[t + 2][1][1]])
            if t < n:
                ctx.set(lane.a, [pairs[t][0][0], pairs[t][0][1]])
            ctx.set(lane.acc_en, 1)
            ctx.set(lane.acc_first, 1)
            await ctx.tick()
            got.append(ctx.get(lane.dist))

    sim = Simulator(lane)
    sim.add_clock(1e-6)

    async def run(ctx):
        # b enters two stages before a: present the first two b values first.
        ctx.set(lane.b, [pairs[0][1][0], pairs[0][1][1]])
        await ctx.tick()
        ctx.set(lane.b, [pairs[1][1][0], pairs[1][1][1]])
        await ctx.tick()
        await bench(ctx)

    sim.add_testbench(run)
    sim.run()
    want = [(a0 - b0) ** 2 + (a1 - b1) ** 2 for (a0, a1), (b0, b1) in pairs]
    # The sum of the pair presented at step t is the lane's dist lat + 1 ticks later.
    assert got[lat:lat + len(want)] == want
