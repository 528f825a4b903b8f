"""DstInit against golden.initial_dst: random grids with partial windows, idle-free producer,
random backpressure on the dst stream."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

import golden
from hw.dstinit import DstInit
from hw.params import OrbisParams, ParamError


def run_dstinit(p, cases, seed):
    """Run every ``(F, H, W, window, lfsr_seed)`` case through one DstInit; return token lists."""
    dut = DstInit(p)
    rng = random.Random(seed)
    got = []

    async def tb(ctx):
        for F, H, W, (sf, sh, sw), s in cases:
            for sig, v in ((dut.F, F), (dut.H, H), (dut.W, W), (dut.sf, sf), (dut.sh, sh),
                           (dut.sw, sw), (dut.seed, s)):
                ctx.set(sig, v)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            toks = []
            while True:
                ready = rng.random() < 0.7
                ctx.set(dut.o.ready, ready)
                await ctx.delay(1e-9)   # let combinational busy/valid settle after ready
                valid, payload, busy = ctx.get(dut.o.valid), ctx.get(dut.o.payload), \
                    ctx.get(dut.busy)
                if not busy:
                    break
                await ctx.tick()
                if valid and ready:
                    toks.append(payload)
            ctx.set(dut.o.ready, 0)
            got.append((toks, ctx.get(dut.count)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return got


def test_dstinit_matches_golden():
    seed = 1234
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    p = OrbisParams(N_max=512, window=(3, 4, 5), R=0)
    cases = [(1, 1, 1, (1, 1, 1), 1), (2, 2, 2, (2, 2, 2), 0xFFFF), (3, 5, 7, (2, 2, 2), 77),
             (1, 16, 16, (1, 4, 4), 0xACE1), (5, 9, 11, (3, 4, 5), 999)]
    while len(cases) < 14:
        F, H, W = (int(x) for x in rng.integers(1, 12, size=3))
        if F * H * W > p.N_max:
            continue
        win = tuple(int(rng.integers(1, min(lim, d) + 1)) for lim, d in zip(p.window, (F, H, W)))
        cases.append((F, H, W, win, int(rng.integers(1, 1 << 16))))
    got = run_dstinit(p, cases, seed)
    for (F, H, W, win, s), (toks, count) in zip(cases, got):
        grid = golden.Grid(F, H, W, window=win)
        want = golden.initial_dst(grid, s).tolist()
        assert toks == want, (F, H, W, win, s)
        assert count == golden.window_count(grid)


def test_dstinit_rejects_bad_params():
    with pytest.raises(TypeError):
        DstInit({"N_max": 64})
    with pytest.raises(ParamError):
        OrbisParams(window=(0, 2, 2))


def test_dstinit_window_rate():
    """With ready always high: first token SETUP_CYCLES + CYCLES_PER_WINDOW cycles after
    start, then one every CYCLES_PER_WINDOW cycles (the next window is computed while a
    token waits), and busy falls the cycle after the last transfer."""
    from hw.dstinit import CYCLES_PER_WINDOW, SETUP_CYCLES
    p = OrbisParams(N_max=512, window=(3, 4, 5), R=0)
    dut = DstInit(p)
    seen = []

    async def tb(ctx):
        for sig, v in ((dut.F, 4), (dut.H, 4), (dut.W, 6), (dut.sf, 2), (dut.sh, 2),
                       (dut.sw, 3), (dut.seed, 0x1234)):
            ctx.set(sig, v)
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycle = 1
        while ctx.get(dut.busy):
            if ctx.get(dut.o.valid):
                seen.append(cycle)
            await ctx.tick()
            cycle += 1
        seen.append(cycle)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    *xfers, idle_at = seen
    assert len(xfers) == 2 * 2 * 2
    assert xfers[0] == SETUP_CYCLES + CYCLES_PER_WINDOW
    assert all(b - a == CYCLES_PER_WINDOW for a, b in zip(xfers, xfers[1:]))
    assert idle_at == xfers[-1] + 1
