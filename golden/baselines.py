"""Floating-point baseline matchers for the evaluation (DESIGN.md section 3, "Baselines").

Every baseline takes ``(features, grid, r, rng)`` and returns a :class:`golden.core.MatchResult`
built the way :func:`golden.core.match` builds its own (``kind``, ``target``, ``pos``,
``nearest``, ``dist``, ``r``), so :func:`golden.restore_error`, :func:`golden.merge` and
:func:`golden.unmerge` work on them unchanged. They are plain NumPy in ``float64``; none of them
is a hardware option.

Choices fixed here (the papers leave them to the implementation or to PyTorch's behaviour):

- ``features`` is ``(N, D)`` (any real dtype, converted to ``float64``), tokens in grid order
  ``n = (f*H + h)*W + w``.
- ``dist`` of the result is the baseline's own dissimilarity as ``float64``: ``1 - cos`` for
  ToMe and ToMeSD, the squared Euclidean distance for AsymRnR. A dst has 0. Unlike DATM's
  ``dist`` it is not an integer.
- A src's best dst is the argmax of the similarity (argmin of the distance) over the dst in
  ascending token index, ties to the smallest token index.
- The ``r`` merged src are the ``r`` best scores; ties in ascending token index (a stable sort;
  PyTorch's ``argsort`` used by the reference code is not stable, so it has no defined tie rule).
- Cosine similarity of a zero vector: the vector is divided by ``max(||x||, 1e-12)``, so a zero
  token has similarity 0 to everything (ToMe divides by the norm and would produce NaN).
- Similarities are computed in chunks of src rows (``chunk_bytes`` of ``float64`` at a time), so
  memory stays bounded at any grid size (never a dense ``N x N`` matrix).
- Random dst choices are separate functions (:func:`tomesd_dst`, :func:`asymrnr_dst`) that take
  a ``numpy.random.Generator``; the matchers accept ``dst=`` to reuse a given choice.
"""

from __future__ import annotations

import numpy as np

from .core import Grid, MatchResult, _finish, match

__all__ = [
    "tome", "tomesd", "tomesd_dst", "asymrnr", "asymrnr_dst", "asymrnr_pad",
    "datm_exact", "datm_float", "match_to_dst",
]

_CHUNK_BYTES = 32 << 20


