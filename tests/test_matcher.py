"""TokenMatcher (quantizer + similarity engine + DATM pipeline) bit-exact with golden.match.

Every call's map transfers (kind, target, pos) are compared with the golden model, plus the
achieved r, the dst count and max|g|. Small grids (N <= 64) keep the Amaranth simulator fast.
"""

import numpy as np
import pytest

import golden
from hw.matcher import MatcherError, TokenMatcher
from hw.params import OrbisParams
from tools.bench_matcher import Call, check, golden_for, simulate

P_SMALL = OrbisParams(N_max=64, D=8, B=4, P=2, L=4, NB=16, hist_mant=2, R=2, window=(3, 3, 3))
P_WIDE = OrbisParams(N_max=64, D=8, B=8, P=4, L=8, NB=32, hist_mant=1, R=2, window=(2, 2, 2))


def random_calls(p, rng, n):
    """Random grids (partial windows), both modes, r = 0 / max / random, R in 0..p.R."""
    calls = []
    while len(calls) < n:
        F, H, W = (int(x) for x in rng.integers(1, 7, size=3))
        N = F * H * W
        if N > p.N_max or N < 2:
            continue
        win = tuple(int(rng.integers(1, min(s, d) + 1)) for s, d in zip(p.window, (F, H, W)))
        kind = len(calls) % 4
        if kind == 0:       # few distinct values: many tied distances
            g = rng.integers(-2, 3, size=(N, p.D)) * 64
        elif kind == 1:     # a cluster of identical tokens plus noise
            g = np.repeat(rng.integers(-3000, 3000, size=(1, p.D)), N, axis=0)
            g[N // 2:] += rng.integers(-300, 300, size=(N - N // 2, p.D))
        else:
            g = rng.integers(-20000, 20000, size=(N, p.D))
        grid = golden.Grid(F, H, W, window=win)
        n_src0 = N - golden.window_count(grid)
        shift = golden.shift_for(g.astype(np.int16), p.B) + int(rng.integers(0, 2))
        rounds = int(rng.integers(0, p.R + 1))
        quota = int(rng.choice([0, 1, 3, N]))
        seed = int(rng.integers(1, 1 << 16))
        if rng.random() < 0.3:
            tau = int(rng.choice([0, int(rng.integers(0, p.dist_max)), p.dist_max]))
            calls.append(Call(g, F, H, W, win, tau=tau, rounds=rounds, quota=quota,
                              seed=seed, shift=shift))
        else:
            r = int(rng.choice([0, n_src0, int(rng.integers(0, n_src0 + 1))]))
            calls.append(Call(g, F, H, W, win, r=r, rounds=rounds, quota=quota, seed=seed,
                              shift=shift))
    return calls


@pytest.mark.parametrize("p,seed,idle,bp,n", [
    (P_SMALL, 11, 0.0, 0.0, 6),
    (P_SMALL, 12, 0.4, 0.4, 10),
    (P_WIDE, 13, 0.3, 0.5, 8),
])
def test_matcher_random(p, seed, idle, bp, n):
    print(f"seed={seed} idle={idle} backpressure={bp}")
    calls = random_calls(p, np.random.default_rng(seed), n)
    res = simulate(p, calls, seed=seed, idle=idle, backpressure=bp)
    for call, got in zip(calls, res):
        check(p, call, got)


def test_matcher_edge_cases():
    """Hand-picked: r = 0, the largest r, all-equal tokens, 1x1x1 windows (no src), R = 2
    with a quota larger than what stays, budget tau = 0 and tau = max."""
    p = P_SMALL
    rng = np.random.default_rng(5)
    print("seed=5")
    g = rng.integers(-5000, 5000, size=(60, p.D))
    same = np.full((27, p.D), 1234)
    calls = [
        Call(g, 3, 4, 5, (2, 2, 2), r=0, rounds=2, quota=3, seed=1, shift=10),
        Call(g, 3, 4, 5, (2, 2, 2), r=60 - 12, rounds=1, quota=5, seed=2, shift=10),
        Call(g, 3, 4, 5, (3, 3, 3), r=20, rounds=2, quota=60, seed=3, shift=10),
        Call(same, 3, 3, 3, (3, 3, 3), r=13, rounds=2, quota=2, seed=0xFFFF, shift=8),
        Call(g[:8], 2, 2, 2, (1, 1, 1), r=0, rounds=2, quota=1, seed=9, shift=10),
        Call(g, 5, 3, 4, (2, 3, 1), tau=0, rounds=2, quota=4, seed=77, shift=10),
        Call(g, 5, 3, 4, (2, 3, 1), tau=p.dist_max, rounds=1, quota=4, seed=77, shift=10),
        Call(g, 1, 6, 10, (1, 3, 3), tau=40, rounds=2, quota=4, seed=78, shift=9),
    ]
    res = simulate(p, calls, seed=5, idle=0.2, backpressure=0.2)
    for call, got in zip(calls, res):
        check(p, call, got)


def test_matcher_real_video():
    p = P_SMALL.with_(R=2)
    try:
        from golden.video import video_tokens
        vt = video_tokens(2, 4, 8, p=16, D=p.D)
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"video clip not available: {e}")
    g = vt.guide.astype(np.int64)
    shift = golden.shift_for(vt.guide, p.B)
    calls = [Call(g, 2, 4, 8, (2, 2, 2), r=28, rounds=2, quota=4, seed=0xACE1, shift=shift),
             Call(g, 2, 4, 8, (2, 2, 2), tau=8, rounds=1, quota=2, seed=3, shift=shift)]
    res = simulate(p, calls, seed=21, idle=0.25, backpressure=0.25)
    for call, got in zip(calls, res):
        want = check(p, call, got)
        print(f"{call}: r={want.r} cycles={got['cyc_total']}")


