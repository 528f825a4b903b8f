"""Stream payload layouts shared by the blocks (one place, so the blocks compose).

Element ``k`` of a vector field is ``data[k]`` of an ``ArrayLayout``; B-bit guide values are
two's complement.
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from .params import OrbisParams, ceil_log2

__all__ = ["KIND_DST", "KIND_KEPT", "KIND_MERGED", "guide_beat", "guide_write",
           "engine_result", "map_entry", "x_beat"]

# Same encoding as golden.core.
KIND_DST = 0
KIND_KEPT = 1
KIND_MERGED = 2


def guide_beat(p: OrbisParams) -> data.StructLayout:
    """One chunk of ``L`` int16 guide elements; tokens in order, chunks in order."""
    return data.StructLayout({"data": data.ArrayLayout(signed(16), p.L)})


def guide_write(p: OrbisParams) -> data.StructLayout:
    """A quantized chunk written to the guide buffer: elements ``[chunk*L, (chunk+1)*L)``."""
    return data.StructLayout({
        "token": unsigned(p.idx_bits),
        "chunk": unsigned(max(1, ceil_log2(p.chunks))),
        "data": data.ArrayLayout(signed(p.B), p.L),
    })


def engine_result(p: OrbisParams) -> data.StructLayout:
    """A src's nearest dst (token index) and its squared distance."""
    return data.StructLayout({
        "src": unsigned(p.idx_bits),
        "dst": unsigned(p.idx_bits),
        "dist": unsigned(p.dist_bits),
    })


def map_entry(p: OrbisParams) -> data.StructLayout:
    """One token's map entry, in the golden model's format (``golden.MatchResult``)."""
    return data.StructLayout({
        "kind": unsigned(2),
        "target": unsigned(p.idx_bits),
        "pos": unsigned(p.idx_bits),
    })


def x_beat(p: OrbisParams) -> data.StructLayout:
    """``Lx`` activation elements of ``Wx`` bits; a token is ``Dx / Lx`` beats."""
    return data.StructLayout({"data": data.ArrayLayout(signed(p.Wx), p.Lx)})
