"""Baselines (golden.baselines) against naive Python-loop implementations written here."""

import math

import numpy as np
import pytest

import golden as G
from golden import baselines as BL

SEED = 20260
print(f"test_baselines seed {SEED}")


# ---------------------------------------------------------------------------------------------
# Naive references: plain loops over tokens, no vectorisation

def naive_cos(a, b):
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b)) / (max(na, 1e-12) * max(nb, 1e-12))


def naive_sq(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b))


def naive_match(x, N, dst, r, metric):
    """Every non-dst is src; best dst by loop (first best wins); r best by sorted tuples."""
    dst = sorted(set(int(d) for d in dst))
    src = [n for n in range(N) if n not in set(dst)]
    best = {}
    for s in src:
        bd, bj = None, None
        for j in dst:
            d = 1.0 - naive_cos(x[s], x[j]) if metric == "cos" else naive_sq(x[s], x[j])
            if bd is None or d < bd:
                bd, bj = d, j
        best[s] = (bd, bj)
    order = sorted(src, key=lambda s: (best[s][0], s))
    merged = set(order[:r])
    target = [best[n][1] if n in merged else n for n in range(N)]
    return target, merged, dst


def naive_tomesd_dst(grid, rng):
    out = []
    for f in range(grid.F):
        for h0 in range(0, grid.H, 2):
            for w0 in range(0, grid.W, 2):
                toks = [(f * grid.H + h) * grid.W + w
                        for h in range(h0, min(h0 + 2, grid.H))
                        for w in range(w0, min(w0 + 2, grid.W))]
                out.append(toks[int(rng.integers(0, len(toks)))])
    return sorted(out)


