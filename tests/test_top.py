"""TokenReductionUnit in the Amaranth simulator: whole calls against the golden model.

Covers the order of a call (match, reduce, attention stand-in, restore), the overlap of the
next call's matching with the current call's streams (double-buffered map), the matching
cache (reuse), random idle and backpressure on every stream, and token conservation.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

import golden as G
from hw import preset
from hw.top import CallError, TokenReductionUnit
from streams import map_of, recv, send, vec_beats, vec_of


def attention_standin(v):
    """Element-wise stand-in for attention that stays in range: bitwise not."""
    return -np.asarray(v) - 1


def make_call(p, grid, rng, r_frac=0.5, rounds=1, quota=2, seed=7):
    g = rng.integers(-2000, 2000, (grid.N, p.D)).astype(np.int16)
    g[rng.integers(0, grid.N, grid.N // 4)] = g[0]          # exact ties
    x = rng.integers(-(1 << (p.Wx - 1)), 1 << (p.Wx - 1), (grid.N, p.Dx))
    shift = G.shift_for(g, p.B)
    n_src = grid.N - G.window_count(grid)
    r = int(n_src * r_frac)
    res = G.match(g, grid, r=r, R=rounds, quota=quota, seed=seed, shift=shift,
                  **p.golden_kwargs())
    cfg = {"F": grid.F, "H": grid.H, "W": grid.W,
           "sf": grid.window[0], "sh": grid.window[1], "sw": grid.window[2],
           "budget": 0, "r": r, "tau": 0, "rounds": rounds, "quota": quota,
           "seed": seed, "shift": shift}
    reduced = G.merge(x, res, p.merge_mode)
    restored = G.unmerge(attention_standin(reduced), res)
    return dict(g=g, x=x, cfg=cfg, res=res, reduced=reduced, restored=restored)


def check_call(p, call, reduced, restored):
    red = np.array(reduced).reshape(-1, p.Dx)
    rest = np.array(restored).reshape(-1, p.Dx)
    assert red.shape[0] == call["res"].n_kept           # token conservation
    assert np.array_equal(red, call["reduced"])
    assert rest.shape[0] == call["res"].N
    assert np.array_equal(rest, call["restored"])


async def pulse(ctx, sig):
    ctx.set(sig, 1)
    await ctx.tick()
    ctx.set(sig, 0)


@pytest.mark.parametrize("mode,idle,bp", [("replace", 0.0, 0.0), ("mean", 0.3, 0.3)])
def test_three_calls_overlap_and_reuse(mode, idle, bp):
    p = preset("ice40-small").with_(N_max=64, D=8, L=4, Dx=4, Lx=2, Wx=8, merge_mode=mode)
    seed = 11
    print("seed", seed)
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    grid = G.Grid(2, 4, 5, (2, 2, 2))
    call0 = make_call(p, grid, rng)
    call1 = make_call(p, grid, rng, r_frac=0.75, seed=3)
    # Call 2 reuses call 1's map (matching cache) on new activations.
    x2 = rng.integers(-(1 << (p.Wx - 1)), 1 << (p.Wx - 1), (grid.N, p.Dx))
    red2 = G.merge(x2, call1["res"], mode)
    call2 = dict(call1, x=x2, reduced=red2,
                 restored=G.unmerge(attention_standin(red2), call1["res"]))
    calls = [call0, call1, call2]
    dut = TokenReductionUnit(p)
    got = {k: {"reduced": [], "restored": []} for k in range(3)}
    out = {}

    async def match(ctx, call):
        ctx.set(dut.cfg, call["cfg"])
        await pulse(ctx, dut.match_start)
        await send(ctx, dut.guide, vec_beats(call["g"], p.L), prng, idle)

    async def bench(ctx):
        await match(ctx, call0)
        await ctx.tick().until(~dut.match_busy)
        assert ctx.get(dut.fresh)
        ctx.set(dut.call_reuse, 0)
        await pulse(ctx, dut.call_start)
        # Call 1's matching runs while call 0's streams transfer (back bank).
        await ctx.tick().until(dut.call_busy)
        await match(ctx, call1)
        await ctx.tick().until(~dut.call_busy & ~dut.match_busy)
        out["overlap"] = ctx.get(dut.cyc_overlap)
        out["cyc_match"] = ctx.get(dut.cyc_match)
        out["front_r0"] = ctx.get(dut.r)
        await pulse(ctx, dut.call_start)
        await ctx.tick().until(dut.call_busy)
        await ctx.tick().until(~dut.call_busy)
        out["front_r1"] = ctx.get(dut.r)
        ctx.set(dut.call_reuse, 1)
        await pulse(ctx, dut.call_start)
        await ctx.tick().until(dut.call_busy)
        await ctx.tick().until(~dut.call_busy)
        # The host reads the front map.
        await pulse(ctx, dut.map_read)
        out["map"] = await recv(ctx, dut.map, grid.N, prng, bp, map_of)
        await ctx.tick().until(~dut.map_busy)
        # A call with no fresh map and no reuse is refused with an error, not a hang.
        ctx.set(dut.call_reuse, 0)
        await pulse(ctx, dut.call_start)
        await ctx.tick().until(~dut.call_busy)
        out["call_error"] = ctx.get(dut.call_error)

    # The streams run as independent producers and consumers; the unit takes exactly one
    # call's worth of beats per call, so they need no coordination with the controller.
    async def x_feed(ctx):
        for call in calls:
            await send(ctx, dut.x, vec_beats(call["x"], p.Lx), prng, idle)

    async def attention(ctx):
        for k, call in enumerate(calls):
            # Attention needs the whole reduced sequence before its first output.
            n = call["res"].n_kept * p.x_beats
            beats = await recv(ctx, dut.reduced, n, prng, bp, vec_of)
            got[k]["reduced"] = beats
            y = attention_standin(np.array(beats))
            await send(ctx, dut.y, [{"data": [int(v) for v in row]} for row in y], prng, idle)

    async def restore(ctx):
        for k, call in enumerate(calls):
            got[k]["restored"] = await recv(ctx, dut.restored, call["res"].N * p.x_beats,
                                            prng, bp, vec_of)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    for proc in (x_feed, attention, restore):
        sim.add_testbench(proc, background=True)
    sim.run()

    for k, call in enumerate(calls):
        check_call(p, call, got[k]["reduced"], got[k]["restored"])
    assert out["front_r0"] == call0["res"].r and out["front_r1"] == call1["res"].r
    res1 = call1["res"]
    assert out["map"] == list(zip(res1.kind.tolist(), res1.target.tolist(), res1.pos.tolist()))
    assert out["call_error"] == CallError.NO_MAP
    # Hiding: the matcher was busy while call 0's streams transferred.
    print("cyc_match", out["cyc_match"], "overlap", out["overlap"])
    assert out["overlap"] > 0
