"""Matching-quality evaluation (`make eval`, issue 8): restore error vs reduction ratio.

Runs the baselines (ToMe, ToMeSD, AsymRnR) and DATM (float, int8, int4, exact sort, rounds and
quotas) on real-video tokens (default) or on an npz file, and writes

- ``build/eval/report.md``: the tables,
- ``build/eval/report.json``: every figure, with the headline keys at the top level,
- ``build/eval/*.png``: the plots (matplotlib, Agg backend).

Progress lines go to stderr. See docs/eval.md for the method, the npz format and the figures.

Usage::

    python -m tools.eval [--quick] [--npz FILE] [--out DIR] [--seeds N]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import golden as G
from golden import baselines as BL

# DATM defaults chosen from the evidence of this harness (docs/eval.md): int8 guide, 64 bins
# with 3 mantissa bits, and coverage rounds that promote QUOTA_FRAC * N src per round.
DEFAULTS = dict(B=8, R=8, quota_frac=0.05, NB=64, hist_mant=3)

RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SWEEP_R = (0, 1, 2, 3, 4, 6, 8)
SWEEP_Q = (0.02, 0.05, 0.1)
HIST_SWEEP = ((64, 2), (64, 3), (256, 4), (1024, 6))
INT4_SHIFT = (0, 1, 2)

FULL = dict(grid=(8, 18, 32), p=16, D=64, frame_step=4, starts=(0, 34, 68, 101), seeds=2)
QUICK = dict(grid=(4, 6, 8), p=8, D=16, frame_step=4, starts=(0, 60), seeds=1)
QUICK_RATIOS = (0.1, 0.3, 0.5, 0.8)


def log(msg: str) -> None:
    print(f"[eval {time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


_T0 = time.perf_counter()


@dataclass
class Case:
    """One token grid to match on: int16 guide, float target."""

    name: str
    grid: G.Grid
    guide: np.ndarray
    target: np.ndarray


# ---------------------------------------------------------------------------------------------
# Inputs

def guide_to_int16(guide: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer guides pass through (must fit int16); float guides become Q-format int16.

    A float guide is scaled by ``2**k`` with the largest ``k`` in [-16, 30] such that
    ``max|g| * 2**k <= 32767``, then rounded. Returns ``(guide_int16, k)``.
    """
    g = np.asarray(guide)
    if np.issubdtype(g.dtype, np.integer):
        if g.size and (g.min() < -32768 or g.max() > 32767):
            raise ValueError("integer guide values must fit int16 [-32768, 32767]")
        return g.astype(np.int16), 0
    g = g.astype(np.float64)
    if not np.all(np.isfinite(g)):
        raise ValueError("guide must be finite")
    m = float(np.abs(g).max()) if g.size else 0.0
    k = 30 if m == 0 else max(-16, min(30, math.floor(math.log2(32767 / m))))
    return np.clip(np.rint(g * 2.0 ** k), -32767, 32767).astype(np.int16), k