def _rng(rng):
    """A ``numpy.random.Generator`` from a Generator, an int seed or ``None``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy Generator, an integer seed or None, not {rng!r}")


def _check_features(features, grid):
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a golden.Grid, not {type(grid).__name__}")
    x = grid.check_tokens("features", features)
    if x.shape[1] < 1:
        raise ValueError("features need D >= 1 elements per token")
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("features must be finite")
    return x


def _check_r(r, n_src):
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
        raise TypeError(f"r must be an integer, not {r!r}")
    if not 0 <= r <= n_src:
        raise ValueError(f"r must be in [0, {n_src}] (the number of src tokens), not {r}")
    return int(r)


def _check_dst(dst, N):
    dst = np.unique(np.asarray(dst, dtype=np.int64))
    if len(dst) == 0 or dst[0] < 0 or dst[-1] >= N:
        raise ValueError(f"dst must be a non-empty set of token indices in [0, {N - 1}]")
    return dst


def _normalize(x):
    norm = np.sqrt((x * x).sum(axis=1, keepdims=True))
    return x / np.maximum(norm, 1e-12)


def _best_dst(x, src, dst, metric, chunk_bytes=_CHUNK_BYTES):
    """Best dst of every src: ``(index into dst, dissimilarity)``, chunked over src rows.

    ``metric="cos"``: dissimilarity ``1 - cos``; ``metric="sqeuclid"``: squared Euclidean
    distance computed as ``|a|^2 + |b|^2 - 2 a.b`` (exact for integer-valued features below
    2**53, so integer guides give exact distances). First minimum wins: ``dst`` is ascending,
    so ties go to the smallest token index.
    """
    arg = np.zeros(len(src), dtype=np.int64)
    dis = np.zeros(len(src), dtype=np.float64)
    if len(src) == 0:
        return arg, dis
    if metric == "cos":
        xn = _normalize(x)
        b = xn[dst]
    elif metric == "sqeuclid":
        b = x[dst]
        nb = (b * b).sum(axis=1)
    else:   # pragma: no cover - internal
        raise ValueError(f"metric must be 'cos' or 'sqeuclid', not {metric!r}")
    rows = max(1, chunk_bytes // (8 * len(dst)))
    for lo in range(0, len(src), rows):
        s = src[lo:lo + rows]
        if metric == "cos":
            d = xn[s] @ b.T
            d = 1.0 - d
        else:
            a = x[s]
            d = a @ b.T
            d *= -2.0
            d += nb[None, :]
            d += (a * a).sum(axis=1)[:, None]
            np.maximum(d, 0.0, out=d)   # rounding of non-integer data can go below 0
        k = d.argmin(axis=1)
        arg[lo:lo + rows] = k
        dis[lo:lo + rows] = d[np.arange(len(k)), k]
    return arg, dis


def match_to_dst(features, grid: Grid, dst, r: int, metric: str, *,
                 chunk_bytes: int = _CHUNK_BYTES) -> MatchResult:
    """Shared core: every non-dst token is src, nearest dst globally, merge the ``r`` closest.

    Parameters
    ----------
    features : (N, D) array
        Similarity features in token order.
    grid : golden.Grid
    dst : array of token indices
        The dst set (any order, duplicates ignored).
    r : int
        Number of merges, ``0 <= r <= N - len(dst)``.
    metric : {"cos", "sqeuclid"}
        Cosine similarity (dissimilarity ``1 - cos``) or squared Euclidean distance.

    Returns
    -------
    MatchResult
        ``dist`` holds the float dissimilarity, ``initial_dst`` the dst set and ``rounds`` one
        entry with ``n_src`` and ``n_dst`` (the comparison count of the single pass).
    """
    x = _check_features(features, grid)
    N = grid.N
    dst = _check_dst(dst, N)
    dst_mask = np.zeros(N, dtype=bool)
    dst_mask[dst] = True
    src = np.flatnonzero(~dst_mask)
    r = _check_r(r, len(src))
    arg, dis = _best_dst(x, src, dst, metric, chunk_bytes)
    nearest = np.arange(N, dtype=np.int64)
    nearest[src] = dst[arg]
    dist = np.zeros(N, dtype=np.float64)
    dist[src] = dis
    merged = np.zeros(N, dtype=bool)
    # Smallest dissimilarity first, ties in ascending token index (lexsort: last key primary).
    merged[src[np.lexsort((src, dis))[:r]]] = True
    return _finish(N, dst_mask, nearest, dist, merged, grid=grid, initial_dst=dst,
                   rounds=[dict(n_src=len(src), n_dst=len(dst))])


# ---------------------------------------------------------------------------------------------
# ToMe

def tome(features, grid: Grid, r: int, rng=None, *, chunk_bytes: int = _CHUNK_BYTES
         ) -> MatchResult:
    """ToMe bipartite soft matching (Bolya et al., 2023), one merge step of ``r`` tokens.

    Alternate split over the flat token index as ToMe does (``a = x[::2]`` src, ``b = x[1::2]``
    dst), cosine similarity, best dst per src, the ``r`` src with the highest best similarity
    merge into their best dst. Deterministic: ``rng`` is accepted for a uniform interface and
    ignored. ``r`` is in ``[0, ceil(N / 2)]``.
    """
    _rng(rng)
    N = grid.N if isinstance(grid, Grid) else 0
    return match_to_dst(features, grid, np.arange(1, N, 2), r, "cos", chunk_bytes=chunk_bytes)


# ---------------------------------------------------------------------------------------------
# ToMeSD

def tomesd_dst(grid: Grid, rng) -> np.ndarray:
    """ToMeSD's dst choice: one uniformly random token per 2x2 spatial block of every frame.

    Blocks tile each frame from the origin; partial blocks at the right and bottom edges also
    get one dst (ToMeSD itself leaves those tokens all src). Draws, in order, one
    ``rng.integers(0, size)`` per block in raster order (f, then block row, then block column);
    the draw indexes the block's tokens in raster order. Returns ascending token indices.
    """
    rng = _rng(rng)
    F, H, W = grid.shape
    out = []
    for f in range(F):
        for h0 in range(0, H, 2):
            for w0 in range(0, W, 2):
                dh, dw = min(2, H - h0), min(2, W - w0)
                k = int(rng.integers(0, dh * dw))
                out.append((f * H + h0 + k // dw) * W + w0 + k % dw)
    return np.sort(np.asarray(out, dtype=np.int64))


def tomesd(features, grid: Grid, r: int, rng=None, *, dst=None,
           chunk_bytes: int = _CHUNK_BYTES) -> MatchResult:
    """ToMeSD (Bolya and Hoffman, 2023) on a video grid, one merge step of ``r`` tokens.

    dst: :func:`tomesd_dst` (or the given ``dst``); every other token is src. Cosine similarity,
    each src's best dst over all dst of the call (global, as ToMeSD's matmul is over all dst),
    the ``r`` src with the highest similarity merge.
    """
    if dst is None:
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be a golden.Grid, not {type(grid).__name__}")
        dst = tomesd_dst(grid, rng)
    return match_to_dst(features, grid, dst, r, "cos", chunk_bytes=chunk_bytes)


# ---------------------------------------------------------------------------------------------
# AsymRnR

def asymrnr_pad(grid: Grid, rng, stride=(2, 2, 2)) -> tuple:
    """Random padding of the chunk tiling: one draw per dimension, in order f, h, w.

    For a dimension of size ``d`` and stride ``s`` with ``d % s != 0`` the pad is
    ``rng.integers(0, s)``; the chunks then start at ``-pad, -pad + s, ...``, so the partial
    chunks fall at the start (``pad > 0``), the end (``pad != s - d % s``) or both. A divisible dimension
    draws nothing and has pad 0 (an offset there would only create two partial chunks).
    """
    rng = _rng(rng)
    pads = []
    for d, s in zip(grid.shape, stride):
        pads.append(int(rng.integers(0, s)) if d % s else 0)
    return tuple(pads)


def asymrnr_dst(grid: Grid, rng, stride=(2, 2, 2)) -> np.ndarray:
    """AsymRnR's dst choice: one uniformly random token per ``stride`` chunk, random padding.

    Draws the pads first (:func:`asymrnr_pad`), then one ``rng.integers(0, size)`` per chunk in
    raster order (f, then h, then w); the draw indexes the chunk's tokens in raster order
    (f, h, w inside the chunk). Returns ascending token indices.
    """
    rng = _rng(rng)
    stride = tuple(int(s) for s in stride)
    if len(stride) != 3 or min(stride) < 1:
        raise ValueError(f"stride must be three positive integers, not {stride!r}")
    pads = asymrnr_pad(grid, rng, stride)
    F, H, W = grid.shape
    edges = []
    for d, s, p in zip(grid.shape, stride, pads):
        starts = np.arange(-p, d, s)
        edges.append([(max(0, a), min(d, a + s)) for a in starts])
    out = []
    for f0, f1 in edges[0]:
        for h0, h1 in edges[1]:
            for w0, w1 in edges[2]:
                dh, dw = h1 - h0, w1 - w0
                k = int(rng.integers(0, (f1 - f0) * dh * dw))
                f, h, w = f0 + k // (dh * dw), h0 + (k // dw) % dh, w0 + k % dw
                out.append((f * H + h) * W + w)
    return np.sort(np.asarray(out, dtype=np.int64))


def asymrnr(features, grid: Grid, r: int, rng=None, *, dst=None, stride=(2, 2, 2),
            chunk_bytes: int = _CHUNK_BYTES) -> MatchResult:
    """AsymRnR's matching (Sun et al., 2024): random dst per chunk, global squared Euclidean.

    dst: :func:`asymrnr_dst` (or the given ``dst``). Squared Euclidean distance, each src's
    nearest dst over all dst, a stable argsort of the distances (ties by token index) and the
    ``r`` smallest merge. Merging the values (replace or mean) is :func:`golden.merge`'s job.
    """
    if dst is None:
        if not isinstance(grid, Grid):
            raise TypeError(f"grid must be a golden.Grid, not {type(grid).__name__}")
        dst = asymrnr_dst(grid, rng, stride)
    return match_to_dst(features, grid, dst, r, "sqeuclid", chunk_bytes=chunk_bytes)


# ---------------------------------------------------------------------------------------------
# DATM references

def datm_exact(g, grid: Grid, r: int, seed: int = 1, **kwargs) -> MatchResult:
    """Exact sort-based DATM: :func:`golden.match` with ``select="sort"``.

    The rounds promote and the selection merges by an exact sort of the distances (ties in
    ascending token index) instead of the histogram thresholds; everything else (quantization,
    LFSR dst, distances) is DATM's. ``kwargs`` go to :func:`golden.match` (``B``, ``R``,
    ``quota``, ...).
    """
    return match(g, grid, r=r, seed=seed, select="sort", **kwargs)


def datm_float(g, grid: Grid, r: int, seed: int = 1, **kwargs) -> MatchResult:
    """Unquantized DATM: :func:`golden.match` with ``B = 16`` and shift 0, i.e. ``q = g``.

    The int16 guide is used as is (only ``-32768`` clamps to ``-32767``), so this is the
    floating-point reference the int8/int4 settings are measured against; distances are still
    exact integers. ``kwargs`` go to :func:`golden.match`.
    """
    kwargs.setdefault("shift", 0)
    return match(g, grid, r=r, seed=seed, B=16, **kwargs)
