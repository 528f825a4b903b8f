"""Cycle models: the DATM matcher's cycles per layer call, and attention on the reference array.

The matcher model is an explicit formula of the hardware's phases (``hw/matcher.py``) so that
RTL measurements can check it (``matcher_cycles(...)`` returns every term, and
:func:`calibration` compares it with the RTL-measured call in :data:`RTL_CALL`). All cycles
are of the one clock the unit shares with the host array.

Matcher (one layer call, ``R`` coverage rounds, so ``R + 1`` distance passes). The hardware's
rounds are **incremental**: round 0 compares every src with the initial dst; round ``k > 0``
compares the remaining src only with the dst promoted in round ``k-1`` (each src keeps the
minimum of its stored best and the new result, which equals a full recomputation)::

    C          = D / L                                  guide chunks per token
    new[0]     = n_dst[0] = number of windows           (LFSR initial dst, one per window)
    q_eff[k]   = min(quota, n_src[k] - r)               (promotions of round k < R)
    new[k+1]   = q_eff[k];  n_dst[k+1] = n_dst[k] + q_eff[k];  n_src[k] = N - n_dst[k]
    engine[k]  = ceil(n_src[k] * ceil(new[k] / P) * C / util) + e_pipe   (0 if new[k] = 0)
    bin[k]     = N + NB + 1 + c_pass                    binning scan + threshold dump
    promote[k] = max(N, q_eff[k] * (C + 1)) + c_pass    k < R: scan; dst copies overlap it
    load       = N * C + 4                              guide beats through the quantizer
    init       = n_windows * max(C + 1, 9) + 8          a dst copy per window, or DstInit's
                                                        9 cycles per window if slower
    select     = N + 7;  map = N + 7                    one token per cycle plus the
                                                        scanner's fill and drain
    check      = 6                                      config check at start
    total = check + load + init + sum_k (engine[k] + bin[k]) + sum_{k<R} promote[k]
            + select + map

``util`` is the engine's lane utilisation within a pass (1.0: the engine issues every cycle;
measured 1.001 engine/ideal), ``e_pipe`` the engine pipeline fill/drain per pass and
``c_pass`` the per-scan overhead (state changes, scanner and histogram pipelines). The
defaults are calibrated on the RTL-measured call :data:`RTL_CALL` (see :func:`calibration`).

Attention of one layer on an ``rows x cols`` MAC array (ideal utilisation, which is the
conservative assumption for hiding: a real array is slower)::

    macs   = heads * (N_q * N_k * head_dim   (Q K^T)  +  N_q * N_k * head_dim   (A V))
    cycles = ceil(macs / (rows * cols))
"""

from __future__ import annotations

import math

__all__ = ["n_windows", "matcher_cycles", "attention_cycles", "RTL_CALL", "calibration"]

# RTL-measured matcher call (tools/bench_matcher.py, Amaranth simulation with the real
# quantizer and engine; docs/matcher.md): Big Buck Bunny, 8 x 8 x 8 = 512 tokens,
# ecp5-default shape (D = 64, P = L = 8, NB = 64), R = 2, quota 32, r = 256, 2x2x2 windows.
# (tools/bench_matcher.py's call with rounds = 2; the scanner pipeline of hw/matcher.py.)
RTL_CALL = dict(
    config=dict(F=8, H=8, W=8, D=64, P=8, L=8, NB=64, R=2, quota=32, r=256,
                window=(2, 2, 2)),
    cycles=dict(load=4100, init=584, engine=[28702, 13342, 12318], datm=2828, select=519,
                map=519, total=62918),
)

#: DstInit's cycles per window (``hw.dstinit.CYCLES_PER_WINDOW``) and its start latency.
INIT_CYCLES_PER_WINDOW = 9
INIT_SETUP = 8
#: Scan passes without a stalling consumer: N cycles plus the scanner pipeline's fill and
#: drain (selection: decision at stage ``hw.matcher.SCAN_STAGES``, credit back a cycle
#: later; map: enqueue at stage 4, two cycles through the output queue, credit back).
SELECT_EXTRA = 7
MAP_EXTRA = 7
#: The register between the histogram's dump and the threshold (hw/matcher.py): one cycle
#: per binning pass.
THRESH_REG = 1
#: Config check states at ``start`` (counted in the total only).
CHECK_CYCLES = 6


