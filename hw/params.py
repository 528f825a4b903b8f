"""Generator parameters of the ORBIS token-reduction unit, validated, with presets.

Every hardware block takes one :class:`OrbisParams`; nothing else configures elaboration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

__all__ = ["OrbisParams", "ParamError", "PRESETS", "preset", "ceil_log2", "bits_for",
           "DEFAULT_QUOTA_FRAC", "default_quota"]


class ParamError(ValueError):
    """A generator parameter is out of its allowed range."""


def ceil_log2(n: int) -> int:
    return max(0, (int(n) - 1).bit_length())


def bits_for(n: int) -> int:
    """Unsigned bits to hold every value in ``[0, n]``."""
    return max(1, int(n).bit_length())


MERGE_MODES = ("replace", "mean")


@dataclass(frozen=True)
class OrbisParams:
    """Generator parameters (elaboration time).

    Parameters
    ----------
    N_max : int
        Largest token count ``F*H*W`` of a call, ``2 <= N_max <= 2**20``.
    D : int
        Guide elements per token, ``1 <= D <= 1024``.
    B : int
        Quantized guide bits, 4 or 8.
    P : int
        Dst lanes of the similarity engine, ``1 <= P <= 256``.
    L : int
        Guide elements per lane per cycle; must divide ``D``.
    Dx : int
        Activation elements per token, ``1 <= Dx <= 4096``.
    Wx : int
        Activation bits, ``2 <= Wx <= 32``.
    Lx : int
        Activation elements per stream beat; must divide ``Dx``.
    NB : int
        Histogram bins, a power of two in ``[4, 4096]``.
    hist_mant : int
        Mantissa bits of the histogram code, ``0 <= hist_mant < log2(NB)``.
    R : int
        Largest number of coverage rounds a call may ask for, ``0 <= R <= 15``.
    window : (int, int, int)
        Largest window stride ``(sf, sh, sw)``, each in ``[1, 16]``.
    merge_mode : str
        ``"replace"`` or ``"mean"``.
    """

    N_max: int = 1024
    D: int = 64
    B: int = 8
    P: int = 8
    L: int = 8
    Dx: int = 64
    Wx: int = 16
    Lx: int = 8
    NB: int = 64
    hist_mant: int = 2
    R: int = 2
    window: tuple = (2, 2, 2)
    merge_mode: str = "replace"

    def __post_init__(self):
        def integer(name, lo, hi):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ParamError(f"{name} must be an integer in [{lo}, {hi}], not {v!r}")
            if not lo <= v <= hi:
                raise ParamError(f"{name} must be in [{lo}, {hi}], not {v!r}")

        integer("N_max", 2, 1 << 20)
        integer("D", 1, 1024)
        if self.B not in (4, 8):
            raise ParamError(f"B must be 4 or 8, not {self.B!r}")
        integer("P", 1, 256)
        integer("L", 1, self.D)
        if self.D % self.L:
            raise ParamError(f"L must divide D ({self.D}), not {self.L!r}")
        integer("Dx", 1, 4096)
        integer("Wx", 2, 32)
        integer("Lx", 1, self.Dx)
        if self.Dx % self.Lx:
            raise ParamError(f"Lx must divide Dx ({self.Dx}), not {self.Lx!r}")
        integer("NB", 4, 4096)
        if self.NB & (self.NB - 1):
            raise ParamError(f"NB must be a power of two in [4, 4096], not {self.NB!r}")
        integer("hist_mant", 0, ceil_log2(self.NB) - 1)
        integer("R", 0, 15)
        win = self.window
        if not (isinstance(win, (tuple, list)) and len(win) == 3):
            raise ParamError(f"window must be a 3-tuple (sf, sh, sw), not {win!r}")
        for name, s in zip(("sf", "sh", "sw"), win):
            if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 16:
                raise ParamError(f"window {name} must be an integer in [1, 16], not {s!r}")
        object.__setattr__(self, "window", tuple(win))
        if self.merge_mode not in MERGE_MODES:
            raise ParamError(f"merge_mode must be one of {MERGE_MODES}, not {self.merge_mode!r}")

    # Derived widths -----------------------------------------------------------------------

    @property
    def idx_bits(self) -> int:
        """Bits of a token index ``0 .. N_max-1``."""
        return max(1, ceil_log2(self.N_max))

    @property
    def count_bits(self) -> int:
        """Bits of a token count ``0 .. N_max``."""
        return bits_for(self.N_max)

    @property
    def qmax(self) -> int:
        return (1 << (self.B - 1)) - 1

    @property
    def dist_max(self) -> int:
        """Largest possible squared distance ``D * (2*qmax)**2``."""
        return self.D * (2 * self.qmax) ** 2

    @property
    def dist_bits(self) -> int:
        return bits_for(self.dist_max)

    @property
    def chunks(self) -> int:
        """Guide beats per token (``D / L``)."""
        return self.D // self.L

    @property
    def x_beats(self) -> int:
        """Activation beats per token (``Dx / Lx``)."""
        return self.Dx // self.Lx

    @property
    def window_size_max(self) -> int:
        sf, sh, sw = self.window
        return sf * sh * sw

    def with_(self, **changes) -> "OrbisParams":
        """Copy with some parameters changed (validated again)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ParamError(f"unknown parameter(s) {sorted(unknown)}; "
                             f"known: {[f.name for f in fields(self)]}")
        return replace(self, **changes)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["window"] = list(self.window)
        return d

    def golden_kwargs(self) -> dict:
        """Keyword arguments of :func:`golden.match` that these parameters fix."""
        return dict(B=self.B, NB=self.NB, hist_mant=self.hist_mant)


