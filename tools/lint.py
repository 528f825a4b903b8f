"""``make lint``: ``verilator --lint-only`` on the generated Verilog of a preset.

Yosys writes Verilog in a style that trips three Verilator warnings, waived here and only
these (every other warning fails the lint):

``WIDTHEXPAND`` / ``WIDTHTRUNC``
    Yosys emits mixed-width operands (``$55 > 3'h4`` with a 5-bit ``$55``) and logical not of
    multi-bit values (``! mode``, which is a reduce-or then not): the widths follow Verilog's
    rules exactly, the semantics are Amaranth's.
``CASEINCOMPLETE``
    Yosys turns ``Switch``/FSM logic into ``case`` statements without ``default``, preceded by a
    default assignment, so no latch is inferred.
``PROCASSINIT``
    Registers are declared with their reset value as initial value (``reg x = 1'h0;``) and
    assigned in ``always @(posedge clk)``: Amaranth's ``init``, the power-up state on FPGAs.

With ``-Wall`` two style rules are waived as well: ``DECLFILENAME`` (the file is named after the
top module, not after every submodule in it) and ``UNUSEDSIGNAL`` (Yosys keeps the unused bits
of wide intermediate nets, e.g. the upper half of a product sliced afterwards).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from hw.gen import BLOCKS, generate
from hw.params import PRESETS, preset
from sim.runner import setup_verilator

WAIVERS = ("WIDTHEXPAND", "WIDTHTRUNC", "CASEINCOMPLETE", "PROCASSINIT", "DECLFILENAME",
           "UNUSEDSIGNAL")


def verilator_binary() -> str:
    setup_verilator()
    exe = shutil.which("verilator")
    if exe is None:
        raise RuntimeError("verilator not found: run `make venv`")
    return exe


def lint_file(path: Path, top: str) -> list:
    """Return the non-waived warning lines of ``verilator --lint-only`` on ``path``."""
    cmd = [verilator_binary(), "--lint-only", "-Wall", "--top-module", top, str(path),
           *(f"-Wno-{w}" for w in WAIVERS)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines()
             if ln.startswith("%Warning") or ln.startswith("%Error")]
    if proc.returncode != 0 and not lines:
        lines = [f"verilator exited with {proc.returncode}"]
    return [ln for ln in lines if not ln.startswith("%Error: Exiting due to")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="ecp5-default", choices=sorted(PRESETS))
    ap.add_argument("--block", action="append", help="only this block (repeatable)")
    args = ap.parse_args(argv)
    out = Path("build/verilog") / args.preset
    manifest = generate(preset(args.preset), out, args.block or list(BLOCKS), log=lambda s: None)
    bad = 0
    for name, info in manifest["blocks"].items():
        problems = lint_file(out / info["file"], info["module"])
        print(f"  {name:<12} {'clean' if not problems else f'{len(problems)} warning(s)'}")
        for ln in problems[:20]:
            print(f"      {ln}")
        bad += len(problems)
    print(f"verilator --lint-only -Wall (waived: {', '.join(WAIVERS)}): "
          f"{'clean' if not bad else f'{bad} warning(s)'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
