"""``make verilog``: write deterministic Verilog for every block of a preset, plus a manifest.

Blocks are listed in :data:`BLOCKS` as ``name: "module:Class"``; each class is a
``wiring.Component`` constructed as ``Class(params)``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import sys
from pathlib import Path

from amaranth.back import rtlil, verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring

from .params import PRESETS, ParamError, preset

# name -> "module:Class". The top-level unit is generated as "top".
BLOCKS = {
    "top": "hw.top:TokenReductionUnit",
    "mapbuf": "hw.mapbuf:MapBuffer",
    "quantizer": "hw.quantizer:Quantizer",
    "similarity": "hw.similarity:SimilarityEngine",
    "matcher": "hw.matcher:TokenMatcher",
    "dstinit": "hw.dstinit:DstInit",
    "histogram": "hw.histogram:Histogram",
    "threshold": "hw.threshold:Threshold",
    "merger": "hw.merge:Merger",
    "unmerger": "hw.merge:Unmerger",
}


def block_class(name: str):
    if name not in BLOCKS:
        raise ParamError(f"unknown block {name!r}; choose from {sorted(BLOCKS)}")
    mod, cls = BLOCKS[name].split(":")
    return getattr(importlib.import_module(mod), cls)


def build_block(name: str, params):
    return block_class(name)(params)


def port_list(component: wiring.Component) -> list:
    """Flattened ports as Verilog names with direction and width."""
    ports = []
    for path, member, value in component.signature.flatten(component):
        ports.append({
            "name": "__".join(str(p) for p in path),
            "dir": "input" if member.flow == wiring.In else "output",
            "width": Shape.cast(member.shape).width,
        })
    return ports


@contextlib.contextmanager
def _skip_zero_meminit():
    """Do not emit all-zero memory initial contents.

    Amaranth writes a memory's initial contents bit by bit, which at ``N_max`` of thousands
    takes minutes and megabytes of Verilog for contents that are all zero. No block here
    depends on a memory's contents after reset (each clears or writes before it reads, as an
    ASIC SRAM requires), so all-zero contents are dropped. Amaranth has no public switch for
    this; the patch is scoped to one conversion.
    """
    emitter = rtlil.ModuleEmitter
    original = emitter.emit_memory

    def emit_memory(self, cell_idx, cell):
        if any(cell.init):
            original(self, cell_idx, cell)

    emitter.emit_memory = emit_memory
    try:
        yield
    finally:
        emitter.emit_memory = original


@contextlib.contextmanager
def _builtin_yosys():
    """Convert with Amaranth's pinned built-in Yosys, never a system one.

    The Makefile exports ``YOSYS`` (the YoWASP build) for synthesis; Amaranth would then use it
    for conversion too, and its Verilog differs in its header (version and the toolchain's
    build path). The built-in one makes the text the same on every machine.
    """
    old = os.environ.get("AMARANTH_USE_YOSYS")
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    try:
        yield
    finally:
        if old is None:
            del os.environ["AMARANTH_USE_YOSYS"]
        else:
            os.environ["AMARANTH_USE_YOSYS"] = old


def to_verilog(component: wiring.Component, name: str) -> str:
    """Deterministic Verilog of ``component`` (no source locations, no machine paths)."""
    with _skip_zero_meminit(), _builtin_yosys():
        return verilog.convert(component, name=name, emit_src=False)


def generate(params, out_dir: Path, blocks=None, log=print) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"params": params.as_dict(), "blocks": {}}
    for name in blocks or list(BLOCKS):
        log(f"  elaborating {name} ...")
        comp = build_block(name, params)
        text = to_verilog(comp, name=f"orbis_{name}")
        path = out_dir / f"orbis_{name}.v"
        path.write_text(text)
        manifest["blocks"][name] = {
            "module": f"orbis_{name}",
            "file": path.name,
            "lines": text.count("\n"),
            "bytes": len(text),
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "ports": port_list(comp),
        }
        log(f"  wrote {path} ({text.count(chr(10))} lines)")
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Generate ORBIS Verilog for a preset.")
    ap.add_argument("--preset", default="ecp5-default", help=f"one of {sorted(PRESETS)}")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--block", action="append", help="only this block (repeatable)")
    args = ap.parse_args(argv)
    try:
        params = preset(args.preset)
        out = args.out or Path("build/verilog") / args.preset
        print(f"== generating Verilog for preset {args.preset} into {out}")
        generate(params, out, args.block)
    except ParamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