# Matching defaults chosen by `make eval` on real video (README, "Algorithm and defaults"):
# B = 8, R = 8 rounds, quota = 0.05 N promotions per round, NB = 64, hist_mant = 3.
# R is a generator parameter (the most rounds a call may ask for); the quota is per call.
DEFAULT_QUOTA_FRAC = 0.05


def default_quota(n_tokens: int) -> int:
    """Promotions per coverage round for a call of ``n_tokens`` tokens (the eval's choice)."""
    return max(1, round(DEFAULT_QUOTA_FRAC * n_tokens))


PRESETS = {
    # iCEBreaker (iCE40 UP5K): 5280 LUTs, 8 DSPs, 30 EBRs. B = 4 and NB = 32 to fit; with 32
    # bins, hist_mant = 3 would leave a 6-bit distance range, so 2 (9 bits). R = 2 keeps the
    # per-round counters small. N_max = 128, P = 1, L = 2, Lx = 4 (the first version had
    # N_max = 256, P = 2, L = 4, Lx = 8): with the pipelining and registered control of the
    # fmax work the unit at the first setting took 5,200 of the 5,280 logic cells and did not
    # place with its measurement harness; L = 2, Lx = 4 still filled 91 % and nextpnr's
    # placement failed or ran at 36-40 MHz; this setting fills 83 % (with the harness).
    "ice40-small": OrbisParams(N_max=128, D=16, B=4, P=1, L=2, Dx=8, Wx=8, Lx=4, NB=32,
                               hist_mant=2, R=2),
    # ULX3S (ECP5-85F).
    "ecp5-default": OrbisParams(N_max=1024, D=64, B=8, P=8, L=8, Dx=64, Wx=16, Lx=8, NB=64,
                                hist_mant=3, R=8),
    # ASIC estimate at the CogVideoX-2b shape: 13 x 30 x 45 latent tokens, head dim 64.
    "cogvideox-2b": OrbisParams(N_max=17550, D=64, B=8, P=32, L=16, Dx=64, Wx=16, Lx=16,
                                NB=64, hist_mant=3, R=8),
}


def preset(name: str, **overrides) -> OrbisParams:
    """Return the named preset, optionally with parameters overridden."""
    if name not in PRESETS:
        raise ParamError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[name]
    return p.with_(**overrides) if overrides else p
