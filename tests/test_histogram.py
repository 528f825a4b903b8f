"""Histogram code, range shift and the Histogram unit against the golden model."""

import random

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

import golden
from hw.histogram import Histogram, hist_code, hist_shift
from hw.params import OrbisParams


@pytest.mark.parametrize("NB,M,B,D", [(64, 2, 8, 64), (32, 2, 4, 16), (16, 0, 4, 4),
                                      (64, 3, 8, 8), (4, 1, 4, 2)])
def test_hist_code_and_shift(NB, M, B, D):
    seed = NB * 100 + M
    print(f"seed={seed}")
    p = OrbisParams(N_max=64, D=D, B=B, P=1, L=1, NB=NB, hist_mant=M, R=0)
    m = Module()
    d = Signal(p.dist_bits)
    c = Signal(range(p.dist_bits + 1))
    code = Signal(range(NB))
    shift = Signal(range(p.dist_bits + 1))
    m.d.comb += [code.eq(hist_code(p, d, c)), shift.eq(hist_shift(p, d))]
    rng = np.random.default_rng(seed)
    dm = p.dist_max
    vals = sorted({0, 1, 2, 3, dm, dm - 1} | {(1 << k) + o for k in range(p.dist_bits)
                                              for o in (-1, 0, 1) if 0 <= (1 << k) + o <= dm}
                  | set(rng.integers(0, dm + 1, size=150).tolist()))
    cs = [0, 1, 2, p.dist_bits - 1, p.dist_bits] + rng.integers(0, p.dist_bits, 5).tolist()
    bad = []

    async def tb(ctx):
        for v in vals:
            ctx.set(d, v)
            want_c = golden.hist_shift_for(v, NB, M)
            if ctx.get(shift) != want_c:
                bad.append(("shift", v, ctx.get(shift), want_c))
            for cc in cs:
                ctx.set(c, cc)
                want = int(golden.hist_code(np.array([v]), NB, M, cc)[0])
                if ctx.get(code) != want:
                    bad.append(("code", v, cc, ctx.get(code), want))

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    assert not bad, bad[:10]


def run_histogram(p, batches, seed):
    """Stream each batch of distances, then dump; returns the dumped (bin, count, last) lists."""
    dut = Histogram(p)
    rng = random.Random(seed)
    dumps = []

    async def tb(ctx):
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        await ctx.tick().until(~dut.busy)
        for dists, c, desc in batches:
            ctx.set(dut.shift, c)
            k = 0
            while k < len(dists):
                if rng.random() < 0.3:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                    continue
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, int(dists[k]))
                assert ctx.get(dut.i.ready)
                await ctx.tick()
                k += 1
            ctx.set(dut.i.valid, 0)
            await ctx.tick().until(~dut.busy)
            ctx.set(dut.descending, desc)
            ctx.set(dut.dump, 1)
            await ctx.tick()
            ctx.set(dut.dump, 0)
            beats = []
            while True:
                ready = rng.random() < 0.6
                ctx.set(dut.o.ready, ready)
                valid, pl = ctx.get(dut.o.valid), ctx.get(dut.o.payload)
                await ctx.tick()
                if valid and ready:
                    beats.append((pl.bin, pl.count, pl.last))
                    if pl.last:
                        break
            ctx.set(dut.o.ready, 0)
            await ctx.tick().until(~dut.busy)
            dumps.append(beats)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return dumps


def test_histogram_unit():
    seed = 42
    print(f"seed={seed}")
    p = OrbisParams(N_max=256, D=16, B=4, P=1, L=4, NB=32, hist_mant=2, R=0)
    rng = np.random.default_rng(seed)
    batches = []
    for n, desc in ((60, 0), (1, 1), (0, 0), (120, 1), (40, 0)):
        d = rng.integers(0, p.dist_max + 1, size=n)
        if n > 10:
            d[:10] = d[0]            # a run of one bin: the read-modify-write hazard
        dmax = int(d.max()) if n else 0
        batches.append((d, golden.hist_shift_for(dmax, p.NB, p.hist_mant), desc))
    dumps = run_histogram(p, batches, seed)
    for (d, c, desc), beats in zip(batches, dumps):
        want = np.bincount(golden.hist_code(d, p.NB, p.hist_mant, c), minlength=p.NB)
        order = list(range(p.NB))[::-1] if desc else list(range(p.NB))
        assert [b for b, _, _ in beats] == order
        assert [cnt for _, cnt, _ in beats] == want[order].tolist()
        assert [last for _, _, last in beats] == [0] * (p.NB - 1) + [1]