@pytest.mark.parametrize("when", ["early", "late"])
def test_matcher_reset_mid_call(when):
    """A sync reset in the middle of a call, then a clean call must be exact."""
    p = P_SMALL
    rng = np.random.default_rng(31)
    g = rng.integers(-8000, 8000, size=(48, p.D))
    first = Call(g, 3, 4, 4, (2, 2, 2), r=20, rounds=2, quota=3, seed=4, shift=9)
    second = Call(g[::-1].copy(), 4, 3, 4, (2, 3, 2), r=15, rounds=2, quota=2, seed=5, shift=9)
    (full,) = simulate(p, [first])
    at = 40 if when == "early" else full["cyc_total"] - 10   # early: guide load; late: map
    res = simulate(p, [first, second], seed=3, idle=0.2, backpressure=0.3,
                   reset_at=(0, at))
    assert res[0] is None
    check(p, second, res[1])


def test_matcher_bad_config():
    p = P_SMALL
    g = np.zeros((8, p.D), dtype=np.int64)
    good = dict(F=2, H=2, W=2, window=(2, 2, 2), r=1, rounds=1, quota=1, seed=1, shift=0)
    cases = [
        (dict(good, F=0), MatcherError.GRID),
        (dict(good, F=5, H=5, W=5), MatcherError.GRID),
        # F*H far above N_max with W = 1 (the product saturates, still a grid error)
        (dict(good, F=(1 << p.count_bits) - 1, H=(1 << p.count_bits) - 1, W=1),
         MatcherError.GRID),
        (dict(good, window=(0, 1, 1)), MatcherError.WINDOW),
        (dict(good, F=1, window=(2, 1, 1)), MatcherError.WINDOW),
        (dict(good, rounds=3), MatcherError.ROUNDS),
        (dict(good, seed=0), MatcherError.SEED),
        (dict(good, shift=17), MatcherError.SHIFT),
        (dict(good, r=8), MatcherError.R),
    ]
    calls = []
    for kw, _ in cases:
        kw = dict(kw)
        F, H, W = kw.pop("F"), kw.pop("H"), kw.pop("W")
        calls.append(Call(np.zeros((max(F * H * W, 1), p.D)), F, H, W, **kw))
    calls.append(Call(g, 2, 2, 2, (2, 2, 2), r=3, rounds=1, quota=1, seed=1, shift=0))
    res = simulate(p, calls, max_cycles=20_000)
    for (kw, code), got in zip(cases, res):
        assert got["error"] == 1 and got["error_code"] == code, (kw, got["error_code"])
        assert got["map"] == []
        if code != MatcherError.R:
            assert got["guide_beats_taken"] == 0
    check(p, calls[-1], res[-1])     # a good call after the rejected ones


def test_matcher_rejects_bad_params():
    with pytest.raises(TypeError):
        TokenMatcher("ecp5-default")


def test_matcher_scan_rate():
    """Without idle or backpressure a scan issues one token per cycle: the selection pass
    takes N cycles plus the scanner's fill and drain (decision at stage SCAN_STAGES, credit
    back the cycle after), the map pass N + 7 (enqueue at stage 4, two cycles through the
    output queue, credit back the cycle after), and the engine pass stays within a few
    cycles of n_src * groups * D/L (the scanner keeps the engine fed)."""
    from hw.matcher import SCAN_QUEUE, SCAN_STAGES
    from hw.similarity import SimilarityEngine
    p = P_SMALL
    g = np.random.default_rng(7).integers(-5000, 5000, size=(60, p.D))
    call = Call(g, 3, 4, 5, (2, 2, 2), r=20, rounds=0, quota=0, seed=1, shift=10)
    (res,) = simulate(p, [call])
    want = check(p, call, res)
    N = 60
    assert res["cyc_select"] == N + SCAN_STAGES + 1
    assert res["cyc_map"] == N + 7
    n_dst = len(want.dst)
    work = (N - n_dst) * -(-n_dst // p.P) * p.chunks
    # Fill (first src through the scanner) plus the engine's and the consumer's latency;
    # a starved engine would lose cycles per src instead.
    eng = SimilarityEngine(p)
    eng._MustUse__silence = True      # only its latency is needed, not elaborated
    slack = SCAN_QUEUE + eng.latency + 10
    assert work <= res["cyc_engine"][0] <= work + slack, (work, slack, res["cyc_engine"])
