"""Cycle models: the DATM matcher's cycles per layer call, and attention on the reference array.

The matcher model is an explicit formula so that RTL measurements at small sizes can check it
(``matcher_cycles(...)["passes"]`` lists every term). All cycles are of the one clock the unit
shares with the host array.

Matcher (one layer call, ``R`` coverage rounds, so ``R + 1`` distance passes)::

    C        = D / L                                  guide chunks per token
    n_dst[0] = number of windows                      (LFSR initial dst, one per window)
    n_dst[p] = n_dst[p-1] + quota_eff[p-1]            quota_eff = min(quota, stay)
    n_src[p] = N - n_dst[p]
    engine[p]   = n_src[p] * ceil(n_dst[p] / P) * C / util      ideal engine cycles per pass
    overhead[p] = a_tok * N + a_bin * NB + pipe                 histogram, threshold, promotion
    load        = N * C                                         guide into the buffer (quantizer)
    init        = n_windows                                     LFSR, one window per cycle
    select      = N + NB                                        prefix-sum threshold + map write
    total = load + init + sum_p (engine[p] + overhead[p]) + select

``util`` is the engine's lane utilisation (DESIGN.md asks >= 0.95; 1.0 is the ideal), ``a_tok``
the token-proportional overhead per pass (a scan of the nearest/distance table), ``a_bin`` the
bin-proportional one (histogram clear and the threshold scan), ``pipe`` the engine's pipeline
fill/drain per pass. They are arguments so that the matcher's RTL cycles can calibrate them.

Attention of one layer on an ``rows x cols`` MAC array (ideal utilisation, which is the
conservative assumption for hiding: a real array is slower)::

    macs   = heads * (N_q * N_k * head_dim   (Q K^T)  +  N_q * N_k * head_dim   (A V))
    cycles = ceil(macs / (rows * cols))
"""

from __future__ import annotations

import math

__all__ = ["n_windows", "matcher_cycles", "attention_cycles"]


def n_windows(F: int, H: int, W: int, window=(2, 2, 2)) -> int:
    """Number of windows tiling an ``F x H x W`` grid from the origin (partial at the edges)."""
    sf, sh, sw = window
    return math.ceil(F / sf) * math.ceil(H / sh) * math.ceil(W / sw)


def matcher_cycles(*, F: int, H: int, W: int, D: int, P: int, L: int, R: int, quota: int,
                   NB: int, r: int | None = None, window=(2, 2, 2), util: float = 1.0,
                   a_tok: float = 1.0, a_bin: float = 2.0, pipe: int = 32) -> dict:
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
        Target merges (bounds ``quota_eff`` by the src that stay kept); default: no bound.
    util, a_tok, a_bin, pipe : float
        Calibration constants (see the module docstring).

    Returns
    -------
    dict
        ``total``, ``load``, ``init``, ``select``, ``engine_ideal`` (sum of the ideal engine
        cycles) and ``passes`` (per pass: ``n_dst``, ``n_src``, ``engine``, ``overhead``).
    """
    if D % L:
        raise ValueError(f"L must divide D ({D}), not {L!r}")
    if not 0 < util <= 1:
        raise ValueError(f"util must be in (0, 1], not {util!r}")
    N = F * H * W
    C = D // L
    n_dst = n_windows(F, H, W, window)
    passes = []
    engine_ideal = 0
    for p in range(R + 1):
        n_src = N - n_dst
        ideal = n_src * math.ceil(n_dst / P) * C
        engine_ideal += ideal
        passes.append(dict(n_dst=n_dst, n_src=n_src, engine=math.ceil(ideal / util),
                           overhead=math.ceil(a_tok * N + a_bin * NB + pipe)))
        if p < R:
            stay = n_src - r if r is not None else n_src
            n_dst += max(0, min(quota, stay))
    load, init, select = N * C, n_windows(F, H, W, window), N + NB
    total = load + init + select + sum(x["engine"] + x["overhead"] for x in passes)
    return dict(total=total, load=load, init=init, select=select, engine_ideal=engine_ideal,
                passes=passes, N=N)


def attention_cycles(*, n_q: int, n_k: int, head_dim: int, heads: int, rows: int,
                     cols: int) -> int:
    """Cycles of ``Q K^T`` and ``A V`` of one attention layer at ideal array utilisation."""
    macs = heads * 2 * n_q * n_k * head_dim
    return math.ceil(macs / (rows * cols))
