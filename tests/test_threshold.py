"""Threshold unit against golden.select_bottom / golden.promote_top (masks compared)."""

import random

import numpy as np
from amaranth.sim import Simulator

import golden
from hw.params import OrbisParams
from hw.threshold import Threshold


def mask_from(code, t, need, top):
    """Entries taken by the rule the hardware applies with (t, need), ascending index."""
    code = np.asarray(code)
    mask = (code > t) if top else (code < t)
    at = np.flatnonzero(code == t)[:need]
    mask[at] = True
    return mask


def test_threshold_matches_golden():
    seed = 7
    print(f"seed={seed}")
    p = OrbisParams(N_max=256, D=16, B=4, P=1, L=4, NB=16, hist_mant=2, R=0)
    NB = p.NB
    rng = np.random.default_rng(seed)
    cases = []
    for trial in range(40):
        n = int(rng.integers(0, 60))
        if trial % 4 == 0:
            code = rng.integers(0, NB, size=n)
        else:   # clustered codes: many ties in a few bins
            code = rng.choice(rng.integers(0, NB, size=3), size=n)
        k = int(rng.choice([0, n, int(rng.integers(0, n + 1))]))
        cases.append((code, k, bool(trial % 2)))
    dut = Threshold(p)
    pyrng = random.Random(seed)
    out = []

    async def tb(ctx):
        for code, k, top in cases:
            hist = np.bincount(code, minlength=NB)
            order = list(range(NB))[::-1] if top else list(range(NB))
            ctx.set(dut.k, k)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for j, b in enumerate(order):
                while pyrng.random() < 0.3:        # idle cycles between bins
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"bin": b, "count": int(hist[b]),
                                        "last": int(j == NB - 1)})
                await ctx.tick()
            ctx.set(dut.i.valid, 0)
            await ctx.tick()
            out.append((ctx.get(dut.done), ctx.get(dut.found), ctx.get(dut.t),
                        ctx.get(dut.need)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    for (code, k, top), (done, found, t, need) in zip(cases, out):
        assert done and found
        idx = np.arange(len(code))
        if top:
            want, wt = golden.promote_top(code, idx, k, NB)
        else:
            want, wt = golden.select_bottom(code, idx, k, NB)
        if k:
            assert t == wt
        assert need <= k
        assert (mask_from(code, t, need, top) == want).all(), (code, k, top, t, need)
