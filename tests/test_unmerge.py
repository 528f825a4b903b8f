"""Unmerger (hw.merge.Unmerger) against golden.unmerge, in the Amaranth simulator.

Transfers on ``o`` are recorded and compared per call with ``golden.unmerge`` on maps from
``golden.match`` and hand-made maps (merged tokens before their dst, so the output must wait
for a later ``y``), random idle on ``map`` and ``y``, random backpressure on ``o``, several
calls back to back. The harness is shared with tests/test_merge.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_merge import (GRID_MODES, GRIDS, PARAMS, all_into, beats_of, check, hand_match,
                        map_entries, random_match, random_x, run_block, seed_of, tokens_of)

import golden as G
from hw.merge import Unmerger
from hw.params import OrbisParams, preset


def run_unmerger(p, calls, **kw):
    """``calls``: list of ``(res, y)``; returns the restored token arrays per call."""
    dut = Unmerger(p)
    cs = [{"map": map_entries(res), "y": beats_of(y, p.Lx), "n": res.N, "k": res.n_kept}
          for res, y in calls]
    outs, info = run_block(dut, cs, streams=("map", "y"),
                           sizes={"n_tokens": "n", "n_kept": "k"}, **kw)
    return [tokens_of(o, p.Dx) if o else np.zeros((0, p.Dx), np.int64) for o in outs], info


def unmerge_calls(rng, p, shape):
    F, H, W = shape
    grids = [G.Grid(F, H, W), G.Grid(F, H, max(1, W - 1)), G.Grid(F, H, W)]
    calls = []
    for grid, r, ties in zip(grids, ["max", "rand", "zero"], [False, True, False]):
        res = random_match(rng, grid, r=r, ties=ties)
        calls.append((res, random_x(rng, res.n_kept, p, "ext")))
    N = F * H * W
    for dst in (N - 1, 0):          # every token waits for the last y / only one y
        res = all_into(N, dst)
        calls.append((res, random_x(rng, res.n_kept, p, "ext")))
    return calls


@pytest.mark.parametrize("idle,bp", GRID_MODES, ids=["plain", "idle", "bp", "idle_bp"])
@pytest.mark.parametrize("pname", list(PARAMS))
def test_unmerger_golden(request, pname, idle, bp):
    p = PARAMS[pname]
    seed = seed_of(request)
    rng = np.random.default_rng(seed)
    calls = unmerge_calls(rng, p, GRIDS[pname])
    got, info = run_unmerger(p, calls, idle=idle, bp=bp, seed=seed)
    assert info["done"] == len(calls)
    for i, ((res, y), g) in enumerate(zip(calls, got)):
        check(g, G.unmerge(y, res), f"call {i} (N={res.N}, r={res.r})")
        # Independent of golden: every restored token equals y at its map position.
        assert all(np.array_equal(g[n], y[res.pos[n]]) for n in range(res.N))


def test_merged_before_dst():
    """Hand-made: merged src precede their dst, alternating with kept tokens."""
    p = OrbisParams(N_max=16, D=8, L=8, Dx=4, Lx=2, Wx=8)
    kind = [2, 1, 2, 0, 2, 0, 1, 2]
    target = [3, 1, 5, 3, 3, 5, 6, 1]
    kind[1] = G.KIND_DST
    res = hand_match(kind, target)
    rng = np.random.default_rng(7)
    y = random_x(rng, res.n_kept, p)
    got, _ = run_unmerger(p, [(res, y), (res, y[::-1].copy())], idle=0.3, bp=0.3, seed=7)
    check(got[0], G.unmerge(y, res), "call 0")
    check(got[1], G.unmerge(y[::-1], res), "call 1")


def test_preset_shapes(request):
    seed = seed_of(request)
    rng = np.random.default_rng(seed)
    for name, shape in (("ice40-small", (2, 4, 5)), ("ecp5-default", (2, 3, 3))):
        p = preset(name)
        grid = G.Grid(*shape)
        res = random_match(rng, grid, r="rand")
        y = random_x(rng, res.n_kept, p, "ext")
        got, _ = run_unmerger(p, [(res, y)], idle=0.2, bp=0.2, seed=seed)
        check(got[0], G.unmerge(y, res), name)


def test_line_rate():
    """No idle, no backpressure, y already in: one output beat per cycle, first to last.

    Streaming y and map together, the output may wait for y but never longer than y takes:
    the call ends within N*Dx/Lx cycles (plus the latency) of the last y beat.
    """
    from tools.bench_merge import measure_unmerge
    p = OrbisParams(N_max=64, D=8, L=8, Dx=8, Lx=4, Wx=16)
    grid = G.Grid(3, 4, 5)
    fig = measure_unmerge(p, grid, seed=3, preload=True)
    assert fig["out_beats_per_cycle"] == 1.0
    fig = measure_unmerge(p, grid, seed=3)
    xb = p.Dx // p.Lx
    assert fig["cycles"] <= grid.N * xb * 2 + fig["latency"] + 2


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(20))
def test_unmerger_random_sweep(request, trial):
    seed = seed_of(request)
    rng = np.random.default_rng(seed)
    Lx = int(rng.choice([1, 2, 3, 4]))
    Dx = Lx * int(rng.integers(1, 4))
    Wx = int(rng.choice([2, 5, 8, 16, 32]))
    shape = tuple(int(v) for v in rng.integers(1, 5, 3))
    N = shape[0] * shape[1] * shape[2]
    p = OrbisParams(N_max=max(2, N + int(rng.integers(0, 5))), D=8, L=8, Dx=Dx, Lx=Lx, Wx=Wx)
    grid = G.Grid(*shape, window=tuple(min(2, s) for s in shape))
    calls = []
    for r in ("rand", "max", "zero"):
        res = random_match(rng, grid, r=r)
        calls.append((res, random_x(rng, res.n_kept, p, "ext")))
    got, _ = run_unmerger(p, calls, idle=float(rng.uniform(0, 0.5)),
                          bp=float(rng.uniform(0, 0.5)), seed=seed)
    for i, ((res, y), g) in enumerate(zip(calls, got)):
        check(g, G.unmerge(y, res), f"call {i} {p}")
