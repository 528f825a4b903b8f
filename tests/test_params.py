"""Generator parameters: presets are valid, bad values give clear errors."""

import pytest

from hw import PRESETS, OrbisParams, ParamError, preset
from hw.params import default_quota


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_valid_and_consistent(name):
    p = preset(name)
    assert p.D % p.L == 0 and p.Dx % p.Lx == 0
    assert (1 << p.idx_bits) >= p.N_max
    assert p.dist_max == p.D * (2 * ((1 << (p.B - 1)) - 1)) ** 2
    assert p.dist_max < (1 << p.dist_bits)


def test_cogvideox_preset_holds_the_model_grid():
    p = preset("cogvideox-2b")
    assert p.N_max >= 13 * 30 * 45 and p.D == 64


@pytest.mark.parametrize("kwargs, text", [
    (dict(B=6), "B must be 4 or 8"),
    (dict(D=64, L=7), r"L must divide D \(64\)"),
    (dict(P=0), r"P must be in \[1, 256\]"),
    (dict(NB=48), "NB must be a power of two"),
    (dict(NB=64, hist_mant=6), r"hist_mant must be in \[0, 5\]"),
    (dict(window=(2, 2)), "window must be a 3-tuple"),
    (dict(window=(2, 0, 2)), r"window sh must be an integer in \[1, 16\]"),
    (dict(merge_mode="max"), "merge_mode must be one of"),
    (dict(N_max=1), r"N_max must be in \[2, 1048576\]"),
    (dict(Dx=64, Lx=5), r"Lx must divide Dx \(64\)"),
    (dict(R=16), r"R must be in \[0, 15\]"),
    (dict(D=8.0), "D must be an integer"),
])
def test_bad_parameters_name_the_parameter(kwargs, text):
    with pytest.raises(ParamError, match=text):
        OrbisParams(**kwargs)


def test_unknown_preset_and_override():
    with pytest.raises(ParamError, match="unknown preset 'nope'"):
        preset("nope")
    with pytest.raises(ParamError, match=r"unknown parameter\(s\) \['Q'\]"):
        preset("ice40-small", Q=3)
    assert preset("ice40-small", P=1).P == 1


def test_default_quota():
    assert default_quota(4608) == 230
    assert default_quota(4) == 1