def naive_asymrnr_dst(grid, rng, stride=(2, 2, 2)):
    pads = [int(rng.integers(0, s)) if d % s else 0 for d, s in zip(grid.shape, stride)]
    chunks = {}
    for f in range(grid.F):
        for h in range(grid.H):
            for w in range(grid.W):
                key = tuple((c + p) // s for c, p, s in zip((f, h, w), pads, stride))
                chunks.setdefault(key, []).append((f * grid.H + h) * grid.W + w)
    out = []
    for key in sorted(chunks):
        toks = chunks[key]        # already in raster order (f, h, w)
        out.append(toks[int(rng.integers(0, len(toks)))])
    return sorted(out), pads


def check_result(res, N, target, merged, dst):
    assert res.r == len(merged)
    assert [int(t) for t in res.target] == target
    kind = [G.KIND_MERGED if n in merged else G.KIND_DST if n in set(dst) else G.KIND_KEPT
            for n in range(N)]
    assert [int(k) for k in res.kind] == kind
    kept = [n for n in range(N) if n not in merged]
    pos = [kept.index(t) for t in target]
    assert [int(p) for p in res.pos] == pos


GRIDS = [G.Grid(2, 3, 4), G.Grid(3, 5, 3), G.Grid(1, 4, 4, (1, 2, 2)), G.Grid(3, 2, 5, (2, 2, 2))]


# ---------------------------------------------------------------------------------------------
# Against the naive references

@pytest.mark.parametrize("gi", range(len(GRIDS)))
def test_tome_vs_naive(gi):
    grid = GRIDS[gi]
    rng = np.random.default_rng(SEED + gi)
    x = rng.normal(size=(grid.N, 5))
    n_src = (grid.N + 1) // 2
    for r in (0, 1, n_src // 2, n_src):
        res = BL.tome(x, grid, r)
        target, merged, dst = naive_match(x.tolist(), grid.N, range(1, grid.N, 2), r, "cos")
        # ToMe's split: even indices src, odd dst.
        assert dst == list(range(1, grid.N, 2))
        check_result(res, grid.N, target, merged, dst)


@pytest.mark.parametrize("gi", range(len(GRIDS)))
def test_tomesd_vs_naive(gi):
    grid = GRIDS[gi]
    rng = np.random.default_rng(SEED + 10 + gi)
    x = rng.normal(size=(grid.N, 4))
    dst = BL.tomesd_dst(grid, np.random.default_rng(7))
    assert dst.tolist() == naive_tomesd_dst(grid, np.random.default_rng(7))
    # One dst per 2x2 block (partial blocks included) in every frame.
    assert len(dst) == grid.F * math.ceil(grid.H / 2) * math.ceil(grid.W / 2)
    n_src = grid.N - len(dst)
    for r in (0, 2, n_src):
        res = BL.tomesd(x, grid, r, rng=7)
        target, merged, dstn = naive_match(x.tolist(), grid.N, dst, r, "cos")
        check_result(res, grid.N, target, merged, dstn)


@pytest.mark.parametrize("gi", range(len(GRIDS)))
def test_asymrnr_vs_naive(gi):
    grid = GRIDS[gi]
    rng = np.random.default_rng(SEED + 20 + gi)
    # Integer-valued features: squared distances are exact, so ties are real ties and the
    # tie rule (smallest token index) is exercised.
    x = rng.integers(-3, 4, size=(grid.N, 3)).astype(np.float64)
    for seed in range(4):
        dst = BL.asymrnr_dst(grid, np.random.default_rng(seed))
        ndst, pads = naive_asymrnr_dst(grid, np.random.default_rng(seed))
        assert dst.tolist() == ndst
        assert BL.asymrnr_pad(grid, np.random.default_rng(seed)) == tuple(pads)
        n_src = grid.N - len(dst)
        for r in (0, 1, n_src // 2, n_src):
            res = BL.asymrnr(x, grid, r, rng=seed)
            target, merged, dstn = naive_match(x.tolist(), grid.N, dst, r, "sqeuclid")
            check_result(res, grid.N, target, merged, dstn)


def test_asymrnr_pads_cover_all_offsets():
    # Odd dimensions get a random pad in {0, 1}; even ones never.
    grid = G.Grid(3, 4, 5)
    pads = {BL.asymrnr_pad(grid, np.random.default_rng(s)) for s in range(40)}
    assert {p[1] for p in pads} == {0}
    assert {p[0] for p in pads} == {0, 1} and {p[2] for p in pads} == {0, 1}


def test_asymrnr_dst_one_per_chunk():
    grid = G.Grid(3, 5, 7)
    for seed in range(10):
        pads = BL.asymrnr_pad(grid, np.random.default_rng(seed))
        dst = BL.asymrnr_dst(grid, np.random.default_rng(seed))
        f, h, w = np.unravel_index(dst, grid.shape)
        keys = {((a + pads[0]) // 2, (b + pads[1]) // 2, (c + pads[2]) // 2)
                for a, b, c in zip(f, h, w)}
        nchunks = math.prod(math.ceil((d + p) / 2) for d, p in zip(grid.shape, pads))
        assert len(keys) == len(dst) == nchunks


# ---------------------------------------------------------------------------------------------
# Invariants

@pytest.mark.parametrize("name", ["tome", "tomesd", "asymrnr"])
def test_invariants(name):
    grid = G.Grid(4, 6, 8)
    rng = np.random.default_rng(SEED + 30)
    x = rng.normal(size=(grid.N, 8))
    fn = getattr(BL, name)
    res0 = fn(x, grid, 0, rng=1)
    n_src = int((res0.kind != G.KIND_DST).sum())
    for r in (0, 1, n_src // 3, n_src):
        res = fn(x, grid, r, rng=1)
        assert res.r == r == int((res.kind == G.KIND_MERGED).sum())
        merged = np.flatnonzero(res.kind == G.KIND_MERGED)
        assert np.all(res.kind[res.target[merged]] == G.KIND_DST)
        kept = np.flatnonzero(res.kind != G.KIND_MERGED)
        assert np.array_equal(res.target[kept], kept)
        assert np.array_equal(res.pos[kept], np.arange(len(kept)))
        # restore through golden.merge/unmerge gives v[target]
        v = rng.integers(-100, 100, size=(grid.N, 3))
        assert np.array_equal(G.unmerge(G.merge(v, res), res), v[res.target])
        # merging the smallest distances: every merged src is no farther than any kept src
        src_kept = np.flatnonzero(res.kind == G.KIND_KEPT)
        if len(merged) and len(src_kept):
            assert res.dist[merged].max() <= res.dist[src_kept].min()
    with pytest.raises(ValueError, match="r must be in"):
        fn(x, grid, n_src + 1, rng=1)
    with pytest.raises(ValueError, match="r must be in"):
        fn(x, grid, -1, rng=1)
    with pytest.raises(TypeError, match="r must be an integer"):
        fn(x, grid, 1.5, rng=1)
    with pytest.raises(ValueError, match="N = F\\*H\\*W"):
        fn(x[:-1], grid, 1, rng=1)
    with pytest.raises(TypeError, match="grid"):
        fn(x, (4, 6, 8), 1, rng=1)


def test_chunking_does_not_change_results():
    grid = G.Grid(4, 8, 8)
    rng = np.random.default_rng(SEED + 40)
    x = rng.normal(size=(grid.N, 6))
    for fn in (BL.tome, BL.tomesd, BL.asymrnr):
        a = fn(x, grid, 100, rng=3)
        b = fn(x, grid, 100, rng=3, chunk_bytes=1)   # one src row per chunk
        assert np.array_equal(a.target, b.target) and np.array_equal(a.kind, b.kind)


def test_zero_vector_cosine_is_finite():
    grid = G.Grid(1, 2, 4, (1, 2, 2))
    x = np.zeros((grid.N, 3))
    x[1] = 1.0
    res = BL.tome(x, grid, 2)
    assert np.all(np.isfinite(res.dist))


def test_datm_wrappers():
    grid = G.Grid(4, 6, 6)
    rng = np.random.default_rng(SEED + 50)
    g = rng.integers(-3000, 3000, size=(grid.N, 8)).astype(np.int16)
    a = BL.datm_exact(g, grid, 50, seed=3, R=2, quota=10)
    b = G.match(g, grid, r=50, seed=3, R=2, quota=10, select="sort")
    assert np.array_equal(a.target, b.target) and np.array_equal(a.kind, b.kind)
    f = BL.datm_float(g, grid, 50, seed=3)
    # B = 16 with shift 0 matches on g itself: distances are the exact int distances of g.
    assert np.array_equal(f.q, g.astype(np.int64))
    src = np.flatnonzero(f.kind != G.KIND_DST)
    gi = g.astype(np.int64)
    want = ((gi[src] - gi[f.nearest[src]]) ** 2).sum(axis=1)
    assert np.array_equal(f.dist[src], want)
    dst = f.dst
    brute = ((gi[src][:, None, :] - gi[dst][None, :, :]) ** 2).sum(axis=2).min(axis=1)
    assert np.array_equal(f.dist[src], brute)
