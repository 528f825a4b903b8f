"""Quantizer in the Amaranth simulator against golden.quantize (every transferred beat)."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden import core as golden
from hw.params import OrbisParams, ParamError
from hw.quantizer import Quantizer


def run_quantizer(p, calls, seed, idle=0.3, bp=0.3):
    """Drive ``calls`` = [(g (N, D) int, shift)] through the quantizer.

    Returns per call the list of output transfers ``(token, chunk, data tuple)`` and the
    ``max_abs`` read after the call.
    """
    rng = random.Random(seed)
    dut = Quantizer(p)
    got = [[] for _ in calls]
    maxabs = []
    state = {"call": 0, "done": False}

    async def driver(ctx):
        for ci, (g, shift) in enumerate(calls):
            await ctx.tick().until(dut.o.valid == 0)   # drain the previous call
            state["call"] = ci
            ctx.set(dut.shift, shift)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for n in range(g.shape[0]):
                for c in range(p.chunks):
                    while rng.random() < idle:
                        await ctx.tick()
                    ctx.set(dut.i.payload.data, [int(v) for v in g[n, c * p.L:(c + 1) * p.L]])
                    ctx.set(dut.i.valid, 1)
                    await ctx.tick().until(dut.i.ready)
                    ctx.set(dut.i.valid, 0)
            await ctx.tick().repeat(dut.max_abs_latency)
            maxabs.append(ctx.get(dut.max_abs))
            await ctx.tick().until(dut.o.valid == 0)
        state["done"] = True

    async def monitor(ctx):
        while not state["done"]:
            ctx.set(dut.o.ready, rng.random() >= bp)
            _, _, valid, ready, pl = await ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload)
            if valid and ready:
                got[state["call"]].append(
                    (pl.token, pl.chunk, tuple(int(x) for x in pl.data)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(monitor, background=True)
    sim.run()
    return got, maxabs


def expected(p, g, shift):
    q, mx = golden.quantize(g, shift, p.B)
    beats = [(n, c, tuple(int(x) for x in q[n, c * p.L:(c + 1) * p.L]))
             for n in range(g.shape[0]) for c in range(p.chunks)]
    return beats, mx


CASES = [
    OrbisParams(N_max=16, D=8, B=8, P=2, L=4),
    OrbisParams(N_max=16, D=8, B=4, P=2, L=8),
    OrbisParams(N_max=32, D=12, B=4, P=3, L=3),
    OrbisParams(N_max=8, D=5, B=8, P=1, L=1),
]


@pytest.mark.parametrize("p", CASES, ids=lambda p: f"D{p.D}L{p.L}B{p.B}")
def test_quantizer_random(p):
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rs = np.random.default_rng(seed)
    calls = []
    n = min(p.N_max, 7)
    # Edge values: int16 extremes, rounding ties (odd multiples of 2**(s-1)), zero.
    edge = np.array([-32768, 32767, -1, 1, 0, -2, 2, 3, -3, 4095, -4096, 127, -128])
    for shift in (0, 1, 5, p.B - 1, 9, 16):
        g = rs.integers(-32768, 32768, size=(n, p.D))
        g.flat[:len(edge)] = edge[:g.size]
        calls.append((g, shift))
    # Small-range data with the host shift helper, as a driver would use it.
    g = rs.integers(-300, 300, size=(n, p.D))
    calls.append((g, golden.shift_for(g, p.B)))
    got, maxabs = run_quantizer(p, calls, seed)
    for (g, shift), beats, mx in zip(calls, got, maxabs):
        exp_beats, exp_mx = expected(p, g, shift)
        assert beats == exp_beats, f"shift={shift}"
        assert mx == exp_mx, f"shift={shift}"


def test_quantizer_no_stall():
    p = OrbisParams(N_max=16, D=8, B=8, P=2, L=4)
    rs = np.random.default_rng(1)
    g = rs.integers(-32768, 32768, size=(16, p.D))
    got, maxabs = run_quantizer(p, [(g, 7)], seed=1, idle=0.0, bp=0.0)
    assert got[0] == expected(p, g, 7)[0]
    assert maxabs[0] == int(np.abs(g).max())


def test_quantizer_bad_params():
    with pytest.raises(ParamError, match="params"):
        Quantizer({"B": 8})
    with pytest.raises(ParamError, match="B must be 4 or 8"):
        Quantizer(OrbisParams(B=6))


@pytest.mark.parametrize("L", [1, 4, 8])
def test_quantizer_start_drops_pending_max(L):
    """``start`` right after a call's last beat: that call's chunk maxima still in the
    comparator pipeline must not leak into the new call's ``max_abs``; a beat accepted in the
    same cycle as ``start`` belongs to the new call."""
    p = OrbisParams(N_max=16, D=8, B=8, P=2, L=L)
    dut = Quantizer(p)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.shift, 4)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.i.valid, 1)
        for k in range(3):      # call 1: big values
            ctx.set(dut.i.payload.data, [30000 - k] * L)
            await ctx.tick()
        # call 2 starts with a beat accepted in the same cycle, then one more beat
        ctx.set(dut.start, 1)
        ctx.set(dut.i.payload.data, [-7] + [3] * (L - 1))
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.i.payload.data, [5] * L)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(dut.max_abs_latency + 1)
        seen["max"] = ctx.get(dut.max_abs)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen["max"] == 7
