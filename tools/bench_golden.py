"""Golden-model figures: CogVideoX-2b call time and distance throughput against matmul."""

from __future__ import annotations

import time

import numpy as np

import golden as G

COGVIDEOX = (13, 30, 45)   # latent frames x rows x columns of CogVideoX-2b


def _best(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run() -> dict:
    rng = np.random.default_rng(2026)
    grid = G.Grid(*COGVIDEOX)
    D = 64
    g = np.clip(rng.normal(0, 4000, (grid.N, D)), -32768, 32767).astype(np.int16)
    x = rng.integers(-2000, 2000, (grid.N, D)).astype(np.int16)
    r = grid.N // 2

    def call():
        s = G.shift_for(g, 8)
        res = G.match(g, grid, r=r, B=8, shift=s, R=0)
        y = G.merge(x, res, "mean")
        G.unmerge(y, res)

    t_call = _best(call, repeat=2)

    # Distance step alone (nearest dst of every src over the initial dst list), against a plain
    # float32 matmul of the same (n_src x D) @ (D x n_dst) size: the matmul is the ceiling.
    q, _ = G.quantize(g, G.shift_for(g, 8), 8)
    dst = G.initial_dst(grid, 1)
    mask = np.ones(grid.N, dtype=bool)
    mask[dst] = False
    src = np.flatnonzero(mask)
    t_dist = _best(lambda: G.nearest_dst(q, src, dst))
    a = q[src].astype(np.float32)
    b = q[dst].astype(np.float32).T.copy()
    t_mm = _best(lambda: a @ b)
    print(f"   cogvideox call {t_call:.2f} s; distance {t_dist * 1e3:.0f} ms vs matmul "
          f"{t_mm * 1e3:.0f} ms ({len(src)} x {len(dst)} x {D})")
    return {
        "golden.cogvideox_seconds": round(t_call, 3),
        "golden.distance_matmul_fraction": round(t_mm / t_dist, 3),
    }
