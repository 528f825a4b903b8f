"""TokenReductionUnit's generated Verilog under cocotb (sim/tb_top.py): whole calls (match,
reduce, attention stand-in, restore) equal to the golden model for ecp5-default and
ice40-small, with random idle and backpressure on every stream and token conservation."""

import numpy as np
import pytest
from amaranth.hdl import Const

import golden as G
from hw.matcher import matcher_config
from hw.params import preset
from hw.top import TokenReductionUnit
from sim.tb_top import pack

pytestmark = pytest.mark.cocotb


def make_call(p, grid, rng, r_frac, rounds, seed):
    g = rng.integers(-9000, 9000, (grid.N, p.D)).astype(np.int16)
    g[::5] = g[1]                                    # exact ties
    x = rng.integers(-(1 << (p.Wx - 1)), 1 << (p.Wx - 1), (grid.N, p.Dx))
    shift = G.shift_for(g, p.B)
    r = int((grid.N - G.window_count(grid)) * r_frac)
    quota = max(1, grid.N // 20)
    res = G.match(g, grid, r=r, R=rounds, quota=quota, seed=seed, shift=shift,
                  **p.golden_kwargs())
    reduced = G.merge(x, res, p.merge_mode)
    restored = G.unmerge(-reduced - 1, res)
    cfg = {"F": grid.F, "H": grid.H, "W": grid.W, "sf": grid.window[0],
           "sh": grid.window[1], "sw": grid.window[2], "budget": 0, "r": r, "tau": 0,
           "rounds": rounds, "quota": quota, "seed": seed, "shift": shift}
    beats = lambda a, n, w: [pack(row, w) for row in np.asarray(a).reshape(-1, n)]  # noqa: E731
    return {
        "cfg": Const.cast(matcher_config(p).const(cfg)).value,
        "guide": beats(g, p.L, 16),
        "x": beats(x, p.Lx, p.Wx),
        "reduced": np.asarray(reduced).reshape(-1, p.Lx).tolist(),
        "restored": np.asarray(restored).reshape(-1, p.Lx).tolist(),
        "r": int(res.r),
    }


@pytest.mark.parametrize("name,grid", [
    ("ecp5-default", G.Grid(2, 4, 6, (2, 2, 2))),
    ("ice40-small", G.Grid(3, 4, 5, (2, 2, 2))),
])
def test_cocotb_top(name, grid):
    from sim.runner import run_cocotb

    p = preset(name)
    seed = 77
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    calls = [make_call(p, grid, rng, 0.5, min(2, p.R), 0x1234),
             make_call(p, grid, rng, 1.0, 0, 0xBEEF)]
    params = {"seed": seed, "idle": 0.25, "backpressure": 0.3, "Wx": p.Wx, "Lx": p.Lx,
              "max_cycles": 200_000, "calls": calls}
    run_cocotb(TokenReductionUnit(p), name=f"orbis_top_{name.replace('-', '_')}",
               test_module="sim.tb_top", tb_params=params)
