"""TokenMatcher in the Amaranth simulator: a call driver (shared with the tests) and the bench.

``run()`` measures one real-video call (``golden.video``; random tokens if the clip is not
installed) at ``ecp5-default`` widths with ``N = 8 x 8 x 8 = 512`` tokens and reports
``matcher.cycles_over_ideal``: all matcher cycles of the call over the ideal engine cycles

    ideal = sum over engine passes of N_src * N_dst_compared * D / (P * L)

where ``N_dst_compared`` is the number of dst the pass actually searches: all initial dst in
round 0, only the newly promoted dst in later rounds (the incremental scheme; the golden model's
full recomputation would search all of them). Also reported: the same ratio with the O(N + NB)
phases (load, init, datm passes, select, map) taken out, i.e. the engine passes alone over ideal,
and every phase's cycle count.
"""

from __future__ import annotations

import random
import time

import numpy as np
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

import golden

__all__ = ["Call", "simulate", "golden_for", "run"]


class Call:
    """One matcher call: guide ``g`` (``(N, D)`` int16) and its configuration."""

    def __init__(self, g, F, H, W, window=(2, 2, 2), *, r=None, tau=None, rounds=0, quota=0,
                 seed=1, shift=0):
        self.g = np.asarray(g, dtype=np.int64)
        self.F, self.H, self.W = F, H, W
        self.window = tuple(window)
        self.r, self.tau = r, tau
        self.rounds, self.quota, self.seed, self.shift = rounds, quota, seed, shift

    def cfg(self):
        sf, sh, sw = self.window
        return {"F": self.F, "H": self.H, "W": self.W, "sf": sf, "sh": sh, "sw": sw,
                "budget": int(self.tau is not None), "r": self.r or 0, "tau": self.tau or 0,
                "rounds": self.rounds, "quota": self.quota, "seed": self.seed,
                "shift": self.shift}

    def __repr__(self):
        return (f"Call(F={self.F}, H={self.H}, W={self.W}, window={self.window}, r={self.r}, "
                f"tau={self.tau}, rounds={self.rounds}, quota={self.quota}, seed={self.seed}, "
                f"shift={self.shift})")


def golden_for(p, call):
    """The golden model's result for ``call`` under parameters ``p``."""
    grid = golden.Grid(call.F, call.H, call.W, window=call.window)
    kw = {"r": call.r} if call.tau is None else {"tau": call.tau}
    return golden.match(call.g.astype(np.int16), grid, B=p.B, shift=call.shift, NB=p.NB,
                        hist_mant=p.hist_mant, R=call.rounds, quota=call.quota,
                        seed=call.seed, **kw)


def simulate(p, calls, *, seed=0, idle=0.0, backpressure=0.0, reset_at=None, engine=None,
             quantizer=None, max_cycles=10_000_000):
    """Run ``calls`` back to back through a TokenMatcher; return one dict per call.

    Each dict has ``map`` (list of ``(kind, target, pos)`` transfers), ``r``, ``n_dst``,
    ``max_abs``, ``error``, ``error_code`` and the cycle counters. ``idle`` and
    ``backpressure`` are probabilities of a guide idle cycle and a map not-ready cycle.
    ``reset_at = (k, cycles)`` asserts the sync reset ``cycles`` cycles into call ``k``; that
    call's dict is then ``None`` and the next call starts after the reset.
    """
    from hw.matcher import TokenMatcher

    kw = {}
    if engine is not None:
        kw["engine"] = engine
    if quantizer is not None:
        kw["quantizer"] = quantizer
    dut = TokenMatcher(p, **kw)
    top = Module()
    top.domains.sync = cd = ClockDomain()
    top.submodules.dut = dut
    rng = random.Random(seed)
    results = []
    C, L = p.chunks, p.L

    async def tb(ctx):
        for k, call in enumerate(calls):
            beats = call.g.reshape(call.g.shape[0] * C, L).tolist()
            ctx.set(dut.cfg, call.cfg())
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            bi = 0
            got = []
            cycles = 0
            reset = False
            while True:
                gv = bi < len(beats) and rng.random() >= idle
                ctx.set(dut.guide.valid, gv)
                if gv:
                    ctx.set(dut.guide.payload, {"data": beats[bi]})
                mr = rng.random() >= backpressure
                ctx.set(dut.map.ready, mr)
                g_ready = ctx.get(dut.guide.ready)
                m_valid = ctx.get(dut.map.valid)
                m_pl = ctx.get(dut.map.payload)
                busy = ctx.get(dut.busy)
                if not busy and cycles > 0:
                    break
                if reset_at is not None and reset_at[0] == k and cycles == reset_at[1]:
                    ctx.set(cd.rst, 1)
                    ctx.set(dut.guide.valid, 0)
                    await ctx.tick()
                    ctx.set(cd.rst, 0)
                    reset = True
                    break
                await ctx.tick()
                cycles += 1
                if cycles > max_cycles:
                    raise RuntimeError(f"call {k} did not finish in {max_cycles} cycles")
                if gv and g_ready:
                    bi += 1
                if m_valid and mr:
                    got.append((m_pl.kind, m_pl.target, m_pl.pos))
            ctx.set(dut.guide.valid, 0)
            ctx.set(dut.map.ready, 0)
            if reset:
                results.append(None)
                continue
            res = {"map": got, "guide_beats_taken": bi, "cycles_seen": cycles}
            for name in ("r", "n_dst", "max_abs", "error", "error_code", "done", "cyc_total",
                         "cyc_load", "cyc_init", "cyc_datm", "cyc_select", "cyc_map"):
                res[name] = ctx.get(getattr(dut, name))
            res["cyc_engine"] = [ctx.get(dut.cyc_engine[i]) for i in range(p.R + 1)]
            results.append(res)
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return results


