"""Board top-levels: the link top (UART, link, core) on open FPGA boards (amaranth-boards).

=============  =====================  ===============  ======  ==========
board          platform               preset           clock   UART
=============  =====================  ===============  ======  ==========
``icebreaker`` iCEBreaker, iCE40UP5K  ``ice40-small``  12 MHz  FTDI ch. B
``ulx3s``      ULX3S 85F, ECP5-85F    ``ecp5-default`` 25 MHz  FTDI (US1)
=============  =====================  ===============  ======  ==========

The iCEBreaker applies :data:`ICEBREAKER_OVERRIDES` to its preset so that the unit fits the
UP5K (see the comment there and docs/fpga.md).

LED 0 is lit while a frame is received, executed or answered; LED 1 is lit for about a
tenth of a second after an error reply.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io

from hw.params import ParamError, preset

from .link import LinkTop, make_core

__all__ = ["BOARDS", "BoardSpec", "BoardTop", "board_spec", "platform_for",
           "ICEBREAKER_OVERRIDES"]


@dataclass(frozen=True)
class BoardSpec:
    """What a board build needs: platform class, preset, link settings, programmer."""

    name: str
    preset: str
    clk_hz: int
    baud: int
    max_payload: int
    bitstream: str        # file name suffix of the bitstream
    programmer: str       # tool that programs the board
    programmer_hint: str  # how to install it
    overrides: tuple = ()  # (name, value) pairs applied to the preset for this board

    def params(self, **extra):
        """The board's generator parameters: its preset, its overrides, then ``extra``."""
        return preset(self.preset, **{**dict(self.overrides), **extra})

    def platform_class(self):
        if self.name == "icebreaker":
            from amaranth_boards.icebreaker import ICEBreakerPlatform
            return ICEBreakerPlatform
        from amaranth_boards.ulx3s import ULX3S_85F_Platform

        class ULX3S85FBuildOnly(ULX3S_85F_Platform):
            # amaranth-boards lists openFPGALoader as a required tool even for a build;
            # it is only needed to program, which fpga.build checks itself.
            @property
            def required_tools(self):
                return [t for t in super().required_tools if t != "openFPGALoader"]

        return ULX3S85FBuildOnly


# The token-reduction unit at plain ice40-small plus the link needs more than the UP5K's 5280
# logic cells (docs/fpga.md). The iCEBreaker build therefore narrows the datapaths: one guide
# element per lane-cycle (one quantizer lane, one squarer per similarity lane), one dst lane,
# D = 8, 2 activation elements of 4 bits per token (one beat), at most 32 tokens per call
# (narrower counters and address paths; e.g. 2x4x4 grids), 16 histogram bins and no coverage
# round (R = 0). The fmax pipelining of issue 6 (skid buffers on every stream, the matcher's
# scan pipeline, registered control) added about 660 cells: the previous override (L = 2)
# grew from 5161 to 5259 cells (99 %) and nextpnr no longer legalised it in minutes; with
# L = 1 the build needs 4963 (93 %) and meets the 12 MHz clock (21.8 MHz). The fixed control
# logic of the unit and the link dominates at this size.
# Matching is exact (golden model) at any setting; L and P only change the cycle count.
ICEBREAKER_OVERRIDES = (("N_max", 32), ("D", 8), ("L", 1), ("P", 1), ("Dx", 2), ("Wx", 4),
                        ("Lx", 2), ("NB", 16), ("R", 0))

BOARDS = {
    "icebreaker": BoardSpec("icebreaker", "ice40-small", 12_000_000, 115200, 512, "bin",
                            "iceprog", "install icestorm's iceprog (e.g. `apt install "
                            "fpga-icestorm`, or the oss-cad-suite), or set ICEPROG",
                            ICEBREAKER_OVERRIDES),
    "ulx3s": BoardSpec("ulx3s", "ecp5-default", 25_000_000, 115200, 1024, "bit",
                       "openFPGALoader", "install openFPGALoader (e.g. `apt install "
                       "openfpgaloader`, or the oss-cad-suite), or set OPENFPGALOADER"),
}


def board_spec(name: str) -> BoardSpec:
    if name not in BOARDS:
        raise ParamError(f"board must be one of {sorted(BOARDS)}, not {name!r}")
    return BOARDS[name]


def platform_for(name: str):
    return board_spec(name).platform_class()()


class BoardTop(Elaboratable):
    """The board's top: pins of the UART and two LEDs around :class:`fpga.link.LinkTop`.

    Parameters
    ----------
    board : str
        ``"icebreaker"`` or ``"ulx3s"``.
    core : str
        ``"echo"`` (stand-in) or ``"tru"`` (the token-reduction unit), see
        :func:`fpga.link.make_core`.
    params : OrbisParams or None
        Defaults to the board's preset with its overrides (:meth:`BoardSpec.params`).
    baud : int or None
        Defaults to the board's 115200.
    """

    def __init__(self, board: str, *, core: str = "tru", params=None, baud=None):
        self.spec = spec = board_spec(board)
        self.params = params or spec.params()
        self.baud = baud or spec.baud
        divisor = round(spec.clk_hz / self.baud)
        if abs(spec.clk_hz / divisor - self.baud) > 0.02 * self.baud:
            raise ParamError(f"baud {self.baud} is not within 2% of {spec.clk_hz} Hz / an "
                             f"integer divisor")
        self.core_kind = core
        self.top = LinkTop(self.params, core=make_core(self.params, core), divisor=divisor,
                           max_payload=spec.max_payload, timeout=spec.clk_hz // 100,
                           grace=spec.clk_hz // 1000, clk_hz=spec.clk_hz, baud=self.baud,
                           error_stretch=spec.clk_hz // 10)

    def elaborate(self, platform):
        m = Module()
        m.submodules.top = top = self.top
        if platform is None:
            return m
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_pin = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_pin = tx = io.Buffer("o", uart.tx)
        m.d.comb += [top.rx.eq(rx.i), tx.o.eq(top.tx)]
        for i, sig in enumerate((top.busy, top.error)):
            led = platform.request("led", i, dir="-")
            m.submodules[f"led{i}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(sig)
        return m
