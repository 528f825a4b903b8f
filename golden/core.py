"""Integer golden model of ORBIS token reduction (DESIGN.md section 3).

Every function here is the reference the RTL is checked against, bit for bit. The choices
DESIGN.md leaves open are fixed here, and the hardware follows:

Grid and windows
    Tokens ``n = (f*H + h)*W + w`` on an ``F x H x W`` grid. Windows of stride ``(sf, sh, sw)``
    tile the grid from the origin; windows at the far edges are partial. Window raster order is
    f, then h, then w.

Quantize
    ``q = clamp(round_half_up(g / 2**s), -(2**(B-1) - 1), 2**(B-1) - 1)`` computed as
    ``(g + (1 << (s-1))) >> s`` (arithmetic shift, i.e. floor) for ``s > 0`` and ``g`` for
    ``s = 0``. The host helper :func:`shift_for` gives ``s = max(0, bitlen(max|g|) - (B-1))``.

Initial dst (LFSR)
    A 16-bit maximal-length Galois LFSR, right-shifting, toggle mask ``0xB400``
    (x^16 + x^14 + x^13 + x^11 + 1). The seed (1..65535) is the state before the first window.
    For every window in raster order the LFSR is stepped *first*, then
    ``offset = (state * window_size) >> 16``; the offset indexes the window's tokens in raster
    order (f, h, w inside the window).

Distance and nearest dst
    ``d(i, j) = sum_k (q_i[k] - q_j[k])**2`` exactly. A src's nearest dst is the dst with the
    smallest distance, ties to the smallest token index.

Histogram code
    A floating-point-like code from a leading-one detector and shifts, with ``M`` mantissa bits
    (``hist_mant``) and a per-round range shift ``c``. For ``e = bitlen(d >> c)``::

        code = d >> c                                          if e <= M + 1
        code = ((e - M) << M) | (((d >> c) >> (e - M - 1)) & (2**M - 1))   otherwise

    then clamped to ``NB - 1``. The code is monotone in ``d``. ``c`` is chosen per round from the
    largest src distance of that round so that the whole range fits in ``NB`` bins without
    clamping: ``c = max(0, bitlen(dmax) - E)`` with ``E = NB / 2**M + M - 1`` (the largest bit
    length whose codes are all ``< NB``), see :func:`hist_shift_for`.

Coverage rounds
    ``R`` rounds. Each round computes every src's nearest-dst distance over the current dst set,
    histograms the codes and promotes up to ``quota_eff`` src to dst, where ``quota_eff =
    min(quota, number of src that will stay kept)``: ``n_src - r`` in target mode and the count
    of src with ``d > tau`` in budget mode. The promoted src are the worst covered: the
    threshold bin ``t`` is the largest bin with ``count(code >= t) >= quota_eff``; every src with
    ``code > t`` is promoted, then src with ``code == t`` in ascending token index until
    ``quota_eff``. After the last round a final pass computes nearest dst and distances again.

Selection
    Target mode (exactly ``r`` merges): ``t`` is the smallest bin with ``count(code <= t) >= r``;
    every src with ``code < t`` merges, then src with ``code == t`` in ascending token index until
    ``r``. Budget mode: every src with ``d <= tau`` merges and ``r`` is an output. A merged src
    maps to its nearest dst.

Reduced order, merge, unmerge
    Kept tokens (dst and unmerged src) in ascending token index. ``replace``: a dst keeps its
    value. ``mean``: a dst becomes ``floor((2*S + c) / (2*c))`` per element, where ``S`` is the
    sum of the dst and its merged src and ``c`` their count: the mean rounded half up (towards
    +inf), always within the input range. Unmerge: ``restored[n] = y[pos[n]]``, where ``pos`` of
    a merged token is the position of its dst.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "KIND_DST", "KIND_KEPT", "KIND_MERGED",
    "LFSR_TAPS", "Grid", "MatchResult",
    "lfsr_step", "lfsr_sequence", "window_shape", "window_count", "initial_dst",
    "shift_for", "quantize",
    "sqdist", "nearest_dst",
    "hist_exp_fit", "hist_shift_for", "hist_code",
    "match", "merge", "unmerge", "restore_error", "promote_top", "select_bottom",
]

KIND_DST = 0
KIND_KEPT = 1      # src that is not merged
KIND_MERGED = 2

LFSR_TAPS = 0xB400
SUPPORTED_B = (4, 8, 16)   # 16: the unquantized reference (q = g), not a hardware option
MERGE_MODES = ("replace", "mean")


def _bitlen(x) -> np.ndarray:
    """Bit length of non-negative integers (0 for 0), vectorised and exact for < 2**62."""
    x = np.asarray(x, dtype=np.int64)
    out = np.zeros(x.shape, dtype=np.int64)
    v = x.copy()
    for sh in (32, 16, 8, 4, 2, 1):
        big = v >= (1 << sh)
        out[big] += sh
        v[big] >>= sh
    out[v > 0] += 1
    return out


def _check_int(name, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name} must be in {rng}, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class Grid:
    """Token grid ``F x H x W`` tiled by windows of stride ``window = (sf, sh, sw)``."""

    F: int
    H: int
    W: int
    window: tuple = (2, 2, 2)

    def __post_init__(self):
        for name in ("F", "H", "W"):
            _check_int(name, getattr(self, name), 1)
        win = tuple(self.window)
        if len(win) != 3:
            raise ValueError(f"window must be a 3-tuple (sf, sh, sw), not {self.window!r}")
        for name, s, dim in zip(("sf", "sh", "sw"), win, (self.F, self.H, self.W)):
            _check_int(f"window {name}", s, 1)
            if s > dim:
                raise ValueError(
                    f"window {name} ({s}) is larger than the grid dimension ({dim}); "
                    f"allowed range is [1, {dim}]")
        object.__setattr__(self, "window", win)

    @property
    def N(self) -> int:
        return self.F * self.H * self.W

    @property
    def shape(self) -> tuple:
        return (self.F, self.H, self.W)

    def check_tokens(self, name, arr, ndim=2):
        arr = np.asarray(arr)
        if arr.ndim != ndim or arr.shape[0] != self.N:
            raise ValueError(
                f"{name} must have shape (N, ...) with N = F*H*W = {self.N} "
                f"for grid {self.shape}, got {arr.shape}")
        return arr


# ---------------------------------------------------------------------------------------------
# LFSR and initial dst

def lfsr_step(state: int) -> int:
    """Advance the 16-bit Galois LFSR by one step."""
    lsb = state & 1
    state >>= 1
    if lsb:
        state ^= LFSR_TAPS
    return state


def lfsr_sequence(seed: int, count: int) -> np.ndarray:
    """States after 1, 2, ..., ``count`` steps from ``seed``."""
    seed = _check_int("seed", seed, 1, 0xFFFF)
    out = np.empty(count, dtype=np.int64)
    s = seed
    for i in range(count):
        s = lfsr_step(s)
        out[i] = s
    return out


def window_shape(grid: Grid):
    """Number of windows along (f, h, w)."""
    return tuple(-(-d // s) for d, s in zip(grid.shape, grid.window))


def window_count(grid: Grid) -> int:
    nf, nh, nw = window_shape(grid)
    return nf * nh * nw


def initial_dst(grid: Grid, seed: int) -> np.ndarray:
    """Token index of each window's initial dst, in window raster order (not always ascending)."""
    nf, nh, nw = window_shape(grid)
    sf, sh, sw = grid.window
    wf_, wh_, ww_ = np.meshgrid(np.arange(nf), np.arange(nh), np.arange(nw), indexing="ij")
    of, oh, ow = wf_.ravel() * sf, wh_.ravel() * sh, ww_.ravel() * sw
    df = np.minimum(sf, grid.F - of)
    dh = np.minimum(sh, grid.H - oh)
    dw = np.minimum(sw, grid.W - ow)
    size = df * dh * dw
    states = lfsr_sequence(seed, len(size))
    off = (states * size) >> 16
    # Raster order inside the window: f, then h, then w.
    lf = off // (dh * dw)
    lh = (off // dw) % dh
    lw = off % dw
    return ((of + lf) * grid.H + (oh + lh)) * grid.W + (ow + lw)


# ---------------------------------------------------------------------------------------------
# Quantization

def _check_B(B):
    if B not in SUPPORTED_B:
        raise ValueError(f"B must be one of {SUPPORTED_B}, not {B!r}")
    return B


def _check_guide(g):
    g = np.asarray(g)
    if not np.issubdtype(g.dtype, np.integer):
        raise TypeError(f"guide features must be integers (int16 fixed point), not {g.dtype}")
    if g.size and (g.min() < -(1 << 15) or g.max() > (1 << 15) - 1):
        raise ValueError("guide features must be in the int16 range [-32768, 32767]")
    return g.astype(np.int64)


def shift_for(g, B: int, headroom: int = 0) -> int:
    """Host helper: ``s = max(0, bitlen(max|g|) - (B-1) - headroom)``.

    ``headroom = 0`` is DESIGN.md's rule (the largest value maps into range). A positive
    ``headroom`` lowers the shift so the bulk of the values keeps more bits and the few largest
    clamp; ``make eval`` measured that ``headroom = 2`` brings int4 matching from 1.52x to
    1.04x the float error on real video (int8 needs none).
    """
    _check_B(B)
    g = _check_guide(g)
    headroom = _check_int("headroom", headroom, 0, 16)
    m = int(np.abs(g).max()) if g.size else 0
    return max(0, m.bit_length() - (B - 1) - headroom)


def quantize(g, shift: int, B: int):
    """Quantize int16 guide features to ``B`` bits; return ``(q, max_abs)``."""
    _check_B(B)
    g = _check_guide(g)
    shift = _check_int("shift", shift, 0, 16)
    if shift:
        r = (g + (1 << (shift - 1))) >> shift
    else:
        r = g
    lim = (1 << (B - 1)) - 1
    q = np.clip(r, -lim, lim).astype(np.int64)
    max_abs = int(np.abs(g).max()) if g.size else 0
    return q, max_abs


# ---------------------------------------------------------------------------------------------
# Distances

def sqdist(a, b) -> np.ndarray:
    """Exact squared Euclidean distances between integer rows of ``a`` and ``b`` (int64)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)


def _exact_float_dtype(qmax: int, D: int):
    # Every intermediate (squared norms, dot products, their sums) is an integer below
    # 4 * D * qmax**2; float32 represents those exactly below 2**24, float64 below 2**53.
    bound = 4 * D * qmax * qmax
    if bound < (1 << 24):
        return np.float32
    if bound < (1 << 53):
        return np.float64
    return None


def nearest_dst(q, src, dst, chunk_bytes: int = 32 << 20):
    """Nearest dst of every src: ``(index into dst, distance)``, exact, ties to smallest index.

    ``dst`` must be sorted ascending so that the first minimum is the smallest token index.
    Computed in chunks of src with BLAS matmuls in a float type that is exact for the data,
    so memory stays bounded at any grid size.
    """
    q = np.asarray(q)
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    if len(dst) == 0:
        raise ValueError("nearest_dst needs at least one dst")
    n_src = len(src)
    arg = np.zeros(n_src, dtype=np.int64)
    dist = np.zeros(n_src, dtype=np.int64)
    if n_src == 0:
        return arg, dist
    D = q.shape[1]
    qmax = int(np.abs(q).max()) if q.size else 0
    ftype = _exact_float_dtype(qmax, D)
    if ftype is None:
        for lo in range(0, n_src, 256):
            d = sqdist(q[src[lo:lo + 256]], q[dst])
            arg[lo:lo + 256] = d.argmin(axis=1)
            dist[lo:lo + 256] = d.min(axis=1)
        return arg, dist
    qd = q[dst].astype(ftype)
    nd = (qd * qd).sum(axis=1)
    rows = max(1, chunk_bytes // (len(dst) * np.dtype(ftype).itemsize))
    for lo in range(0, n_src, rows):
        qs = q[src[lo:lo + rows]].astype(ftype)
        ns = (qs * qs).sum(axis=1)
        d = qs @ qd.T
        d *= -2
        d += nd[None, :]
        d += ns[:, None]
        a = d.argmin(axis=1)
        arg[lo:lo + rows] = a
        dist[lo:lo + rows] = np.rint(d[np.arange(len(a)), a]).astype(np.int64)
    return arg, dist


# ---------------------------------------------------------------------------------------------
# Histogram code

def hist_exp_fit(NB: int, M: int) -> int:
    """Largest bit length ``E`` such that every value below ``2**E`` codes below ``NB``."""
    return NB // (1 << M) + M - 1


def hist_shift_for(dmax: int, NB: int, M: int) -> int:
    """Range shift ``c`` for a round whose largest distance is ``dmax``."""
    return max(0, int(dmax).bit_length() - hist_exp_fit(NB, M))


def _check_hist(NB, M):
    NB = _check_int("NB", NB, 4, 4096)
    if NB & (NB - 1):
        raise ValueError(f"NB must be a power of two in [4, 4096], not {NB}")
    lb = NB.bit_length() - 1
    M = _check_int("hist_mant", M, 0, lb - 1)
    return NB, M


def hist_code(d, NB: int, M: int, c: int) -> np.ndarray:
    """Monotone histogram code of distances ``d`` (see the module docstring)."""
    NB, M = _check_hist(NB, M)
    v = np.asarray(d, dtype=np.int64) >> c
    e = _bitlen(v)
    big = e > M + 1
    sh = np.where(big, e - M - 1, 0)
    code = np.where(big, ((e - M) << M) | ((v >> sh) & ((1 << M) - 1)), v)
    return np.minimum(code, NB - 1)


# ---------------------------------------------------------------------------------------------
# Threshold helpers (shared by rounds and selection)

def select_bottom(code, order_idx, count: int, NB: int):
    """Boolean mask of the ``count`` entries with the smallest code, ties by ``order_idx``.

    Returns ``(mask, t)`` with ``t`` the threshold bin (``NB`` when ``count == 0``).
    """
    code = np.asarray(code)
    mask = np.zeros(len(code), dtype=bool)
    if count == 0:
        return mask, NB
    hist = np.bincount(code, minlength=NB)
    cum = np.cumsum(hist)
    t = int(np.searchsorted(cum, count))      # first bin with cum >= count
    below = code < t
    need = count - int(below.sum())
    mask |= below
    at = np.flatnonzero(code == t)
    at = at[np.argsort(order_idx[at], kind="stable")][:need]
    mask[at] = True
    return mask, t


def promote_top(code, order_idx, count: int, NB: int):
    """Boolean mask of the ``count`` entries with the largest code, ties by ascending index."""
    code = np.asarray(code)
    mask = np.zeros(len(code), dtype=bool)
    if count == 0:
        return mask, -1
    hist = np.bincount(code, minlength=NB)
    top = np.cumsum(hist[::-1])[::-1]         # top[t] = count(code >= t)
    t = int(np.flatnonzero(top >= count).max())
    above = code > t
    need = count - int(above.sum())
    mask |= above
    at = np.flatnonzero(code == t)
    at = at[np.argsort(order_idx[at], kind="stable")][:need]
    mask[at] = True
    return mask, t


# ---------------------------------------------------------------------------------------------
# Matching

@dataclass
class MatchResult:
    """One call's matching: the map the hardware writes, plus what the evaluation reads.

    Members
    -------
    kind : (N,) uint8, ``KIND_DST``, ``KIND_KEPT`` or ``KIND_MERGED``.
    target : (N,) int64, a merged token's dst; a kept token's own index.
    pos : (N,) int64, position in the reduced sequence (a merged token: its dst's position).
    nearest : (N,) int64, final nearest dst of every src (a dst: itself).
    dist : (N,) int64, final nearest-dst distance of every src (a dst: 0).
    r : number of merged tokens.
    """

    kind: np.ndarray
    target: np.ndarray
    pos: np.ndarray
    nearest: np.ndarray
    dist: np.ndarray
    r: int
    grid: Grid | None = None
    q: np.ndarray | None = None
    q_shift: int = 0
    max_abs: int = 0
    initial_dst: np.ndarray | None = None
    rounds: list = field(default_factory=list)
    hist: np.ndarray | None = None
    hist_shift: int = 0
    threshold: int = 0

    @property
    def N(self) -> int:
        return len(self.kind)

    @property
    def kept(self) -> np.ndarray:
        """Token indices of the reduced sequence, ascending."""
        return np.flatnonzero(self.kind != KIND_MERGED)

    @property
    def n_kept(self) -> int:
        return self.N - self.r

    @property
    def dst(self) -> np.ndarray:
        return np.flatnonzero(self.kind == KIND_DST)


def _sorted_mask(take, n):
    mask = np.zeros(n, dtype=bool)
    mask[take] = True
    return mask


def _finish(N, dst_mask, nearest_all, dist_all, merged, **extra) -> MatchResult:
    kind = np.full(N, KIND_KEPT, dtype=np.uint8)
    kind[dst_mask] = KIND_DST
    kind[merged] = KIND_MERGED
    target = np.arange(N, dtype=np.int64)
    target[merged] = nearest_all[merged]
    kept = kind != KIND_MERGED
    pos_kept = np.cumsum(kept) - 1
    pos = pos_kept[target]
    return MatchResult(kind=kind, target=target, pos=pos, nearest=nearest_all, dist=dist_all,
                       r=int(merged.sum()), **extra)


def match(g, grid: Grid, *, r=None, tau=None, B: int = 8, shift=None, NB: int = 64,
          hist_mant: int = 2, R: int = 0, quota: int = 0, seed: int = 1,
          quantized: bool = False, select: str = "hist") -> MatchResult:
    """Run DATM on guide features ``g`` (int16, shape ``(N, D)``) over ``grid``.

    Give exactly one of ``r`` (target mode: exactly ``r`` merges, ``0 <= r <= n_src``) or
    ``tau`` (budget mode: merge every src with ``d <= tau``). ``shift`` defaults to
    :func:`shift_for`. With ``quantized=True``, ``g`` is already the B-bit ``q``. ``B = 16``
    is the unquantized reference (``q = g``). ``select="sort"`` replaces the histogram
    thresholds of the rounds and the selection by an exact sort on the distance (ties in
    ascending token index): the exact-sort DATM the evaluation compares against.

    Raises
    ------
    ValueError, TypeError
        For a bad shape, a grid that does not match the token count, ``r`` out of range, an
        unsupported ``B``, a window larger than the grid, or a negative or oversized shift.
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a golden.Grid, not {type(grid).__name__}")
    _check_B(B)
    NB, hist_mant = _check_hist(NB, hist_mant)
    R = _check_int("R", R, 0, 64)
    if select not in ("hist", "sort"):
        raise ValueError(f"select must be 'hist' or 'sort', not {select!r}")
    quota = _check_int("quota", quota, 0)
    if (r is None) == (tau is None):
        raise ValueError("give exactly one of r (target mode) or tau (budget mode)")
    g = grid.check_tokens("guide features g", g)
    if g.shape[1] < 1:
        raise ValueError("guide features need D >= 1 elements per token")
    if quantized:
        q = np.asarray(g, dtype=np.int64)
        lim = (1 << (B - 1)) - 1
        if q.size and np.abs(q).max() > lim:
            raise ValueError(f"quantized guide values must be in [-{lim}, {lim}] for B = {B}")
        s, max_abs = 0, int(np.abs(q).max()) if q.size else 0
    else:
        s = shift_for(g, B) if shift is None else _check_int("shift", shift, 0, 16)
        q, max_abs = quantize(g, s, B)
    N = grid.N
    dst0 = initial_dst(grid, seed)
    dst_mask = np.zeros(N, dtype=bool)
    dst_mask[dst0] = True
    n_src0 = N - len(dst0)
    if r is not None:
        r = _check_int("r", r, 0, n_src0)
    else:
        tau = _check_int("tau", tau, 0)

    rounds = []
    tok = np.arange(N, dtype=np.int64)
    for rnd in range(R + 1):
        dst = np.flatnonzero(dst_mask)
        src = np.flatnonzero(~dst_mask)
        arg, d = nearest_dst(q, src, dst)
        dmax = int(d.max()) if len(d) else 0
        c = hist_shift_for(dmax, NB, hist_mant)
        code = hist_code(d, NB, hist_mant, c)
        hist = np.bincount(code, minlength=NB).astype(np.int64)
        info = dict(n_dst=len(dst), n_src=len(src), dmax=dmax, hist_shift=c, hist=hist)
        if rnd == R:
            rounds.append(info)
            break
        stay = (len(src) - r) if r is not None else int((d > tau).sum())
        qe = min(quota, stay)
        if select == "hist":
            prom, t = promote_top(code, tok[src], qe, NB)
        else:
            prom, t = _sorted_mask(np.lexsort((src, -d))[:qe], len(src)), -1
        dst_mask[src[prom]] = True
        info.update(promoted=src[prom], threshold=t, quota_eff=qe)
        rounds.append(info)

    nearest_all = tok.copy()
    dist_all = np.zeros(N, dtype=np.int64)
    nearest_all[src] = dst[arg]
    dist_all[src] = d
    merged = np.zeros(N, dtype=bool)
    if r is not None and select == "sort":
        msk, t = _sorted_mask(np.lexsort((src, d))[:r], len(src)), -1
    elif r is not None:
        msk, t = select_bottom(code, tok[src], r, NB)
    else:
        msk, t = d <= tau, -1
    merged[src[msk]] = True
    return _finish(N, dst_mask, nearest_all, dist_all, merged, grid=grid, q=q, q_shift=s,
                   max_abs=max_abs, initial_dst=dst0, rounds=rounds, hist=hist,
                   hist_shift=c, threshold=t)


# ---------------------------------------------------------------------------------------------
# Merge / unmerge

def _check_result(res, x, name):
    if not isinstance(res, MatchResult):
        raise TypeError(f"expected a MatchResult, not {type(res).__name__}")
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (tokens, Dx), got {x.shape}")
    return x


def merge(x, res: MatchResult, mode: str = "replace") -> np.ndarray:
    """Reduce ``x`` (``(N, Dx)`` integers) to the kept tokens in ascending token order."""
    x = _check_result(res, x, "x")
    if x.shape[0] != res.N:
        raise ValueError(f"x must have N = {res.N} rows, got {x.shape[0]}")
    if mode not in MERGE_MODES:
        raise ValueError(f"merge mode must be one of {MERGE_MODES}, not {mode!r}")
    kept = res.kept
    if mode == "replace":
        return x[kept].copy()
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"mean merge works on integer activations, not {x.dtype}")
    xi = x.astype(np.int64)
    S = np.zeros((res.n_kept, x.shape[1]), dtype=np.int64)
    cnt = np.zeros(res.n_kept, dtype=np.int64)
    np.add.at(S, res.pos, xi)
    np.add.at(cnt, res.pos, 1)
    c = cnt[:, None]
    out = (2 * S + c) // (2 * c)
    return out.astype(x.dtype)


def unmerge(y, res: MatchResult) -> np.ndarray:
    """Restore the ``N`` tokens from the reduced outputs ``y`` (``(N - r, Dy)``)."""
    y = _check_result(res, y, "y")
    if y.shape[0] != res.n_kept:
        raise ValueError(f"y must have N - r = {res.n_kept} rows, got {y.shape[0]}")
    return y[res.pos]


def restore_error(v, res: MatchResult) -> float:
    """Mean over tokens of ``||v[n] - v[target(n)]||**2`` (DESIGN section 5)."""
    v = np.asarray(v, dtype=np.float64)
    if v.shape[0] != res.N:
        raise ValueError(f"v must have N = {res.N} rows, got {v.shape[0]}")
    diff = v - v[res.target]
    return float((diff * diff).sum(axis=1).mean())