def n_windows(F: int, H: int, W: int, window=(2, 2, 2)) -> int:
    """Number of windows tiling an ``F x H x W`` grid from the origin (partial at the edges)."""
    sf, sh, sw = window
    return math.ceil(F / sf) * math.ceil(H / sh) * math.ceil(W / sw)


def matcher_cycles(*, F: int, H: int, W: int, D: int, P: int, L: int, R: int, quota: int,
                   NB: int, r: int | None = None, window=(2, 2, 2), util: float = 1.0,
                   e_pipe: int = 30, c_pass: int = 15) -> dict:
    """Return the matcher's cycles for one call, with every term of the formula.

    Parameters
    ----------
    F, H, W : int
        Token grid; ``N = F * H * W``.
    D, P, L, NB : int
        Guide elements, dst lanes, elements per lane per cycle, histogram bins.
    R, quota : int
        Coverage rounds and the promotion quota per round.
    r : int, optional
        Target merges (bounds ``q_eff`` by the src that stay kept); default: no bound.
    util, e_pipe, c_pass : float, int, int
        Calibration constants (see the module docstring).

    Returns
    -------
    dict
        ``total``, ``load``, ``init``, ``datm`` (bin + promote of all rounds), ``select``,
        ``map``, ``engine`` (per pass), ``engine_ideal`` (sum of ``n_src * new * C / P``
        without rounding up to groups) and ``passes`` (per pass: ``n_dst``, ``new``,
        ``n_src``, ``engine``, ``bin``, ``promote``, ``overhead`` = bin + promote).

    Raises
    ------
    ValueError
        ``L`` does not divide ``D`` or ``util`` is outside ``(0, 1]``.
    """
    if D % L:
        raise ValueError(f"L must divide D ({D}), not {L!r}")
    if not 0 < util <= 1:
        raise ValueError(f"util must be in (0, 1], not {util!r}")
    N = F * H * W
    C = D // L
    nw = n_windows(F, H, W, window)
    n_dst, new = nw, nw
    passes = []
    engine_ideal = 0.0
    for k in range(R + 1):
        n_src = N - n_dst
        work = n_src * math.ceil(new / P) * C
        engine_ideal += n_src * new * C / P
        eng = math.ceil(work / util) + e_pipe if new and n_src else 0
        q = max(0, min(quota, n_src - r if r is not None else n_src)) if k < R else 0
        b = N + NB + THRESH_REG + c_pass
        pr = max(N, q * (C + 1)) + c_pass if k < R else 0
        passes.append(dict(n_dst=n_dst, new=new, n_src=n_src, engine=eng, bin=b, promote=pr,
                           overhead=b + pr))
        n_dst += q
        new = q
    load = N * C + 4
    init = nw * max(C + 1, INIT_CYCLES_PER_WINDOW) + INIT_SETUP
    select, mp = N + SELECT_EXTRA, N + MAP_EXTRA
    datm = sum(x["overhead"] for x in passes)
    total = (CHECK_CYCLES + load + init + sum(x["engine"] for x in passes) + datm + select
             + mp)
    return dict(total=total, load=load, init=init, datm=datm, select=select, map=mp,
                engine=[x["engine"] for x in passes], engine_ideal=round(engine_ideal),
                passes=passes, N=N)


def calibration(**constants) -> dict:
    """Model against the RTL-measured call :data:`RTL_CALL`, phase by phase.

    Returns ``{phase: {"rtl": .., "model": .., "error": model/rtl - 1}}`` for ``load``,
    ``init``, ``engine[k]``, ``datm``, ``select``, ``map`` and ``total``.
    """
    m = matcher_cycles(**RTL_CALL["config"], **constants)
    rtl = RTL_CALL["cycles"]
    out = {}
    for key in ("load", "init", "datm", "select", "map", "total"):
        out[key] = dict(rtl=rtl[key], model=m[key], error=m[key] / rtl[key] - 1)
    for k, (a, b) in enumerate(zip(rtl["engine"], m["engine"])):
        out[f"engine[{k}]"] = dict(rtl=a, model=b, error=b / a - 1)
    return out


def attention_cycles(*, n_q: int, n_k: int, head_dim: int, heads: int, rows: int,
                     cols: int) -> int:
    """Cycles of ``Q K^T`` and ``A V`` of one attention layer at ideal array utilisation."""
    macs = heads * 2 * n_q * n_k * head_dim
    return math.ceil(macs / (rows * cols))