def load_npz(path) -> Case:
    """Read an evaluation input file (format in docs/eval.md)."""
    path = Path(path)
    with np.load(path) as z:
        missing = [k for k in ("guide", "target", "grid") if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing array(s) {missing}; need guide, target, grid")
        guide, target, grid = z["guide"], z["target"], z["grid"]
        window = tuple(int(x) for x in z["window"]) if "window" in z.files else (2, 2, 2)
    grid = np.asarray(grid).ravel()
    if grid.shape != (3,):
        raise ValueError(f"{path}: grid must be 3 integers (F, H, W), got shape {grid.shape}")
    grid = G.Grid(int(grid[0]), int(grid[1]), int(grid[2]), window)
    if guide.ndim != 2 or guide.shape[0] != grid.N:
        raise ValueError(f"{path}: guide must be (N, D) with N = {grid.N}, got {guide.shape}")
    if target.ndim != 2 or target.shape[0] != grid.N:
        raise ValueError(f"{path}: target must be (N, Dv) with N = {grid.N}, got {target.shape}")
    g16, _ = guide_to_int16(guide)
    return Case(path.stem, grid, g16, np.asarray(target, dtype=np.float64))


def video_cases(cfg: dict) -> list[Case]:
    """Real-video segments of the Big Buck Bunny clip (golden.video)."""
    from golden.video import video_tokens

    F, H, W = cfg["grid"]
    out = []
    for start in cfg["starts"]:
        v = video_tokens(F, H, W, p=cfg["p"], D=cfg["D"], start=start,
                         frame_step=cfg["frame_step"])
        out.append(Case(f"bbb@{start}", v.grid, v.guide, v.target))
    return out


# ---------------------------------------------------------------------------------------------
# Methods: each is (case, r, seed) -> MatchResult

def lfsr_seed(seed: int) -> int:
    """Evaluation seed -> LFSR seed. Seeds 1 and 2 are adjacent LFSR states (2 steps to 1),
    which would give the same dst pattern shifted by one window; spread them instead."""
    return 1 + (int(seed) * 40503) % 65535


def datm(B=8, R=0, quota_frac=0.0, NB=64, hist_mant=2, select="hist", shift_drop=0):
    """A DATM setting as a method; ``quota_frac`` is a fraction of N, ``shift_drop`` lowers
    the host shift below :func:`golden.shift_for` (clipping the largest guide values)."""
    def run(case, r, seed):
        quota = int(round(quota_frac * case.grid.N))
        shift = 0 if B == 16 else max(0, G.shift_for(case.guide, B) - shift_drop)
        return G.match(case.guide, case.grid, r=r, B=B, shift=shift, NB=NB,
                       hist_mant=hist_mant, R=R, quota=quota, seed=lfsr_seed(seed),
                       select=select)
    return run


def baseline(fn):
    def run(case, r, seed):
        return fn(case.guide.astype(np.float64), case.grid, r, np.random.default_rng(seed))
    return run


def max_r(name: str, case: Case) -> int:
    """Largest r a method allows on ``case`` (number of its src)."""
    N = case.grid.N
    if name == "ToMe":
        return N // 2
    if name == "ToMeSD":
        return N - len(BL.tomesd_dst(case.grid, 0))
    # AsymRnR with stride 2 has as many chunks as DATM has windows, whatever the pads.
    return N - G.window_count(case.grid)


def comparisons(res: G.MatchResult) -> int:
    """src x dst distance evaluations of all passes (the engine's work)."""
    return int(sum(rd["n_src"] * rd["n_dst"] for rd in res.rounds))


def evaluate(method, name, cases, ratios, seeds):
    """Mean restore error, comparisons and passes per ratio over cases x seeds."""
    out = {}
    for ratio in ratios:
        errs, comps, passes = [], [], []
        for case in cases:
            r = int(round(ratio * case.grid.N))
            if r > max_r(name, case):
                break
            for seed in seeds:
                res = method(case, r, seed)
                assert res.r == r
                errs.append(G.restore_error(case.target, res))
                comps.append(comparisons(res))
                passes.append(len(res.rounds))
        else:
            out[ratio] = dict(error=float(np.mean(errs)), comparisons=float(np.mean(comps)),
                              passes=float(np.mean(passes)))
    return out


def ratio_at_error(curve: dict, err: float) -> tuple[float, bool]:
    """Reduction ratio at which ``curve`` reaches ``err`` (linear interpolation in ratio and
    log error). Returns ``(ratio, exact)``; ``exact`` is False when ``err`` is outside the
    curve's range and the ratio is the end of the range (a bound)."""
    rs = sorted(curve)
    es = [curve[r]["error"] for r in rs]
    if err <= es[0]:
        return rs[0], False
    for (r0, e0), (r1, e1) in zip(zip(rs, es), zip(rs[1:], es[1:])):
        if e0 <= err <= e1:
            if e1 == e0:
                return r1, True
            t = (math.log(err) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return r0 + t * (r1 - r0), True
    return rs[-1], False


# ---------------------------------------------------------------------------------------------
# Report

def _fmt(x, nd=4):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{nd}g}"
    return str(x)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _plots(out: Path, curves, ratios, sweep, ref_err):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        rs = [r for r in ratios if r in curve]
        ax.plot(rs, [curve[r]["error"] for r in rs], marker="o", ms=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("reduction ratio r / N")
    ax.set_ylabel("restore error (mean ||v[n] - v[rep(n)]||^2)")
    ax.set_title("Restore error vs reduction ratio")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "error_vs_ratio.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for qf in sorted({s["quota_frac"] for s in sweep}):
        pts = sorted((s["relative_cycles"], s["error"] / ref_err, s["R"]) for s in sweep
                     if s["quota_frac"] == qf or s["R"] == 0)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3,
                label=f"quota {qf:g} N")
        for x, y, R in pts:
            ax.annotate(f"R{R}", (x, y), fontsize=6)
    ax.axhline(0.5, color="k", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("engine cycles relative to R = 0 (src x dst comparisons)")
    ax.set_ylabel("DATM int8 error / AsymRnR error at ratio 0.5")
    ax.set_title("Coverage rounds: quality vs hardware cost")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "rounds_sweep.png", dpi=110)
    plt.close(fig)


def run(args) -> dict:
    quick = args.quick
    cfg = dict(QUICK if quick else FULL)
    if args.seeds:
        cfg["seeds"] = args.seeds
    ratios = QUICK_RATIOS if quick else RATIOS
    seeds = list(range(1, cfg["seeds"] + 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.npz:
        cases = [load_npz(args.npz)]
        source = dict(kind="npz", file=str(args.npz))
    else:
        cases = video_cases(cfg)
        source = dict(kind="video", clip="bigbuckbunny.mp4", **cfg)
    N = cases[0].grid.N
    log(f"{len(cases)} case(s) of N = {N} tokens, D = {cases[0].guide.shape[1]}, "
        f"seeds {seeds}, ratios {ratios}")

    d = DEFAULTS
    dflt = dict(B=d["B"], R=d["R"], quota_frac=d["quota_frac"], NB=d["NB"],
                hist_mant=d["hist_mant"])
    methods = {
        "ToMe": baseline(BL.tome),
        "ToMeSD": baseline(BL.tomesd),
        "AsymRnR": baseline(BL.asymrnr),
        "DATM float R0": datm(B=16, R=0),
        "DATM float": datm(**{**dflt, "B": 16}),
        "DATM int8": datm(**dflt),
        "DATM int4": datm(**{**dflt, "B": 4}),
        "DATM int8 sort": datm(**dflt, select="sort"),
    }
    for R in (0, 1, 2, 3):
        if R != d["R"]:
            methods[f"DATM int8 R{R}"] = datm(**{**dflt, "R": R})
    curves = {}
    for i, (name, fn) in enumerate(methods.items()):
        curves[name] = evaluate(fn, name, cases, ratios, seeds)
        log(f"curves {i + 1}/{len(methods)}: {name}")

    # Sweep of rounds and quota at ratio 0.5 (int8, default histogram).
    sweep = []
    r_list = (0, 1, 2, 3) if quick else SWEEP_R
    q_list = (0.05, 0.1) if quick else SWEEP_Q
    todo = [(R, qf) for R in r_list for qf in (q_list if R else (0.0,))]
    base_cmp = None
    for i, (R, qf) in enumerate(todo):
        c = evaluate(datm(**{**dflt, "R": R, "quota_frac": qf}), "DATM", cases, (0.5,), seeds)
        e = c[0.5]
        if R == 0:
            base_cmp = e["comparisons"]
        sweep.append(dict(R=R, quota_frac=qf, error=e["error"], passes=e["passes"],
                          comparisons=e["comparisons"]))
        log(f"rounds sweep {i + 1}/{len(todo)}: R={R} quota={qf:g}N error {e['error']:.4g}")
    for s in sweep:
        s["relative_cycles"] = s["comparisons"] / base_cmp

    # Histogram resolution: hist vs exact sort at the default rounds, ratio 0.5.
    hist = []
    sort_err = curves["DATM int8 sort"][0.5]["error"]
    for NB, M in HIST_SWEEP:
        e = evaluate(datm(**{**dflt, "NB": NB, "hist_mant": M}), "DATM", cases, (0.5,),
                     seeds)[0.5]["error"]
        e0 = evaluate(datm(**{**dflt, "NB": NB, "hist_mant": M, "R": 0}), "DATM", cases,
                      (0.5,), seeds)[0.5]["error"]
        hist.append(dict(NB=NB, hist_mant=M, error=e, over_sort=e / sort_err, error_R0=e0))
        log(f"histogram sweep NB={NB} M={M}: {e / sort_err:.4f} x sort")
    # R = 0 exact sort reference for the R0 column above.
    e_sort_r0 = evaluate(datm(**{**dflt, "R": 0}, select="sort"), "DATM", cases, (0.5,),
                         seeds)[0.5]["error"]
    for h in hist:
        h["over_sort_R0"] = h["error_R0"] / e_sort_r0

    # int4 host shift: the default shift maps max|g| to 7; dropping it clips outliers.
    int4 = []
    f_err = curves["DATM float"][0.5]["error"]
    for k in INT4_SHIFT:
        e = evaluate(datm(**{**dflt, "B": 4, "shift_drop": k}), "DATM", cases, (0.5,),
                     seeds)[0.5]["error"]
        e8 = evaluate(datm(**{**dflt, "B": 8, "shift_drop": k}), "DATM", cases, (0.5,),
                      seeds)[0.5]["error"]
        int4.append(dict(shift_drop=k, int4_over_float=e / f_err, int8_over_float=e8 / f_err))
        log(f"shift sweep drop={k}: int4 {e / f_err:.4f}, int8 {e8 / f_err:.4f} x float")

    # Headline figures.
    A = curves["AsymRnR"]
    dm = curves["DATM int8"]
    at = 0.5
    ratio_eq, exact = ratio_at_error(dm, A[at]["error"])
    figures = {
        "datm_over_asymrnr_error_at_0.5": dm[at]["error"] / A[at]["error"],
        "datm_ratio_at_asymrnr_0.5_error": ratio_eq,
        "datm_ratio_at_asymrnr_0.5_error_is_bound": not exact,
        "int8_over_float_error": dm[at]["error"] / curves["DATM float"][at]["error"],
        "int4_over_float_error": curves["DATM int4"][at]["error"]
        / curves["DATM float"][at]["error"],
        "hist_over_sort_error": dm[at]["error"] / sort_err,
        "float_hist_over_sort_error": curves["DATM float"][at]["error"]
        / evaluate(datm(**{**dflt, "B": 16}, select="sort"), "DATM", cases, (at,),
                   seeds)[at]["error"],
        "datm_r0_over_asymrnr_error_at_0.5": curves["DATM float R0"][at]["error"]
        / A[at]["error"],
        "tomesd_over_asymrnr_error_at_0.5": curves["ToMeSD"][at]["error"] / A[at]["error"],
        "tome_over_asymrnr_error_at_0.5": curves["ToMe"][at]["error"] / A[at]["error"]
        if at in curves["ToMe"] else None,
        # The same int4 setting with the host shift lowered by 2 (clips the largest values).
        "int4_shift_drop2_over_float_error": next(
            (x["int4_over_float"] for x in int4 if x["shift_drop"] == 2), None),
        "datm_engine_passes": d["R"] + 1,
        # Same dst count at R = 0 whatever B is, so the float R0 curve gives the base work.
        "datm_relative_cycles": dm[at]["comparisons"] / curves["DATM float R0"][at]["comparisons"],
    }
    report = {**figures, "defaults": {**d, "quota": int(round(d["quota_frac"] * N))},
              "source": source, "N": N, "ratios": list(ratios), "seeds": seeds,
              "curves": {k: {str(r): v for r, v in c.items()} for k, c in curves.items()},
              "rounds_sweep": sweep, "hist_sweep": hist, "shift_sweep": int4}

    _plots(out, curves, ratios, sweep, A[at]["error"])
    report["seconds"] = round(time.perf_counter() - _T0, 1)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (out / "report.md").write_text(_markdown(report, curves, ratios, sweep, hist, int4))
    log(f"wrote {out / 'report.md'}, {out / 'report.json'} and plots")
    return report


def _markdown(rep, curves, ratios, sweep, hist, int4) -> str:
    d = rep["defaults"]
    L = ["# ORBIS matching-quality evaluation", ""]
    src = rep["source"]
    if src["kind"] == "video":
        L.append(f"Input: Big Buck Bunny, grid {src['grid']} (N = {rep['N']}), {src['p']}x"
                 f"{src['p']} px patches, D = {src['D']}, frame step {src['frame_step']}, "
                 f"segments starting at frames {list(src['starts'])}, seeds {rep['seeds']}.")
    else:
        L.append(f"Input: {src['file']} (N = {rep['N']}), seeds {rep['seeds']}.")
    L += ["", f"DATM defaults: B = {d['B']}, R = {d['R']}, quota = {d['quota_frac']:g} N "
          f"({d['quota']} tokens), NB = {d['NB']}, hist_mant = {d['hist_mant']}.", "",
          "## Headline figures", ""]
    keys = [k for k in rep if k not in ("defaults", "source", "N", "ratios", "seeds", "curves",
                                        "rounds_sweep", "hist_sweep", "shift_sweep",
                                        "seconds")]
    L.append(_table(["figure", "value"], [[k, rep[k]] for k in keys]))
    L += ["", "## Restore error vs reduction ratio", ""]
    L.append(_table(["method"] + [f"{r:g}" for r in ratios],
                    [[n] + [c[r]["error"] if r in c else None for r in ratios]
                     for n, c in curves.items()]))
    L += ["", "Error relative to AsymRnR at the same ratio:", ""]
    A = curves["AsymRnR"]
    L.append(_table(["method"] + [f"{r:g}" for r in ratios],
                    [[n] + [c[r]["error"] / A[r]["error"] if r in c and r in A else None
                            for r in ratios] for n, c in curves.items()]))
    L += ["", "## Coverage rounds at ratio 0.5 (int8, default histogram)", "",
          "Hardware cost: engine passes = R + 1; relative cycles = src x dst comparisons of "
          "all passes over those of R = 0.", ""]
    a5 = A[0.5]["error"]
    L.append(_table(["R", "quota / N", "error", "/ AsymRnR", "passes", "relative cycles"],
                    [[s["R"], s["quota_frac"], s["error"], s["error"] / a5, s["passes"],
                      s["relative_cycles"]] for s in sweep]))
    L += ["", "## Histogram selection vs exact sort (ratio 0.5, default rounds and R = 0)", ""]
    L.append(_table(["NB", "hist_mant", "hist / sort", "hist / sort at R = 0"],
                    [[h["NB"], h["hist_mant"], h["over_sort"], h["over_sort_R0"]]
                     for h in hist]))
    L += ["", "## Quantization: host shift below shift_for (ratio 0.5, default rounds)", ""]
    L.append(_table(["shift drop", "int4 / float", "int8 / float"],
                    [[s["shift_drop"], s["int4_over_float"], s["int8_over_float"]]
                     for s in int4]))
    L += ["", f"Run time: {rep['seconds']} s.", "",
          "Plots: error_vs_ratio.png, rounds_sweep.png.", ""]
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.eval", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny run (seconds), for tests")
    ap.add_argument("--npz", help="input file with guide, target, grid (docs/eval.md)")
    ap.add_argument("--out", default="build/eval", help="output directory (build/eval)")
    ap.add_argument("--seeds", type=int, default=0, help="seeds per case (default 2, quick 1)")
    args = ap.parse_args(argv)
    if args.seeds < 0:
        ap.error("--seeds must be >= 1")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
