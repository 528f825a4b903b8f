"""Bench: similarity-engine lane utilisation measured in RTL simulation (Amaranth simulator).

Utilisation is DESIGN.md section 5's figure: ideal cycles ``N_src * N_dst * D / (P * L)`` over
the cycles from the first src accepted to the last result transferred, with no input idle and
no output backpressure. Every result of the measured run is checked against the golden model,
so a wrong engine cannot report a figure.
"""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator

from golden import core as golden
from hw.params import preset
from hw.similarity import QuantSimilarity

__all__ = ["measure", "run"]


def measure(p, n_src: int, n_dst: int, seed: int = 1) -> dict:
    """Run one search of ``n_src`` src against ``n_dst`` dst; return cycles and utilisation.

    Raises
    ------
    AssertionError
        A result differs from the golden model.
    """
    N = n_src + n_dst
    if N > p.N_max:
        raise ValueError(f"n_src + n_dst must be <= N_max ({p.N_max}), not {N}")
    rs = np.random.default_rng(seed)
    g = rs.integers(-32768, 32768, size=(N, p.D))
    shift = golden.shift_for(g, p.B)
    perm = rs.permutation(N)
    dst, src = [int(t) for t in perm[:n_dst]], [int(t) for t in perm[n_dst:]]
    dut = QuantSimilarity(p)
    got = []
    st = {"cycle": 0, "first": None, "last": None, "busy0": 0, "busy1": 0}

    async def put(ctx, s, payload):
        ctx.set(s.payload, payload)
        ctx.set(s.valid, 1)
        await ctx.tick().until(s.ready)
        ctx.set(s.valid, 0)

    async def driver(ctx):
        ctx.set(dut.shift, shift)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for n in range(N):
            for c in range(p.chunks):
                await put(ctx, dut.i, {"data": [int(v) for v in g[n, c * p.L:(c + 1) * p.L]]})
        for t in dst:
            await put(ctx, dut.dst_load, t)
        st["busy0"] = ctx.get(dut.busy_cycles)
        for t in src:
            ctx.set(dut.src.payload, t)
            ctx.set(dut.src.valid, 1)
            await ctx.tick().until(dut.src.ready)
            if st["first"] is None:
                st["first"] = st["cycle"]
        ctx.set(dut.src.valid, 0)
        await ctx.tick().until(dut.idle)
        st["busy1"] = ctx.get(dut.busy_cycles)

    async def monitor(ctx):
        ctx.set(dut.o.ready, 1)
        while True:
            _, _, valid, pl = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got.append((pl.src, pl.dst, pl.dist))
                st["last"] = st["cycle"]
            st["cycle"] += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(driver)
    sim.add_testbench(monitor, background=True)
    sim.run()

    q, _ = golden.quantize(g, shift, p.B)
    cand = np.array(sorted(dst))
    arg, dist = golden.nearest_dst(q, np.array(src), cand)
    exp = [(s, int(cand[a]), int(d)) for s, a, d in zip(src, arg, dist)]
    assert got == exp, "similarity engine disagrees with the golden model"
    cycles = st["last"] - st["first"] + 1
    ideal = n_src * n_dst * p.D / (p.P * p.L)
    return {"cycles": cycles, "ideal": ideal, "utilization": ideal / cycles,
            "busy_cycles": st["busy1"] - st["busy0"], "latency": dut.engine.latency,
            "stages": dut.engine.stages}


def run() -> dict:
    out = {}
    p = preset("ecp5-default")
    r = measure(p, 64, 64)
    out["similarity.lane_utilization"] = r["utilization"]
    out["similarity.cycles_64x64"] = r["cycles"]
    out["similarity.latency"] = r["latency"]
    out["similarity.stages"] = r["stages"]
    r = measure(preset("ice40-small", N_max=128), 64, 64)
    out["similarity.lane_utilization_ice40"] = r["utilization"]
    return out


if __name__ == "__main__":
    for k, v in run().items():
        print(f"{k}: {v}")
