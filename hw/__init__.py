"""Amaranth 0.5 hardware of the ORBIS token-reduction unit."""

from .params import PRESETS, OrbisParams, ParamError, preset

__all__ = ["OrbisParams", "ParamError", "PRESETS", "preset"]
