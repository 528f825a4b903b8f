"""Merger (hw.merge.Merger) against golden.merge, in the Amaranth simulator.

Every call's output is the list of beats that crossed ``o.valid & o.ready``, regrouped into
tokens and compared with ``golden.merge`` on maps from ``golden.match`` (random grids, r = 0,
largest r, all-tie guides) and hand-made maps (one dst takes every other token, merged src
before and after their dst), with random idle on ``map`` and ``x`` and random backpressure on
``o``. Several calls run back to back in one simulation, so the per-call sequencing and (mean
mode) the zeroing of the sum memories between calls are checked too.

The harness here is also used by tests/test_unmerge.py.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import pytest
from amaranth.sim import Simulator

import golden as G
from hw.merge import Merger, Unmerger
from hw.params import OrbisParams, ParamError, preset

# ---------------------------------------------------------------------------------------------
# Harness


def seed_of(request_or_name) -> int:
    """Seed for one test: ``ORBIS_SEED`` if set, else derived from the test name (printed)."""
    name = request_or_name if isinstance(request_or_name, str) else request_or_name.node.name
    base = int(os.environ.get("ORBIS_SEED", "1234"))
    seed = (base * 1000003 + sum(ord(c) * (i + 1) for i, c in enumerate(name))) % (1 << 31)
    print(f"seed {seed} (ORBIS_SEED={base}) for {name}")
    return seed


def map_entries(res):
    return [{"kind": int(k), "target": int(t), "pos": int(p)}
            for k, t, p in zip(res.kind, res.target, res.pos)]


def beats_of(x, Lx):
    """Token rows ``(n, Dx)`` to a list of beats, each ``Lx`` elements."""
    x = np.asarray(x)
    return [{"data": [int(v) for v in row[b * Lx:(b + 1) * Lx]]}
            for row in x for b in range(x.shape[1] // Lx)]


def tokens_of(beats, Dx):
    """Recorded beats (lists of ``Lx`` ints) to token rows ``(n, Dx)``."""
    flat = np.array([v for b in beats for v in b], dtype=np.int64)
    if len(flat) % Dx:
        raise AssertionError(f"{len(beats)} beats do not make whole tokens of Dx = {Dx}")
    return flat.reshape(-1, Dx)


async def send(ctx, port, items, idle, rng):
    """Drive ``items`` on a stream, with a random idle gap before each with prob. ``idle``."""
    for it in items:
        while rng.random() < idle:
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.valid, 1)
        ctx.set(port.payload, it)
        await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)


async def recv(ctx, port, out, bp, rng):
    """Record every transfer on ``port``; check that valid and payload hold until taken."""
    held = None
    while True:
        ctx.set(port.ready, rng.random() >= bp)
        _, _, v, r, pl = await ctx.tick().sample(port.valid, port.ready, port.payload)
        data = list(pl.data)
        if held is not None:
            assert v, "valid fell before the beat was taken"
            assert data == held, "payload changed while valid and not ready"
        held = data if (v and not r) else None
        if v and r:
            out.append(data)


def run_block(dut, calls, *, streams, idle=0.0, bp=0.0, seed=0, max_cycles=200_000,
              sizes=None):
    """Run ``calls`` through ``dut`` and return ``(outputs, info)``.

    ``calls`` is a list of dicts with the stream items per input stream name (``streams``)
    and the size inputs (``sizes`` maps a dut attribute to the dict key). All input items of
    all calls are driven back to back on their streams; the block must take only its call's
    share. ``outputs`` is one list of recorded ``o`` beats per call, split at ``done``.
    """
    rng = random.Random(seed)
    sizes = sizes or {}
    outs = []
    info = {"done": 0, "cycles": 0, "first_out": None, "last_out": None, "first_in": None,
            "last_in": None}
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    for name in streams:
        items = [it for c in calls for it in c[name]]
        port = getattr(dut, name)

        async def producer(ctx, port=port, items=items, prng=random.Random(rng.random())):
            await send(ctx, port, items, idle, prng)
        sim.add_testbench(producer, background=True)

    rec = []

    async def consumer(ctx, prng=random.Random(rng.random())):
        await recv(ctx, dut.o, rec, bp, prng)
    sim.add_testbench(consumer, background=True)

    async def control(ctx):
        cycle = 0
        for c in calls:
            while ctx.get(dut.busy):
                await ctx.tick()
                cycle += 1
            for attr, key in sizes.items():
                ctx.set(getattr(dut, attr), c[key])
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycle += 1
            n_before = len(rec)
            while True:
                _, _, done = await ctx.tick().sample(dut.done)
                cycle += 1
                if done:
                    break
                assert cycle < max_cycles, f"call did not finish in {max_cycles} cycles"
            # done was high in the first idle cycle; the recorder has seen every transfer.
            assert not ctx.get(dut.busy)
            info["done"] += 1
            info.setdefault("n_kept", []).append(ctx.get(dut.n_kept))
            outs.append((n_before, None))
        # A few more cycles: nothing may come out after the last done.
        for _ in range(20):
            await ctx.tick()
        info["cycles"] = cycle
    sim.add_testbench(control)
    sim.run()
    bounds = [b for b, _ in outs] + [None]
    return [rec[bounds[i]:bounds[i + 1]] for i in range(len(calls))], info


def run_merger(p, calls, **kw):
    """``calls``: list of ``(res, x)``; returns the reduced token arrays per call."""
    dut = Merger(p)
    cs = [{"map": map_entries(res), "x": beats_of(x, p.Lx), "n": res.N} for res, x in calls]
    outs, info = run_block(dut, cs, streams=("map", "x"), sizes={"n_tokens": "n"}, **kw)
    return [tokens_of(o, p.Dx) if o else np.zeros((0, p.Dx), np.int64) for o in outs], info


# ---------------------------------------------------------------------------------------------
# Maps


def random_match(rng, grid, D=8, r="half", ties=False, R=0, quota=0):
    """A golden matching of random guide features on ``grid``."""
    if ties:
        # Few distinct guide vectors: many equal distances, ties everywhere.
        base = rng.integers(-3, 4, (3, D))
        g = base[rng.integers(0, 3, grid.N)].astype(np.int16) * 1000
    else:
        g = rng.integers(-30000, 30000, (grid.N, D)).astype(np.int16)
    n_src = grid.N - G.window_count(grid)
    rr = {"zero": 0, "max": n_src, "half": n_src // 2}.get(r, r)
    if rr == "rand":
        rr = int(rng.integers(0, n_src + 1))
    return G.match(g, grid, r=rr, B=8, NB=64, hist_mant=2, R=R, quota=quota,
                   seed=int(rng.integers(1, 65536)))


def hand_match(kind, target):
    """A MatchResult from a hand-made ``kind`` / ``target`` (pos derived as golden does)."""
    kind = np.asarray(kind, dtype=np.uint8)
    target = np.asarray(target, dtype=np.int64)
    kept = kind != G.KIND_MERGED
    pos = (np.cumsum(kept) - 1)[target]
    return G.MatchResult(kind=kind, target=target, pos=pos, nearest=target.copy(),
                         dist=np.zeros(len(kind), np.int64), r=int((~kept).sum()))


def all_into(N, dst):
    """Every token merges into token ``dst``: count N, merged src before and after it."""
    kind = np.full(N, G.KIND_MERGED)
    kind[dst] = G.KIND_DST
    return hand_match(kind, np.full(N, dst))


def random_x(rng, N, p, mode="rand"):
    lo, hi = -(1 << (p.Wx - 1)), (1 << (p.Wx - 1)) - 1
    if mode == "min":
        return np.full((N, p.Dx), lo, np.int64)
    if mode == "max":
        return np.full((N, p.Dx), hi, np.int64)
    if mode == "ext":
        return rng.choice([lo, hi, lo + 1, hi - 1, 0, -1], (N, p.Dx)).astype(np.int64)
    return rng.integers(lo, hi + 1, (N, p.Dx)).astype(np.int64)


def check(got, exp, what):
    exp = np.asarray(exp, dtype=np.int64)
    assert got.shape == exp.shape, f"{what}: got {got.shape[0]} tokens, expected {exp.shape[0]}"
    if not np.array_equal(got, exp):
        bad = np.argwhere(got != exp)[0]
        raise AssertionError(f"{what}: first mismatch at token {bad[0]} element {bad[1]}: "
                             f"got {got[tuple(bad)]}, expected {exp[tuple(bad)]}")


# ---------------------------------------------------------------------------------------------
# Parameter sets: Lx = Dx and Lx < Dx, Dx/Lx not a power of two, Wx 8 and 16, N_max not a
# power of two.

PARAMS = {
    "w16_xb2": OrbisParams(N_max=64, D=8, L=8, Dx=8, Lx=4, Wx=16),
    "w8_xb1": OrbisParams(N_max=40, D=8, L=8, Dx=6, Lx=6, Wx=8),
    "w8_xb3": OrbisParams(N_max=30, D=8, L=8, Dx=12, Lx=4, Wx=8),
}
GRIDS = {"w16_xb2": (3, 5, 4), "w8_xb1": (2, 5, 3), "w8_xb3": (3, 3, 3)}
GRID_MODES = [(0.0, 0.0), (0.3, 0.0), (0.0, 0.4), (0.3, 0.4)]


def calls_for(rng, p, grid_shape, mode):
    """Three calls of different sizes and reductions (r = largest, random, 0) plus ties."""
    F, H, W = grid_shape
    grids = [G.Grid(F, H, W), G.Grid(F, H, max(1, W - 1)), G.Grid(F, H, W)]
    out = []
    for grid, r, ties in zip(grids, ["max", "rand", "zero"], [False, True, False]):
        res = random_match(rng, grid, r=r, ties=ties)
        out.append((res, random_x(rng, grid.N, p, "ext" if ties else "rand")))
    # Largest count: every token into the middle one (mean sum of N values).
    N = grid_shape[0] * grid_shape[1] * grid_shape[2]
    out.append((all_into(N, N // 2), random_x(rng, N, p, "ext")))
    return out


@pytest.mark.parametrize("mode", ["replace", "mean"])
@pytest.mark.parametrize("idle,bp", GRID_MODES, ids=["plain", "idle", "bp", "idle_bp"])
@pytest.mark.parametrize("pname", list(PARAMS))
def test_merger_golden(request, pname, idle, bp, mode):
    p = PARAMS[pname].with_(merge_mode=mode)
    seed = seed_of(request)
    rng = np.random.default_rng(seed)
    calls = calls_for(rng, p, GRIDS[pname], mode)
    got, info = run_merger(p, calls, idle=idle, bp=bp, seed=seed)
    assert info["done"] == len(calls)
    assert info["n_kept"] == [res.n_kept for res, _ in calls]
    for i, ((res, x), g) in enumerate(zip(calls, got)):
        check(g, G.merge(x, res, mode), f"call {i} (N={res.N}, r={res.r}, {mode})")


@pytest.mark.parametrize("wx", [8, 16])
def test_mean_extremes(request, wx):
    """Most negative / positive sums at the largest count, and .5 rounding of both signs."""
    p = OrbisParams(N_max=24, D=8, L=8, Dx=4, Lx=2, Wx=wx, merge_mode="mean")
    seed = seed_of(request)
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (wx - 1)), (1 << (wx - 1)) - 1
    N = p.N_max
    calls = [(all_into(N, 0), random_x(rng, N, p, "min")),
             (all_into(N, N - 1), random_x(rng, N, p, "max"))]
    # Pairs (dst, src) at .5: a and a+1 -> a+1 (half up), for a negative and positive, and
    # triples with remainders 1/3, 2/3.
    kind, target, rows = [], [], []
    vals = [(-1, -2), (-2, -1), (0, 1), (1, 0), (lo, lo + 1), (hi - 1, hi), (-3, 2),
            (lo, hi), (hi, lo)]
    for a, b in vals:
        d = len(kind)
        kind += [G.KIND_DST, G.KIND_MERGED]
        target += [d, d]
        rows += [[a, -a - 1, b, a], [b, b, a, -b - 1]]
    for a, b, c in [(-1, -1, 0), (-1, 0, 0), (lo, lo, lo + 1), (hi, hi, hi - 1)]:
        d = len(kind) + 2          # merged src before their dst
        kind += [G.KIND_MERGED, G.KIND_MERGED, G.KIND_DST]
        target += [d, d, d]
        rows += [[a, b, c, a], [b, c, a, b], [c, a, b, c]]
    x3 = np.array(rows, dtype=np.int64)
    calls.append((hand_match(kind, target), x3))
    got, _ = run_merger(p, calls, seed=seed, bp=0.3)
    for i, ((res, x), g) in enumerate(zip(calls, got)):
        check(g, G.merge(x, res, "mean"), f"call {i}")
    # Independent of golden: the mean of a .5 case rounds towards +inf.
    assert got[2][0][0] == -1 and got[2][1][0] == -1 and got[2][2][0] == 1


def test_zero_tokens_and_n_kept():
    """A call of 0 tokens finishes; n_kept reports the kept count of the call."""
    p = OrbisParams(N_max=16, D=8, L=8, Dx=4, Lx=2, Wx=8, merge_mode="mean")
    rng = np.random.default_rng(5)
    grid = G.Grid(2, 2, 3)
    res = random_match(rng, grid, r="max")
    empty = hand_match(np.zeros(0, np.uint8), np.zeros(0, np.int64))
    calls = [(empty, np.zeros((0, p.Dx), np.int64)), (res, random_x(rng, grid.N, p))]
    got, info = run_merger(p, calls, seed=5)
    assert info["done"] == 2
    assert info["n_kept"] == [0, res.n_kept]
    assert got[0].shape[0] == 0
    check(got[1], G.merge(calls[1][1], res, "mean"), "call 1")


@pytest.mark.parametrize("mode", ["replace", "mean"])
def test_preset_shapes(request, mode):
    """ice40-small and ecp5-default widths (Dx = 8 in 2 beats; Dx = 64 in 8 beats)."""
    seed = seed_of(request)
    rng = np.random.default_rng(seed)
    for name, shape in (("ice40-small", (2, 4, 5)), ("ecp5-default", (2, 3, 3))):
        p = preset(name, merge_mode=mode)
        grid = G.Grid(*shape)
        calls = [(random_match(rng, grid, r="rand"), random_x(rng, grid.N, p, "ext"))]
        got, _ = run_merger(p, calls, idle=0.2, bp=0.2, seed=seed)
        check(got[0], G.merge(calls[0][1], calls[0][0], mode), f"{name} {mode}")


@pytest.mark.parametrize("mode", ["replace", "mean"])
def test_line_rate(mode):
    """No idle, no backpressure: x taken one beat per cycle; the mean output pass likewise."""
    from tools.bench_merge import measure_merge
    p = OrbisParams(N_max=64, D=8, L=8, Dx=8, Lx=4, Wx=16, merge_mode=mode)
    fig = measure_merge(p, G.Grid(3, 4, 5), seed=3)
    assert fig["in_beats_per_cycle"] == 1.0
    if mode == "mean":
        assert fig["out_beats_per_cycle"] == 1.0
    else:
        # The filter's output rate is the kept share of the input rate.
        assert fig["out_beats_per_cycle"] >= 0.99 * fig["kept_fraction"]


def test_bad_params():
    with pytest.raises(ParamError, match="params"):
        Merger("ecp5-default")
    with pytest.raises(ParamError, match="params"):
        Unmerger(None)


@pytest.mark.parametrize("mode", ["replace", "mean"])
def test_to_verilog(mode):
    """Both blocks convert to Verilog (through the registry of hw.gen)."""
    from hw import gen
    p = preset("ice40-small", merge_mode=mode)
    t0 = time.perf_counter()
    for name in ("merger", "unmerger"):
        text = gen.to_verilog(gen.build_block(name, p), name=f"orbis_{name}")
        assert f"module orbis_{name}" in text
        assert "o__payload" in text and "map__valid" in text
    print(f"verilog in {time.perf_counter() - t0:.1f} s")


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(20))
@pytest.mark.parametrize("mode", ["replace", "mean"])
def test_merger_random_sweep(request, trial, mode):
    """Random parameter sets and grids (slow)."""
    seed = seed_of(request)
    rng = np.random.default_rng(seed)
    Lx = int(rng.choice([1, 2, 3, 4]))
    Dx = Lx * int(rng.integers(1, 4))
    Wx = int(rng.choice([2, 5, 8, 12, 16, 20]))
    shape = tuple(int(v) for v in rng.integers(1, 5, 3))
    N = shape[0] * shape[1] * shape[2]
    p = OrbisParams(N_max=max(2, N + int(rng.integers(0, 5))), D=8, L=8, Dx=Dx, Lx=Lx, Wx=Wx,
                    merge_mode=mode)
    grid = G.Grid(*shape, window=tuple(min(2, s) for s in shape))
    calls = [(random_match(rng, grid, r=r), random_x(rng, N, p, "ext" if r == "max" else "rand"))
             for r in ("rand", "max", "zero")]
    calls.append((all_into(N, int(rng.integers(0, N))), random_x(rng, N, p, "ext")))
    got, _ = run_merger(p, calls, idle=float(rng.uniform(0, 0.5)), bp=float(rng.uniform(0, 0.5)),
                        seed=seed)
    for i, ((res, x), g) in enumerate(zip(calls, got)):
        check(g, G.merge(x, res, mode), f"call {i} {p}")


def test_reset_mid_call(request):
    """A reset in the middle of a mean call: the next call is exact (no stale sums).

    The reset comes after half of the first call's beats were accumulated, so the sum and
    count memories hold non-zero data that only the clear pass after reset removes.
    """
    from amaranth.hdl import ClockDomain, Module

    p = OrbisParams(N_max=24, D=8, L=8, Dx=4, Lx=2, Wx=8, merge_mode="mean")
    seed = seed_of(request)
    rng = np.random.default_rng(seed)
    grid = G.Grid(2, 3, 4)
    res1, res2 = random_match(rng, grid, r="max"), random_match(rng, grid, r="rand")
    x1, x2 = random_x(rng, grid.N, p, "max"), random_x(rng, grid.N, p)
    m = Module()
    m.domains.sync = cd = ClockDomain()
    m.submodules.dut = dut = Merger(p)
    out = []

    async def drive(ctx, entries, beats, stop_after=None):
        ctx.set(dut.n_tokens, len(entries))
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.o.ready, 1)
        i = j = 0
        while True:
            ctx.set(dut.map.valid, i < len(entries))
            if i < len(entries):
                ctx.set(dut.map.payload, entries[i])
            ctx.set(dut.x.valid, j < len(beats))
            if j < len(beats):
                ctx.set(dut.x.payload, beats[j])
            _, _, mr, xr, ov, pl, done = await ctx.tick().sample(
                dut.map.ready, dut.x.ready, dut.o.valid, dut.o.payload, dut.done)
            i += bool(mr and i < len(entries))
            j += bool(xr and j < len(beats))
            if ov:
                out.append(list(pl.data))
            if done or (stop_after is not None and j >= stop_after):
                break
        ctx.set(dut.map.valid, 0)
        ctx.set(dut.x.valid, 0)

    async def tb(ctx):
        while ctx.get(dut.busy):
            await ctx.tick()
        b1 = beats_of(x1, p.Lx)
        await drive(ctx, map_entries(res1), b1, stop_after=len(b1) // 2)
        ctx.set(cd.rst, 1)
        await ctx.tick()
        ctx.set(cd.rst, 0)
        assert ctx.get(dut.busy), "the clear pass runs after reset"
        while ctx.get(dut.busy):
            await ctx.tick()
        assert not out
        await drive(ctx, map_entries(res2), beats_of(x2, p.Lx))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    check(tokens_of(out, p.Dx), G.merge(x2, res2, "mean"), "call after reset")