def check(p, call, res):
    """Assert that one simulated call equals the golden model; return the golden result."""
    want = golden_for(p, call)
    assert not res["error"], (call, res["error_code"])
    got = np.array(res["map"], dtype=np.int64).reshape(-1, 3)
    N = call.F * call.H * call.W
    assert got.shape == (N, 3), (call, got.shape)
    assert (got[:, 0] == want.kind).all(), (call, "kind")
    assert (got[:, 1] == want.target).all(), (call, "target")
    assert (got[:, 2] == want.pos).all(), (call, "pos")
    assert res["r"] == want.r
    assert res["n_dst"] == len(want.dst)
    assert res["max_abs"] == want.max_abs
    return want


def ideal_cycles(p, want):
    """Ideal engine cycles of a call: N_src * N_dst_compared * D / (P * L) per engine pass."""
    total = 0.0
    prev_dst = 0
    for k, info in enumerate(want.rounds):
        compared = info["n_dst"] - prev_dst if k else info["n_dst"]
        if info["n_src"] and compared:
            total += info["n_src"] * compared * p.D / (p.P * p.L)
        prev_dst = info["n_dst"]
    return total


def bench_call(p):
    """The bench's call: 8 x 8 x 8 real-video tokens (random ones without the clip)."""
    F = H = W = 8
    try:
        from golden.video import video_tokens
        vt = video_tokens(F, H, W, p=16, D=p.D)
        g = np.asarray(vt.guide, dtype=np.int64)
        source = "video"
    except Exception as e:   # noqa: BLE001 - the clip is optional; say what happened
        print(f"   real video unavailable ({e}); using random tokens")
        g = np.random.default_rng(0).integers(-4000, 4000, size=(F * H * W, p.D))
        source = "random"
    shift = golden.shift_for(g.astype(np.int16), p.B)
    N = F * H * W
    call = Call(g, F, H, W, (2, 2, 2), r=N // 2, rounds=p.R, quota=N // 16, seed=0xACE1,
                shift=shift)
    return call, source


def run():
    from hw.params import preset

    p = preset("ecp5-default")
    call, source = bench_call(p)
    t0 = time.perf_counter()
    (res,) = simulate(p, [call])
    wall = time.perf_counter() - t0
    want = check(p, call, res)
    ideal = ideal_cycles(p, want)
    eng = sum(res["cyc_engine"])
    out = {
        "matcher.cycles_over_ideal": res["cyc_total"] / ideal,
        "matcher.engine_over_ideal": eng / ideal,
        "matcher.ideal_cycles": ideal,
        "matcher.cycles_total": res["cyc_total"],
        "matcher.cycles_load": res["cyc_load"],
        "matcher.cycles_init": res["cyc_init"],
        "matcher.cycles_datm": res["cyc_datm"],
        "matcher.cycles_select": res["cyc_select"],
        "matcher.cycles_map": res["cyc_map"],
        "matcher.tokens": call.F * call.H * call.W,
        "matcher.video": int(source == "video"),
        "matcher.sim_seconds": wall,
    }
    for k, c in enumerate(res["cyc_engine"]):
        out[f"matcher.cycles_engine_round{k}"] = c
    return out


if __name__ == "__main__":
    for key, val in run().items():
        print(f"{key:40s} {val}")
